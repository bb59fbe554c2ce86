"""Train the zoo's classifiers on the grocery photos and export them to ONNX (the ``train`` extra).

    python -m benchmarks.zoo.train [--work ~/.cache/coldchain-zoo] [--nets mnv3 resnet ...] [--epochs 40]

From scratch, on the CPU, on the training photos of ``benchmarks.zoo.photos`` (about 190), at
96x96 with augmentation (random crops of 55-100 % of the area, flips, small rotations,
brightness/contrast/saturation jitter). The held-out photos are preprocessed by the agent's own
``preprocess`` (plain resize, as the description says) and scored with the exported ONNX model in
onnxruntime: the accuracy printed is the float model's as the compiler will see it. Each model is
cached under the work directory (``benchmarks.zoo.store``); nothing is written in the repository.

Exporters: the ``shared`` network goes through torch's default exporter with its defaults
(``dynamo=True``, its default opset, static batch, weights in ``model.onnx.data`` beside the
graph), the others through the TorchScript exporter with a dynamic batch (opset 17), as the
project's fridge example does.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from agent.preprocess import preprocess
from benchmarks.zoo import photos as grocery
from benchmarks.zoo.nets import NETS, SUMMARIES
from benchmarks.zoo.store import (
    DEFAULT_WORK,
    INPUT_NAME,
    MEAN,
    STD,
    TrainConfig,
    Trained,
    cached,
    description,
    directory,
    write_description,
)
from compiler.description import parse_description

DYNAMO = {"shared"}  # exported with torch's default exporter; the others with the TorchScript one
console = Console(width=140)


def read(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError(f"{path} is not a readable image")
    return np.asarray(frame)


def load(items: list[grocery.Photo], root: Path, size: int) -> np.ndarray:
    """RGB uint8 [N, size, size, 3], whole photos resized (crops are taken from these)."""
    out = np.empty((len(items), size, size, 3), np.uint8)
    for i, p in enumerate(items):
        small = cv2.resize(read(root / p.path), (size, size), interpolation=cv2.INTER_AREA)
        out[i] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    return out


def augment(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 NHWC -> normalised NCHW float at ``size``: a random crop (55-100 % of the area,
    aspect 3:4-4:3), flip, rotation up to 10 degrees, colour jitter; one affine resampling."""
    n = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    x = images.permute(0, 3, 1, 2).float() / 255.0
    area, aspect = uniform(0.55, 1.0), torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    sx, sy = torch.sqrt(area * aspect).clamp(max=1.0), torch.sqrt(area / aspect).clamp(max=1.0)
    tx, ty = (1 - sx) * uniform(-1, 1), (1 - sy) * uniform(-1, 1)
    angle = uniform(-10, 10) * math.pi / 180
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([sx * cos * flip, -sy * sin, tx], 1),
                         torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * uniform(0.7, 1.3).view(n, 1, 1, 1)  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * uniform(0.75, 1.25).view(n, 1, 1, 1)  # contrast
    x = (x * uniform(0.75, 1.25).view(n, 1, 1, 1)).clamp(0, 1)  # brightness
    m = torch.tensor(MEAN).view(1, 3, 1, 1) / 255.0
    s = torch.tensor(STD).view(1, 3, 1, 1) / 255.0
    return (x - m) / s


def export(model: torch.nn.Module, net: str, path: Path, size: int) -> None:
    model = model.to(memory_format=torch.contiguous_format).eval()
    dummy = torch.zeros(1, 3, size, size)
    if net in DYNAMO:
        torch.onnx.export(model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=["logits"],
                          dynamo=True, verbose=False)
    else:
        torch.onnx.export(model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=["logits"],
                          opset_version=17, dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)


def onnx_top1(path: Path, inputs: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {INPUT_NAME: x[None]})[0] for x in inputs])
    predicted = logits.argmax(1)
    return float(np.mean(predicted == truth)), predicted


def train(net: str, config: TrainConfig, work: Path, threads: int = 2,
          log: Callable[[str], None] = console.log) -> Trained:
    """Train ``net`` (or take it from the cache) and return the cached model."""
    items, labels = grocery.photos()
    found = cached(work, net, config, labels)
    if found is not None:
        return found
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_photos, held = grocery.split(items)
    if config.limit:
        train_photos = train_photos[: config.limit]
    index = {label: i for i, label in enumerate(labels)}
    y_train = torch.tensor([index[p.label] for p in train_photos])
    x_train = torch.from_numpy(load(train_photos, grocery.GROCERY, round(config.size * 1.25)))
    desc_data = description(net, SUMMARIES[net], labels, config.size)
    desc = parse_description(desc_data, f"zoo {net}")
    held_inputs = np.concatenate([preprocess(read(grocery.GROCERY / p.path), desc.preprocessing)[0]
                                  for p in held])
    y_held = np.array([index[p.label] for p in held])

    model = NETS[net](len(labels), config.width).to(memory_format=torch.channels_last)  # faster depthwise on CPU
    params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = math.ceil(len(train_photos) / config.batch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=config.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_photos), generator=generator)
        total = 0.0
        for k in range(steps_per_epoch):
            batch = order[k * config.batch: (k + 1) * config.batch]
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            x = augment(x_train[batch], config.size, generator).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), y_train[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        if epoch % 10 == 9 or epoch == config.epochs - 1:
            model.eval()
            with torch.no_grad():
                held_top1 = float((model(torch.from_numpy(held_inputs)).argmax(1).numpy() == y_held).mean())
            log(f"{net}: epoch {epoch + 1}/{config.epochs}, loss {total / len(train_photos):.3f}, "
                f"held-out top-1 {held_top1:.3f} ({time.perf_counter() - started:.0f} s)")
    seconds = time.perf_counter() - started
    folder = directory(work, net, config, labels)
    folder.mkdir(parents=True, exist_ok=True)
    export(model, net, folder / "model.onnx", config.size)
    write_description(folder / "model.yaml", desc_data)
    top1, predicted = onnx_top1(folder / "model.onnx", held_inputs, y_held)
    majority = max(np.mean(y_held == i) for i in range(len(labels)))
    metrics = {"net": net, "summary": SUMMARIES[net], "parameters": params, "train_photos": len(train_photos),
               "held_out_photos": len(held), "labels": labels, "held_out_top1": top1,
               "majority_class_share": float(majority), "distinct_predictions": len(set(predicted.tolist())),
               "train_seconds": round(seconds, 1), "threads": threads,
               "exporter": "dynamo" if net in DYNAMO else "torchscript", "config": vars(config)}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"{net}: {params:,} parameters, held-out top-1 {top1:.3f} in onnxruntime (largest class "
        f"{majority:.3f}), {seconds:.0f} s")
    return Trained(net, folder, metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="cache of trained models (not the repo)")
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=list(NETS))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not grocery.available():
        console.print(f"[yellow]skipping: {grocery.GROCERY} is absent (the grocery photos of ../shared/data)")
        return
    for net in args.nets:
        trained = train(net, TrainConfig(epochs=args.epochs), args.work, args.threads)
        console.print(f"{net}: {trained.model} held-out top-1 {trained.metrics['held_out_top1']:.3f}")


if __name__ == "__main__":
    main()
