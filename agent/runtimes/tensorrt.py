"""TensorRT runtime (NVIDIA Jetson).

The device builds the engine itself, at install (the golden self-test opens the runtime), from the
bundle's ONNX and its ``engine_config.json``, and caches the serialized plan keyed by the ONNX's
sha256, the build settings, the TensorRT version and the GPU: an engine is only valid for the
TensorRT version and GPU that built it. Inference uses TensorRT 10's documented tensor API
(``set_tensor_address`` + ``execute_async_v3``) with device memory from cuda-python.

NOT run in this project's CI: TensorRT and a GPU cannot be had there. The code follows the
documented APIs; the cache key and the missing-runtime errors are tested everywhere, the build and
inference only where ``tensorrt`` imports.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ModelLoadFailed, RuntimeUnavailableError

ENGINE_CONFIG = "engine_config.json"
DEFAULT_SETTINGS: dict[str, Any] = {"fp16": True, "int8": False, "workspace_mb": 1024, "builder_optimization_level": 3}


def _tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeUnavailableError("this bundle needs TensorRT: install JetPack's tensorrt Python package "
                                      "(an NVIDIA GPU is required)") from exc
    return trt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise RuntimeUnavailableError("the TensorRT runtime needs cuda-python for device memory "
                                          "(pip install 'coldchain[jetson]')") from exc
    return cudart


def _check(result: Any) -> Any:
    """cuda-python calls return (error, value...): raise on an error, return the value(s)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ModelLoadFailed(f"CUDA error {int(error)} ({error})")
    return values[0] if len(values) == 1 else values


def engine_key(onnx_sha256: str, settings: Mapping[str, Any], trt_version: str, gpu: str) -> str:
    """What an engine is valid for: this model, these build settings, this TensorRT, this GPU."""
    identity = {"onnx": onnx_sha256, "settings": dict(settings), "tensorrt": trt_version, "gpu": gpu}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def build_settings(model: Path) -> dict[str, Any]:
    """The bundle's engine_config.json beside the model, over the defaults."""
    path = model.parent / ENGINE_CONFIG
    return {**DEFAULT_SETTINGS, **(json.loads(path.read_text()) if path.is_file() else {})}


def build_engine(model: Path, settings: Mapping[str, Any], out: Path) -> Path:
    """Build a serialized engine from ONNX with TensorRT's documented Python API (written atomically)."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadFailed(f"TensorRT cannot parse {model.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings["workspace_mb"]) << 20)
    config.builder_optimization_level = int(settings["builder_optimization_level"])
    if settings.get("fp16"):
        config.set_flag(trt.BuilderFlag.FP16)
    if settings.get("int8"):
        config.set_flag(trt.BuilderFlag.INT8)  # explicit QDQ in the ONNX carries the scales
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ModelLoadFailed(f"TensorRT failed to build an engine from {model.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_bytes(bytes(engine))
    os.replace(partial, out)
    return out


class TensorRTRuntime:
    name = "tensorrt"

    def __init__(self, model: Path, threads: int = 1, cache_dir: Path | None = None) -> None:
        trt, self.cudart = _tensorrt(), _cudart()
        self.version = str(trt.__version__)
        props = _check(self.cudart.cudaGetDeviceProperties(0))
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        settings = build_settings(model)
        key = engine_key(hashlib.sha256(model.read_bytes()).hexdigest(), settings, self.version, gpu)
        plan = (cache_dir or model.parent / "engines") / f"{key}.plan"
        if not plan.is_file():
            build_engine(model, settings, plan)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise ModelLoadFailed(f"TensorRT could not load the cached engine {plan}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = {n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        self.input_names = [n for n in names if n in inputs]
        self.output_names = [n for n in names if n not in inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.stream = _check(self.cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _check(self.cudart.cudaFree(pointer))
            pointer = int(_check(self.cudart.cudaMalloc(nbytes)))
            self.buffers[name] = (pointer, nbytes)
        self.context.set_tensor_address(name, pointer)
        return pointer

    def close(self) -> None:
        """Free every device buffer and the stream (the engine and context go with their references)."""
        for pointer, _ in self.buffers.values():
            if pointer:
                _check(self.cudart.cudaFree(pointer))
        self.buffers.clear()
        if self.stream is not None:
            _check(self.cudart.cudaStreamDestroy(self.stream))
            self.stream = None
        self.context = self.engine = None

    def run(self, feed: Mapping[str, npt.NDArray[Any]]) -> Sequence[npt.NDArray[Any]]:
        cudart = self.cudart
        kinds = cudart.cudaMemcpyKind
        for name in self.input_names:
            array = np.ascontiguousarray(feed[name], dtype=self.dtypes[name])
            self.context.set_input_shape(name, array.shape)
            pointer = self._buffer(name, array.nbytes)
            _check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                          kinds.cudaMemcpyHostToDevice, self.stream))
        outputs = []
        for name in self.output_names:
            host = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name])
            self._buffer(name, host.nbytes)
            outputs.append(host)
        if not self.context.execute_async_v3(self.stream):
            raise ModelLoadFailed("TensorRT inference failed (execute_async_v3 returned false)")
        for name, host in zip(self.output_names, outputs, strict=True):
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[name][0], host.nbytes,
                                          kinds.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return outputs
