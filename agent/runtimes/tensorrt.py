"""TensorRT runtime (NVIDIA Jetson).

The device builds the engine itself, at install (the golden self-test opens the runtime), from the
bundle's ONNX and its ``engine_config.json``, and caches the serialized plan keyed by the ONNX's
sha256, the build settings, the TensorRT version and the GPU: an engine is only valid for the
TensorRT version and GPU that built it. Written against TensorRT 10's documented Python API:

- build: an optimization profile (``create_optimization_profile`` / ``set_shape`` /
  ``add_optimization_profile``) from the config's ``profile`` whenever a network input has a
  dynamic dimension (without one such a build fails);
- inference: ``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3``, device memory
  from cuda-python; an output whose shape depends on the data (NonZero, NonMaxSuppression: -1
  in its shape once the inputs are set) gets an ``IOutputAllocator`` that allocates when
  TensorRT knows the size and is told the shape (``notify_shape``).

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


Shape = tuple[int, ...]


def profile_shapes(inputs: Mapping[str, Sequence[int]], settings: Mapping[str, Any]) -> dict[str, tuple[Shape, ...]]:
    """(min, opt, max) for every network input with a dynamic (-1) dimension, from the config's
    ``profile``; static inputs need none. A dynamic input without a profile, or a profile that
    contradicts a static dimension, is an error naming the input."""
    profile = settings.get("profile", {})
    shapes: dict[str, tuple[Shape, ...]] = {}
    for name, dims in inputs.items():
        if -1 not in dims:
            continue
        given = profile.get(name)
        if not given:
            raise ModelLoadFailed(f"dynamic input {name} has no optimization profile in {ENGINE_CONFIG}")
        triple = tuple(tuple(int(d) for d in given[key]) for key in ("min", "opt", "max"))
        if any(len(t) != len(dims) or any(d not in (-1, v) for d, v in zip(dims, t, strict=True)) for t in triple):
            raise ModelLoadFailed(f"the profile of {name} ({triple}) does not fit its shape {tuple(dims)}")
        shapes[name] = triple
    return shapes


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
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    shapes = profile_shapes(inputs, settings)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, best, high) in shapes.items():
            profile.set_shape(name, low, best, high)
        config.add_optimization_profile(profile)
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


def _output_allocator(trt: Any, cudart: Any) -> Any:
    """An ``IOutputAllocator`` (TensorRT 10) for outputs sized by the data: device memory when
    TensorRT asks for it (grown, never shrunk), and the shape it reports."""

    class OutputAllocator(trt.IOutputAllocator):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.pointer, self.size = 0, 0
            self.shape: tuple[int, ...] = ()

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            if size > self.size:
                if self.pointer:
                    _check(cudart.cudaFree(self.pointer))
                self.pointer, self.size = int(_check(cudart.cudaMalloc(max(size, 1)))), size
            return self.pointer

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int,
                                    stream: int) -> int:
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shape = tuple(int(d) for d in shape)

    return OutputAllocator()


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
        # outputs whose shape depends on the data: -1 in the engine's shape of an output
        self.allocators = {n: _output_allocator(trt, self.cudart) for n in self.output_names
                           if -1 in tuple(self.engine.get_tensor_shape(n))}
        for name, allocator in self.allocators.items():
            self.context.set_output_allocator(name, allocator)

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
        pointers = [p for p, _ in self.buffers.values()] + [a.pointer for a in self.allocators.values()]
        for pointer in pointers:
            if pointer:
                _check(self.cudart.cudaFree(pointer))
        self.buffers.clear()
        self.allocators.clear()
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
        for name in self.output_names:
            if name not in self.allocators:  # sized by the input shapes: known before the run
                nbytes = int(np.prod(tuple(self.context.get_tensor_shape(name)))) * self.dtypes[name].itemsize
                self._buffer(name, nbytes)
        if not self.context.execute_async_v3(self.stream):
            raise ModelLoadFailed("TensorRT inference failed (execute_async_v3 returned false)")
        outputs = []
        for name in self.output_names:
            allocator = self.allocators.get(name)
            shape = allocator.shape if allocator is not None else tuple(self.context.get_tensor_shape(name))
            pointer = allocator.pointer if allocator is not None else self.buffers[name][0]
            host = np.empty(shape, dtype=self.dtypes[name])
            if host.nbytes:
                _check(cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes,
                                              kinds.cudaMemcpyDeviceToHost, self.stream))
            outputs.append(host)
        _check(cudart.cudaStreamSynchronize(self.stream))
        return outputs
