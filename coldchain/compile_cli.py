"""``coldchain compile``: a registered model or file -> signed, measured bundles per target."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from coldchain.console import console, user_errors

app = typer.Typer(help="Compile a model into signed per-target bundles, with proof that accuracy survived.")


def _steps_table(title: str, steps: list) -> Table:  # type: ignore[type-arg]
    table = Table(title=title)
    for col in ("step", "size", "params", "GFLOPs", "fidelity", "accuracy", "p50 ms", "p95 ms", "budget", "note"):
        table.add_column(col, justify="left" if col in ("step", "note", "budget") else "right")
    for s in steps:
        table.add_row(s.name, f"{s.stats.size_bytes / 1024:.0f} KiB", f"{s.stats.parameters:,}",
                      f"{s.stats.flops / 1e9:.3f}", f"{s.fidelity:.4f}",
                      "-" if s.accuracy is None else f"{s.accuracy:.4f}", f"{s.latency_p50:.2f}",
                      f"{s.latency_p95:.2f}", "[green]ok[/]" if s.within_budget else "[red]over[/]", s.note)
    return table


@app.command()
def compile(
    source: Annotated[str, typer.Argument(help="Model file (.onnx) or models:/name/3, models:/name@alias, runs:/…")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="Target profile; repeatable.")],
    key: Annotated[Path, typer.Option(help="Ed25519 private key that signs the bundles.")],
    calibration: Annotated[Path, typer.Option(help="Folder of calibration images.")],
    description: Annotated[Path | None, typer.Option(help="Model description (model.yaml).")] = None,
    evaluation: Annotated[Path | None, typer.Option(
        help="Folder of evaluation images (labels.csv optional). Default: the calibration images not used.")] = None,
    calibration_count: Annotated[int, typer.Option(min=1, help="Calibration images to use.")] = 100,
    out: Annotated[Path, typer.Option(help="Where bundles are written.")] = Path("bundles"),
    sequence: Annotated[int | None, typer.Option(min=0, help="Bundle sequence (default: next in the registry, "
                                                             "or the current Unix time).")] = None,
    mlflow_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI, e.g. sqlite:///mlflow.db.")] = None,
    min_fidelity: Annotated[float | None, typer.Option(min=0.0, max=1.0,
                                                       help="Override the budget's fidelity.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the calibration/evaluation split.")] = 0,
) -> None:
    """Quantize, prune and convert for each target; measure every step; sign and bundle."""
    from agent.errors import AgentError
    from compiler import intake
    from compiler.errors import CompilerError
    from compiler.evaluate import image_sets
    from compiler.target import load_target, with_min_fidelity
    from contract.signing import load_private_key

    with user_errors(CompilerError, AgentError):
        profiles = [with_min_fidelity(load_target(t), min_fidelity) for t in target]
        signing_key = load_private_key(key)
        src = intake.resolve(source, description, out / ".work", mlflow_uri, max(p.opset for p in profiles))
        cal, ev, skipped = image_sets(calibration, evaluation, calibration_count, seed, src.description)
        console.print(f"[bold]{src.info.name}[/] v{src.info.version}: {len(cal.paths)} calibration and "
                      f"{len(ev.paths)} evaluation images" + (f", {skipped} unreadable skipped" if skipped else ""))
        results = [compile_one(src, profile, cal, ev, signing_key, out, sequence, mlflow_uri) for profile in profiles]
    summary = Table(title="Bundles")
    for col in ("target", "bundle", "model", "model vs float", "bundle .tar.gz", "bundle vs float", "fidelity",
                "latency vs float", "kept in float"):
        summary.add_column(col)
    for profile, result, bundle in results:
        first, last = result.float_step, result.final
        packed = bundle.tarball.stat().st_size
        summary.add_row(profile.name, str(bundle.tarball), f"{last.stats.size_bytes / 1024:.0f} KiB",
                        f"{last.stats.size_bytes / first.stats.size_bytes:.2f}x", f"{packed / 1024:.0f} KiB",
                        f"{packed / first.stats.size_bytes:.2f}x", f"{last.fidelity:.4f}",
                        f"{last.latency_p50 / first.latency_p50:.2f}x", str(len(result.kept_in_float)))
    console.print(summary)


def compile_one(src, profile, cal, ev, signing_key, out: Path, sequence: int | None,  # type: ignore[no-untyped-def]
                 mlflow_uri: str | None):
    from compiler.bundle import write_bundle
    from compiler.pipeline import Pipeline

    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[target]}[/] {task.description}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("starting", target=profile.name)

        def report(message: str, task: TaskID = task) -> None:
            progress.update(task, description=message)

        pipeline = Pipeline(src.description, profile, cal, ev, out / ".work" / f"{src.info.name}-{profile.name}",
                            progress=report)
        result = pipeline.run(src.path)
        bundle_name = f"{src.info.name}--{profile.name}"
        if sequence is None:
            from compiler.registry import next_sequence

            sequence = next_sequence(mlflow_uri, bundle_name) if mlflow_uri else int(time.time())
        report("writing the signed bundle")
        bundle = write_bundle(result, src.info, profile, cal, ev, signing_key, out, sequence)
        if mlflow_uri:
            report("recording the compile in MLflow")
            _record(mlflow_uri, out, src, profile, result, bundle, bundle_name)
    console.print(_steps_table(f"{src.info.name} -> {profile.name} ({time.perf_counter() - started:.0f} s)",
                               result.steps))
    if result.kept_in_float:
        console.print("kept in float: " + ", ".join(
            f"{name} (error {err:.4f})" for name, err in result.kept_in_float))
    return profile, result, bundle


def _record(uri: str, out: Path, src, profile, result, bundle, bundle_name: str) -> None:  # type: ignore[no-untyped-def]
    from compiler.registry import record_compile

    steps = [{"size_bytes": s.stats.size_bytes, "parameters": s.stats.parameters, "flops": s.stats.flops,
              "fidelity": s.fidelity, "latency_p50_ms": s.latency_p50, "latency_p95_ms": s.latency_p95,
              **({"accuracy": s.accuracy} if s.accuracy is not None else {})} for s in result.steps]
    params = {"target": profile.name, "passes": ",".join(s.name for s in result.steps[1:]),
              "source": src.info.source_uri, "sequence": bundle.manifest.sequence}
    tags = {"coldchain.source_model": src.info.name, "coldchain.source_version": src.info.version,
            "coldchain.sequence": str(bundle.manifest.sequence), "coldchain.target": profile.name,
            "coldchain.manifest_sha256": bundle.ref.sha256}
    record_compile(uri, out / "mlartifacts", src.info.name, profile.name, steps, params, bundle.tarball,
                   bundle_name, tags)
