"""Offline install (``coldchain agent install BUNDLE.tar.gz``): a factory-default bundle put on a device
without a broker, through the deployer's own path.

The tarball becomes a local deploy job (``install-<artifact sha>``) whose chunks are read from the
file instead of the broker and handed to :meth:`Deployer.on_chunk`, so the bundle passes exactly
the checks it would over MQTT: the signature with the device's trust, every hash, the board, the
runtime, the anti-rollback sequence, the golden self-test and, with an active bundle, the timing
against it. It activates at once (nobody holds activation offline) and is left in PROBATION: the
agent judges it on live frames when it runs and marks it known-good then. Refused while the agent
runs: the install writes the same data directory (``agent/lock.py``).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agent import runtimes
from agent.config import AgentConfig
from agent.deploy import Deployer, Emit
from agent.errors import AgentError
from agent.jobs import JobRecord
from agent.lock import lock_data_dir
from agent.trust import TrustKeeper
from contract.bundle import manifest_sha256, unpack
from contract.commands import ArtifactRef, DeployCommand
from contract.common import BundleRef
from contract.errors import ContractError
from contract.jobs import JobState
from contract.manifest import MANIFEST_FILE, load_manifest
from contract.transfer import DEFAULT_CHUNK_SIZE, decode_chunk, encode_chunk

OFFLINE_PROBATION_S = 300.0  # judged on the agent's first frames after it starts


def _pieces(tarball: Path, size: int) -> Iterator[bytes]:
    with tarball.open("rb") as fh:
        while piece := fh.read(size):
            yield piece


def local_command(tarball: Path) -> DeployCommand:
    """The deploy command a broker would have brought for ``tarball``. Its manifest is read here
    without the signature check (only to name the bundle): the deployer verifies the signature,
    every hash and the rest as it verifies any download, and fails the job with the reason."""
    digest, size = hashlib.sha256(), 0
    for piece in _pieces(tarball, 1 << 20):
        digest.update(piece)
        size += len(piece)
    if size == 0:
        raise AgentError(f"{tarball} is empty: not a bundle")
    with tempfile.TemporaryDirectory() as tmp:
        directory = unpack(tarball, Path(tmp) / "bundle")
        manifest = load_manifest((directory / MANIFEST_FILE).read_bytes())
        bundle = BundleRef(model_name=manifest.model.name, model_version=manifest.model.version,
                           target=manifest.target.name, sequence=manifest.sequence, sha256=manifest_sha256(directory))
    sha = digest.hexdigest()
    artifact = ArtifactRef(sha256=sha, size=size, chunk_size=DEFAULT_CHUNK_SIZE,
                           chunk_count=-(-size // DEFAULT_CHUNK_SIZE))
    return DeployCommand(job_id=f"install-{sha[:16]}", bundle=bundle, artifact=artifact,
                         probation_s=OFFLINE_PROBATION_S)


def install_offline(config: AgentConfig, tarball: Path, emit: Emit) -> JobRecord:
    """Install ``tarball`` into ``config.data_dir`` as the deployer would over MQTT; returns the job
    (PROBATION when it became active, FAILED with the reason otherwise). ``emit`` hears each state.
    Refused while an agent runs on the same data directory (``agent/lock.py``)."""
    with lock_data_dir(config.data_dir):
        return _install(config, tarball, emit)


def _install(config: AgentConfig, tarball: Path, emit: Emit) -> JobRecord:
    keeper = TrustKeeper(config)
    deployer = Deployer(config.data_dir, keeper.store, runtimes.available(), emit, config.limits.threads,
                        board=config.board)
    try:
        command = local_command(tarball)
    except OSError as exc:
        raise AgentError(f"cannot read {tarball}: {exc.strerror}") from exc
    except ContractError as exc:  # not a bundle at all: nothing was written
        raise AgentError(f"{tarball} is refused: {exc}") from exc
    # a known job id is only re-reported (as a re-sent command is); a failed install is tried again, under
    # a job id of its own, since the device may have been fixed since (its board, its trusted keys, space)
    attempt, job_id = 1, command.job_id
    while (previous := deployer.jobs.get(job_id)) is not None and previous.state is JobState.FAILED:
        attempt += 1
        job_id = f"{command.job_id}.{attempt}"
    command = command.model_copy(update={"job_id": job_id})
    record = deployer.on_deploy(command)  # the same job id for the same tarball: installed once
    count = command.artifact.chunk_count
    for index, piece in enumerate(_pieces(tarball, command.artifact.chunk_size)):
        if record.state is not JobState.DOWNLOADING:
            break
        record = deployer.on_chunk(command.job_id, decode_chunk(encode_chunk(command.artifact.sha256, index, count,
                                                                             piece))) or record
    return record
