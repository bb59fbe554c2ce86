"""An idle agent does not pay for what only a loaded bundle needs (issue 14, footprint)."""

from __future__ import annotations

import subprocess
import sys


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
