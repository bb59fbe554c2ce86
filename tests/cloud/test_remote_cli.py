"""The remote CLI against a real API server (uvicorn on 127.0.0.1, SQLite store): `coldchain login`
stores the URL and token 0600 under XDG_CONFIG_HOME; fleet, rollout, monitor, bundle and audit
commands print exactly what they print on the store itself; rollout writes need an operate token;
bundles are uploaded and verified by the cloud; a wrong URL, a dead port or a refused token is a
one-line error with its own exit code, never a traceback."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

import coldchain.cloud_views
from benchmarks.faults.world import World
from cloud.api import create_app
from cloud.broker import free_port
from cloud.config import Bundles, CloudConfig
from cloud.fleet import bundle_ref, find_bundle
from cloud.ingest import ingest
from cloud.monitor import raise_alert
from cloud.queries import Queries
from cloud.rollouts import RolloutPlan, start
from cloud.store import open_store, sqlite_url
from cloud.tokens import create, revoke
from coldchain.cli import app as cli
from contract import topics
from contract.telemetry import Telemetry
from tests.cloud.live_http import serving


@dataclass
class Live:
    db: str
    url: str
    sha: str
    read: str
    operate: str
    config: Path
    runner: CliRunner

    def run(self, *args: str, token: str | None = None, url: str | None = None, given: str | None = None) -> Result:
        """``coldchain ARGS`` with no target in the environment; ``token`` adds ``--url/--token``."""
        extra = [] if token is None else ["--url", url or self.url, "--token", token]
        return self.runner.invoke(cli, [*args, *extra], input=given, terminal_width=250)

    def local(self, *args: str, given: str | None = None) -> Result:
        return self.runner.invoke(cli, [*args, "--db", self.db], input=given, terminal_width=250)


def _seed(db: str, sha: str) -> None:
    """Telemetry from the four fridges on bundle 5, a rollout, an alert and a dead letter."""
    sessions = open_store(db)
    end = datetime.now(UTC) - timedelta(minutes=1)
    with sessions.begin() as session:
        ref = bundle_ref(find_bundle(session, sha))
        for i in range(4):
            window = Telemetry(device_id=f"fridge-{i}", seq=1, window_start=end - timedelta(seconds=60),
                               window_end=end, bundle=ref, inferences=50 + i, errors={"runtime": i} if i else {},
                               predictions={"milk_carton": 30, "egg_box": 20 + i})
            ingest(session, topics.telemetry(f"fridge-{i}"), window.to_json())
        ingest(session, topics.telemetry("fridge-0"), b"{not json")
        raise_alert(session, "drift", "bundle", sha[:12], "prediction drift 0.31 above 0.15", 0.31)
    start(sessions, sha, RolloutPlan.model_validate({"selector": {"groups": ["eu"]}, "waves": "1,100%"}),
          rollout_id="r-seed")


@pytest.fixture
def live(api_store: tuple[str, str], tmp_path: Path, fault_world: World,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    db, sha = api_store
    _seed(db, sha)
    sessions = open_store(db)
    read, operate = create(sessions, "viewer", "read", "test"), create(sessions, "alice", "operate", "test")
    config = CloudConfig(bundles=Bundles(dir=tmp_path / "uploads", trusted_keys=[fault_world.public_key]))
    fixed = datetime.now(UTC)  # "N s ago" must not tick between the local and the remote run
    monkeypatch.setattr(coldchain.cloud_views, "clock", lambda: fixed)
    home = tmp_path / "config"
    runner = CliRunner(env={"XDG_CONFIG_HOME": str(home), "COLDCHAIN_URL": None, "COLDCHAIN_TOKEN": None,
                            "COLDCHAIN_DB": None, "COLDCHAIN_INSECURE": None})
    with serving(create_app(sessions, config=config)) as port:
        yield Live(db, f"http://127.0.0.1:{port}", sha, read, operate, home / "coldchain" / "login.json", runner)


def test_login_stores_the_token_0600_and_logout_forgets_it(live: Live) -> None:
    nothing = live.run("fleet", "list")
    assert nothing.exit_code == 2, nothing.output
    assert "--db" in nothing.output and "coldchain login" in nothing.output and "Traceback" not in nothing.output

    done = live.run("login", live.url, "--token", live.read)
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(live.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(live.config.parent.stat().st_mode) == 0o700
    assert json.loads(live.config.read_text()) == {"url": live.url, "token": live.read, "insecure": False}
    assert live.read not in done.output
    assert "as token 'viewer' (scope read;" in done.output, done.output
    listed = live.run("fleet", "list")  # no option: the stored login
    assert listed.exit_code == 0 and "fridge-3" in listed.output, listed.output
    assert listed.output == live.local("fleet", "list").output

    wrong = live.run("login", live.url, "--token", "cct_" + "x" * 43)
    assert wrong.exit_code == 3 and "refused the token" in wrong.output, wrong.output
    assert json.loads(live.config.read_text())["token"] == live.read  # the good login is kept
    prompted = live.run("login", live.url + "/", given=live.operate + "\n")  # asked for, hidden
    assert prompted.exit_code == 0, prompted.output
    assert json.loads(live.config.read_text())["token"] == live.operate
    assert json.loads(live.config.read_text())["url"] == live.url  # the trailing slash is dropped

    clear = live.run("login", "http://cloud.invalid:8000", "--token", live.read)  # refused before any connection
    assert clear.exit_code == 2 and "https://" in clear.output and "--insecure" in clear.output, clear.output
    assert json.loads(live.config.read_text())["token"] == live.operate

    live.config.chmod(0o644)
    loose = live.run("fleet", "list")
    assert loose.exit_code == 2 and "chmod 600" in loose.output, loose.output
    live.config.chmod(0o600)

    gone = live.run("logout")
    assert gone.exit_code == 0 and not live.config.exists(), gone.output
    assert live.run("logout").exit_code == 0  # already logged out: said, not an error
    assert live.run("fleet", "list").exit_code == 2


def test_plain_http_is_only_for_loopback_unless_insecure() -> None:
    from coldchain.errors import TargetError
    from coldchain.login import check_transport, normalised

    for url in ("https://cloud.example.com", "http://127.0.0.1:8000", "http://127.0.0.9", "http://localhost:1",
                "http://[::1]:8000/"):
        check_transport(normalised(url), insecure=False)
    for url in ("http://cloud.example.com", "http://10.0.0.5:8000", "http://127.0.0.1.cloud.invalid"):
        with pytest.raises(TargetError, match="--insecure"):
            check_transport(normalised(url), insecure=False)
        check_transport(normalised(url), insecure=True)
    for bad in ("ftp://cloud.example.com", "cloud.example.com:8000", "https://", "https://u:p@cloud.example.com",
                "https://cloud.example.com/?x=1"):
        with pytest.raises(TargetError):
            normalised(bad)


def test_which_token_goes_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolution only (no request is made): the stored token goes to its own URL only, and a stored
    --insecure login is honoured for that URL alone."""
    from coldchain import login
    from coldchain.errors import TargetError
    from coldchain.sources import remote

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv(login.INSECURE_ENV, raising=False)
    login.save(login.Login("http://cloud.invalid:8000", "cct_stored", insecure=True))
    source = remote(None, None)
    assert source.api is not None and source.api.url == "http://cloud.invalid:8000"
    assert source.api.client.headers["Authorization"] == "Bearer cct_stored"
    source.api.close()
    with pytest.raises(TargetError, match=re.escape("no token for http://127.0.0.1:9")):
        remote("http://127.0.0.1:9", None)  # another URL never gets the stored token
    with pytest.raises(TargetError, match="--insecure"):
        remote("http://cloud.invalid:9000", "cct_given")  # plain http elsewhere, not accepted for this URL
    monkeypatch.setenv(login.INSECURE_ENV, "1")
    accepted = remote("http://cloud.invalid:9000", "cct_given")
    assert accepted.api is not None and accepted.api.client.headers["Authorization"] == "Bearer cct_given"
    accepted.api.close()


