"""What an installed candidate must pass on this device before it may become active, besides its
signature and hashes (``contract.bundle``): the manifest's board, runtime and anti-rollback sequence
(``check_manifest``, before installing), the golden self-test on the installed copy (``self_test``),
and its model latency timed in alternation with the active bundle's (``time_against``)."""

from __future__ import annotations

from pathlib import Path

from agent.errors import AgentError
from agent.model import LoadedBundle, paired_latency
from agent.runtimes import version_at_least
from agent.selftest import run_golden
from agent.slots import Pointer
from contract.common import Runtime
from contract.manifest import Manifest
from contract.signing import TrustStore


def check_manifest(manifest: Manifest, board: str | None, runtimes: dict[Runtime, str], pointer: Pointer) -> None:
    """AgentError when this device must refuse the bundle: another board, a runtime it lacks or has too
    old, a sequence not above the newest of the model's stream here (anti-rollback)."""
    refusal = manifest.board_refusal(board)
    if refusal is not None:
        raise AgentError(f"{refusal}: refused before installing")
    runtime = manifest.target.runtime
    have = runtimes.get(runtime.name)
    if have is None:
        raise AgentError(f"this device has no {runtime.name.value} runtime; the bundle needs it")
    if not version_at_least(have, runtime.min_version):
        raise AgentError(f"{runtime.name.value} {have} is older than the bundle's minimum {runtime.min_version}")
    refusal = pointer.refusal(manifest.stream_name, manifest.sequence)  # per model stream
    if refusal is not None:
        raise AgentError(refusal)


def self_test(directory: Path, trust: TrustStore, threads: int, cache: Path) -> None:
    """The golden self-test on an installed bundle (TensorRT builds its engine here, at install)."""
    with LoadedBundle.open_bundle(directory, trust, threads, cache) as candidate:
        result = run_golden(candidate, candidate.manifest.golden, directory / candidate.manifest.golden.file)
    if not result.passed:
        raise AgentError(f"golden self-test failed: max error {result.max_abs_error:.4g} above tolerance "
                         f"{result.tolerance:.4g}; the runtime here does not compute what the compiler measured")


def time_against(directory: Path, active: Path, trust: TrustStore, threads: int, cache: Path, limit: float,
                 rounds: int, best: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    """(candidate ms, active ms): the best ratio of ``best`` (an earlier attempt's, or none) and up to
    three medians of paired rounds, timed again while over ``limit``."""
    install_ms, predecessor_ms = best
    with LoadedBundle.open_bundle(directory, trust, threads, cache) as candidate, \
            LoadedBundle.open_bundle(active, trust, threads, cache) as predecessor:
        for _ in range(3):  # over the limit is timed again: a burst of other work on the device passes
            ms = paired_latency(candidate, predecessor, rounds)
            if install_ms is None or ms[0] / ms[1] < install_ms / (predecessor_ms or 1):
                install_ms, predecessor_ms = ms
            if ms[0] / max(ms[1], 1e-6) <= limit:
                break
    return install_ms, predecessor_ms


def prune_engines(cache: Path, keep: int = 4) -> None:
    """Built TensorRT engines in ``cache`` beyond the ``keep`` newest are deleted (two slots need two)."""
    plans = sorted(cache.glob("*.plan"), key=lambda p: p.stat().st_mtime) if cache.is_dir() else []
    for old in plans[:-keep]:
        old.unlink(missing_ok=True)
