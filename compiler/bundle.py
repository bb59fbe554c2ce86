"""Write a signed bundle from a compile result: model file(s), golden I/O, reference profile,
manifest, signature, and a reproducible tarball."""

from __future__ import annotations

import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import stats as agent_stats
from agent.model import LoadedModel
from agent.preprocess import seen
from agent.runtimes.tensorrt import ENGINE_CONFIG
from agent.selftest import output_stride, run_golden
from compiler import latency
from compiler.evaluate import ImageSet, run_model
from compiler.memory import Memory
from compiler.passes.tensorrt import EXTRAS
from compiler.pipeline import CompileResult, evaluation_runtime
from compiler.precision import describe
from compiler.target import TargetProfile
from contract.bundle import file_entry, manifest_sha256, pack
from contract.common import BundleRef
from contract.errors import BundleError
from contract.manifest import (
    SIGNATURE_FILE,
    Golden,
    LatencyMeasure,
    Manifest,
    Metrics,
    ModelSource,
    PassRecord,
    ReferenceProfile,
    RuntimeRequirement,
    TargetInfo,
    dump_manifest,
    schema_for,
)
from contract.signing import sign

GOLDEN_FILE = "golden.npz"


@dataclass(frozen=True)
class Bundle:
    directory: Path
    tarball: Path
    manifest: Manifest
    ref: BundleRef


def toolchain() -> dict[str, str]:
    versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    try:
        import onnxslim

        versions["onnxslim"] = onnxslim.__version__
    except ImportError:
        pass
    return versions


def _small(frame: np.ndarray, longest: int = 96) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1:
        return frame
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _golden(result: CompileResult, target: TargetProfile, evaluation: ImageSet, directory: Path,
            cases: int) -> Golden:
    """Small real frames and strided samples of the compiled model's outputs on them (agent.selftest)."""
    model = LoadedModel.open(result.final.model, result.io, evaluation_runtime(result.final.model), 1)
    arrays: dict[str, np.ndarray] = {}
    peak = 0.0
    count = min(cases, len(evaluation.frames))
    for i, frame in enumerate(evaluation.frames[:count]):
        small = _small(frame)
        arrays[f"frame/{i}"] = small
        for j, out in enumerate(model.predict(small).outputs):
            flat = np.asarray(out, np.float32).ravel()
            stride = output_stride(flat.size)
            arrays[f"stride/{j}"] = np.array(stride)
            arrays[f"output/{i}/{j}"] = flat[::stride]
            peak = max(peak, float(np.max(np.abs(flat))) if flat.size else 0.0)
    np.savez_compressed(directory / GOLDEN_FILE, **arrays)  # type: ignore[arg-type]
    # Another CPU or runtime build may round int8 differently by a step or two: 2 % of the
    # output range (at least 1e-3) separates that from a broken runtime.
    golden = Golden(file=GOLDEN_FILE, cases=count, atol=max(1e-3, 0.02 * peak), rtol=0.0)
    with model:
        check = run_golden(model, golden, directory / GOLDEN_FILE)
    if not check.passed:
        raise BundleError(f"the bundle fails its own golden self-test on the build host (max error "
                          f"{check.max_abs_error:.4g}, tolerance {check.tolerance:.4g})")
    return golden


def _reference(result: CompileResult, target: TargetProfile, calibration: ImageSet) -> ReferenceProfile:
    with LoadedModel.open(result.final.model, result.io, evaluation_runtime(result.final.model),
                          target.host_threads) as model:
        run = run_model(model, calibration)
    top = [float(np.max(p.scores)) if p.scores.size else 0.0 for p in run.predictions]
    rates = {label: float(np.mean([label in p.labels for p in run.predictions])) for label in result.io.labels}
    return ReferenceProfile(
        samples=len(calibration.frames),
        input_histograms=agent_stats.input_histograms([agent_stats.frame_stats(seen(f, result.io.preprocessing))
                                                       for f in calibration.frames]),
        score_histogram=agent_stats.histogram(top, agent_stats.SCORE_EDGES),
        prediction_rates={k: v for k, v in rates.items() if v > 0},
    )


