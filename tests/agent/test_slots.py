from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.errors import SlotError
from agent.slots import STREAMS, Pointer, SlotStore
from contract.common import BundleRef
from contract.state import SlotStatus


def _bundle(tmp_path: Path, name: str, size: int = 1000) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "model.onnx").write_bytes(name.encode() * size)
    (directory / "manifest.json").write_text(f'{{"name": "{name}"}}')
    return directory


def _ref(sequence: int) -> BundleRef:
    return BundleRef(model_name="m", model_version="1", target="t", sequence=sequence, sha256=f"{sequence:064x}")


def test_install_activate_mark_and_roll_back_to_known_good(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "data")
    assert store.pointer().active is None and store.active_path() is None
    slot = store.install(_bundle(tmp_path, "v1"), _ref(1))
    assert slot == "a" and store.pointer().active is None  # installed, not active
    assert store.pointer().slots["a"].status is SlotStatus.CANDIDATE
    store.activate(slot)
    store.mark(slot, SlotStatus.GOOD)
    assert store.active_path() == store.path("a")
    slot2 = store.install(_bundle(tmp_path, "v2"), _ref(2))
    assert slot2 == "b"
    pointer = store.activate(slot2)
    assert (pointer.active, pointer.previous, pointer.active_sequence) == ("b", "a", 2)
    assert store.known_good() == "a" and store.known_good(_ref(1).sha256) == "a"
    store.mark("b", SlotStatus.BAD)
    back = store.activate(store.known_good())
    assert (back.active, back.active_sha256, back.active_sequence) == ("a", _ref(1).sha256, 1)
    assert (store.active_path() / "model.onnx").read_bytes().startswith(b"v1")  # type: ignore[operator]
    with pytest.raises(SlotError, match="already active"):
        store.activate("a")
    with pytest.raises(SlotError, match="bad"):
        store.known_good(_ref(2).sha256)
    assert SlotStore(tmp_path / "data").pointer() == store.pointer()  # what is on disk is what it said


def test_installing_overwrites_the_record_before_the_content(tmp_path: Path) -> None:
    """A crash in the middle of an install leaves the slot ``installing``: never a record naming
    content that is gone."""
    store = SlotStore(tmp_path / "data")
    store.activate(store.install(_bundle(tmp_path, "v1"), _ref(1)))
    store.mark("a", SlotStatus.GOOD)
    store.activate(store.install(_bundle(tmp_path, "v2"), _ref(2)))
    store.mark("b", SlotStatus.GOOD)
    broken = _bundle(tmp_path, "v3")
    (broken / "sub").mkdir()
    (broken / "sub" / "x").symlink_to("/nonexistent")  # copytree fails part-way
    with pytest.raises(OSError):
        store.install(broken, _ref(3))
    on_disk = SlotStore(tmp_path / "data").pointer()
    assert on_disk.slots["a"].status is SlotStatus.INSTALLING and on_disk.slots["a"].bundle is None
    with pytest.raises(SlotError, match="not on this device"):
        store.known_good(_ref(1).sha256)


def test_nothing_to_roll_back(tmp_path: Path) -> None:
    with pytest.raises(SlotError, match="no known-good bundle"):
        SlotStore(tmp_path).known_good()


CHILD = """
import sys
from pathlib import Path
from agent.slots import STREAMS, Pointer, SlotStore
from contract.common import BundleRef
from contract.state import SlotStatus
from agent.slots import Pointer
from contract.common import BundleRef
from contract.state import Slot, SlotStatus
store = SlotStore(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    ref = BundleRef(model_name="m", model_version="1", target="t", sequence=i, sha256=f"{i:064x}")
    slot = store.inactive()
    store.write(Pointer(slot, {**store.pointer().slots, slot: Slot(status=SlotStatus.GOOD, bundle=ref)}))
    if i == 1:  # the parent kills only once the flipping has begun
        print("flipping", flush=True)
"""


def test_sigkill_during_activation_leaves_a_whole_pointer(tmp_path: Path) -> None:
    """Kill a process that flips the pointer as fast as it can, many times: the pointer must
    always parse and name a slot, never be torn or empty."""
    data = tmp_path / "data"
    store = SlotStore(data)
    store.activate(store.install(_bundle(tmp_path, "v0"), _ref(0)))
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
        assert pointer.active_sequence is not None and pointer.slots[pointer.active].bundle is not None
    assert all(f is not None and f >= 1 for f in flips)  # every child was killed after it had flipped


def test_anti_rollback_floors_are_per_stream_bounded_and_read_from_older_pointers(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "data")
    store.activate(store.install(_bundle(tmp_path, "a5"), _ref(5), "fridge"))
    store.mark("a", SlotStatus.GOOD)
    store.activate(store.install(_bundle(tmp_path, "b1"), _ref(1), "pantry"))
    pointer = SlotStore(tmp_path / "data").pointer()
    assert pointer.floors == {"fridge": 5, "pantry": 1} and pointer.stream("b") == "pantry"
    assert pointer.refusal("pantry", 1) is not None  # not newer than the active
    assert pointer.refusal("fridge", 5) is None and pointer.refusal("other", 0) is None
    assert "older than #5" in (pointer.refusal("fridge", 4) or "")
    many = pointer
    for i in range(STREAMS + 5):
        many = replace(many, streams={**many.streams, "b": f"s{i}"}).with_floor()
    assert len(many.floors) == STREAMS and f"s{STREAMS + 4}" in many.floors and "fridge" not in many.floors
    # a version-2 pointer (before streams): a known-good bundle's model stream starts at its sequence
    v2 = json.loads(pointer.to_json())
    v2.update(version=2, floors=[], streams={})
    old = Pointer.from_json(v2)
    assert old.floors == {"m": 5} and old.stream("a") == "m"
