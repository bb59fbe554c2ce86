"""Our int8 against plain onnxruntime quantize_static defaults, the publisher's int8 and
optimum's arm64 preset: size, fidelity (and accuracy), latency on this host. One table.

    .venv/bin/python -m benchmarks.compile_quality [--model nanodet|fridge|both]

NanoDet needs ../shared/data (calibrated on 100 grocery photos, evaluated on the other 196);
the fridge model uses 100 + 400 generated photos with labels.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.variants import Row, interleaved_latency, measure, plain_ort
from compiler.description import ModelDescription, load_description
from compiler.evaluate import ImageSet, image_sets
from compiler.passes.calibration import load_samples
from compiler.pipeline import Pipeline
from compiler.target import PassSpec, load_target
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from examples.fridge.synth import write_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
console = Console(width=160)


def optimum_arm64(source: Path, calibration: Path, out_dir: Path) -> Path | None:
    try:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig
    except ImportError:
        return None
    from datasets import Dataset

    arrays = load_samples(calibration, "optimum")
    (name, data), = arrays.items()
    dataset = Dataset.from_dict({name: [x for x in data]})
    quantizer = ORTQuantizer.from_pretrained(source.parent, file_name=source.name)
    config = AutoQuantizationConfig.arm64(is_static=True, per_channel=True)
    scratch = out_dir / "calibration"
    scratch.mkdir(parents=True, exist_ok=True)
    # fit() writes its calibration graph (augmented_model.onnx) into the working directory by default
    with contextlib.chdir(scratch):
        ranges = quantizer.fit(dataset=dataset, calibration_config=AutoCalibrationConfig.minmax(dataset),
                               onnx_augmented_model_name=str(scratch / "augmented_model.onnx"),
                               operators_to_quantize=config.operators_to_quantize)
    quantizer.quantize(save_dir=out_dir, quantization_config=config, calibration_tensors_range=ranges)
    return next(out_dir.glob("*.onnx"))


def compare(name: str, source: Path, description: ModelDescription, cal: ImageSet, ev: ImageSet,
            publisher: Path | None, work: Path) -> list[Row]:
    target = load_target("arm64-cortex-a72-ort")
    p = Pipeline(description, target, cal, ev, work, progress=lambda m: console.log(f"{name}: {m}"))
    started = time.perf_counter()
    result = p.run(source)  # the whole a72 pipeline, with its float fallback when int8 is over budget
    seconds = time.perf_counter() - started
    float_step, ref = result.float_step, result.reference
    feeds, _ = ev.inputs(result.io.preprocessing, result.io.inputs[0].name)
    rows = [Row(name, "float32 (source)", float_step.stats.size_bytes, 1.0, float_step.accuracy, float("nan"),
                path=source)]
    kept = f", {len(result.kept_in_float)} stem nodes kept in float" if result.kept_in_float else ""
    rows.append(measure(p, ref, name, "coldchain a72 bundle (QDQ U8S8 per-channel, float biases, shared Concat "
                        "ranges)" + kept, result.final.model, float_step.accuracy, f"{seconds:.0f} s whole pipeline"))
    clean = result.steps[1].model  # after cleanup: what the other quantizers get
    before_int8 = result.steps[-2].model  # what our quantize.static got (after fold/pruning where they apply)
    calibration = p.calibration_file()
    spec = next(s for s in target.passes if s.name == "quantize.static")
    plain, _ = p.apply_pass(spec, before_int8, {}, "plain")
    rows.append(measure(p, ref, name, "coldchain int8, no float fallback", plain, float_step.accuracy))
    corrected_spec = PassSpec(name="quantize.static", config={**spec.config, "bias_correction": True})
    corrected, _ = p.apply_pass(corrected_spec, before_int8, {}, "corrected")
    rows.append(measure(p, ref, name, "coldchain int8 + layer-wise bias correction, no fallback", corrected,
                        float_step.accuracy))
    baseline = plain_ort(source, calibration, work / "ort-defaults.onnx")
    rows.append(measure(p, ref, name, "onnxruntime quantize_static, defaults", baseline, float_step.accuracy))
    if publisher is not None:
        rows.append(measure(p, ref, name, "publisher's int8", publisher, float_step.accuracy))
    optimum = optimum_arm64(clean, calibration, work / "optimum")
    if optimum is None:
        rows.append(Row(name, "optimum AutoQuantizationConfig.arm64", 0, float("nan"), None, float("nan"),
                        "not run: the hf extra (optimum) is not installed"))
    else:
        rows.append(measure(p, ref, name, "optimum AutoQuantizationConfig.arm64", optimum, float_step.accuracy))
    interleaved_latency(rows, feeds[0], target.host_threads)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["nanodet", "fridge", "both"], default="both")
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model in ("fridge", "both"):
            write_dataset(work / "fridge-cal", 100, seed=201)
            write_dataset(work / "fridge-eval", 400, seed=202)
            desc = load_description(DESCRIPTION_FILE)
            cal, ev, _ = image_sets(work / "fridge-cal", work / "fridge-eval", 100, 0, desc)
            rows += compare("fridge", MODEL_FILE, desc, cal, ev, None, work / "fridge")
        if args.model in ("nanodet", "both"):
            if not (SHARED / "nanodet").exists():
                console.print(f"[yellow]skipping NanoDet: {SHARED} is absent")
            else:
                desc = load_description(ROOT / "examples" / "nanodet" / "model.yaml")
                cal, ev, _ = image_sets(SHARED / "grocery" / "val", None, 100, 0, desc)
                rows += compare("nanodet", SHARED / "nanodet" / "object_detection_nanodet_2022nov.onnx", desc, cal,
                                ev, SHARED / "nanodet" / "object_detection_nanodet_2022nov_int8.onnx",
                                work / "nanodet")
    table = Table(title=f"compile quality on {platform.machine()} ({platform.processor() or 'cpu'}), 2 threads")
    for col in ("model", "variant", "size", "vs float", "fidelity", "accuracy", "p50 ms", "vs float", "note"):
        table.add_column(col)
    base: dict[str, Row] = {}
    for r in rows:
        base.setdefault(r.model, r)
        b = base[r.model]
        table.add_row(r.model, r.variant, f"{r.size:,}" if r.size else "-",
                      f"{r.size / b.size:.2f}x" if r.size else "-", f"{r.fidelity:.4f}",
                      "-" if r.accuracy is None else f"{r.accuracy:.4f}", f"{r.p50:.2f}",
                      f"{r.p50 / b.p50:.2f}x" if r.p50 == r.p50 else "-", r.note)
    console.print(table)


if __name__ == "__main__":
    main()
