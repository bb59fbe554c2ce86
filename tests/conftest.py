from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real models and photos); tests that need it skip when it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"{SHARED_DATA} is absent: real-model tests need ../shared/data beside the project")
    return SHARED_DATA
