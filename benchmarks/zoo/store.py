"""Where trained zoo models are cached (no torch here): ``<work>/zoo/<net>-<key>/`` holds
``model.onnx``, its coldchain model description ``model.yaml`` and ``metrics.json``; the key
hashes the network, the training settings and the label set, so changing any retrains."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

INPUT_NAME = "image"
MEAN = [123.675, 116.28, 103.53]  # RGB, ImageNet's
STD = [58.395, 57.12, 57.375]
DEFAULT_WORK = Path.home() / ".cache" / "coldchain-zoo"


@dataclass(frozen=True)
class TrainConfig:
    size: int = 96  # input width = height
    epochs: int = 60
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    width: float = 1.0  # channel multiplier
    seed: int = 0
    limit: int = 0  # train on the first ``limit`` training photos only (0: all); for quick tests

    def key(self, net: str, labels: list[str]) -> str:
        text = json.dumps({"net": net, "config": asdict(self), "labels": labels, "version": 2}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Trained:
    net: str
    directory: Path
    metrics: dict[str, Any]

    @property
    def model(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def description(self) -> Path:
        return self.directory / "model.yaml"

    def as_exported(self, work: Path) -> Path:
        """The model as its exporter writes it today: torch's default export (``dynamo``) keeps the
        weights in ``model.onnx.data``. A cache from when the zoo exported it as one file is re-saved
        that way under ``<work>/sources/<net>/`` (the cache itself is left as it is)."""
        if self.metrics.get("exporter") != "dynamo" or (self.directory / "model.onnx.data").exists():
            return self.model
        import onnx

        out = work / "sources" / self.net / "model.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(onnx.load(str(self.model)), str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data")
        return out


def directory(work: Path, net: str, config: TrainConfig, labels: list[str]) -> Path:
    return work / "zoo" / f"{net}-{config.key(net, labels)}"


def cached(work: Path, net: str, config: TrainConfig, labels: list[str]) -> Trained | None:
    folder = directory(work, net, config, labels)
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    found = Trained(net, folder, metrics)
    return found if found.model.exists() and found.description.exists() else None


def description(net: str, summary: str, labels: list[str], size: int) -> dict[str, Any]:
    """The coldchain model description (``compiler/description.py``) of a zoo classifier."""
    return {
        "schema": "coldchain.model-description/v1",
        "name": f"zoo-{net}",
        "summary": summary,
        "task": "classification",
        "input": {"name": INPUT_NAME, "layout": "NCHW"},
        "preprocessing": {"resize": "resize", "width": size, "height": size, "color": "RGB", "mean": MEAN,
                          "std": STD, "layout": "NCHW", "dtype": "float32"},
        "labels": labels,
        "postprocessor": {"name": "topk", "params": {"k": 3, "softmax": True}},
    }


def write_description(path: Path, data: dict[str, Any]) -> None:
    path.write_text("# written by benchmarks.zoo.train\n" + yaml.safe_dump(data, sort_keys=False))
