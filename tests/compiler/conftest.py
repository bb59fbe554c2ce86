from __future__ import annotations

from pathlib import Path

import pytest

from contract import signing
from examples.fridge.synth import write_dataset


@pytest.fixture(scope="session")
def fridge_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fridge-images")
    write_dataset(root / "calibration", 60, seed=101)
    write_dataset(root / "evaluation", 150, seed=102)
    return root / "calibration", root / "evaluation"


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> signing.KeyPairPaths:
    return signing.write_keypair(tmp_path_factory.mktemp("keys"), "ci")
