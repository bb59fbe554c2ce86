"""The compiler on models nobody tuned it on: the zoo's trained classifiers and NanoDet, each
compiled with ``coldchain compile`` for three targets, beside plain onnxruntime ``quantize_static``.

    python -m benchmarks.generality [--work ~/.cache/coldchain-zoo] [--nets mnv3 resnet shared dwsep]
                                    [--no-nanodet] [--targets ...] [--markdown table.md]

Zoo models (``benchmarks.zoo``) are trained on the grocery photos first when the work directory
has none (the ``train`` extra), then handed to the compiler as an ML engineer would: the ONNX file,
its model description, the training photos as ``--calibration`` (100 used) and the held-out photos
with their ``labels.csv`` as ``--evaluation``. NanoDet: calibrated on 100 of the 296 grocery photos,
evaluated on the other 196, as in ``compile_quality``. Every variant is then measured the same way
on the same held-out photos (the agent's preprocess, runtime and postprocess): size, fidelity
(top-1 agreement with the float model; NanoDet: mAP@0.5 against the float model's detections),
accuracy, latency against the float model timed interleaved in rounds on this host, and the
Conv/Gemm ops still in float. A compile that fails is a row with its reason, never a crash.
Needs ``../shared/data``; skips what is absent.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.variants import Row, float_compute, interleaved_latency, measure, plain_ort
from benchmarks.zoo import photos as grocery
from benchmarks.zoo.store import DEFAULT_WORK, TrainConfig, cached
from compiler import onnxio
from compiler.description import load_description
from compiler.evaluate import image_sets
from compiler.pipeline import Pipeline
from compiler.target import load_target
from contract.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]
NANODET = grocery.SHARED / "nanodet" / "object_detection_nanodet_2022nov.onnx"
TARGETS = ("arm64-cortex-a72-ort", "arm64-litert", "jetson-orin-trt-int8")
NETS = ("mnv3", "resnet", "shared", "dwsep")
CALIBRATION_COUNT = 100
# what the latency of a target's bundle is, measured here
PROXY = {"arm64-cortex-a72-ort": "onnxruntime on this host", "arm64-litert": "LiteRT (XNNPACK) on this host",
         "jetson-orin-trt-int8": "onnxruntime CPU on this host, not TensorRT"}
console = Console(width=200)
Say = Callable[[str], None]


@dataclass(frozen=True)
class Subject:
    name: str
    source: Path
    description: Path
    calibration: Path
    evaluation: Path | None  # None: the calibration folder's images not used to calibrate
    about: str


@dataclass(frozen=True)
class Compiled:
    outcome: str  # ok | over budget | error
    reason: str = ""
    model: Path | None = None
    excluded: tuple[str, ...] = ()  # nodes the compile kept in float (its passes' exclude_nodes)
    fidelity: float | None = None  # the compile's own figure (a failure's best attempt)
    seconds: float = 0.0


def coldchain(*args: str) -> list[str]:
    """The ``coldchain`` command of this checkout, in this interpreter."""
    return [sys.executable, "-c", "from coldchain.cli import main; main()", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def signing_key(work: Path) -> Path:
    key = work / "keys" / "coldchain.key"
    if not key.exists():
        subprocess.run(coldchain("keys", "generate", "--out", str(key.parent)), check=True, env=child_env(),
                       capture_output=True, text=True)
    return key


def failure_reason(out: Path, stderr: str) -> str:
    """The compile's own one-line reason (its compile.log), else the last lines it printed."""
    for log in sorted(out.glob(".work/*/compile.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("FAILED at "):
                return line.removeprefix("FAILED at ")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " ".join(lines[-3:]) or "no reason given"


def compile_target(subject: Subject, target: str, key: Path, out: Path, timeout: float) -> Compiled:
    """``coldchain compile`` for one target, in its own process; every outcome is a result."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = [str(subject.source), "--description", str(subject.description), "-t", target, "--calibration",
            str(subject.calibration), "--calibration-count", str(CALIBRATION_COUNT), "--key", str(key),
            "--out", str(out), "--sequence", "1"]
    if subject.evaluation is not None:
        args += ["--evaluation", str(subject.evaluation)]
    started = time.perf_counter()
    try:
        done = subprocess.run(coldchain("compile", *args), env=child_env(), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Compiled("error", f"timed out after {timeout:.0f} s", seconds=timeout)
    seconds = time.perf_counter() - started
    (out / "compile.out").write_text(done.stdout + "\n" + done.stderr)
    manifests = sorted(out.glob("*/manifest.json"))
    if done.returncode != 0 or not manifests:
        reason = failure_reason(out, done.stderr) if done.returncode else "no bundle was written"
        shutil.rmtree(out / ".work", ignore_errors=True)
        budget = re.search(r"fidelity ([0-9.]+) \(budget", reason)
        over = re.search(r"over budget|within budget|max_model_mb", reason) is not None
        return Compiled("over budget" if over else "error", reason,
                        fidelity=float(budget.group(1)) if budget else None, seconds=seconds)
    shutil.rmtree(out / ".work", ignore_errors=True)  # ~200 MB per NanoDet target
    manifest = load_manifest(manifests[0].read_bytes())
    model = next(manifests[0].parent / f.path for f in manifest.files if f.role == "model")
    excluded = tuple(str(n) for p in manifest.passes for n in p.config.get("exclude_nodes") or [])  # type: ignore[union-attr]
    return Compiled("ok", model=model, excluded=excluded, seconds=seconds,
                    fidelity=manifest.metrics.compiled_metrics.get("fidelity"))


def kept_note(model: Path, excluded: tuple[str, ...] = ()) -> str:
    try:
        floats, total = float_compute(model)
    except Exception as exc:  # a graph we cannot read is a note, not a crash
        return f"unknown ({type(exc).__name__})"
    head = f"{len(excluded)} node(s) by the fallback; " if excluded else ""
    return f"{head}{floats}/{total} Conv/Gemm float"


def evaluate(subject: Subject, targets: list[str], key: Path, work: Path, threads: int, rounds: int,
             timeout: float, say: Say) -> list[Row]:
    desc = load_description(subject.description)
    cal, ev, _ = image_sets(subject.calibration, subject.evaluation, CALIBRATION_COUNT, 0, desc)
    scratch = work / "runs" / subject.name
    shutil.rmtree(scratch, ignore_errors=True)
    p = Pipeline(desc, load_target(TARGETS[0]), cal, ev, scratch / "measure")  # measures only, compiles nothing
    (p.workdir / "float").mkdir(parents=True)
    onnxio.copy(subject.source, p.workdir / "float" / "model.onnx")  # with its external data, if any
    say(f"{subject.name}: measuring the float model on {len(ev.paths)} held-out photos")
    float_step, ref, io = p.measure("float", p.workdir / "float" / "model.onnx", {}, None, None)
    feeds, _ = ev.inputs(io.preprocessing, io.inputs[0].name)
    float_row = Row(subject.name, "float32 (source)", float_step.stats.size_bytes, 1.0, float_step.accuracy,
                    float("nan"), subject.about, subject.source, feeds[0])
    float_row.extra = {"outcome": "-", "kept": "all (float model)"}
    rows = [float_row]
    for target in targets:
        say(f"{subject.name}: coldchain compile -t {target}")
        got = compile_target(subject, target, key, scratch / target, timeout)
        variant = f"coldchain {target}"
        if got.model is None:
            row = Row(subject.name, variant, 0, float("nan"), None, float("nan"), got.reason)
        else:
            row = measure(p, ref, subject.name, variant, got.model, float_step.accuracy)
            if got.fidelity is not None and abs(got.fidelity - row.fidelity) > 1e-3:
                row.note = f"the compile reported fidelity {got.fidelity:.4f}"
        row.extra = {"outcome": got.outcome, "seconds": got.seconds, "proxy": PROXY.get(target, ""),
                     "best": got.fidelity if got.model is None else None,
                     "kept": kept_note(got.model, got.excluded) if got.model else ""}
        say(f"{subject.name} -> {target}: {got.outcome} in {got.seconds:.0f} s"
            + (f" ({got.reason[:160]})" if got.reason else ""))
        rows.append(row)
    calibration = p.calibration_file()  # the same 100 photos the compiler calibrated on
    for per_channel in (False, True):
        variant = f"onnxruntime quantize_static, {'per-channel' if per_channel else 'defaults'}"
        say(f"{subject.name}: {variant}")
        out = scratch / f"ort-{'per-channel' if per_channel else 'defaults'}.onnx"
        started = time.perf_counter()
        try:
            plain_ort(subject.source, calibration, out, per_channel)
            row = measure(p, ref, subject.name, variant, out, float_step.accuracy)
            row.extra = {"outcome": "ok", "kept": kept_note(out)}
        except Exception as exc:  # the baseline failing is a finding too
            row = Row(subject.name, variant, 0, float("nan"), None, float("nan"),
                      f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            row.extra = {"outcome": "error"}
        row.extra["seconds"] = time.perf_counter() - started
        rows.append(row)
    say(f"{subject.name}: timing {sum(r.path is not None for r in rows)} variants interleaved, {rounds} rounds")
    try:
        interleaved_latency(rows, feeds[0], threads, rounds)
    except Exception as exc:
        float_row.note += f"; latency not measured: {type(exc).__name__}: {exc}"
    return rows


def zoo_subjects(work: Path, nets: list[str], config: TrainConfig, threads: int, say: Say) -> list[Subject]:
    if not grocery.available():
        console.print(f"[yellow]skipping the zoo: {grocery.GROCERY} is absent")
        return []
    calibration, evaluation = grocery.materialise(work)
    _, labels = grocery.photos()
    subjects = []
    for net in nets:
        trained = cached(work, net, config, labels)
        if trained is None:
            try:
                from benchmarks.zoo.train import train
            except ImportError as exc:
                console.print(f"[yellow]skipping {net}: not trained in {work} and torch is missing ({exc}); "
                              "install the train extra (pip install -e '.[train]')")
                continue
            say(f"training {net} ({config.epochs} epochs, {threads} threads)")
            trained = train(net, config, work, threads, log=say)
        m = trained.metrics
        about = (f"{m['parameters']:,} params, {m['exporter']} export; trained on {m['train_photos']} photos, "
                 f"held-out top-1 {m['held_out_top1']:.3f} (largest class {m['majority_class_share']:.3f})")
        source = trained.as_exported(work)  # torch's default export: weights in model.onnx.data
        subjects.append(Subject(net, source, trained.description, calibration, evaluation, about))
    return subjects


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def outcome_text(outcome: str, reason: str) -> str:
    """The outcome in a few words: an over-budget compile's best attempt against its budget (and the
    pass, or how many nodes it tried in float), an error's beginning and end (the full text is in
    ``<work>/runs/<model>/<target>/compile.out``)."""
    if outcome == "over budget":
        best = re.search(r"fidelity ([0-9.]+) \(budget ([0-9.]+)\)", reason)
        if best:
            floats = re.search(r"up to (\d+) nodes kept in float", reason)
            where = re.match(r"pass ([\w.]+)", reason)
            return (f"over budget: best {best.group(1)} < {best.group(2)}"
                    + (f" with up to {floats.group(1)} nodes in float" if floats else "")
                    + (f" ({where.group(1)})" if where and not floats else ""))
    text = f"{outcome}: {reason}"
    return text if len(text) <= 160 else f"{text[:70]} … {text[-85:]}"


def cells(row: Row, float_size: int) -> list[str]:
    outcome = row.extra.get("outcome", "ok")
    if row.path is None:
        best = row.extra.get("best")
        return [row.model, row.variant, outcome_text(outcome, row.note), "-", f"({best:.4f})" if best else "-", "-",
                "-", "-", fmt(row.extra.get("seconds"), ".0f")]
    latency = "-" if row.ratio != row.ratio else f"{row.ratio:.2f}x ({row.spread[0]:.2f}-{row.spread[1]:.2f})"
    note = f" ({row.note})" if row.note and row.variant != "float32 (source)" else ""
    return [row.model, row.variant, outcome + note, f"{row.size / float_size:.2f}x ({row.size:,} B)",
            fmt(row.fidelity), fmt(row.accuracy), latency, row.extra.get("kept", ""),
            fmt(row.extra.get("seconds"), ".0f")]


COLUMNS = ("model", "variant", "outcome", "size vs float", "fidelity", "accuracy", "latency vs float (q25-q75)",
           "kept in float", "s")


def title(threads: int, rounds: int) -> str:
    return (f"generality on {platform.machine()} ({os.cpu_count()} cores), {threads} threads, {date.today()}: "
            f"latency = ratio to the float model per round, median of {rounds} rounds, on this host "
            "(a proxy for the boards: onnxruntime for a72 and Jetson, LiteRT/XNNPACK for litert)")


def tables(rows: list[Row], threads: int, rounds: int) -> tuple[Table, str]:
    table = Table(title=title(threads, rounds), show_lines=False)
    for col in COLUMNS:
        table.add_column(col, overflow="fold")
    lines = [f"| {' | '.join(COLUMNS)} |", "|" + "---|" * len(COLUMNS)]
    float_size = 0
    for row in rows:
        if row.variant == "float32 (source)":
            float_size = row.size
            table.add_section()
        values = cells(row, float_size or 1)
        table.add_row(*map(escape, values))
        lines.append("| " + " | ".join(v.replace("|", "/") for v in values) + " |")
    return table, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="trained models, bundles (not the repo)")
    parser.add_argument("--nets", nargs="*", choices=NETS, default=list(NETS))
    parser.add_argument("--no-nanodet", action="store_true")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="training epochs (zoo models)")
    parser.add_argument("--threads", type=int, default=2, help="threads for training and latency")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved latency rounds")
    parser.add_argument("--timeout", type=float, default=2400, help="seconds per compile")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args()
    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("starting")

        def say(message: str) -> None:
            bar.console.log(message)
            bar.update(task, description=message)

        subjects = zoo_subjects(work, args.nets, TrainConfig(epochs=args.epochs), args.threads, say)
        if not args.no_nanodet:
            if NANODET.exists():
                subjects.append(Subject("nanodet", NANODET, ROOT / "examples" / "nanodet" / "model.yaml",
                                        grocery.GROCERY / "val", None, "COCO detector, the publisher's float file"))
            else:
                console.print(f"[yellow]skipping NanoDet: {NANODET} is absent")
        if not subjects:
            console.print(f"[yellow]nothing to compile: {grocery.SHARED} is absent")
            return
        key = signing_key(work)
        for subject in subjects:
            rows += evaluate(subject, args.targets, key, work, args.threads, args.rounds, args.timeout, say)
    for subject in subjects:
        console.print(f"[bold]{subject.name}[/]: {escape(subject.about)}")
    table, markdown = tables(rows, args.threads, args.rounds)
    console.print(table)
    if args.markdown:
        args.markdown.write_text(f"{title(args.threads, args.rounds)}\n\n{markdown}")
        console.print(f"Markdown: {args.markdown}")


if __name__ == "__main__":
    main()
