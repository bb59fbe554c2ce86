"""Key roles and root-signed trust updates on the device (issue 13): a key is accepted only in its
role, and a trust document signed by the offline root key replaces a compromised operator key in
the field. Driven through the agent with an in-memory transport, on the demo fridge's bundles (signed
by the ``ops`` key, which is the bundle-signer here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import AgentConfig
from agent.loop import Agent
from benchmarks.faults.world import deploy_command, resigned_bundle, signed, signed_rollback
from contract import signing, topics
from contract.commands import TrustUpdateCommand
from contract.errors import ExpiredKeyError
from contract.events import ErrorEvent, JobEvent, decode_event
from contract.jobs import JobState
from contract.signing import Role
from contract.trust import TRUST_FILE, SignedTrust, TrustDocument, TrustedKey, sign_trust
from tests.agent.conftest import MemoryTransport
from transport.client import Connected, Received

DEVICE = "fridge-7"


@dataclass
class Keys:
    root: Ed25519PrivateKey
    signer: Ed25519PrivateKey  # the world's ops key: it signed the demo bundles
    operator: Ed25519PrivateKey

    def document(self, version: int, operators: list[Ed25519PrivateKey] | None = None,
                 revoked: tuple[str, ...] = (), root: Ed25519PrivateKey | None = None) -> TrustDocument:
        keys = [TrustedKey.of((root or self.root).public_key(), Role.ROOT),
                TrustedKey.of(self.signer.public_key(), Role.BUNDLE_SIGNER),
                *[TrustedKey.of(k.public_key(), Role.OPERATOR) for k in (operators or [self.operator])]]
        return TrustDocument(version=version, keys=keys, revoked=list(revoked))


@pytest.fixture
def keys(world: dict[str, object]) -> Keys:
    return Keys(signing.generate_private_key(), world["trusted_key"], signing.generate_private_key())  # type: ignore[arg-type]


def _agent(tmp_path: Path, config: dict[str, object], board: str = "unknown") -> tuple[Agent, MemoryTransport]:
    transport = MemoryTransport()
    a = Agent(AgentConfig.model_validate({"device_id": DEVICE, "groups": ["eu"], "data_dir": tmp_path / "data",
                                          "board": board, **config}), transport, None)
    a.handle(Connected())
    return a, transport


def _provisioned(tmp_path: Path, keys: Keys) -> tuple[Agent, MemoryTransport]:
    seed = tmp_path / "factory" / TRUST_FILE
    seed.parent.mkdir(parents=True, exist_ok=True)
    seed.write_bytes(sign_trust(keys.document(1), [keys.root]).to_json())
    return _agent(tmp_path, {"trust_file": seed})


def _errors(t: MemoryTransport, code: str) -> list[str]:
    return [e.message for e in map(decode_event, t.on(topics.events(DEVICE)))
            if isinstance(e, ErrorEvent) and e.code == code]


def _job(t: MemoryTransport, job: str) -> list[tuple[JobState, str | None]]:
    return [(e.state, e.reason) for e in map(decode_event, t.on(topics.events(DEVICE)))
            if isinstance(e, JobEvent) and e.job_id == job]


def _deploy(a: Agent, key: Ed25519PrivateKey, tarball: Path, sha: str, seq: int, job: str) -> None:
    command, frames = deploy_command(tarball, sha, seq, job)
    a.handle(Received(topics.commands(DEVICE), signed(command, key, DEVICE)))
    for frame in frames:
        a.handle(Received(topics.group_chunks("eu", command.artifact.sha256), frame))


def _update(a: Agent, signed: SignedTrust, job: str) -> None:
    a.handle(Received(topics.commands(DEVICE), TrustUpdateCommand(job_id=job, trust=signed).to_json()))


def test_a_key_is_accepted_only_in_its_role(tmp_path: Path, world: dict[str, object], keys: Keys) -> None:
    a, t = _provisioned(tmp_path, keys)
    bundles = world["bundles"]  # type: ignore[index]
    # a bundle signed by the operator key: refused, naming the role
    tarball, sha = resigned_bundle(bundles[5], keys.operator, tmp_path / "b", "by-operator")
    _deploy(a, keys.operator, tarball, sha, 5, "j-op")
    state, reason = _job(t, "j-op")[-1]
    assert state is JobState.FAILED and "trusted here only as operator" in (reason or "")
    assert "needs a bundle-signer key" in (reason or "")
    # the bundle-signer's bundles install; a rollback it signs is refused
    _deploy(a, keys.operator, bundles[5].tarball, bundles[5].ref.sha256, 5, "j5")
    assert _job(t, "j5")[-1][0] is JobState.PROBATION
    a.handle(Received(topics.commands(DEVICE), signed_rollback(keys.signer, "rb-1")))
    assert any("trusted here only as bundle-signer" in m and "needs a operator key" in m
               for m in _errors(t, "command_refused.bad_signature"))
    assert a.deployer.slots.pointer().active_sequence == 5


def test_legacy_configuration_infers_roles_from_where_keys_are_listed(tmp_path: Path, world: dict[str, object],
                                                                     keys: Keys) -> None:
    """No trust document: ``trusted_keys`` are trusted in both roles (as before roles existed),
    ``bundle_keys`` and ``operator_keys`` in one each."""
    root: Path = world["root"]  # type: ignore[assignment]
    operator_pub = signing.write_keypair(tmp_path / "keys", "operator").public
    legacy, _ = _agent(tmp_path / "legacy", {"trusted_keys": [root / "keys" / "ops.pub"]})
    assert legacy.trust.keys_for(Role.OPERATOR) == legacy.trust.keys_for(Role.BUNDLE_SIGNER) != []
    split, _ = _agent(tmp_path / "split", {"bundle_keys": [root / "keys" / "ops.pub"], "operator_keys": [operator_pub]})
    assert split.trust.keys_for(Role.BUNDLE_SIGNER) == [signing.key_id(keys.signer.public_key())]
    assert split.trust.keys_for(Role.OPERATOR) == [signing.key_id(signing.load_public_key(operator_pub))]
    assert split.trust.keys_for(Role.ROOT) == []


def test_a_root_signed_update_replaces_a_compromised_operator_key(tmp_path: Path, world: dict[str, object],
                                                                 keys: Keys) -> None:
    a, t = _provisioned(tmp_path, keys)
    bundles = world["bundles"]  # type: ignore[index]
    for seq in (5, 6):
        _deploy(a, keys.operator, bundles[seq].tarball, bundles[seq].ref.sha256, seq, f"j{seq}")
        record = a.deployer.jobs.get(f"j{seq}")
        assert record is not None
        a.deployer.probation(record, 100, 0, 0, 0.5, now=(record.probation_started or 0) + 10_000)
    old_id = signing.key_id(keys.operator.public_key())
    new = signing.generate_private_key()
    # signed by the compromised operator key instead of root: refused, nothing changes
    forged = sign_trust(keys.document(2, [new], (old_id,)), [keys.operator])
    _update(a, forged, "trust-forged")
    state, reason = _job(t, "trust-forged")[-1]
    assert state is JobState.FAILED and "not signed by a root key this device trusts" in (reason or "")
    assert a.trust.version == 1
    # the root-signed one: applied and persisted
    _update(a, sign_trust(keys.document(2, [new], (old_id,)), [keys.root]), "trust-2")
    assert _job(t, "trust-2")[-1] == (JobState.SUCCEEDED, "trust document version 2 applied")
    assert a.trust.version == 2 and old_id in a.trust.revoked
    a.handle(Received(topics.commands(DEVICE), signed_rollback(keys.operator, "rb-old")))
    assert any("revoked by trust document version 2" in m for m in _errors(t, "command_refused.bad_signature"))
    assert a.deployer.slots.pointer().active_sequence == 6
    # a replay of version 1 (or of 2) is refused
    _update(a, sign_trust(keys.document(1), [keys.root]), "trust-replay")
    assert "not newer than the version 2" in (_job(t, "trust-replay")[-1][1] or "")
    # after a restart the device still holds version 2, and the new key's rollback works
    b, t2 = _agent(tmp_path, {"trust_file": tmp_path / "factory" / TRUST_FILE})
    assert b.trust.version == 2
    b.handle(Received(topics.commands(DEVICE), signed_rollback(new, "rb-new")))
    assert _errors(t2, "rollback_refused") == _errors(t2, "command_refused.bad_signature") == []
    assert b.deployer.slots.pointer().active_sequence == 5


def test_root_rotation_needs_the_old_and_a_new_root(tmp_path: Path, keys: Keys) -> None:
    a, t = _provisioned(tmp_path, keys)
    new_root = signing.generate_private_key()
    _update(a, sign_trust(keys.document(2, root=new_root), [new_root]), "trust-new-only")
    assert "not signed by a root key this device trusts" in (_job(t, "trust-new-only")[-1][1] or "")
    _update(a, sign_trust(keys.document(2, root=new_root), [keys.root]), "trust-old-only")
    assert "not signed by a new root key too" in (_job(t, "trust-old-only")[-1][1] or "")
    _update(a, sign_trust(keys.document(2, root=new_root), [keys.root, new_root]), "trust-both")
    assert _job(t, "trust-both")[-1][0] is JobState.SUCCEEDED
    assert a.trust.keys_for(Role.ROOT) == [signing.key_id(new_root.public_key())]


def test_a_device_without_a_root_key_refuses_trust_updates(tmp_path: Path, world: dict[str, object],
                                                           keys: Keys) -> None:
    root: Path = world["root"]  # type: ignore[assignment]
    a, t = _agent(tmp_path, {"trusted_keys": [root / "keys" / "ops.pub"]})
    _update(a, sign_trust(keys.document(1), [keys.root]), "trust-1")
    state, reason = _job(t, "trust-1")[-1]
    assert state is JobState.FAILED and "has no root key" in (reason or "")


def test_a_damaged_trust_file_is_refused_at_start(tmp_path: Path, keys: Keys) -> None:
    a, _ = _provisioned(tmp_path, keys)
    persisted = a.config.data_dir / "trust" / TRUST_FILE
    assert persisted.is_file()
    persisted.write_text('{"schema_version": 1, "signed": "{}", "signatures": []}')
    b, t = _agent(tmp_path, {"trust_file": tmp_path / "factory" / TRUST_FILE})
    assert b.trust.version == 1  # back to the provisioned document, and it says so
    assert any("trust" in m for m in _errors(t, "trust_recovered"))


@pytest.mark.parametrize("skew", [datetime(1970, 1, 1, tzinfo=UTC) - datetime.now(UTC), timedelta(days=365)])
def test_key_expiry_with_a_wrong_clock(keys: Keys, skew: timedelta) -> None:
    """Expiry is judged against the device's trusted time: its clock, never earlier than the issue
    time of its trust document. A clock at 1970 still refuses keys that had expired when the document
    was issued; a clock a year ahead refuses keys valid for less than a year (and says so: the root can
    extend ``not_after`` with a new document, since root keys never expire)."""
    issued = datetime.now(UTC)
    expired = signing.generate_private_key()
    short = signing.generate_private_key()
    document = TrustDocument(version=3, issued_at=issued, keys=[
        TrustedKey.of(keys.root.public_key(), Role.ROOT),
        TrustedKey.of(expired.public_key(), Role.OPERATOR, not_after=issued - timedelta(days=1)),
        TrustedKey.of(short.public_key(), Role.OPERATOR, not_after=issued + timedelta(days=30))])
    store = document.store(clock=lambda: datetime.now(UTC) + skew)
    with pytest.raises(ExpiredKeyError, match="valid until"):
        store.check(signing.key_id(expired.public_key()), Role.OPERATOR)
    if skew > timedelta(0):
        with pytest.raises(ExpiredKeyError, match="if the clock is wrong, set it"):
            store.check(signing.key_id(short.public_key()), Role.OPERATOR)
    else:
        assert store.trusted_now() == issued
        store.check(signing.key_id(short.public_key()), Role.OPERATOR)
