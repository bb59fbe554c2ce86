"""The grocery photos of ``../shared/data/grocery`` as a small classification set (no torch here).

Labels: the coarse classes with at least 10 photos (Juice, Milk, Apple, Melon, Yoghurt, Pepper,
Soyghurt, Potato) and, for the rest, their department (other fruit, other vegetable, other
package): 11 classes, the largest (other fruit) 23 % of the photos. The split into training and
held-out photos is fixed by a seeded hash of each photo's path, so it never depends on the
order of ``val.txt`` or on which models are trained.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
GROCERY = SHARED / "grocery"
MIN_PHOTOS = 10  # a coarse class with fewer photos joins its department's "other" label
HELD_OUT = 0.35  # fraction of the photos kept out of training (and out of calibration)
SPLIT_SEED = "coldchain-zoo-1"
LABELS_FILE = "labels.csv"  # the compiler's evaluation labels: file,label


@dataclass(frozen=True)
class Photo:
    path: str  # relative to the grocery folder, e.g. val/Fruit/Apple/...
    label: str

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha256(f"{SPLIT_SEED}:{self.path}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT


def available() -> bool:
    return (GROCERY / "val.txt").exists() and (GROCERY / "classes.csv").exists()


def photos(grocery: Path = GROCERY) -> tuple[list[Photo], list[str]]:
    """Every listed photo with its label, and the label set (in a fixed order)."""
    coarse: dict[int, str] = {}
    with (grocery / "classes.csv").open() as f:
        for row in csv.DictReader(f):
            coarse[int(row["Coarse Class ID (int)"])] = row["Coarse Class Name (str)"]
    rows = []
    for line in (grocery / "val.txt").read_text().splitlines():
        if line.strip():
            path, _fine, kind = (x.strip() for x in line.split(","))
            rows.append((path, path.split("/")[1], coarse[int(kind)]))
    counts = Counter(name for _, _, name in rows)
    big = sorted((name for name, n in counts.items() if n >= MIN_PHOTOS), key=lambda n: (-counts[n], n))
    department = {"Fruit": "other fruit", "Vegetables": "other vegetable", "Packages": "other package"}
    labels = big + sorted(department.values())
    return [Photo(path, name if name in big else department[dep]) for path, dep, name in rows], labels


def split(items: list[Photo]) -> tuple[list[Photo], list[Photo]]:
    """(training photos, held-out photos)."""
    return [p for p in items if not p.held_out], [p for p in items if p.held_out]


def materialise(work: Path, grocery: Path = GROCERY) -> tuple[Path, Path]:
    """Copy the training photos to ``work/photos/train`` (the calibration folder) and the held-out
    ones with a ``labels.csv`` to ``work/photos/heldout`` (the evaluation folder), as an ML engineer
    hands them to ``coldchain compile --calibration ... --evaluation ...``. Idempotent."""
    items, _ = photos(grocery)
    train, held = split(items)
    folders = work / "photos" / "train", work / "photos" / "heldout"
    for folder, chosen in zip(folders, (train, held), strict=True):
        done = folder / ".complete"
        if done.exists():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        for p in chosen:
            (folder / p.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(grocery / p.path, folder / p.path)
        if folder.name == "heldout":
            (folder / LABELS_FILE).write_text("file,label\n" + "".join(f"{p.path},{p.label}\n" for p in chosen))
        done.write_text("")
    return folders
