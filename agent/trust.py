"""What the device trusts, and root-signed updates of it (docs/security.md, "Keys and roles").

A device provisioned with a trust document (``trust_file`` in its configuration, signed by the
fleet's offline root key) keeps its current copy in ``data_dir/trust/trust.json``. A
``trust_update`` command carries a newer document: it replaces the current one only if a current
root key signed it and its version is higher, and it is written beside the old one and renamed
over it (a power cut leaves the old or the new document, never a mix). The provisioned file is a
seed: used when the data directory has no document, and applied as an update when it is newer.

A device without a trust document trusts public key files from its configuration, in the roles
the configuration lists them under (``trusted_keys``: both bundle-signer and operator, as before
roles existed); it has no root key, so it refuses trust updates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from agent.config import AgentConfig
from agent.errors import AgentError
from agent.recovery import quarantine
from contract.base import utc_now
from contract.commands import TrustUpdateCommand
from contract.errors import ContractError
from contract.jobs import JobState
from contract.signing import Role, TrustStore
from contract.trust import TRUST_FILE, SignedTrust, TrustDocument, load_signed, verify_initial, verify_update

log = logging.getLogger("coldchain.agent.trust")
Report = Callable[[str, JobState, str | None, float | None], None]  # job id, state, reason, progress


class TrustKeeper:
    """Loads the device's trust at start and applies root-signed updates; ``store`` is the one live
    :class:`TrustStore` every verifier of the agent holds (updated in place)."""

    def __init__(self, config: AgentConfig, clock: Callable[[], datetime] = utc_now) -> None:
        self.path = config.data_dir / "trust" / TRUST_FILE
        self.seed = config.trust_file
        self.clock = clock
        self.recovered: str | None = None  # what was repaired at start, for the agent to report once
        self.document = self._load()
        if self.document is not None:
            self.store = self.document.store(clock)
        else:
            self.store = TrustStore.from_role_paths({Role.BUNDLE_SIGNER: [*config.trusted_keys, *config.bundle_keys],
                                                     Role.OPERATOR: [*config.trusted_keys, *config.operator_keys]})

    def _read(self, path: Path, update_of: TrustDocument | None = None) -> TrustDocument:
        try:
            signed = load_signed(path.read_bytes())
        except OSError as exc:
            raise AgentError(f"cannot read the trust document {path}: {exc.strerror}") from exc
        return verify_initial(signed) if update_of is None else verify_update(update_of, signed)

    def _load(self) -> TrustDocument | None:
        current: TrustDocument | None = None
        if self.path.is_file():
            try:
                current = self._read(self.path)
            except (AgentError, ContractError) as exc:  # damaged on disk: set aside, back to the seed
                bad = self.path.with_name(f"{TRUST_FILE}.damaged")
                self.path.replace(bad)
                self.recovered = f"the device's trust document was unusable ({exc}); kept as {bad.name}"
        elif self.path.exists():  # a directory (or another non-file) where the document belongs
            bad = quarantine(self.path)
            self.recovered = f"the device's trust document {self.path} was not a file; moved aside as {bad.name}"
        if self.seed is None:
            if current is None and self.recovered:
                raise AgentError(f"{self.recovered}, and no trust_file is configured to start again from")
            return current
        if current is None:
            seed = self._read(self.seed)
            self._write(load_signed(self.seed.read_bytes()))
            if self.recovered:
                self.recovered += f"; the provisioned trust document (version {seed.version}) is used again"
            return seed
        try:
            newer = self._read(self.seed, update_of=current)
        except ContractError as exc:  # older or equal: the usual case once updates came over the air
            log.debug("provisioned trust document not applied: %s", exc)
            return current
        self._write(load_signed(self.seed.read_bytes()))
        return newer

    def _write(self, signed: SignedTrust) -> None:
        """Write-then-rename, with the data flushed first: the old document or the new, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{TRUST_FILE}.new")
        with tmp.open("wb") as fh:
            fh.write(signed.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    def on_update(self, command: TrustUpdateCommand, report: Report) -> None:
        """Apply a root-signed trust document, answered as a job: SUCCEEDED, or FAILED with why."""
        if self.document is None:
            report(command.job_id, JobState.FAILED, "this device has no root key (it trusts key files from its "
                   "configuration): provision a root-signed trust document (agent config trust_file) first", None)
            return
        if command.trust.to_json() == _signed_now(self.path):
            report(command.job_id, JobState.SUCCEEDED, f"trust document version {self.document.version} applied",
                   None)  # the same document again (a re-sent command): the same answer
            return
        try:
            document = verify_update(self.document, command.trust)
            self._write(command.trust)
        except ContractError as exc:
            log.warning("trust update %s refused: %s", command.job_id, exc)
            report(command.job_id, JobState.FAILED, str(exc), None)
            return
        except OSError as exc:
            report(command.job_id, JobState.FAILED, f"cannot store the trust document: {exc.strerror}", None)
            return
        self.document = document
        self.store.replace(document.store(self.clock))
        log.info("trust document version %d applied (%d keys, %d revoked)", document.version, len(document.keys),
                 len(document.revoked))
        report(command.job_id, JobState.SUCCEEDED, f"trust document version {document.version} applied", None)


def _signed_now(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
