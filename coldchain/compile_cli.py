"""``coldchain compile``: a registered model or file -> signed, measured bundles per target."""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from agent.errors import AgentError
from coldchain.compile_tables import front_table, steps_table, summary_table
from coldchain.console import console, err_console, fail, user_errors
from compiler.errors import CompilerError, first_line
from contract.errors import ContractError

app = typer.Typer(help="Compile a model into signed per-target bundles, with proof that accuracy survived.")


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
    sequence: Annotated[int | None, typer.Option(min=0, help="Bundle sequence within its stream (default: the "
                                                             "current Unix time, or one more than the highest the "
                                                             "registry holds for the stream if higher).")] = None,
    stream: Annotated[str | None, typer.Option(help="Model stream: devices refuse an older sequence of the same "
                                                    "stream (default: the model's name).")] = None,
    mlflow_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI, e.g. sqlite:///mlflow.db.")] = None,
    min_fidelity: Annotated[float | None, typer.Option(min=0.0, max=1.0,
                                                       help="Override the budget's fidelity.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the calibration/evaluation split.")] = 0,
    champion: Annotated[str | None, typer.Option(
        help="Production model to compare with when the evaluation images have labels (default, with "
             "--mlflow-uri: models:/<model name>@champion).")] = None,
    allow_regression: Annotated[bool, typer.Option(
        help="Ship even when the bundle is less accurate than the champion by more than the budget.")] = False,
    keep_work: Annotated[bool, typer.Option(help="Keep <out>/.work (every step's model) after a successful "
                                                 "compile.")] = False,
    max_evaluations: Annotated[int, typer.Option(min=1, help="Most evaluations (whole evaluation-set runs) per "
                                                             "target: caps the search when int8 misses the budget "
                                                             "(cached results and screenings do not count).")] = 24,
) -> None:
    """Quantize, prune and convert for each target; measure every step; sign and bundle.

    Targets are compiled one after another, each on its own: a failing target is reported (where it
    stopped, why, the full log on disk) and the others go on; the exit code is 1 if any failed."""
    from compiler import intake
    from compiler.evaluate import image_sets
    from compiler.target import load_target, with_min_fidelity
    from contract.signing import load_private_key

    with user_errors(CompilerError, AgentError), _intake_work(out / ".work", keep_work):
        profiles = [with_min_fidelity(load_target(t), min_fidelity) for t in target]
        signing_key = load_private_key(key)
        src = intake.resolve(source, description, out / ".work", mlflow_uri, max(p.opset for p in profiles))
        cal, ev, skipped = image_sets(calibration, evaluation, calibration_count, seed, src.description)
        console.print(f"[bold]{src.info.name}[/] v{src.info.version}: {len(cal.paths)} calibration and "
                      f"{len(ev.paths)} evaluation images" + (f", {skipped} unreadable skipped" if skipped else ""))
        stream = _stream(stream or src.info.name)
        if sequence is None:  # one per compile: every target's bundle of it has the same
            from compiler.registry import next_sequence

            sequence = next_sequence(stream, mlflow_uri, time.time())
        console.print(f"stream [bold]{escape(stream)}[/], sequence {sequence}")
        best = find_champion(champion, src, ev, out, mlflow_uri, profiles)
    from compiler.evalcache import EvaluationCache

    cache = EvaluationCache()  # shared by the targets: the float model is evaluated once
    # each target on its own: one that fails is reported and the others go on
    outcomes = [compile_one(src, profile, cal, ev, signing_key, out, sequence, stream, mlflow_uri, best,
                            allow_regression, cache, max_evaluations) for profile in profiles]
    console.print(summary_table(outcomes))
    failed = [o for o in outcomes if o.failure is not None]
    if not failed and not keep_work:
        shutil.rmtree(out / ".work", ignore_errors=True)  # every step's model: ~220 MB per NanoDet target
    elif failed:
        console.print(f"work files and logs kept in {out / '.work'}")
    if failed:
        raise fail(f"{len(failed)} of {len(outcomes)} targets failed: "
                   + "; ".join(f"{o.profile.name} ({o.failure.log})" for o in failed))  # type: ignore[union-attr]


INTAKE_WORK = ("source", "champion")  # what a compile writes under <out>/.work before any target


@contextmanager
def _intake_work(work: Path, keep: bool) -> Iterator[None]:
    """A compile refused before any target ran (calibration images, champion, sequence) leaves none
    of the intake's files (a registry download, the model with its external data read in): there
    is no log to keep with them. What an earlier compile left (its targets' logs) stays."""
    try:
        yield
    except BaseException:
        if not keep:
            for name in INTAKE_WORK:
                shutil.rmtree(work / name, ignore_errors=True)
            with suppress(OSError):
                work.rmdir()  # only if empty
        raise