COMMANDS = {  # command: what its output must show (the seeded data, or the error)
    ("fleet", "list"): "Fleet: 4 devices", ("fleet", "list", "--group", "eu", "--limit", "2"): "devices 1-2 of 3",
    ("fleet", "list", "--online", "--text", "GE-3"): "fridge-3", ("fleet", "show", "fridge-1"): "Recent events",
    ("fleet", "list", "--faulty"): "Fleet: 0 devices",  # the filter travels: none of the seeded devices has a fault
    ("fleet", "show", "ghost"): "no device 'ghost'", ("rollout", "status"): "r-seed",
    ("rollout", "status", "r-seed"): "Rollout r-seed", ("rollout", "status", "nope"): "nope",
    ("monitor", "--by", "device"): "fridge-2", ("monitor", "--by", "group"): "prediction drift 0.31",
    ("monitor", "--by", "bundle"): "Telemetry per bundle", ("cloud", "bundles"): "fridge",
    ("cloud", "alerts"): "prediction drift 0.31", ("cloud", "dead-letters"): "Dead letters: 1 dead letters",
    ("audit",): "token.create",
}


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_remote_output_equals_local_output(live: Live, command: tuple[str, ...]) -> None:
    local, remote = live.local(*command), live.run(*command, token=live.read)
    assert remote.exit_code == local.exit_code, remote.output
    assert remote.output == local.output
    failing = command[-1] in ("ghost", "nope")
    assert local.exit_code == (1 if failing else 0), local.output
    assert COMMANDS[command] in local.output, local.output
    assert isinstance(remote.exception, SystemExit) if failing else remote.exception is None


