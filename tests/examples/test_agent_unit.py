"""The example systemd unit and agent configuration (examples/agent/) work together: whatever the
configuration makes the agent write (its data directory, the firmware's socket) is writable under
the unit's sandbox, and the socket's group is not one that other programs are put in."""

from __future__ import annotations

import tomllib
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agent"


def _unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (EXAMPLES / "coldchain-agent.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_example_unit_lets_the_agent_write_its_data_and_its_socket() -> None:
    """Found following docs/firmware.md with the examples: agent.toml puts the socket in /run/coldchain,
    which the unit (User=coldchain, ProtectSystem=strict, only /var/lib/coldchain writable) neither
    creates nor lets the agent create: the local API would have been `local_api_unavailable`."""
    unit = _unit()
    config = tomllib.loads((EXAMPLES / "agent.toml").read_text())
    writable = [Path(p) for value in unit.get("ReadWritePaths", []) for p in value.split()]
    writable += [Path("/run") / d for value in unit.get("RuntimeDirectory", []) for d in value.split()]
    writable += [Path("/var/lib") / d for value in unit.get("StateDirectory", []) for d in value.split()]
    assert unit["ProtectSystem"] == ["strict"]
    for path in (Path(config["data_dir"]), Path(config["local_api"]["socket"]).parent):
        assert any(path == w or w in path.parents for w in writable), (path, writable)
    # the socket gets the agent's primary group (mode 0660): the camera's group would open it to every
    # program allowed to use the camera
    assert unit["Group"] == ["coldchain"] and unit.get("SupplementaryGroups") == ["video"], unit