def _metrics(result: CompileResult, target: TargetProfile, memory: Sequence[Memory] = ()) -> Metrics:
    proxy = latency.proxy_note(target)
    host = latency.host() + (f"; {proxy}" if proxy else "")

    def measures(step_fidelity: float, accuracy: float | None, mem: Memory | None) -> dict[str, float]:
        out = {"fidelity": round(step_fidelity, 6)}
        if accuracy is not None:
            out["accuracy"] = round(accuracy, 6)
        if mem is not None:  # in-memory weights and peak working memory of one inference (compiler.memory)
            out |= {"weights_bytes": mem.weights_bytes, "peak_memory_bytes": mem.peak_bytes}
        return out

    first, last = result.float_step, result.final
    first_mem, last_mem = (memory[0], memory[-1]) if memory else (None, None)
    return Metrics(
        float_metrics=measures(first.fidelity, first.accuracy, first_mem) | {"parameters": first.stats.parameters,
                                                                              "flops": first.stats.flops},
        compiled_metrics=measures(last.fidelity, last.accuracy, last_mem) | {
            "parameters": last.stats.parameters, "flops": last.stats.flops,
            "sparsity": round(last.stats.sparsity, 6), "latency_vs_float": round(last.latency.ratio, 4),
            "int8_compute_fraction": round(describe(last.model).int8_fraction, 4),
            "evaluations": result.counts.evaluations},
        float_size_bytes=first.stats.size_bytes, compiled_size_bytes=last.stats.size_bytes,
        float_latency=LatencyMeasure(p50_ms=first.latency_p50, p95_ms=first.latency_p95, host=host,
                                     threads=target.host_threads),
        compiled_latency=LatencyMeasure(p50_ms=last.latency_p50, p95_ms=last.latency_p95, host=host,
                                        threads=target.host_threads),
    )


def write_bundle(result: CompileResult, source: ModelSource, target: TargetProfile, calibration: ImageSet,
                 evaluation: ImageSet, key: Ed25519PrivateKey, out_dir: Path, sequence: int,
                 golden_cases: int = 3, stream: str | None = None, memory: Sequence[Memory] = ()) -> Bundle:
    """``sequence`` must grow within ``stream`` (default: the model's name; see compiler.sequence);
    ``memory``, per step (``compiler.review``), puts the float and compiled figures in the metrics."""
    stem = f"{source.name}-{source.version}-{target.name}-{sequence}"
    directory, tarball = out_dir / stem, out_dir / f"{stem}.tar.gz"
    # written beside, under a hidden name, and moved in place only when signed and packed: a bundle
    # that fails half-way (its golden self-test, a full disk) leaves nothing in the output folder
    staging, packing = out_dir / f".{stem}.partial", out_dir / f".{stem}.tar.gz.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _write(result, source, target, calibration, evaluation, key, staging, sequence, golden_cases,
                          stream, memory)
        pack(staging, packing)
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        packing.replace(tarball)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        packing.unlink(missing_ok=True)
    ref = BundleRef(model_name=source.name, model_version=source.version, target=target.name, sequence=sequence,
                    sha256=manifest_sha256(directory))
    return Bundle(directory, tarball, manifest, ref)


def _write(result: CompileResult, source: ModelSource, target: TargetProfile, calibration: ImageSet,
           evaluation: ImageSet, key: Ed25519PrivateKey, directory: Path, sequence: int, golden_cases: int,
           stream: str | None, memory: Sequence[Memory]) -> Manifest:
    """The bundle's files, its manifest and signature, in ``directory``."""
    model_name = "model" + result.final.model.suffix
    shutil.copy(result.final.model, directory / model_name)
    files = [file_entry(directory, model_name, "model")]
    extra = result.final.model.parent / EXTRAS / ENGINE_CONFIG
    if extra.is_file():  # only the build settings: an engine is built by the device, never bundled
        shutil.copy(extra, directory / extra.name)
        files.append(file_entry(directory, extra.name, "engine_config"))
    golden = _golden(result, target, evaluation, directory, golden_cases)
    files.append(file_entry(directory, GOLDEN_FILE, "golden"))
    manifest = Manifest(
        schema_=schema_for(result.io),  # v3 unless the preprocessing needs v4: older agents still read it
        stream=stream or source.name,
        boards=target.board.names,
        sequence=sequence,
        model=source,
        target=TargetInfo(name=target.name, profile=target.model_dump(mode="json"),
                          runtime=RuntimeRequirement(name=target.runtime.name, min_version=target.runtime.min_version)),
        files=files,
        io=result.io,
        passes=[PassRecord(name=s.name, config=s.config) for s in result.steps[1:]],
        toolchain=toolchain(),
        calibration_sha256=calibration.sha256,
        metrics=_metrics(result, target, memory),
        golden=golden,
        reference=_reference(result, target, calibration),
    )
    data = dump_manifest(manifest)
    (directory / "manifest.json").write_bytes(data)
    (directory / SIGNATURE_FILE).write_bytes(sign(data, key))
    return manifest
