"""What each import and each step of a standalone agent adds to its resident memory: a fresh
interpreter imports what ``coldchain agent run`` imports, one module after the other, then takes
the steps of the agent's first frames with a bundle active (the first decode, onnxruntime, the
bundle verified and its session opened exactly as the agent opens it, the first run, then frames
decoded and predicted), reading ``/proc/self/status`` after each: VmRSS, and of it the private
(RssAnon) and the file-backed part (RssFile: pages of shared libraries, which the kernel can drop
and other processes share).

    python -m benchmarks.agent_steps BUNDLE.tar.gz PUBLIC.pub [--frames 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from contract.bundle import unpack
from contract.signing import TrustStore
from examples.fridge.synth import write_dataset

CHILD = r"""
import importlib, json, sys, time
from pathlib import Path

def status():
    found = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            found[key] = int(value.split()[0]) / 1024
    return found

def step(what, action):
    started = time.perf_counter()
    action()
    print(json.dumps({"step": what, "ms": (time.perf_counter() - started) * 1000, **status()}), flush=True)

bundle, key, folder = (Path(a) for a in sys.argv[1:4])
frames, threads = int(sys.argv[4]), int(sys.argv[5])
print(json.dumps({"step": "interpreter", "ms": 0, **status()}), flush=True)
for label, name in (("pydantic", "pydantic"), ("pydantic.main", "pydantic.main"), ("contract.base", "contract.base"),
                    ("cryptography (ed25519)", "cryptography.hazmat.primitives.asymmetric.ed25519"),
                    ("paho.mqtt.client", "paho.mqtt.client"), ("psutil", "psutil"), ("agent.loop", "agent.loop"),
                    ("coldchain.agent_cli", "coldchain.agent_cli")):
    step(label, lambda: importlib.import_module(name))
from agent.frames import decode
from agent.model import LoadedBundle
from contract.signing import TrustStore
data = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
state = {}
step("numpy", lambda: importlib.import_module("numpy"))
step("cv2", lambda: importlib.import_module("cv2"))
step("first decode (cv2.imdecode)", lambda: state.update(frame=decode(data[0], 4096 * 4096)))
step("onnxruntime", lambda: importlib.import_module("onnxruntime"))
step("bundle verified, session opened", lambda: state.update(
    model=LoadedBundle.open_bundle(bundle, TrustStore.from_paths([key]), threads)))
step("first run", lambda: state["model"].run(state["model"].blank()))
step(f"{frames} frames decoded and predicted",
     lambda: all(state["model"].predict(decode(data[i % len(data)], 4096 * 4096)) is not None for i in range(frames)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("public", type=Path)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        unpack(args.bundle, root / "bundle", TrustStore.from_paths([args.public]))
        write_dataset(root / "frames", 60, seed=5)
        out = subprocess.run([sys.executable, "-c", CHILD, str(root / "bundle"), str(args.public.resolve()),
                              str(root / "frames"), str(args.frames), str(args.threads)],
                             capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    table = Table(title="Resident memory added by each import and step (MiB), in a fresh interpreter")
    for column in ("step", "+ VmRSS", "+ anon", "+ file", "VmRSS", "ms"):
        table.add_column(column, justify="left" if column == "step" else "right")
    last = rows[0]
    for row in rows:
        table.add_row(row["step"], f"{row['VmRSS'] - last['VmRSS']:+.1f}", f"{row['RssAnon'] - last['RssAnon']:+.1f}",
                      f"{row['RssFile'] - last['RssFile']:+.1f}", f"{row['VmRSS']:.1f}", f"{row['ms']:.0f}")
        last = row
    Console().print(table)


if __name__ == "__main__":
    main()
