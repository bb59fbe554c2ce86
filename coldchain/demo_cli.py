"""``coldchain demo``: the end-to-end demo on embedded defaults.

In a workspace folder: generates fridge-shelf photos, registers the demo fridge model in an
MLflow SQLite registry, compiles it for a Raspberry Pi 4 class board (signed, measured bundle),
verifies the bundle as a device would, runs its golden self-test and takes inventory on fresh
photos with the device's own code path. Then a deliberately faulty v2 (broken classifier head)
is registered and compiled too, and the fleet half runs (``coldchain.demo_fleet``): embedded
broker, cloud, simulated fridges in two groups, v1 rolled out in waves, v2 caught by its
prediction-drift gate and rolled back automatically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from coldchain.console import console, fail, user_errors

app = typer.Typer(help="Run the end-to-end demo on embedded defaults.")

TARGET = "arm64-cortex-a72-ort"


@app.command()
def demo(  # noqa: PLR0915 (a linear script of demo steps, read top to bottom)
    workspace: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo-workspace"),
    photos: Annotated[int, typer.Option(min=20, max=10_000, help="Fridge photos the fridges see.")] = 120,
    fridges: Annotated[int, typer.Option(min=1, max=500, help="Simulated fridges per group (two groups).")] = 12,
    seed: Annotated[int, typer.Option(help="Seed of the photo generator.")] = 2026,
) -> None:
    """Register, compile, verify and run the demo fridge model; take inventory of fridge photos."""
    import cv2
    import numpy as np
    from mlflow import MlflowClient

    from agent.errors import AgentError
    from agent.model import LoadedBundle
    from agent.selftest import run_golden
    from cloud.errors import CloudError
    from coldchain.compile_cli import compile_one, find_champion
    from coldchain.demo_fleet import run_fleet, summary_table
    from compiler import intake
    from compiler.errors import CompilerError
    from compiler.evaluate import image_sets
    from compiler.registry import next_sequence, register_model, sqlite_uri
    from compiler.target import load_target
    from contract import signing
    from contract.bundle import unpack
    from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
    from examples.fridge.faulty import write_faulty_model
    from examples.fridge.synth import write_dataset

    started = time.perf_counter()
    console.rule("[bold]coldchain demo")
    console.print(f"workspace: {workspace.resolve()}")
    workspace.mkdir(parents=True, exist_ok=True)
    with user_errors(CompilerError, AgentError, CloudError, OSError, TimeoutError):
        with Progress(console=console) as progress:
            for name, count, offset in (("calibration", 100, 1), ("evaluation", 200, 2), ("frames", photos, 3)):
                task = progress.add_task(f"generating {name} photos", total=count)

                def advance(_: int, task: TaskID = task) -> None:
                    progress.advance(task)

                write_dataset(workspace / name, count, seed + offset, on_image=advance)
        keys = workspace / "keys"
        pair = (signing.write_keypair(keys, "demo") if not (keys / "demo.key").exists()
                else signing.KeyPairPaths(keys / "demo.key", keys / "demo.pub", ""))
        uri = sqlite_uri(workspace)
        out = workspace / "bundles"
        key = signing.load_private_key(pair.private)
        sets: list[object] = []

        def register_and_compile(model: Path, what: str, against_champion: bool = False):  # type: ignore[no-untyped-def]
            with console.status(f"registering {what} in MLflow"):
                registered = register_model(uri, model, "fridge", DESCRIPTION_FILE.read_text(),
                                            workspace / "mlartifacts")
            console.print(f"registered [bold]{registered.uri}[/] in {uri}")
            source = intake.resolve(registered.uri, None, out / ".work", uri, 17)
            if not sets:
                sets.extend(image_sets(workspace / "calibration", workspace / "evaluation", 100, seed,
                                       source.description)[:2])
            sequence = next_sequence(source.info.name, uri, time.time())  # above the stream's registered ones
            target = load_target(TARGET)
            # v2 is compared with the production model (v1, alias @champion) on the labelled photos; the
            # demo ships it anyway (--allow-regression) so that the fleet's gates can show what they catch
            best = find_champion(None, source, sets[1], out, uri, [target]) if against_champion else None
            outcome = compile_one(source, target, sets[0], sets[1], key, out, sequence, source.info.name, uri,
                                  best, allow_regression=against_champion)
            if outcome.failure is not None:
                raise fail(f"compiling {what} failed at {outcome.failure.stage}: {outcome.failure.reason} "
                           f"(full log: {outcome.failure.log})")
            return outcome.bundle

        bundle = register_and_compile(MODEL_FILE, "the fridge model")
        MlflowClient(uri).set_registered_model_alias("fridge", "champion", bundle.manifest.model.version)
        console.print("[bold]models:/fridge@champion[/] = the fridge model just compiled (the production version)")
        trust = signing.TrustStore.from_paths([pair.public])
        installed = unpack(bundle.tarball, workspace / "device" / bundle.tarball.name.removesuffix(".tar.gz"), trust)
        loaded = LoadedBundle.open_bundle(installed, trust, threads=2)
        manifest = loaded.manifest
        check = run_golden(loaded, manifest.golden, installed / manifest.golden.file)
        console.print(f"bundle verified (signature, {len(manifest.files)} files, every chunk hash); golden self-test "
                      f"{'[green]passed' if check.passed else '[red]FAILED'}[/] (max error {check.max_abs_error:.4f} "
                      f"<= {check.tolerance:.4f})")
        if not check.passed:
            raise fail("the bundle's golden self-test failed on this machine")
        with loaded:
            _inventory(workspace / "frames", loaded, cv2, np)
        console.rule("[bold]v2: a faulty model (broken classifier head): the champion check flags it, "
                     "--allow-regression ships it for the fleet's gates")
        broken = write_faulty_model(MODEL_FILE, workspace / "models" / "fridge-v2-broken-head.onnx")
        faulty = register_and_compile(broken, "v2", against_champion=True)
        console.rule("[bold]the fleet: broker, cloud, simulated fridges, staged rollouts")
        results = run_fleet(workspace, [bundle.tarball, faulty.tarball], (pair.private, pair.public),
                            workspace / "frames", fridges)
        console.print(summary_table(results))
    db = f"sqlite:///{(workspace / 'cloud.db').resolve()}"
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s. Look further with:\n"
                  f"  .venv/bin/mlflow ui --backend-store-uri {uri}      (compile runs, registered bundles)\n"
                  f"  .venv/bin/coldchain rollout status demo-v2 --db {db}\n"
                  f"  .venv/bin/coldchain monitor --by device --db {db} --plot {workspace / 'monitor.png'}")


def _inventory(frames: Path, loaded, cv2, np) -> None:  # type: ignore[no-untyped-def]
    io, manifest = loaded.io, loaded.manifest
    rows = (frames / "labels.csv").read_text().splitlines()[1:]
    table = Table(title=f"Inventory by the compiled bundle ({manifest.target.name}, sequence {manifest.sequence})")
    for col in ("photo", "in the fridge (truth)", "model sees", "ok"):
        table.add_column(col)
    hits = np.zeros((len(io.labels), 3), np.int64)  # tp, fp, fn per label
    latencies = []
    for row in rows:
        name, *flags = row.split(",")
        truth = {label for label, flag in zip(io.labels, flags, strict=True) if flag == "1"}
        result = loaded.predict(cv2.imread(str(frames / name)))
        seen = result.prediction.labels
        latencies.append(result.total_ms)
        for i, label in enumerate(io.labels):
            hits[i] += [label in seen and label in truth, label in seen and label not in truth,
                        label in truth and label not in seen]
        if len(table.rows) < 10:
            table.add_row(name, ", ".join(sorted(truth)) or "(empty)", ", ".join(sorted(seen)) or "(empty)",
                          "[green]yes[/]" if seen == truth else "[red]no[/]")
    console.print(table)
    f1 = [2 * tp / max(2 * tp + fp + fn, 1) for tp, fp, fn in hits]
    summary = Table(title=f"Per-label F1 of the int8 bundle on {len(rows)} fresh photos")
    summary.add_column("label")
    summary.add_column("F1", justify="right")
    for label, value in zip(io.labels, f1, strict=True):
        summary.add_row(label, f"{value:.3f}")
    summary.add_row("[bold]mean", f"[bold]{np.mean(f1):.3f}")
    console.print(summary)
    console.print(f"latency per photo (preprocess + int8 inference + postprocess): "
                  f"p50 {np.percentile(latencies, 50):.2f} ms")