def test_rollback_plan_and_confirmation_are_the_same_remotely(live: Live) -> None:
    local = live.local("rollout", "rollback", "r-seed", given="n\n")
    remote = live.run("rollout", "rollback", "r-seed", token=live.operate, given="n\n")
    assert local.exit_code == remote.exit_code == 1 and "nothing was changed" in remote.output
    assert remote.output == local.output and "Rolling back r-seed" in remote.output


def test_rollout_writes_need_an_operate_token(live: Live) -> None:
    args = ("rollout", "start", live.sha[:12], "--group", "us", "--waves", "1,100%", "--id", "r-remote")
    refused = live.run(*args, token=live.read)
    assert refused.exit_code == 3, refused.output
    assert "needs a token of scope operate" in refused.output and "'viewer' has scope read" in refused.output
    assert live.local("rollout", "status", "r-remote").exit_code == 1  # nothing was started

    started = live.run(*args, token=live.operate)
    assert started.exit_code == 0, started.output
    assert started.output == live.local("rollout", "status", "r-remote").output and "r-remote" in started.output
    for action, status in (("pause", "PAUSED"), ("resume", "RUNNING")):
        assert live.run("rollout", action, "r-remote", token=live.read).exit_code == 3
        done = live.run("rollout", action, "r-remote", token=live.operate)
        assert done.exit_code == 0 and status in done.output, done.output
        assert done.output == live.local("rollout", "status", "r-remote").output
    again = live.run("rollout", "resume", "r-remote", token=live.operate)  # refused by the cloud: 409
    assert again.exit_code == 1 and "Traceback" not in again.output and again.output.startswith("error:"), again.output
    short = live.run("rollout", "start", "ff", token=live.operate)  # the API's 422 names the field
    assert short.exit_code == 1 and "body field 'bundle'" in short.output, short.output
    aborted = live.run("rollout", "abort", "r-remote", "--reason", "wrong fridge", token=live.operate)
    assert aborted.exit_code == 0 and "ABORTING" in aborted.output and "wrong fridge" in aborted.output
    rolled = live.run("rollout", "rollback", "r-seed", "--yes", "--reason", "test", token=live.operate)
    assert rolled.exit_code == 0 and "ROLLING_BACK" in rolled.output, rolled.output

    entries = [(e.actor, e.action, e.result.split(":")[0]) for e in Queries(open_store(live.db)).audit().items]
    assert ("token:alice", "rollout.start", "ok") in entries and ("token:alice", "rollout.rollback", "ok") in entries
    assert ("token:viewer", "POST /rollouts", "refused") in entries
    assert not [e for e in entries if e[0] == "token:viewer" and e[2] == "ok"]



