"""``convert.litert``: ONNX -> full-integer int8 TFLite with onnx2tf, for LiteRT (NHWC).

onnx2tf needs TensorFlow and numpy 1.26, which cannot live beside the rest of coldchain,
so it runs as a subprocess from its own virtual environment (``scripts/setup-onnx2tf.sh``
creates it; ``venv`` or ``COLDCHAIN_ONNX2TF_VENV`` points to it, else it is looked for beside the
virtual environment coldchain runs in, in the source checkout, and in the user's data folder).
Every path handed to it is absolute: it runs in its own working directory. It is given our own
calibration data (``-cind``) and our own placeholder sample file in its working directory,
so it never downloads anything.

One onnx2tf run writes every TFLite variant (full-integer int8, int8 with float I/O, int16
activations, dynamic range, float16, float32); ``variant`` picks the one returned. With
``cache_dir`` (filled by the pipeline) the run's variants are kept, keyed by the model, the
calibration data and the conversion settings, so a search over variants converts once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from compiler.errors import PassError
from compiler.passes.base import Pass, PassConfig
from compiler.passes.calibration import load_samples

DEFAULT_VENV = Path(__file__).resolve().parents[2] / ".venv-onnx2tf"  # a source checkout's
VENV_NAME = ".venv-onnx2tf"
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
INPUT_STEM = "model"  # onnx2tf names its outputs <input stem>_<variant>.tflite
# variant -> the suffix of onnx2tf's output file (model_<suffix>.tflite)
VARIANTS = {
    "full_integer": "full_integer_quant",  # int8 everywhere, int8 input
    "integer": "integer_quant",  # int8 inside, float32 input and output
    "full_integer_16x8": "full_integer_quant_with_int16_act",  # int8 weights, int16 activations
    "integer_16x8": "integer_quant_with_int16_act",
    "dynamic_range": "dynamic_range_quant",  # int8 weights, float activations
    "float16": "float16",  # float16 weights
    "float32": "float32",
}


class ConvertLiteRTConfig(PassConfig):
    quant_type: Literal["per-channel", "per-tensor"] = "per-channel"
    input_type: Literal["int8", "uint8", "float32"] = "int8"
    output_type: Literal["int8", "uint8", "float32"] = "float32"
    samples: Annotated[int, Field(ge=1, le=1000)] = 100
    timeout_s: Annotated[int, Field(ge=10, le=7200)] = 1200
    variant: Literal["full_integer", "integer", "full_integer_16x8", "integer_16x8", "dynamic_range", "float16",
                     "float32"] = "full_integer"
    venv: Path | None = None
    calibration: Path | None = None  # filled by the pipeline
    cache_dir: Path | None = None  # filled by the pipeline: onnx2tf's variants, kept per conversion


def onnx2tf_candidates(config: ConvertLiteRTConfig) -> list[Path]:
    """Where onnx2tf's environment is looked for, in order: the pass config, COLDCHAIN_ONNX2TF_VENV,
    beside the environment coldchain runs in, the source checkout, the user's data folder."""
    if config.venv is not None:
        return [config.venv.resolve()]
    if os.environ.get("COLDCHAIN_ONNX2TF_VENV"):
        return [Path(os.environ["COLDCHAIN_ONNX2TF_VENV"]).resolve()]
    data_home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return [Path(sys.prefix).resolve().parent / VENV_NAME, DEFAULT_VENV, data_home / "coldchain" / "onnx2tf"]


def onnx2tf_executable(config: ConvertLiteRTConfig) -> Path:
    candidates = onnx2tf_candidates(config)
    for venv in candidates:
        if (venv / "bin" / "onnx2tf").exists():
            return venv / "bin" / "onnx2tf"
    raise PassError(f"onnx2tf is not installed (looked in {', '.join(map(str, candidates))}): create its own "
                    "virtual environment with scripts/setup-onnx2tf.sh VENV (TensorFlow, numpy 1.26) and set "
                    "COLDCHAIN_ONNX2TF_VENV=VENV")


class ConvertLiteRT(Pass[ConvertLiteRTConfig]):
    name = "convert.litert"
    Config = ConvertLiteRTConfig
    summary = "onnx2tf (own venv, subprocess) -> TFLite (full-integer int8 or another variant), our calibration data"

    def run(self, model: Path, config: ConvertLiteRTConfig, workdir: Path) -> Path:
        converted = _cached(model, config)
        if converted is None or not converted.is_dir():
            produced = self.convert(model, config, workdir)
            if converted is None:
                converted = produced
            else:  # complete or absent: written beside, then renamed
                partial = converted.with_name(converted.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                for tflite in produced.glob("*.tflite"):
                    shutil.copy(tflite, partial / tflite.name)
                partial.rename(converted)
        chosen = converted / f"{INPUT_STEM}_{VARIANTS[config.variant]}.tflite"
        if not chosen.exists():
            raise PassError(f"onnx2tf wrote no {config.variant} model ({chosen.name} is not in {converted})")
        out = workdir / "model.tflite"
        out.write_bytes(chosen.read_bytes())
        return out

    def convert(self, model: Path, config: ConvertLiteRTConfig, workdir: Path) -> Path:
        """Run onnx2tf; the folder holding every variant it wrote."""
        exe = onnx2tf_executable(config)
        workdir = workdir.resolve()  # onnx2tf runs in workdir: a relative path would point below it
        arrays = load_samples(config.calibration, "convert.litert")
        (name, data), = arrays.items()
        nhwc = np.ascontiguousarray(data[: config.samples].transpose(0, 2, 3, 1), np.float32)
        calib = workdir / "calibration_nhwc.npy"
        np.save(calib, nhwc)
        np.save(workdir / SAMPLE_FILE, nhwc[:20])  # onnx2tf looks for this file before downloading one
        neutral = "[[[[" + ",".join(["0.0"] * nhwc.shape[-1]) + "]]]]"  # our data is normalized already
        one = neutral.replace("0.0", "1.0")
        out_dir = workdir / "tf"
        # onnx2tf rewrites its input file (onnxsim): it gets a copy, the pipeline's model stays as it was
        source = workdir / f"{INPUT_STEM}.onnx"
        shutil.copy(model, source)
        cmd = [str(exe), "-i", str(source), "-o", str(out_dir), "-oiqt", "-qt", config.quant_type,
               "-iqd", config.input_type, "-oqd", config.output_type,
               "-cind", name, str(calib), neutral, one, "-n"]
        try:
            done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=config.timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise PassError(f"onnx2tf did not finish within {config.timeout_s} s") from exc
        log = workdir / "onnx2tf.log"
        log.write_text(done.stdout + done.stderr)
        if done.returncode != 0 or not sorted(out_dir.glob("*.tflite")):
            lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            last = lines[-1] if lines else "no output"
            raise PassError(f"onnx2tf failed (exit {done.returncode}): {last} (full log: {log})")
        return out_dir


def _cached(model: Path, config: ConvertLiteRTConfig) -> Path | None:
    """The cache folder of this conversion (model, calibration, settings), or None without a cache."""
    if config.cache_dir is None:
        return None
    digest = hashlib.sha256()
    for path in (model, config.calibration):
        if path is not None:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    settings = config.model_dump(mode="json", include={"quant_type", "input_type", "output_type", "samples"})
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return config.cache_dir / f"onnx2tf-{digest.hexdigest()[:32]}"
