"""Stores for the cloud tests: a SQLite file, and a throwaway PostgreSQL cluster started from the
Debian packages (scripts/test.sh installs them) as the ``postgres`` user on a free port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cloud import rollouts, tokens
from cloud.broker import free_port
from cloud.fleet import add_bundle
from cloud.ingest import ingest
from cloud.plan import RolloutPlan
from cloud.store import open_store, sqlite_url
from contract import topics
from contract.state import DeviceState


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("COLDCHAIN_TEST_POSTGRES_URL"):
        yield os.environ["COLDCHAIN_TEST_POSTGRES_URL"]
        return
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; scripts/test.sh installs it from apt")
        pytest.skip("PostgreSQL is not installed (scripts/test.sh installs it from apt)")
    # the server runs as ``postgres``, which cannot enter pytest's private (0700) temporary folder
    root = Path(tempfile.mkdtemp(prefix="coldchain-test-pg-")) if os.geteuid() == 0 else tmp_path_factory.mktemp("pg")
    data, run = root / "data", root / "run"
    run.mkdir()
    user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    prefix = ["runuser", "-u", "postgres", "--"] if user else []
    if user:
        for path in (root, run):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = free_port()
    done = subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "coldchain", "-A", "trust"],
                          check=False, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"initdb failed: {done.stderr.strip()}")
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-p {port} -k {run} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([*prefix, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "coldchain",
                        "coldchain_test"], check=True, capture_output=True)
        yield f"postgresql://coldchain@127.0.0.1:{port}/coldchain_test"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """An empty store on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield open_store(sqlite_url(tmp_path / "cloud.db"))
        return
    factory = open_store(request.getfixturevalue("postgres_url"))
    from cloud.store import Base

    engine = factory.kw["bind"]
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield factory
    engine.dispose()


@pytest.fixture
def api_store(tmp_path: Path, world: dict[str, object]) -> tuple[str, str]:
    """A SQLite store with four devices (fridge-0..2 in eu, fridge-3 in us) and one bundle: (url, sha256)."""
    url = sqlite_url(tmp_path / "cloud.db")
    sessions = open_store(url)
    with sessions.begin() as session:
        for i in range(4):
            device = f"fridge-{i}"
            state = DeviceState(device_id=device, online=True, board="rpi4", groups=["eu" if i < 3 else "us"])
            ingest(session, topics.state(device), state.to_json())
        sha = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
    return url, sha


@pytest.fixture
def web_store(tmp_path: Path, world: dict[str, Any]) -> tuple[sessionmaker[Session], dict[str, str]]:
    """The dashboard's tests: three devices in eu, a bundle, the running rollout r-web and a read and an
    operate token (scope -> token)."""
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    with sessions.begin() as session:
        for i in range(3):
            state = DeviceState(device_id=f"fridge-{i}", online=True, board="rpi4", groups=["eu"])
            ingest(session, topics.state(f"fridge-{i}"), state.to_json())
        sha = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256
    rollouts.start(sessions, sha, RolloutPlan(waves="100%"), "r-web")
    made = {scope: tokens.create(sessions, f"t-{scope}", scope, "test") for scope in ("read", "operate")}
    return sessions, made