def test_fleet_tag_and_config_work_remotely_as_locally(live: Live) -> None:
    """The same table (or queued job, or error) whether the store or the API did it; an operate
    token is needed and each write is audited under the token's name."""
    tag = ("fleet", "tag", "fridge-1", "fridge-2", "--set", "ring=canary", "--add-group", "pilots")
    refused = live.run(*tag, token=live.read)
    assert refused.exit_code == 3 and "needs a token of scope operate" in refused.output, refused.output
    assert Queries(open_store(live.db)).device("fridge-1").device.tags == {}  # nothing was changed
    tagged = live.run(*tag, token=live.operate)
    assert tagged.exit_code == 0, tagged.output
    assert tagged.output == live.local(*tag).output and "ring=canary" in tagged.output
    untag = ("fleet", "tag", "fridge-1", "--unset", "ring", "--remove-group", "pilots")
    untagged = live.run(*untag, token=live.operate)
    assert untagged.exit_code == 0 and untagged.output == live.local(*untag).output
    for bad in (("fleet", "tag", "ghost", "--set", "a=b"), ("fleet", "tag", "fridge-1", "--set", "bad key=x"),
                ("fleet", "tag", "fridge-1", "--set", "k=" + "v" * 300)):
        remote, local = live.run(*bad, token=live.operate), live.local(*bad)
        assert remote.exit_code == local.exit_code == 1 and remote.output == local.output, (remote.output,
                                                                                           local.output)
    store = Queries(open_store(live.db))
    assert store.device("fridge-1").device.tags == {} and "pilots" not in store.device("fridge-1").device.groups
    assert store.device("fridge-2").device.tags == {"ring": "canary"}
    assert "pilots" in store.device("fridge-2").device.groups

    config = ("fleet", "config", "fridge-3", "--inference-interval-s", "2.5")
    assert live.run(*config, token=live.read).exit_code == 3
    queued, local = live.run(*config, token=live.operate), live.local(*config)
    job = r"config-[0-9a-f]{12}"
    assert queued.exit_code == 0 and re.search(job, queued.output), queued.output
    assert re.sub(job, "JOB", queued.output) == re.sub(job, "JOB", local.output)
    from cloud.store import CommandRow
    with open_store(live.db)() as session:
        sent = {r.job_id: r.payload for r in session.query(CommandRow).filter_by(device_id="fridge-3")}
    job_id = re.search(job, queued.output).group(0)  # type: ignore[union-attr]
    assert sent[job_id]["inference_interval_s"] == 2.5
    for bad in (("fleet", "config", "ghost", "--telemetry-window-s", "30"), ("fleet", "config", "fridge-3")):
        remote, local = live.run(*bad, token=live.operate), live.local(*bad)
        assert remote.exit_code == local.exit_code == 1 and remote.output == local.output, (remote.output,
                                                                                           local.output)

    entries = [(e.actor, e.action, e.result.split(":")[0]) for e in Queries(open_store(live.db)).audit().items]
    for entry in (("token:alice", "device.tag", "ok"), ("token:alice", "device.config", "ok"),
                  ("token:alice", "device.tag", "refused"), ("token:viewer", "POST /devices/tags", "refused"),
                  ("token:viewer", "POST /devices/{device_id}/config", "refused")):
        assert entry in entries, entries


def test_whoami_names_the_token_and_its_scope_never_the_token(live: Live) -> None:
    import httpx

    assert live.run("login", live.url, "--token", live.operate).exit_code == 0
    who = live.run("whoami")
    assert who.exit_code == 0, who.output
    assert "alice" in who.output and "operate" in who.output and live.url in who.output, who.output
    assert "created" in who.output and "last used" in who.output and live.operate not in who.output
    answer = httpx.get(f"{live.url}/whoami", headers={"Authorization": f"Bearer {live.read}"}).json()
    assert set(answer) == {"name", "scope", "created_at", "created_by", "last_used_at"}, answer
    assert answer["name"] == "viewer" and answer["scope"] == "read" and answer["created_by"] == "test"
    assert answer["created_at"] and answer["last_used_at"]  # this very request used it
    assert live.read not in json.dumps(answer)
    bootstrap = "b" * 24
    with serving(create_app(open_store(live.db), token=bootstrap)) as port:
        admin = httpx.get(f"http://127.0.0.1:{port}/whoami", headers={"Authorization": f"Bearer {bootstrap}"}).json()
    assert admin == {"name": "COLDCHAIN_API_TOKEN", "scope": "admin", "created_at": None, "created_by": None,
                     "last_used_at": None}
    revoke(open_store(live.db), "alice", "test")
    gone = live.run("whoami")
    assert gone.exit_code == 3 and "unknown or revoked" in gone.output, gone.output


