"""``coldchain keys init / rotate / list``: the fleet's trust document from the command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from coldchain.cli import app
from contract import signing
from contract.signing import Role
from contract.trust import load_signed, verify_initial, verify_update

runner = CliRunner()


def _document(path: Path):  # type: ignore[no-untyped-def]
    return load_signed(path.read_bytes()).document()


def test_init_rotate_revoke_and_list(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    existing = signing.write_keypair(tmp_path, "ops")  # today's key: kept as the bundle-signer
    result = runner.invoke(app, ["keys", "init", "--out", str(keys), "--bundle-signer", str(existing.public)])
    assert result.exit_code == 0, result.output
    trust = keys / "trust.json"
    first = verify_initial(load_signed(trust.read_bytes()))
    assert {k.role: k.key_id for k in first.keys if k.role is Role.BUNDLE_SIGNER} == {
        Role.BUNDLE_SIGNER: existing.key_id}
    old_operator = next(k.key_id for k in first.keys if k.role is Role.OPERATOR)
    # a second operator key beside the first (two per role), then a third only with a revocation
    rotate = ["keys", "rotate", "--role", "operator", "--root-key", str(keys / "root.key"), "--trust", str(trust)]
    assert runner.invoke(app, rotate).exit_code == 0
    second = verify_update(first, load_signed(trust.read_bytes()))
    assert second.version == 2 and sum(k.role is Role.OPERATOR for k in second.keys) == 2
    refused = runner.invoke(app, rotate)
    assert refused.exit_code == 1 and "at most 2 per role" in refused.output
    assert runner.invoke(app, [*rotate, "--revoke", old_operator, "--valid-days", "90"]).exit_code == 0
    third = verify_update(second, load_signed(trust.read_bytes()))
    assert third.version == 3 and old_operator in third.revoked
    assert all(k.not_after is not None for k in third.keys if k.role is Role.OPERATOR and k.key_id not in
               {x.key_id for x in second.keys})
    # a key that is not root cannot sign the next document
    wrong = runner.invoke(app, [*rotate[:5], str(existing.private),
                                "--trust", str(trust)])
    assert wrong.exit_code == 1 and "is not a root key" in wrong.output
    listed = runner.invoke(app, ["keys", "list", "--trust", str(trust)])
    assert listed.exit_code == 0 and "revoked" in listed.output and old_operator in listed.output
    assert "operator" in listed.output and "bundle-signer" in listed.output and "root" in listed.output
