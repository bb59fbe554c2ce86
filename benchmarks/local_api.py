"""The firmware's local API round trip for ``infer now`` against bare inference, interleaved.

    .venv/bin/python -m benchmarks.local_api [--requests 300] [--threads 2]

A real agent (the demo fridge bundle compiled here and delivered as over MQTT, an in-memory
transport, a folder of generated 256x192 JPEG shelves, ``trigger = "on_request"``) runs its loop in
a thread and serves its Unix socket. Each turn of the benchmark does, one after the other:

* bare: ``run`` of the same bundle on an already prepared input, in this process (the model alone);
* round trip: an ``infer`` request with ``mode: now`` written to the socket until its ``result``
  line is read back (the agent reads a frame, decodes it, preprocesses, infers, postprocesses,
  updates telemetry and the inventory, serialises the answer).

The answer's own ``model_ms`` and ``total_ms`` (decode excluded) and a JPEG decode timed here on
the same frames split the round trip into the agent's pipeline, the frame's read and decode, and
what the API itself adds (the wake-up of the loop, JSON both ways, the socket).
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from agent.config import AgentConfig
from agent.frames import FolderSource, decode
from agent.loop import Agent
from agent.model import LoadedBundle
from benchmarks.faults.device import MemoryTransport, deliver, pass_probation
from benchmarks.faults.world import build_world
from examples.fridge.synth import write_dataset
from transport.client import Connected

console = Console(width=140)


def infer_now(sock: socket.socket, request_id: str) -> tuple[float, dict[str, object]]:
    """Seconds from writing the request to reading its answer, and the answer."""
    started = time.perf_counter()
    sock.sendall(json.dumps({"schema_version": 1, "type": "infer", "id": request_id, "mode": "now"}).encode()
                 + b"\n")
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the agent closed the connection")
        line += chunk
    elapsed = time.perf_counter() - started
    answer = json.loads(line)
    if answer.get("type") != "result" or answer.get("id") != request_id:
        raise RuntimeError(f"unexpected answer to {request_id}: {answer}")
    return elapsed, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="interleaved turns measured (after 20 warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads, for the agent and the bare run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cc-api-") as tmp:
        work = Path(tmp)
        console.log("compiling the fridge bundle (about a minute)")
        world = build_world(work / "world", (5,))
        write_dataset(work / "frames", 40, seed=32)
        config = AgentConfig.model_validate({
            "device_id": "bench-api", "data_dir": work / "data", "trusted_keys": [world.public_key],
            "limits": {"threads": args.threads}, "telemetry_window_s": 60,
            "source": {"location": str(work / "frames"), "trigger": "on_request"}})
        transport = MemoryTransport()
        agent = Agent(config, transport, FolderSource(work / "frames"))
        deliver(agent, world.bundles[5], 5, "job-bench")
        pass_probation(agent.deployer, "job-bench")
        transport.inbox.put(Connected())
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not config.socket_path.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the agent's socket never appeared")
            time.sleep(0.01)  # a benchmark harness: polling for the socket file is fine here

        bare_bundle = LoadedBundle.open_bundle(world.bundles[5].directory, world.trust, args.threads)
        photos = [p.read_bytes() for p in sorted((work / "frames").glob("*.jpg"))]
        ready, _ = bare_bundle.prepare(decode(photos[0], 1 << 26))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(config.socket_path))
        try:
            for i in range(20):  # warm-up: both sessions' first runs, the loop's first frames
                bare_bundle.run(ready)
                infer_now(sock, f"warm-{i}")
            bare, decoding, trip, total, model = [], [], [], [], []
            for i in range(args.requests):
                started = time.perf_counter()
                bare_bundle.run(ready)
                bare.append(time.perf_counter() - started)
                started = time.perf_counter()
                decode(photos[i % len(photos)], 1 << 26)
                decoding.append(time.perf_counter() - started)
                elapsed, answer = infer_now(sock, f"r-{i}")
                trip.append(elapsed)
                total.append(float(answer["total_ms"]) / 1000)  # type: ignore[arg-type]
                model.append(float(answer["model_ms"]) / 1000)  # type: ignore[arg-type]
        finally:
            sock.close()
            stop.set()
            thread.join(timeout=30)
            bare_bundle.close()
    rows = [("bare run (this process, prepared input)", bare),
            ("agent: model only (answer's model_ms)", model),
            ("agent: pipeline, decode excluded (total_ms)", total),
            ("JPEG decode of a frame (this process)", decoding),
            ("local API round trip, infer now", trip),
            ("round trip - total_ms (frame read+decode, API)", [t - p for t, p in zip(trip, total, strict=True)]),
            ("round trip - total_ms - decode (the API itself)",
             [t - p - d for t, p, d in zip(trip, total, decoding, strict=True)])]
    table = Table(title=f"infer now over the local API vs bare inference, fridge int8, {platform.machine()}, "
                        f"{args.threads} threads, {args.requests} interleaved requests")
    for col in ("measure", "p50 ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for name, values in rows:
        ms = np.asarray(values) * 1000
        table.add_row(name, f"{np.percentile(ms, 50):.3f}", f"{np.percentile(ms, 95):.3f}")
    console.print(table)


if __name__ == "__main__":
    main()
