"""Fleet inventory and bundle catalogue: devices as they report themselves plus operator-assigned
groups and tags; bundles verified against the trusted keys before the cloud will deploy them."""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.errors import BundleImportError, CloudError, NotFoundError
from cloud.plan import Selector
from cloud.store import BundleRow, Device, now
from contract.bundle import manifest_sha256, unpack
from contract.common import BundleRef
from contract.errors import ContractError
from contract.manifest import MANIFEST_FILE, load_manifest
from contract.signing import TrustStore
from contract.topics import check_id

_HEX_PREFIX = re.compile(r"^[0-9a-f]{1,64}$")


def add_bundle(session: Session, tarball: Path, trust: TrustStore) -> BundleRow:
    """Verify a bundle tarball (signature, every file hash) and add it to the catalogue (idempotent)."""
    tarball = tarball.resolve()
    try:
        data = tarball.read_bytes()
        with tempfile.TemporaryDirectory(prefix="coldchain-bundle-") as tmp:
            directory = unpack(data, Path(tmp) / "b", trust)  # signature, then every file's size and hash
            manifest = load_manifest((directory / MANIFEST_FILE).read_bytes())
            sha = manifest_sha256(directory)
    except OSError as exc:
        raise BundleImportError(f"cannot read bundle {tarball}: {exc.strerror or exc}") from exc
    except ContractError as exc:
        raise BundleImportError(f"{tarball.name} is not a deployable bundle: {exc}") from exc
    row = session.get(BundleRow, sha)
    if row is None:
        row = BundleRow(sha256=sha, model_name=manifest.model.name, model_version=manifest.model.version,
                        target=manifest.target.name, sequence=manifest.sequence, tarball=str(tarball),
                        artifact_sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                        manifest=manifest.model_dump(mode="json", by_alias=True), added_at=now())
        session.add(row)
    return row


def previous_bundle(session: Session, row: BundleRow) -> BundleRow | None:
    """The same model's bundle for the same target with the next lower sequence."""
    return session.scalars(select(BundleRow).where(
        BundleRow.model_name == row.model_name, BundleRow.target == row.target,
        BundleRow.sequence < row.sequence).order_by(BundleRow.sequence.desc())).first()


def bundle_ref(row: BundleRow) -> BundleRef:
    return BundleRef(model_name=row.model_name, model_version=row.model_version, target=row.target,
                     sequence=row.sequence, sha256=row.sha256)


def find_bundle(session: Session, prefix: str) -> BundleRow:
    """A bundle by its manifest sha256 or a unique prefix of it, compared literally (hex digits only:
    never a LIKE pattern, so ``%`` or ``_`` match nothing)."""
    prefix = prefix.lower()
    if not _HEX_PREFIX.match(prefix):
        raise NotFoundError(f"{prefix[:80]!r} is not a bundle's sha256 or a prefix of it (1-64 hex digits)")
    rows = session.scalars(select(BundleRow).where(func.substr(BundleRow.sha256, 1, len(prefix)) == prefix)).all()
    if len(rows) != 1:
        known = ", ".join(f"{r.sha256[:12]} ({r.model_name} #{r.sequence})" for r in
                          session.scalars(select(BundleRow)).all()) or "none; add one with `coldchain cloud add-bundle`"
        what = "matches several bundles" if rows else "matches no bundle"
        raise NotFoundError(f"{prefix!r} {what}; known bundles: {known}")
    return rows[0]


def matches(device: Device, selector: Selector) -> bool:
    groups = set(device.all_groups())
    return ((not selector.groups or bool(groups & set(selector.groups)))
            and (not selector.boards or device.board in selector.boards)
            and all(device.tags.get(k) == v for k, v in selector.tags.items())
            and (not selector.devices or device.id in selector.devices))


def select_devices(session: Session, selector: Selector) -> list[Device]:
    """Matching devices, online ones first, then by id (a deterministic wave order)."""
    devices = [d for d in session.scalars(select(Device)).all() if matches(d, selector)]
    return sorted(devices, key=lambda d: (not d.online, d.id))


def get_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"no device {device_id!r}: devices appear once they publish their state")
    return device


MAX_TAG_VALUE = 256  # characters


def tag(session: Session, device_ids: Sequence[str], tags: dict[str, str | None], add_groups: Sequence[str] = (),
        remove_groups: Sequence[str] = ()) -> list[Device]:
    """Set (value) or remove (None) tags and assign or unassign groups on devices."""
    changed = []
    for device_id in device_ids:
        device = get_device(session, device_id)
        new_tags = dict(device.tags)
        for key, value in tags.items():
            if value is None:
                new_tags.pop(key, None)
            elif len(value) > MAX_TAG_VALUE:
                raise CloudError(f"tag {key[:64]!r}: a value is at most {MAX_TAG_VALUE} characters, "
                                 f"got {len(value)}")
            else:
                new_tags[check_id(key, "tag name")] = value
        device.tags = new_tags
        device.groups = sorted({*device.groups, *(check_id(g, "group") for g in add_groups)} - set(remove_groups))
        changed.append(device)
    return changed