def find_champion(uri: str | None, src, ev, out: Path, mlflow_uri: str | None,  # type: ignore[no-untyped-def]
              profiles: list) -> Any:  # type: ignore[type-arg]
    """The production model measured on the evaluation images, or None (and a line saying why)."""
    from compiler import champion

    if mlflow_uri is None and uri is None:
        return None
    if mlflow_uri is None:
        raise CompilerError(f"--champion {uri} needs --mlflow-uri")
    best, why = champion.find(uri or champion.default_uri(src.info.name), mlflow_uri, src.description, ev,
                              out / ".work" / "champion", max(p.opset for p in profiles),
                              max(p.host_threads for p in profiles))
    if best is None and uri is not None:
        raise CompilerError(why)  # asked for by name: no silent skip
    if best is None:
        console.print(why)
    else:
        console.print(f"champion {best.uri} = {best.resolved}: accuracy {best.accuracy:.4f} on the "
                      f"{len(ev.paths)} evaluation images")
    return best


def _stream(name: str) -> str:
    from pydantic import TypeAdapter, ValidationError

    from contract.common import Stream

    try:
        return TypeAdapter(Stream).validate_python(name)
    except ValidationError as exc:
        raise CompilerError(f"stream {name[:60]!r} is not a valid stream name (1 to 128 characters, no control "
                            "characters): pass --stream") from exc


@dataclass(frozen=True)
class Failure:
    stage: str  # where the compile stopped (the pipeline's last stage)
    reason: str  # one readable line
    log: Path  # the full log, traceback included


@dataclass(frozen=True)
class Outcome:
    profile: Any
    result: Any = None  # CompileResult when it succeeded
    bundle: Any = None
    failure: Failure | None = None
    review: Any = None  # compiler.review.Review when it succeeded
    counts: Any = None  # the pipeline's evaluation counts


