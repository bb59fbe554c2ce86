"""Train the demo fridge model: a small multi-label CNN over the eight item kinds.

    python -m examples.fridge.train --out examples/fridge/model

needs the ``train`` extra (torch, onnxscript). It renders a training set with
``examples.fridge.synth``, trains on the CPU, tunes a threshold per label on a
validation set, measures per-label F1 on 500 fresh images, and exports float32 ONNX
(opset 17, sigmoid inside the graph, dynamic batch) with a ``metrics.json``.
The preprocessing here is exactly what ``model.yaml`` describes.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from examples.fridge.synth import ITEM_KINDS, stream

INPUT_SIZE = 128  # model input is INPUT_SIZE x INPUT_SIZE, RGB
MEAN = 127.5
STD = 64.0
OPSET = 17


def resize(image_bgr: np.ndarray) -> np.ndarray:
    """Plain resize (no letterbox) and BGR -> RGB, as model.yaml says."""
    small = cv2.resize(image_bgr, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def _render(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, count = args
    images = np.empty((count, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    labels = np.empty((count, len(ITEM_KINDS)), np.float32)
    for i, shelf in zip(range(count), stream(seed), strict=False):
        images[i] = resize(shelf.image)
        labels[i] = shelf.labels
    return images, labels


def render(seed: int, count: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Render ``count`` shelves in ``workers`` processes; reproducible for a seed."""
    per = -(-count // workers)
    jobs = [(seed * 1000 + k, min(per, count - k * per)) for k in range(workers) if count - k * per > 0]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_render, jobs))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - MEAN) / STD


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FridgeNet(nn.Module):
    """Plain conv stack (easy to prune by channel and to quantize), GAP, linear, sigmoid."""

    def __init__(self, classes: int = len(ITEM_KINDS), width: int = 16) -> None:
        super().__init__()
        w = width
        layers = _block(3, w, 2) + _block(w, 2 * w, 1) + _block(2 * w, 2 * w, 2)
        layers += _block(2 * w, 4 * w, 1) + _block(4 * w, 4 * w, 2)
        layers += _block(4 * w, 8 * w, 1) + _block(8 * w, 8 * w, 2)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.flatten(self.pool(self.features(x)), 1)))


def predict(model: nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(model(to_tensor(images[i : i + batch])).numpy())
    return np.concatenate(out)


def f1_per_label(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    pred = probs >= thresholds[None, :]
    tp = (pred & (labels > 0.5)).sum(0)
    fp = (pred & (labels < 0.5)).sum(0)
    fn = (~pred & (labels > 0.5)).sum(0)
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1)


def tune_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    grid = np.linspace(0.1, 0.9, 33)
    best = np.full(probs.shape[1], 0.5)
    best_f1 = np.full(probs.shape[1], -1.0)
    for t in grid:
        f1 = f1_per_label(probs, labels, np.full(probs.shape[1], t))
        better = f1 > best_f1
        best[better], best_f1[better] = t, f1[better]
    return best


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int, batch: int, lr: float) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.BCELoss()
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen).numpy()
        total, started = 0.0, time.time()
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            x = to_tensor(images[idx])
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = loss_fn(model(x), torch.from_numpy(labels[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs} loss {total / len(order):.4f} ({time.time() - started:.0f} s)", flush=True)


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["image"], output_names=["scores"], opset_version=OPSET,
        dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}}, dynamo=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("examples/fridge/model"))
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.workers)
    started = time.time()
    x_train, y_train = render(1, args.train_images, args.workers)
    x_val, y_val = render(2, 1000, args.workers)
    x_test, y_test = render(3, 500, args.workers)
    print(f"rendered {len(x_train)} train / {len(x_val)} val / {len(x_test)} test in {time.time() - started:.0f} s")
    model = FridgeNet(width=args.width)
    train(model, x_train, y_train, args.epochs, args.batch, args.lr)
    thresholds = tune_thresholds(predict(model, x_val), y_val)
    f1 = f1_per_label(predict(model, x_test), y_test, thresholds)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "fridge_multilabel.onnx"
    export(model, onnx_path)
    metrics = {
        "test_images": len(x_test),
        "test_seed": 3,
        "mean_f1": round(float(f1.mean()), 4),
        "f1": {k: round(float(v), 4) for k, v in zip(ITEM_KINDS, f1, strict=True)},
        "thresholds": {k: round(float(v), 3) for k, v in zip(ITEM_KINDS, thresholds, strict=True)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_images": len(x_train),
        "epochs": args.epochs,
        "train_seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
