from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.errors import SlotError
from agent.slots import SlotStore


def _bundle(tmp_path: Path, name: str, size: int = 1000) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "model.onnx").write_bytes(name.encode() * size)
    (directory / "manifest.json").write_text(f'{{"name": "{name}"}}')
    return directory


def test_install_activate_rollback(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "data")
    assert store.pointer().active is None and store.active_path() is None
    slot = store.install(_bundle(tmp_path, "v1"))
    assert slot == "a" and store.pointer().active is None  # installed, not active
    store.activate(slot, "sha1", 1)
    assert store.active_path() == store.path("a")
    slot2 = store.install(_bundle(tmp_path, "v2"))
    assert slot2 == "b"
    pointer = store.activate(slot2, "sha2", 2)
    assert (pointer.active, pointer.previous, pointer.previous_sequence) == ("b", "a", 1)
    back = store.rollback()
    assert (back.active, back.active_sha256, back.active_sequence) == ("a", "sha1", 1)
    assert (store.active_path() / "model.onnx").read_bytes().startswith(b"v1")
    with pytest.raises(SlotError, match="already active"):
        store.activate("a", "sha1", 1)


def test_nothing_to_roll_back(tmp_path: Path) -> None:
    with pytest.raises(SlotError, match="no previous bundle"):
        SlotStore(tmp_path).rollback()


CHILD = """
import sys
from pathlib import Path
from agent.slots import SlotStore
store = SlotStore(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    slot = store.inactive()
    store.activate(slot, f"sha{i}", i)
    if i == 1:  # the parent kills only once the flipping has begun
        print("flipping", flush=True)
"""


def test_sigkill_during_activation_leaves_a_whole_pointer(tmp_path: Path) -> None:
    """Kill a process that flips the pointer as fast as it can, many times: the pointer must
    always parse and name a slot, never be torn or empty."""
    data = tmp_path / "data"
    store = SlotStore(data)
    store.activate("a", "sha0", 0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    flips = []
    for delay in (0.0, 0.003, 0.007, 0.011, 0.017, 0.023):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(data)], env=env, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline() == "flipping\n"  # its first write is done
        time.sleep(delay)  # not a wait for readiness: it spreads the kill over the flip cycle
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        pointer = SlotStore(data).pointer()
        flips.append(pointer.active_sequence)
        assert pointer.active in ("a", "b") and pointer.active_sha256 is not None
        assert pointer.active_sequence is not None and pointer.previous in ("a", "b")
    assert all(f is not None and f >= 1 for f in flips)  # every child was killed after it had flipped
