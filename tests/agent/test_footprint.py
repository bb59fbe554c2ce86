"""An idle agent does not pay for what only a loaded bundle needs (issue 14, footprint)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def test_agent_start_imports_no_numpy_opencv_or_onnxruntime() -> None:
    code = (
        "import sys\n"
        "import agent.loop, agent.config, agent.frames, coldchain.agent_cli\n"
        "from agent import runtimes\n"
        "found = runtimes.available()\n"
        "heavy = sorted(m for m in ('numpy', 'cv2', 'onnxruntime', 'ai_edge_litert') if m in sys.modules)\n"
        "print('RUNTIMES', sorted(found), 'LOADED', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'onnxruntime'" in out.split("LOADED")[0]  # still reported as available, from its metadata
    assert "LOADED []" in out


def test_a_lazy_module_loads_on_first_use_and_behaves_as_the_module() -> None:
    code = (
        "import sys\n"
        "from agent.lazy import lazy\n"
        "np = lazy('numpy')\n"
        "before = 'numpy' in sys.modules\n"
        "value = float(np.mean(np.asarray([1.0, 3.0], np.float32)))\n"
        "print(before, 'numpy' in sys.modules, value, np.mean is sys.modules['numpy'].mean)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "2.0", "True"]


IDLE_AGENT = """
import json, sys
from pathlib import Path
from agent.config import AgentConfig
from agent.health import read_health, reopening
from agent.loop import Agent
from contract import topics
from contract.events import decode_event
from transport.client import MqttTransport
from transport.config import BrokerConfig

kind, location, data, key = sys.argv[1:5]
config = AgentConfig(device_id="fridge-idle", data_dir=Path(data), trusted_keys=[Path(key)],
                     broker=BrokerConfig(url="mqtt://127.0.0.1:1"), source={"kind": kind, "location": location})
agent = Agent(config, MqttTransport("fridge-idle", config.broker), reopening(kind, location, True, 4096 * 4096))
said = [agent.infer_once() for _ in range(3)]
events = [decode_event(p) for t, p in agent.outbox if t == topics.events("fridge-idle")]
heavy = sorted(m for m in ("numpy", "cv2", "onnxruntime") if m in sys.modules)
print(json.dumps({"said": said, "codes": [getattr(e, "code", None) for e in events], "heavy": heavy,
                  "source": read_health(Path(data))["source"]}))
"""


def _idle(kind: str, location: str, data: Path, key: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", IDLE_AGENT, kind, location, str(data), str(key)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def test_an_idle_agent_watches_its_source_without_reading_a_frame(tmp_path: Path, world: dict[str, object]) -> None:
    """No bundle active: the source's health is checked (a folder that exists, a camera's device node),
    no frame is read or decoded, so numpy and OpenCV stay unloaded; a missing camera is still reported."""
    key = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "shelf.jpg").write_bytes(b"\xff\xd8 not decoded while idle \xff\xd9")
    folder = _idle("folder", str(tmp_path / "frames"), tmp_path / "a", key)
    assert folder == {"said": ["no active bundle"] * 3, "codes": [], "heavy": [], "source": "ok"}, folder

    camera = _idle("camera", str(tmp_path / "video9"), tmp_path / "b", key)
    assert camera["heavy"] == [] and camera["codes"] == ["source_unavailable"], camera  # reported once
    assert all("is unavailable" in s and "not present" in s for s in camera["said"]), camera
    assert camera["source"].startswith("unavailable") and "video9" in camera["source"]
