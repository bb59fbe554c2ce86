"""``convert.litert``: ONNX -> full-integer int8 TFLite with onnx2tf, for LiteRT (NHWC).

onnx2tf needs TensorFlow and numpy 1.26, which cannot live beside the rest of coldchain,
so it runs as a subprocess from its own virtual environment (``scripts/setup-onnx2tf.sh``
creates it; ``venv`` or ``COLDCHAIN_ONNX2TF_VENV`` points to it). It is given our own
calibration data (``-cind``) and our own placeholder sample file in its working directory,
so it never downloads anything.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.calibration import load_samples

DEFAULT_VENV = Path(__file__).resolve().parents[2] / ".venv-onnx2tf"
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


class ConvertLiteRTConfig(PassConfig):
    quant_type: Literal["per-channel", "per-tensor"] = "per-channel"
    input_type: Literal["int8", "uint8", "float32"] = "int8"
    output_type: Literal["int8", "uint8", "float32"] = "float32"
    samples: Annotated[int, Field(ge=1, le=1000)] = 100
    timeout_s: Annotated[int, Field(ge=10, le=7200)] = 1200
    venv: Path | None = None
    calibration: Path | None = None  # filled by the pipeline


def onnx2tf_executable(config: ConvertLiteRTConfig) -> Path:
    venv = config.venv or Path(os.environ.get("COLDCHAIN_ONNX2TF_VENV", DEFAULT_VENV))
    exe = venv / "bin" / "onnx2tf"
    if not exe.exists():
        raise PassError(f"onnx2tf is not installed at {venv}: run scripts/setup-onnx2tf.sh (TensorFlow in its own "
                        "virtual environment), or set COLDCHAIN_ONNX2TF_VENV")
    return exe


class ConvertLiteRT(Pass[ConvertLiteRTConfig]):
    name = "convert.litert"
    Config = ConvertLiteRTConfig
    summary = "onnx2tf (own venv, subprocess) -> full-integer int8 TFLite with our calibration data"

    def run(self, model: Path, config: ConvertLiteRTConfig, workdir: Path) -> Path:
        exe = onnx2tf_executable(config)
        arrays = load_samples(config.calibration, "convert.litert")
        (name, data), = arrays.items()
        nhwc = np.ascontiguousarray(data[: config.samples].transpose(0, 2, 3, 1), np.float32)
        calib = workdir / "calibration_nhwc.npy"
        np.save(calib, nhwc)
        np.save(workdir / SAMPLE_FILE, nhwc[:20])  # onnx2tf looks for this file before downloading one
        neutral = "[[[[" + ",".join(["0.0"] * nhwc.shape[-1]) + "]]]]"  # our data is normalized already
        one = neutral.replace("0.0", "1.0")
        out_dir = workdir / "tf"
        cmd = [str(exe), "-i", str(model.resolve()), "-o", str(out_dir), "-oiqt", "-qt", config.quant_type,
               "-iqd", config.input_type, "-oqd", config.output_type,
               "-cind", name, str(calib), neutral, one, "-n"]
        try:
            done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=config.timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise PassError(f"onnx2tf did not finish within {config.timeout_s} s") from exc
        (workdir / "onnx2tf.log").write_text(done.stdout + done.stderr)
        produced = sorted(out_dir.glob("*_full_integer_quant.tflite"))
        if done.returncode != 0 or not produced:
            tail = (done.stdout + done.stderr).strip().splitlines()[-12:]
            raise PassError(f"onnx2tf failed (exit {done.returncode}); last lines:\n" + "\n".join(tail))
        out = workdir / "model.tflite"
        out.write_bytes(produced[0].read_bytes())
        return out
