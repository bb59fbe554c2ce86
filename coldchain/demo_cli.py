"""``coldchain demo``: the end-to-end demo on embedded defaults.

Today it runs what exists: it generates fridge-shelf photos, runs the demo fridge model on
them exactly as a device does (manifest-style preprocessing, onnxruntime, multilabel
postprocessing) and shows the inventory per photo and the accuracy. Compilation, the
broker, the cloud and rollouts join it as they land.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from coldchain.console import console, fail, user_errors

app = typer.Typer(help="Run the end-to-end demo on embedded defaults.")


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo-workspace"),
    photos: Annotated[int, typer.Option(min=1, max=10_000, help="How many fridge photos to generate.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the photo generator.")] = 2026,
) -> None:
    """Generate fridge photos and take inventory with the demo fridge model."""
    import numpy as np
    import onnxruntime as ort

    from agent import postprocess
    from agent.preprocess import preprocess
    from compiler.description import load_description
    from compiler.errors import CompilerError
    from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
    from examples.fridge.synth import stream, write_dataset

    with user_errors(CompilerError):
        description = load_description(DESCRIPTION_FILE)
    frames = workspace / "frames"
    console.rule("[bold]coldchain demo")
    console.print(f"workspace: {workspace.resolve()}")
    with Progress(console=console) as progress:
        task = progress.add_task("generating fridge photos", total=photos)
        write_dataset(frames, photos, seed, on_image=lambda _: progress.advance(task))
    session = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    post = postprocess.get(description.postprocessor.name)
    truth_rows = (frames / "labels.csv").read_text().splitlines()[1:]
    table = Table(title=f"Inventory by the demo model ({MODEL_FILE.name})")
    for col in ("photo", "in the fridge (truth)", "model sees", "ok"):
        table.add_column(col)
    hits = np.zeros((len(description.labels), 3), np.int64)  # tp, fp, fn per label
    latencies = []
    import cv2

    for shelf, row in zip(stream(seed), truth_rows, strict=False):
        name, *flags = row.split(",")
        truth = {label for label, flag in zip(description.labels, flags, strict=True) if flag == "1"}
        image = cv2.imread(str(frames / name))
        if image is None:
            raise fail(f"cannot decode {frames / name}: the photo is unreadable")
        started = time.perf_counter()
        x, placement = preprocess(image, description.preprocessing)
        outputs = session.run(None, {description.input.name: x})
        prediction = post(outputs, description.labels, description.postprocessor.params, placement)
        latencies.append((time.perf_counter() - started) * 1000)
        seen = prediction.labels
        for i, label in enumerate(description.labels):
            hits[i] += [label in seen and label in truth, label in seen and label not in truth,
                        label in truth and label not in seen]
        if len(table.rows) < 12:
            table.add_row(name, ", ".join(sorted(shelf.inventory)) or "(empty)",
                          ", ".join(sorted(seen)) or "(empty)", "[green]yes[/]" if seen == truth else "[red]no[/]")
    console.print(table)
    summary = Table(title=f"Per-label F1 on {photos} fresh photos")
    summary.add_column("label")
    summary.add_column("F1", justify="right")
    f1s = []
    for label, (tp, fp, fn) in zip(description.labels, hits, strict=True):
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        f1s.append(f1)
        summary.add_row(label, f"{f1:.3f}")
    summary.add_row("[bold]mean", f"[bold]{np.mean(f1s):.3f}")
    console.print(summary)
    console.print(f"latency per photo (preprocess + infer + postprocess): p50 {np.percentile(latencies, 50):.2f} ms")
