"""API tokens from the CLI: created with a scope and shown once, stored as a sha256, listed,
revoked (the API refuses it at once); every change and every CLI write lands in the audit log,
which `coldchain audit` and GET /audit show."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from cloud.api import create_app
from cloud.store import ApiToken, open_store
from coldchain.cli import app as cli


def test_token_lifecycle_and_audit_from_the_cli(api_store: tuple[str, str]) -> None:
    url, sha = api_store
    runner = CliRunner()
    made = runner.invoke(cli, ["token", "create", "grafana", "--scope", "read", "--db", url])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert token.startswith("cct_") and len(token) >= 40
    with open_store(url)() as session:
        (row,) = session.scalars(select(ApiToken)).all()
    assert row.digest == hashlib.sha256(token.encode()).hexdigest() and token not in (row.digest, row.name)
    again = runner.invoke(cli, ["token", "create", "grafana", "--scope", "admin", "--db", url])
    assert again.exit_code == 1 and "exists" in again.output
    bad = runner.invoke(cli, ["token", "create", "x", "--scope", "root", "--db", url])
    assert bad.exit_code == 1 and "scope is one of read, operate, admin" in bad.output
    ops = runner.invoke(cli, ["token", "create", "alice", "--scope", "operate", "--db", url])
    operate = ops.output.strip().splitlines()[-1]

    client = TestClient(create_app(open_store(url)))  # no bootstrap token: the store's tokens only
    assert client.get("/devices", headers={"Authorization": f"Bearer {token}"}).json()["total"] == 4
    paused = client.post("/rollouts", headers={"Authorization": f"Bearer {operate}"},
                         json={"bundle": sha[:12], "rollout_id": "r-tok", "plan": {"waves": "100%"}})
    assert paused.status_code == 201, paused.text
    listed = runner.invoke(cli, ["token", "list", "--db", url], terminal_width=200)
    assert "grafana" in listed.output and "read" in listed.output and "alice" in listed.output
    assert token not in listed.output

    tagged = runner.invoke(cli, ["fleet", "tag", "fridge-1", "--set", "ring=canary", "--db", url])
    assert tagged.exit_code == 0, tagged.output
    gone = runner.invoke(cli, ["token", "revoke", "grafana", "--db", url])
    assert gone.exit_code == 0, gone.output
    assert client.get("/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert runner.invoke(cli, ["token", "revoke", "nobody", "--db", url]).exit_code == 1

    audit = runner.invoke(cli, ["audit", "--db", url], terminal_width=250)
    assert audit.exit_code == 0, audit.output
    lines = [line for line in audit.output.splitlines() if "token." in line or "rollout." in line
             or "device." in line]
    actions = [next(a for a in ("token.create", "token.revoke", "rollout.start", "device.tag") if a in line)
               for line in lines]
    assert actions == ["token.revoke", "token.revoke", "device.tag", "rollout.start", "token.create",
                       "token.create", "token.create", "token.create"], audit.output
    assert "token:alice" in audit.output and "refused: no such token" in audit.output
    served = client.get("/audit", params={"action": "rollout.start"}, headers={"Authorization": f"Bearer {operate}"})
    assert [(e["actor"], e["target"], e["result"]) for e in served.json()["items"]] == [
        ("token:alice", "r-tok", "ok")]