def compile_one(src, profile, cal, ev, signing_key, out: Path, sequence: int,  # type: ignore[no-untyped-def]
                stream: str, mlflow_uri: str | None, champion: Any = None, allow_regression: bool = False,
                cache: Any = None, max_evaluations: int | None = None) -> Outcome:
    """One target: pipeline, signed bundle, MLflow run. A failure is caught, logged in full on disk,
    recorded as a FAILED MLflow run, and returned: the other targets go on."""
    from compiler.bundle import write_bundle
    from compiler.pipeline import Pipeline
    from compiler.review import review

    started = time.perf_counter()
    workdir = out / ".work" / f"{src.info.name}-{profile.name}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = (workdir / "compile.log").resolve()
    with log_path.open("w") as log, Progress(
            SpinnerColumn(), TextColumn("[bold]{task.fields[target]}[/] {task.description}"),
            TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("starting", target=profile.name)

        def report(message: str, task: TaskID = task) -> None:
            log.write(f"{time.perf_counter() - started:8.1f} s  {message}\n")
            log.flush()
            progress.update(task, description=message)

        pipeline = Pipeline(src.description, profile, cal, ev, workdir, progress=report, cache=cache,
                            max_evaluations=max_evaluations)
        bundle_name = f"{src.info.name}--{profile.name}"
        best = None  # a BudgetError's best attempt, shown in the failed target's step table
        failure: Failure | None = None
        found = None
        try:
            result = pipeline.run(src.path)
            pipeline.report("measuring memory, checking the float model and the champion")
            found = review(result, src.description, ev, profile, champion, allow_regression)
            pipeline.stage = "comparing with the champion"
            found.check()
            pipeline.report("writing the signed bundle")
            bundle = write_bundle(result, src.info, profile, cal, ev, signing_key, out, sequence, stream=stream,
                                  memory=found.memory)
            if mlflow_uri:
                pipeline.report("recording the compile in MLflow")
                _record(mlflow_uri, src, profile, result, bundle, bundle_name, found)
        except Exception as exc:  # one target's failure, whatever it is, must not stop the others
            expected = isinstance(exc, CompilerError | AgentError | ContractError)
            words = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            reason = words if expected and words else f"{type(exc).__name__}: {first_line(exc)}"
            log.write(f"FAILED at {pipeline.stage}: {reason}\n\n{traceback.format_exc()}")
            failure = Failure(pipeline.stage, reason, log_path)
            best = getattr(exc, "best", None)
    seconds = time.perf_counter() - started
    rows = list(pipeline.rows)
    if best is not None and best not in rows:
        rows.append(best)
    title = f"{src.info.name} -> {profile.name} ({seconds:.0f} s)" + (" [red]FAILED[/]" if failure else "")
    _print_target(title, rows, profile, pipeline, result.steps if found is not None else [], found)
    if failure is not None:
        err_console.print(f"[bold red]error:[/] {escape(profile.name)}: failed at {escape(failure.stage)}: "
                          f"{escape(failure.reason)} (full log: {failure.log})", highlight=False)
        if mlflow_uri:
            _record_failure(mlflow_uri, src, profile, [r for r in rows if r.kept], failure)
        return Outcome(profile, failure=failure, counts=pipeline.counts)
    if result.kept_in_float:
        console.print("kept in float: " + ", ".join(
            f"{name} (error {err:.4f})" for name, err in result.kept_in_float))
    return Outcome(profile, result, bundle, review=found, counts=pipeline.counts)


def _print_target(title: str, rows: list, profile: Any, pipeline: Any,  # type: ignore[type-arg]
                  steps: list, found: Any) -> None:  # type: ignore[type-arg]
    """One target's step table (with memory per kept step), its searches' fronts, the comparison with
    the champion and the warnings."""
    from compiler import latency

    latency_title = latency.title(profile, rounds=latency.ROUNDS)
    memory = {id(step): m for step, m in zip(steps, found.memory, strict=False)} if found is not None else {}
    if rows:
        console.print(steps_table(title, rows, latency_title, pipeline.counts, memory))
    for record in pipeline.searches:
        console.print(front_table(profile.name, record, latency_title))
    target = profile.name
    if found is not None and found.champion is not None:
        console.print(f"{target}: {found.champion.line()}")
    for warning in found.warnings if found is not None else []:
        err_console.print(f"[bold yellow]warning:[/] {escape(target)}: {escape(warning)}", highlight=False)


def _step_metrics(steps: list, memory: list | None = None) -> list[dict[str, float]]:  # type: ignore[type-arg]
    memory = memory or []
    return [{"size_bytes": s.stats.size_bytes, "parameters": s.stats.parameters, "flops": s.stats.flops,
             "fidelity": s.fidelity, "latency_p50_ms": s.latency_p50, "latency_p95_ms": s.latency_p95,
             "latency_vs_float": s.latency.ratio,
             **({"accuracy": s.accuracy} if s.accuracy is not None else {}),
             **({"weights_bytes": memory[i].weights_bytes, "peak_memory_bytes": memory[i].peak_bytes}
                if i < len(memory) else {})} for i, s in enumerate(steps)]


def _record_failure(uri: str, src, profile, steps: list,  # type: ignore[no-untyped-def,type-arg]
                    failure: Failure) -> None:
    """A failed target is an MLflow run too: status FAILED, the reason as a tag, the log as an artifact."""
    from compiler.registry import record_failed_compile, without_host_paths

    tags = {"coldchain.source_model": src.info.name, "coldchain.source_version": src.info.version,
            "coldchain.target": profile.name, "coldchain.failed_at": without_host_paths(failure.stage)[:250],
            "coldchain.failure": without_host_paths(failure.reason)[:5000]}
    params = {"target": profile.name, "source": src.info.source_uri}
    try:
        record_failed_compile(uri, src.info.name, profile.name, _step_metrics(steps), params, tags, failure.log)
    except Exception as exc:  # the registry being down must not hide the compile's own failure
        err_console.print(f"[yellow]warning:[/] could not record the failed compile in MLflow: {first_line(exc)}")


def _record(uri: str, src, profile, result, bundle, bundle_name: str,  # type: ignore[no-untyped-def]
            found) -> None:
    from compiler.registry import record_compile

    steps = _step_metrics(result.steps, found.memory)
    params = {"target": profile.name, "passes": ",".join(s.name for s in result.steps[1:]),
              "source": src.info.source_uri, "sequence": bundle.manifest.sequence,
              "evaluations": result.counts.evaluations}
    tags = {"coldchain.source_model": src.info.name, "coldchain.source_version": src.info.version,
            "coldchain.sequence": str(bundle.manifest.sequence), "coldchain.target": profile.name,
            "coldchain.stream": bundle.manifest.stream_name,
            "coldchain.manifest_sha256": bundle.ref.sha256,
            **({"coldchain.warnings": " | ".join(found.warnings)[:5000]} if found.warnings else {}),
            **({"coldchain.champion": found.champion.line()[:5000]} if found.champion is not None else {})}
    record_compile(uri, src.info.name, profile.name, steps, params, bundle.tarball, bundle_name, tags)
