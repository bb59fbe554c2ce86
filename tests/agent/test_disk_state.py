"""Files on disk the agent reads at start, fuzzed: its trust document, command log, activation
hold, health summary, slot pointer and telemetry spool each replaced by what a damaged disk, a
power cut or a hand edit leaves (truncated, empty, random bytes, JSON of the wrong shape, numbers
past every bound, a directory in place of the file). The agent must start, say what it repaired,
answer a command, and start again on what it left (never a crash loop); a damaged configuration
is refused with a message naming the file and the key (``ConfigError``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import load_config
from agent.errors import ConfigError
from agent.loop import Agent
from contract import topics
from contract.commands import SetConfigCommand, sign_command
from contract.events import JobEvent, decode_event
from contract.jobs import JobState
from contract.signing import Role, generate_private_key
from contract.trust import TrustDocument, TrustedKey, sign_trust
from tests.agent.conftest import MemoryTransport
from tests.hostile import FUZZ, mutated
from transport.client import Connected, Received

DEVICE = "fridge-7"
ROOT, OPERATOR = generate_private_key(), generate_private_key()
FILES = ["trust/trust.json", "commands.json", "activation.json", "health.json", "slots/ACTIVE", "telemetry.db"]
_counter = iter(range(10**9))


def _config(folder: Path) -> Path:
    """A device provisioned with a root-signed trust document naming an operator key."""
    folder.mkdir(parents=True, exist_ok=True)
    document = TrustDocument(version=1, issued_at=datetime(2026, 1, 1, tzinfo=UTC),
                             keys=[TrustedKey.of(ROOT.public_key(), Role.ROOT),
                                   TrustedKey.of(OPERATOR.public_key(), Role.OPERATOR)])
    (folder / "trust.json").write_bytes(sign_trust(document, [ROOT]).to_json())
    config = folder / "agent.toml"
    config.write_text(f'device_id = "{DEVICE}"\ngroups = ["eu"]\ndata_dir = "{folder / "data"}"\n'
                      f'trust_file = "{folder / "trust.json"}"\n')
    return config


def _command(agent: Agent, transport: MemoryTransport) -> bool:
    """A fresh signed command is acted on and answered."""
    job = f"cfg-{next(_counter)}"
    payload = sign_command(SetConfigCommand(job_id=job, inference_interval_s=3.0), OPERATOR, DEVICE,
                           datetime.now(UTC)).to_json()
    agent.handle(Received(topics.commands(DEVICE), payload))
    return any(isinstance(e, JobEvent) and e.job_id == job and e.state is JobState.SUCCEEDED
               for e in map(decode_event, transport.on(topics.events(DEVICE))))


def _run(config: Path) -> tuple[Agent, MemoryTransport]:
    transport = MemoryTransport()
    agent = Agent(load_config(config, environ={}), transport, None)
    agent.handle(Connected())
    return agent, transport


@pytest.fixture
def device(tmp_path: Path) -> Iterator[tuple[Path, dict[str, bytes]]]:
    """A device's folder after a first run (every file written), and each file's bytes."""
    config = _config(tmp_path / "device")
    agent, transport = _run(config)
    assert _command(agent, transport)
    agent.hold_activation("busy", 600)
    agent.close_window()
    agent.deployer.slots.write(agent.deployer.slots.pointer())  # the pointer a device with no bundle yet has
    agent.spool.close()
    data = tmp_path / "device" / "data"
    yield tmp_path / "device", {name: (data / name).read_bytes() for name in FILES}


def _damage(path: Path, original: bytes, how: str, replacement: bytes) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if how == "directory":
        (path / "x").mkdir(parents=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes({"truncated": original[: len(original) // 2], "empty": b""}.get(how, replacement))


def _contents(original: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    try:
        parsed = json.loads(original)
    except ValueError:  # the spool (SQLite): bytes, a page garbled
        parsed = None
    shaped = mutated(parsed) if parsed is not None else st.binary(min_size=1, max_size=64).map(
        lambda noise: original[:4096] + noise + original[4096 + len(noise):])
    return st.one_of(st.tuples(st.sampled_from(["truncated", "empty", "directory"]), st.just(b"")),
                     st.tuples(st.just("bytes"), st.one_of(shaped, st.binary(max_size=100),
                                                           st.sampled_from([b"null", b"[]", b'"x"', b"1e999", b"{}",
                                                                            b'{"a":' * 40, b"\xff\xfe"]))))


@pytest.mark.parametrize("name", FILES)
def test_a_damaged_file_never_stops_the_agent_from_starting(device: tuple[Path, dict[str, bytes]], name: str,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, originals = device

    @FUZZ
    @given(content=_contents(originals[name]))
    def fuzz(content: tuple[str, bytes]) -> None:
        how, replacement = content
        copy = tmp_path_factory.mktemp("copy")
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        config = copy / "agent.toml"
        config.write_text(config.read_text().replace(str(folder), str(copy)))
        _damage(copy / "data" / name, originals[name], how, replacement)
        agent, transport = _run(config)  # never raises
        assert _command(agent, transport), (name, how, replacement[:80])
        agent.close_window()
        agent.spool.close()
        again, transport = _run(config)  # what it left starts too: no crash loop
        assert _command(again, transport)
        again.spool.close()
        shutil.rmtree(copy)

    fuzz()


@pytest.mark.parametrize(("text", "named"), [
    (b"", "device_id"), (b"device_id = ", "agent.toml"), (b"\xff", "agent.toml"),
    (b'device_id = "d"\ninference_interval_s = "x"', "inference_interval_s"),
    (b'device_id = "d"\ninference_interval_s = 1e999', "inference_interval_s"),
    (b'device_id = "d"\n[limits]\nspool_max_windows = 99999999999999999999999', "spool_max_windows"),
    (b'device_id = "d"\nlimits = 5', "limits"), (b'device_id = "d/../x"', "device_id"),
    (b'device_id = "d"\ngroups = "eu"', "groups"), (b'device_id = "d"\ndata_dir = 5', "data_dir"),
])
def test_a_damaged_configuration_is_refused_naming_the_file_and_key(tmp_path: Path, text: bytes, named: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_bytes(text)
    with pytest.raises(ConfigError) as refused:
        load_config(config, environ={})
    assert named in str(refused.value)


def test_a_directory_in_place_of_the_configuration_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").mkdir()
    with pytest.raises(ConfigError, match=r"agent\.toml"):
        load_config(tmp_path / "agent.toml", environ={})


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("how", ["directory", "deep", "wrong shape"])
def test_each_file_found_broken_by_the_fuzzing_is_repaired(device: tuple[Path, dict[str, bytes]], name: str,
                                                            how: str) -> None:
    """What the fuzzing above found, each time: a directory in place of the trust document or the
    slot pointer (IsADirectoryError out of ``Agent()``), a state file nested 100,000 deep
    (RecursionError), a pointer whose ``streams`` is a number (AttributeError): the agent did not start."""
    folder, originals = device
    original = originals[name]
    if how == "wrong shape":
        if name == "telemetry.db":
            return
        parsed = json.loads(original)
        shaped = {**parsed, "streams": 5} if name == "slots/ACTIVE" else dict.fromkeys(parsed, 5)
        replacement = json.dumps(shaped).encode()
    else:
        replacement = b"[" * 100_000 + b"]" * 100_000
    _damage(folder / "data" / name, original, how, replacement)
    agent, transport = _run(folder / "agent.toml")
    assert _command(agent, transport)
    agent.spool.close()
    again, transport = _run(folder / "agent.toml")
    assert _command(again, transport)
    again.spool.close()