def test_add_bundle_uploads_and_the_cloud_verifies(live: Live, fault_world: World, tmp_path: Path) -> None:
    tarball = fault_world.bundles[4].tarball
    assert live.run("cloud", "add-bundle", str(tarball), token=live.read).exit_code == 3
    added = live.run("cloud", "add-bundle", str(tarball), token=live.operate)
    assert added.exit_code == 0, added.output
    elsewhere = sqlite_url(tmp_path / "other.db")
    local = live.runner.invoke(cli, ["cloud", "add-bundle", str(tarball), "--trusted-key",
                                     str(fault_world.public_key), "--db", elsewhere], terminal_width=250)
    assert local.exit_code == 0 and added.output == local.output and "#4" in added.output, local.output
    assert fault_world.bundles[4].ref.sha256 in [b.sha256 for b in Queries(open_store(live.db)).bundles().items]
    assert live.run("cloud", "add-bundle", str(tarball), "--trusted-key", str(fault_world.public_key),
                    token=live.operate).exit_code == 0  # checked here too, then by the cloud

    tampered = tmp_path / "tampered.tar.gz"
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    refused = live.run("cloud", "add-bundle", str(tampered), token=live.operate)
    assert refused.exit_code == 1 and "not a deployable bundle" in refused.output, refused.output
    missing = live.run("cloud", "add-bundle", str(tmp_path / "nope.tar.gz"), token=live.operate)
    assert missing.exit_code == 1 and "nope.tar.gz" in missing.output and "Traceback" not in missing.output
    no_keys = live.local("cloud", "add-bundle", str(tarball))
    assert no_keys.exit_code == 2 and "--trusted-key" in no_keys.output, no_keys.output


def test_upload_reports_progress_and_a_too_large_bundle_is_refused(live: Live, fault_world: World,
                                                                    tmp_path: Path) -> None:
    from coldchain.remote import Api

    tarball = fault_world.bundles[6].tarball
    seen: list[int] = []
    with Api(live.url, live.operate) as api:
        view = api.upload(tarball, seen.append)
    assert view.sequence == 6 and sum(seen) == tarball.stat().st_size and len(seen) >= 1

    small = CloudConfig(bundles=Bundles(dir=tmp_path / "small", trusted_keys=[fault_world.public_key],
                                        max_upload_bytes=4096))
    with serving(create_app(open_store(live.db), config=small)) as port:
        big = live.run("cloud", "add-bundle", str(tarball), token=live.operate, url=f"http://127.0.0.1:{port}")
    assert big.exit_code == 1 and "larger than 4096 bytes" in big.output, big.output


def test_remote_export_is_the_clouds_pseudonymised_csv(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "remote.csv"
    done = live.run("monitor", "--by", "device", "--export", str(out), token=live.read)
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert text.count("\n") >= 5 and "fridge-" not in text, text  # a header and four devices, pseudonymised
    raw = live.run("monitor", "--by", "device", "--export", str(tmp_path / "raw.csv"), "--raw-ids", token=live.read)
    assert raw.exit_code == 3 and "admin" in raw.output, raw.output


async def _not_the_api(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Some other web server: an HTML page at /devices, an HTML 404 elsewhere."""
    if scope["type"] != "http":
        return
    status = 200 if scope["path"] == "/devices" else 404
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": b"<html><body>hello</body></html>"})


def test_wrong_url_dead_port_and_revoked_token_are_clear_errors(live: Live) -> None:
    dead = live.run("fleet", "list", token=live.read, url=f"http://127.0.0.1:{free_port()}")
    assert dead.exit_code == 4 and "cannot reach" in dead.output and "Traceback" not in dead.output, dead.output
    prefixed = live.run("rollout", "status", token=live.read, url=live.url + "/api")
    assert prefixed.exit_code == 1 and "no route" in prefixed.output, prefixed.output
    with serving(_not_the_api) as port:
        other = live.run("fleet", "list", token=live.read, url=f"http://127.0.0.1:{port}")
        assert other.exit_code == 1 and "does not understand" in other.output, other.output
        missing = live.run("rollout", "status", token=live.read, url=f"http://127.0.0.1:{port}/nothing")
        assert missing.exit_code == 1 and "not like the coldchain cloud API" in missing.output, missing.output
    both = live.runner.invoke(cli, ["fleet", "list", "--db", live.db, "--url", live.url])
    assert both.exit_code == 2 and "not both" in both.output, both.output
    revoke(open_store(live.db), "viewer", "test")
    gone = live.run("monitor", token=live.read)
    assert gone.exit_code == 3 and "unknown or revoked" in gone.output, gone.output
    assert live.run("login", live.url, "--token", live.read).exit_code == 3
    assert not live.config.exists()
