"""The agent's per-frame pipeline against bare ``InferenceSession.run`` on ready tensors.

    .venv/bin/python -m benchmarks.agent_overhead [--frames 300] [--bundles DIR]

For the demo fridge bundle (compiled here for arm64-cortex-a72-ort) and, where ../shared/data
exists, the real NanoDet int8 bundle (compiled here, about a minute, as the documented compile does
it: 100 of the 296 grocery photos to calibrate, the other 196 to evaluate; the table says what the
compile chose: its precision label, fidelity and, when int8 missed the budget, the search's pick).
``--bundles DIR`` keeps the compiled bundles there and reuses them on the next run, so several runs
(or two checkouts, alternately) measure the same bundles. Decode (JPEG bytes ->
BGR), then preprocess + infer + postprocess + telemetry bookkeeping (what the agent does per
frame, decode excluded), against the same model's bare run on an already prepared input.
Also frames per second of the whole pipeline and the process RSS idle and busy.

Where the target folds the normalisation into the model (``fold.normalize``), the bundle's
"bare run" includes that normalisation; so each frame also times the unfolded model (the
compile's step before the fold, written as a bundle of its own) bare on its normalised float
input: "vs unfolded" is the agent's whole pipeline against the model's own work alone.
Per frame, in turn: unfolded bare, bare, decode, pipeline.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from agent.frames import decode
from agent.model import LoadedBundle
from agent.runtimes import open_runtime
from agent.telemetry import Window
from compiler.bundle import write_bundle
from compiler.description import load_description
from compiler.evaluate import image_sets
from compiler.iospec import io_for
from compiler.pipeline import Pipeline
from compiler.target import load_target
from contract import signing
from contract.manifest import ModelSource
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from examples.fridge.synth import write_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
console = Console(width=200)


def compile_bundle(name: str, source: Path, description: Path, calibration: Path, evaluation: Path | None,
                   work: Path) -> tuple[Path, Path]:
    """The bundle, and the bundle of the step before ``fold.normalize`` (the same bundle without one)."""
    desc = load_description(description)
    cal, ev, _ = image_sets(calibration, evaluation, 100, 0, desc)  # no evaluation folder: the other photos
    console.log(f"{name}: {len(cal.paths)} calibration and {len(ev.paths)} evaluation images")
    target = load_target("arm64-cortex-a72-ort")
    result = Pipeline(desc, target, cal, ev, work / f"{name}-work",
                      progress=lambda m: console.log(f"{name}: {m}")).run(source)
    key = signing.generate_private_key()
    info = ModelSource(name=name, version="bench", source_uri=source.as_uri(), sha256="0" * 64)
    bundle = write_bundle(result, info, target, cal, ev, key, work / "bundles", 1).directory
    twin = bundle
    if result.final.name == "fold.normalize":
        steps = result.steps[:-1]
        unfolded = replace(result, steps=steps, io=io_for(steps[-1].model, desc))
        twin = write_bundle(unfolded, info, target, cal, ev, key, work / "unfolded", 1).directory
    shutil.rmtree(work / f"{name}-work", ignore_errors=True)  # every step's model (~220 MB for NanoDet)
    return bundle, twin


def compiled(name: str, work: Path, build: Callable[[Path], tuple[Path, Path]]) -> tuple[Path, Path]:
    """The bundle and its unfolded twin from ``work/name`` if an earlier run left them there, else built."""
    found = [sorted((work / name / kind).glob("*/manifest.json")) for kind in ("bundles", "unfolded")]
    if all(len(f) == 1 for f in found):
        console.log(f"{name}: reusing the bundles in {work / name}")
        return found[0][0].parent, found[1][0].parent
    return build(work / name)


def what(bundle: Path) -> dict[str, str]:
    """What the compile chose: the model's precision (read from its graph), fidelity, the search's pick."""
    from compiler.precision import describe
    from contract.manifest import load_manifest

    manifest = load_manifest((bundle / "manifest.json").read_bytes())
    searches = [p.config["search"] for p in manifest.passes if isinstance(p.config.get("search"), dict)]
    chosen = "; ".join(str(s.get("chosen")) for s in searches if isinstance(s, dict))
    return {"precision": describe(bundle / manifest.model_file.path).label,
            "fidelity": f"{manifest.metrics.compiled_metrics.get('fidelity', float('nan')):.4f}",
            "chosen": chosen or "as configured"}


def open_runtime_for(bundle: Path, threads: int):  # type: ignore[no-untyped-def]
    from contract.manifest import load_manifest

    manifest = load_manifest((bundle / "manifest.json").read_bytes())
    return open_runtime(manifest.target.runtime.name, bundle / manifest.model_file.path, threads)


def _open(bundle: Path, threads: int) -> LoadedBundle:
    from contract.manifest import load_manifest

    return LoadedBundle(bundle, load_manifest((bundle / "manifest.json").read_bytes()), "0" * 64,
                        open_runtime_for(bundle, threads))


def measure(bundles: tuple[Path, Path], photos: list[bytes], frames: int, threads: int) -> dict[str, float]:
    loaded, unfolded = _open(bundles[0], threads), _open(bundles[1], threads)
    process = psutil.Process()
    ready, _ = loaded.prepare(decode(photos[0], 1 << 26))
    ready_unfolded, _ = unfolded.prepare(decode(photos[0], 1 << 26))
    for _ in range(10):
        loaded.run(ready)
        unfolded.run(ready_unfolded)
    rss_idle = process.memory_info().rss
    bare, bare_unfolded, decoding, pipeline = [], [], [], []
    window = Window()
    for i in range(frames):
        started = time.perf_counter()
        unfolded.run(ready_unfolded)  # the model alone, on its normalised float input
        bare_unfolded.append(time.perf_counter() - started)

        started = time.perf_counter()
        loaded.run(ready)  # the bundle's model alone
        bare.append(time.perf_counter() - started)

        started = time.perf_counter()
        frame = decode(photos[i % len(photos)], 1 << 26)
        decoded = time.perf_counter()
        result = loaded.predict(frame, statistics=True)  # the agent's one path (agent.loop.Agent.infer_frame)
        window.inferred(frame, result.prediction, 0.0, result.model_ms, result.seen, result.input_values)
        done = time.perf_counter()
        decoding.append(decoded - started)
        pipeline.append(done - decoded)
    rss_busy = process.memory_info().rss
    ms = lambda v: float(np.median(v)) * 1000  # noqa: E731
    return {"bare": ms(bare), "unfolded": ms(bare_unfolded), "pipeline": ms(pipeline), "decode": ms(decoding),
            "fps": 1.0 / (float(np.median(pipeline)) + float(np.median(decoding))),
            "rss_idle": rss_idle / 2**20, "rss_busy": rss_busy / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bundles", type=Path, default=None,
                        help="keep the compiled bundles here and reuse them when present")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.bundles or Path(tmp)
        data = Path(tmp)
        write_dataset(data / "cal", 100, seed=31)
        write_dataset(data / "frames", 50, seed=32)
        fridge = compiled("fridge", work, lambda w: compile_bundle("fridge", MODEL_FILE, DESCRIPTION_FILE, data / "cal",
                                                                   data / "frames", w))
        photos = [p.read_bytes() for p in sorted((data / "frames").glob("*.jpg"))]
        results.append(("fridge (256x192 JPEG frames)", what(fridge[0]),
                        measure(fridge, photos, args.frames, args.threads)))
        if (SHARED / "nanodet").exists():
            nanodet = compiled("nanodet", work, lambda w: compile_bundle(
                "nanodet", SHARED / "nanodet" / "object_detection_nanodet_2022nov.onnx",
                ROOT / "examples" / "nanodet" / "model.yaml", SHARED / "grocery" / "val", None, w))
            grocery = [p.read_bytes() for p in sorted((SHARED / "grocery" / "val").rglob("*.jpg"))[:50]]
            results.append(("NanoDet (grocery JPEG photos)", what(nanodet[0]),
                            measure(nanodet, grocery, args.frames // 3, args.threads)))
        else:
            console.print(f"[yellow]NanoDet skipped: {SHARED} is absent")
    table = Table(title=f"agent pipeline overhead on {platform.machine()}, {args.threads} threads (median per frame)")
    for col in ("bundle", "precision", "fidelity", "bare run ms", "pipeline ms (no decode)", "ratio",
                "unfolded bare ms", "vs unfolded", "decode ms", "fps (all)", "RSS idle MiB", "RSS busy MiB"):
        table.add_column(col, justify="left" if col in ("bundle", "precision") else "right")
    for name, chose, r in results:
        table.add_row(name, chose["precision"], chose["fidelity"], f"{r['bare']:.3f}", f"{r['pipeline']:.3f}",
                      f"{r['pipeline'] / r['bare']:.2f}x", f"{r['unfolded']:.3f}",
                      f"{r['pipeline'] / r['unfolded']:.2f}x", f"{r['decode']:.3f}", f"{r['fps']:.0f}",
                      f"{r['rss_idle']:.0f}", f"{r['rss_busy']:.0f}")
    console.print(table)
    for name, chose, _ in results:
        console.print(f"{name}: the compile's search chose {chose['chosen']}")


if __name__ == "__main__":
    main()
