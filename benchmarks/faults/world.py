"""Signed bundles of the demo fridge model and the commands that carry them to a device.

Shared by the test suite (``tests/conftest.py``'s ``world`` fixture, ``deploy_command``) and the
fault harness: the bundles are compiled the same way for both (the compiler's pipeline on
``examples/fridge`` with a few generated photos), signed by an ``ops`` key the devices trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compiler.bundle import Bundle, write_bundle
from compiler.description import ModelDescription, load_description
from compiler.evaluate import ImageSet, image_sets
from compiler.pipeline import Pipeline
from compiler.target import TargetProfile, load_target
from contract import signing
from contract.bundle import file_entry, manifest_sha256, pack
from contract.commands import COMMAND_TTL_S, ArtifactRef, Command, DeployCommand, RollbackCommand, sign_command
from contract.common import BundleRef
from contract.manifest import SIGNATURE_FILE, ModelSource, dump_manifest, load_manifest
from contract.transfer import encode_chunk
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from examples.fridge.synth import write_dataset

CHUNK = 64 * 1024


@dataclass(frozen=True)
class World:
    root: Path
    trust: signing.TrustStore
    bundles: dict[int, Bundle]  # by sequence: 4, 5, 6
    trusted_key: Ed25519PrivateKey
    rogue_key: Ed25519PrivateKey
    sets: tuple[ImageSet, ImageSet]  # calibration, evaluation
    description: ModelDescription
    target: TargetProfile

    @property
    def public_key(self) -> Path:
        """The ``ops`` public key: what a device lists in ``trusted_keys``."""
        return self.root / "keys" / "ops.pub"


def build_world(root: Path, sequences: tuple[int, ...] = (4, 5, 6)) -> World:
    """Compile the demo fridge model once and sign it as bundles with the given sequences."""
    write_dataset(root / "cal", 30, seed=1)
    write_dataset(root / "eval", 40, seed=2)
    description = load_description(DESCRIPTION_FILE)
    cal, ev, _ = image_sets(root / "cal", root / "eval", 30, 0, description)
    target = load_target("arm64-cortex-a72-ort")
    result = Pipeline(description, target, cal, ev, root / "work").run(MODEL_FILE)
    trusted = signing.write_keypair(root / "keys", "ops")
    rogue = signing.write_keypair(root / "keys", "rogue")
    key = signing.load_private_key(trusted.private)
    source = ModelSource(name="fridge", version="1", source_uri="file:///fridge.onnx", sha256="0" * 64)
    bundles = {seq: write_bundle(result, source, target, cal, ev, key, root / "bundles", seq) for seq in sequences}
    return World(root, signing.TrustStore.from_paths([trusted.public]), bundles, key,
                 signing.load_private_key(rogue.private), (cal, ev), description, target)


def deploy_command(tarball: Path, manifest_sha: str, sequence: int, job: str, group: str | None = "eu",
                   chunk: int = CHUNK, probation_s: float = 60) -> tuple[DeployCommand, list[bytes]]:
    """The deploy command for a tarball, and the chunk frames that carry it."""
    data = tarball.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    count = -(-len(data) // chunk)
    ref = ArtifactRef(sha256=sha, size=len(data), chunk_size=chunk, chunk_count=count, group=group)
    bundle = BundleRef(model_name="fridge", model_version="1", target="arm64-cortex-a72-ort", sequence=sequence,
                       sha256=manifest_sha)
    frames = [encode_chunk(sha, i, count, data[i * chunk:(i + 1) * chunk]) for i in range(count)]
    return DeployCommand(job_id=job, bundle=bundle, artifact=ref, probation_s=probation_s), frames


def signed(command: Command, key: Ed25519PrivateKey, device: str = "fridge-7", now: datetime | None = None,
           ttl_s: float = COMMAND_TTL_S) -> bytes:
    """``command`` for ``device``, signed by ``key`` as the cloud signs it (issued ``now``)."""
    return sign_command(command, key, device, now or datetime.now(UTC), ttl_s).to_json()


def signed_rollback(key: Ed25519PrivateKey, job: str, to: BundleRef | None = None,
                    reason: str = "operator rollback", device: str = "fridge-7") -> bytes:
    """A rollback command for ``device`` signed by ``key`` (an operator key the device trusts)."""
    return signed(RollbackCommand(job_id=job, to=to, reason=reason), key, device)


def resigned_bundle(bundle: Bundle, key: Ed25519PrivateKey, out: Path, name: str,
                    update: dict[str, object] | None = None, extra: dict[str, bytes] | None = None) -> tuple[Path, str]:
    """A copy of ``bundle`` named ``name`` whose manifest has ``update`` applied (e.g. another
    ``model``, ``sequence`` or ``stream``) and the ``extra`` files added as ``other``, signed again
    by ``key``: (tarball, manifest sha256)."""
    directory = out / name
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(bundle.directory, directory)
    manifest = load_manifest((directory / "manifest.json").read_bytes())
    files = list(manifest.files)
    for path, data in (extra or {}).items():
        (directory / path).write_bytes(data)
        files.append(file_entry(directory, path, "other"))
    manifest = manifest.model_validate({**manifest.model_dump(by_alias=True), **(update or {}), "files": files})
    data = dump_manifest(manifest)
    (directory / "manifest.json").write_bytes(data)
    (directory / SIGNATURE_FILE).write_bytes(signing.sign(data, key))
    return pack(directory, out / f"{name}.tar.gz"), manifest_sha256(directory)


def padded_bundle(bundle: Bundle, key: Ed25519PrivateKey, out: Path, mib: float) -> tuple[Path, str]:
    """``bundle`` with ``mib`` MiB of random bytes added as an ``other`` file and signed again:
    (tarball, manifest sha256). Random bytes do not compress, so the tarball is that big too."""
    return resigned_bundle(bundle, key, out, f"{bundle.directory.name}-padded-{mib:g}",
                           extra={"padding.bin": os.urandom(int(mib * 1024 * 1024))})
