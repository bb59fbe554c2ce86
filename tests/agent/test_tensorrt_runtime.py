"""The TensorRT runtime: the engine cache key and the missing-runtime errors everywhere; the build
and inference only where TensorRT (and a GPU) exist, which this project's CI does not have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import RuntimeUnavailableError
from agent.runtimes import open_runtime
from agent.runtimes.tensorrt import DEFAULT_SETTINGS, ENGINE_CONFIG, build_settings, engine_key


def test_engine_key_changes_with_model_settings_version_and_gpu() -> None:
    base = engine_key("a" * 64, DEFAULT_SETTINGS, "10.3.0", "Orin")
    assert base == engine_key("a" * 64, dict(DEFAULT_SETTINGS), "10.3.0", "Orin")
    others = {engine_key("b" * 64, DEFAULT_SETTINGS, "10.3.0", "Orin"),
              engine_key("a" * 64, {**DEFAULT_SETTINGS, "int8": True}, "10.3.0", "Orin"),
              engine_key("a" * 64, DEFAULT_SETTINGS, "10.4.0", "Orin"),
              engine_key("a" * 64, DEFAULT_SETTINGS, "10.3.0", "Orin Nano")}
    assert base not in others and len(others) == 4


def test_build_settings_read_the_bundles_engine_config(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    assert build_settings(model) == DEFAULT_SETTINGS
    (tmp_path / ENGINE_CONFIG).write_text(json.dumps({"int8": True, "workspace_mb": 256}))
    settings = build_settings(model)
    assert settings["int8"] and settings["workspace_mb"] == 256 and settings["fp16"]


def test_missing_tensorrt_says_what_to_install(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeUnavailableError, match="needs TensorRT"):
            open_runtime("tensorrt", tmp_path / "model.onnx", 1, tmp_path / "engines")
    else:
        pytest.skip("tensorrt is installed: the engine test below runs instead")


def test_engine_built_once_and_cached(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (no NVIDIA GPU / index)")
    from tests.compiler.test_passes import small_cnn

    model = small_cnn(tmp_path / "model.onnx", batch=1)
    first = open_runtime("tensorrt", model, 1, tmp_path / "engines")
    plans = list((tmp_path / "engines").glob("*.plan"))
    assert len(plans) == 1
    second = open_runtime("tensorrt", model, 1, tmp_path / "engines")
    assert list((tmp_path / "engines").glob("*.plan")) == plans  # loaded from the cache, not rebuilt
    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    a, b = first.run({first.input_names[0]: x}), second.run({second.input_names[0]: x})
    assert np.allclose(a[0], b[0])
