"""One part of the cloud in a process of its own, for the fault harness to SIGKILL:

``python -m benchmarks.faults.cloudproc ingest --store URL --broker URL --client-id ID --ready FILE``
``python -m benchmarks.faults.cloudproc controller --key OPS.key ...``

``ingest``: the cloud's ``IngestWorker`` (persistent session, messages acknowledged after the
commit) and nothing else. ``controller``: the rollout ``Controller`` with its ``Publisher``, on a
connection of its own whose PUBACKs feed the controller's ``Deliveries`` and which answers the
devices' missing-chunk reports (the publisher that streamed an artifact knows how it chunked it).
Both run against one store, as the scaled-out cloud of DESIGN does; the production classes are
wired here exactly as ``cloud.service.Cloud`` wires them in one process.

``COLDCHAIN_CLOUD_FAULT`` = ``mid_transaction`` / ``after_commit`` with ``COLDCHAIN_CLOUD_FAULT_AFTER``
= n: the ingestion process SIGKILLs itself while storing the n-th message (inside the batch's
transaction) or at its n-th telemetry ack (the batch committed, its acks and MQTT acks not sent).

``CloudProcess`` starts such a process and waits for its ready file (connected and subscribed)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ("mid_transaction", "after_commit")


class CloudProcess:
    """A cloud part (``ingest`` or ``controller``) in a process of its own, started again at will."""

    def __init__(self, part: str, store: str, broker: str, folder: Path, client_id: str,
                 key: Path | None = None) -> None:
        self.part, self.store, self.broker, self.folder, self.client_id, self.key = (
            part, store, broker, folder, client_id, key)
        self.ready = folder / f"{client_id}.ready"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []  # seconds from the process start to ready

    def start(self, fault: str | None = None, after: int = 1, timeout: float = 60.0) -> CloudProcess:
        self.ready.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLDCHAIN_CLOUD_FAULT")}
        env["PYTHONPATH"] = str(ROOT)
        if fault:
            env |= {"COLDCHAIN_CLOUD_FAULT": fault, "COLDCHAIN_CLOUD_FAULT_AFTER": str(after)}
        command = [sys.executable, "-m", "benchmarks.faults.cloudproc", self.part, "--store", self.store,
                   "--broker", self.broker, "--client-id", self.client_id, "--ready", str(self.ready)]
        if self.key is not None:
            command += ["--key", str(self.key)]
        started = time.monotonic()
        with (self.folder / f"{self.client_id}.log").open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = started + timeout
        while not self.ready.exists():  # the positive signal: written once connected and subscribed
            if self.process.poll() is not None or time.monotonic() > deadline:
                if fault and self.process.poll() == -signal.SIGKILL:
                    return self  # its fault point came before it said it was ready
                self.kill()
                raise RuntimeError(f"the cloud's {self.part} process did not get ready "
                                   f"(see {self.folder / (self.client_id + '.log')})")
            time.sleep(0.02)
        self.starts.append(time.monotonic() - started)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int | None:
        """SIGKILL: no chance to finish a batch, send an ack or close a transaction."""
        if self.process is None:
            return None
        self.process.kill()
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def exited(self, timeout: float) -> int | None:
        """Wait for the process to end by itself (a fault point); its exit code, or None."""
        if self.process is None:
            return None
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.process = None
        return code

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def _suicide_at(after: int) -> Callable[[], None]:
    """A counter that SIGKILLs this process at its ``after``-th call."""
    calls = [0]

    def tick() -> None:
        calls[0] += 1
        if calls[0] >= after:
            os.kill(os.getpid(), signal.SIGKILL)

    return tick


def _inject_fault(worker: Any) -> None:
    import cloud.ingest

    fault, after = os.environ.get("COLDCHAIN_CLOUD_FAULT"), int(os.environ.get("COLDCHAIN_CLOUD_FAULT_AFTER", "1"))
    if fault not in FAULTS:
        return
    tick = _suicide_at(after)
    if fault == "mid_transaction":  # storing the n-th message: the batch's transaction is open
        ingest = cloud.ingest.ingest

        def dying_ingest(*args: Any) -> Any:
            tick()
            return ingest(*args)

        cloud.ingest.ingest = dying_ingest  # type: ignore[assignment]
    else:  # the n-th ack: the batch committed, its acks (and MQTT acks) not all sent
        publish = worker.transport.publish

        def dying_publish(*args: Any, **kwargs: Any) -> Any:
            tick()
            return publish(*args, **kwargs)

        worker.transport.publish = dying_publish


def _ingest(args: argparse.Namespace, stop: threading.Event) -> None:
    from cloud.ingest import IngestWorker
    from cloud.store import open_store
    from transport.client import MqttTransport
    from transport.config import BrokerConfig

    broker = BrokerConfig(url=args.broker, protocol="5", reconnect_min_s=0.5, reconnect_max_s=2)
    worker = IngestWorker(MqttTransport(args.client_id, broker, manual_ack=True), open_store(args.store))
    _inject_fault(worker)
    worker.transport.start()
    try:
        while not stop.is_set():
            try:
                worker.drain()
            except Exception:  # as Cloud guards its parts: counted in the log, the next turn goes on
                logging.getLogger("cloudproc").exception("ingestion turn failed")
            if worker.subscribed.is_set() and not args.ready.exists():
                args.ready.write_text(str(os.getpid()))
    finally:
        worker.transport.stop()


def _controller(args: argparse.Namespace, stop: threading.Event) -> None:
    import queue

    from sqlalchemy import select

    from cloud.commands import Deliveries
    from cloud.controller import Controller
    from cloud.publisher import Publisher
    from cloud.store import BundleRow, open_store
    from contract import topics
    from contract.errors import ContractError
    from contract.signing import load_private_key
    from contract.transfer import MissingChunks
    from transport.client import Acked, Connected, MqttTransport, Received, Subscribed
    from transport.config import BrokerConfig

    sessions = open_store(args.store)

    def resolve(artifact_sha256: str) -> Path | None:
        with sessions() as session:
            row = session.scalars(select(BundleRow).where(BundleRow.artifact_sha256 == artifact_sha256)).first()
            return None if row is None else Path(row.tarball)

    broker = BrokerConfig(url=args.broker, protocol="5", reconnect_min_s=0.5, reconnect_max_s=2)
    transport = MqttTransport(args.client_id, broker)
    publisher = Publisher(transport, resolve)
    deliveries = Deliveries()
    controller = Controller(sessions, transport, publisher, load_private_key(args.key), deliveries=deliveries)
    log = logging.getLogger("cloudproc")
    transport.start()
    next_step = time.monotonic()
    try:
        while not stop.is_set():
            try:
                item = transport.inbox.get(timeout=0.1)
            except queue.Empty:
                item = None
            if isinstance(item, Connected):
                transport.subscribe([topics.all_devices(topics.TopicKind.MISSING)])
            elif isinstance(item, Subscribed) and item.granted:
                args.ready.write_text(str(os.getpid()))
            elif isinstance(item, Acked):
                deliveries.acked(item.mid)
            elif isinstance(item, Received):
                try:
                    publisher.repair(MissingChunks.from_json(item.payload))
                except ContractError as exc:
                    log.warning("missing-chunk report on %s refused: %s", item.topic, exc)
            if time.monotonic() >= next_step and transport.client.is_connected():
                next_step = time.monotonic() + 0.5
                try:
                    controller.step()
                except Exception:  # as Cloud guards its parts
                    log.exception("controller step failed")
    finally:
        transport.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults.cloudproc")
    parser.add_argument("part", choices=("ingest", "controller"))
    parser.add_argument("--store", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--ready", type=Path, required=True, help="written once connected and subscribed")
    parser.add_argument("--key", type=Path, help="the operator's private key (controller)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    (_ingest if args.part == "ingest" else _controller)(args, stop)


if __name__ == "__main__":
    main()
