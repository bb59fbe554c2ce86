"""Shared fixtures: ../shared/data, and signed bundles compiled from the demo fridge model (built by
``benchmarks.faults.world``, which the fault harness shares)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults.world import World, build_world, deploy_command
from compiler.bundle import Bundle, write_bundle
from compiler.pipeline import Pipeline
from contract.manifest import ModelSource
from examples.fridge import MODEL_FILE

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]
_UNTRACKED_BEFORE: set[str] = set()
__all__ = ["deploy_command"]  # tests import it from here


def pytest_sessionstart(session: pytest.Session) -> None:
    from tests.strays import untracked

    _UNTRACKED_BEFORE.update(untracked(REPO))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if it left files in the checkout (tests write only under tmp_path)."""
    from tests.strays import strays

    left = strays(REPO, _UNTRACKED_BEFORE)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: the test run left files in the checkout: {', '.join(left)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real models and photos); tests that need it skip when it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"{SHARED_DATA} is absent: real-model tests need ../shared/data beside the project")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fault_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The demo fridge model compiled once and signed as bundles 4, 5 and 6 (``benchmarks.faults.world``)."""
    return build_world(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="session")
def world(fault_world: World) -> dict[str, object]:
    return dict(vars(fault_world))


@pytest.fixture(scope="session")
def faulty_bundle(world: dict[str, object]) -> Bundle:
    """Sequence 7: the fridge model with a broken head (sees milk everywhere); signed like the rest."""
    from examples.fridge.faulty import write_faulty_model

    root: Path = world["root"]  # type: ignore[assignment]
    cal, ev = world["sets"]  # type: ignore[misc]
    model = write_faulty_model(MODEL_FILE, root / "faulty" / "fridge-v2.onnx")
    result = Pipeline(world["description"], world["target"], cal, ev, root / "work-faulty").run(model)  # type: ignore[arg-type]
    source = ModelSource(name="fridge", version="2", source_uri="file:///fridge-v2.onnx", sha256="1" * 64)
    return write_bundle(result, source, world["target"], cal, ev, world["trusted_key"],  # type: ignore[arg-type]
                        root / "bundles", 7)

