"""onnxruntime on the CPU, with the thread count the device configuration gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy.typing as npt
import onnxruntime as ort

from agent.errors import ModelLoadFailed


class OrtRuntime:
    name = "onnxruntime"
    version = ort.__version__

    def __init__(self, model: Path, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: real-world models warn about harmless quirks
        # no busy-waiting between runs: an appliance infers now and then, and a spinning pool steals the
        # core from everything else (the firmware, or a second model being timed beside this one)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
            raise ModelLoadFailed(f"onnxruntime cannot load {model.name}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: Mapping[str, npt.NDArray[Any]]) -> Sequence[npt.NDArray[Any]]:
        return self.session.run(self.output_names, dict(feed))  # type: ignore[no-any-return]

    def close(self) -> None:
        self.session = None  # onnxruntime frees the session with its last reference
