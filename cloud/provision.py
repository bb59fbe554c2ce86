"""Provisioning a device for the factory, and revoking it.

``provision`` makes one folder holding everything a device needs to join the fleet::

    agent.yaml        its agent configuration (device id, board, group, broker, trust and TLS paths)
    tls/ca.pem        the fleet CA (to trust the broker)
    tls/device.pem    its client certificate (CN = device id), and tls/device.key (mode 0600)
    trust/*.pub       the public keys it trusts (bundle signers, operators)

(with TLS off: no certificate, the generated broker password in agent.yaml), optionally packed as
``DEVICE.tar.gz``; and registers the device in the store with its group and board. Paths in
agent.yaml point under ``install_dir``, where the factory copies the folder.
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from agent.config import AgentConfig
from cloud.errors import IdentityError
from cloud.pki import FleetAuthority, write_secret
from cloud.store import Device
from contract import topics
from contract.errors import TopicError


@dataclass(frozen=True)
class Provisioned:
    folder: Path
    tarball: Path | None
    tls: bool


def _agent_config(device_id: str, group: str, board: str, broker_url: str, keys: list[str], root: Path,
                  login: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    return {"device_id": device_id, "board": board, "groups": [group], "data_dir": str(data_dir),
            "trusted_keys": [str(root / "trust" / k) for k in keys],
            "broker": {"url": broker_url, "protocol": "5",
                       **{k: (str(root / v) if k.endswith("_file") else v) for k, v in login.items()}}}


def provision(authority: FleetAuthority, sessions: sessionmaker[Session], device_id: str, group: str, board: str,
              broker_url: str, trusted_keys: list[Path], out: Path, install_dir: Path = Path("/etc/coldchain"),
              data_dir: Path = Path("/var/lib/coldchain"), tarball: bool = False) -> Provisioned:
    """The device's identity, agent config and trust bundle in ``out``; the device in the store."""
    try:
        topics.device_grant(device_id)
        topics.check_id(group, "group")
    except TopicError as exc:
        raise IdentityError(f"cannot provision {device_id!r}: {exc}") from exc
    tls = broker_url.startswith("mqtts://")
    if not trusted_keys:
        raise IdentityError("give at least one trusted public key (--trusted-key): bundles and commands are "
                            "verified against them")
    if out.exists() and any(out.iterdir()):
        raise IdentityError(f"{out} is not empty: provision each device into a folder of its own")
    (out / "trust").mkdir(parents=True, exist_ok=True)
    names = []
    for key in trusted_keys:
        if not key.is_file():
            raise IdentityError(f"trusted key {key} does not exist")
        shutil.copyfile(key, out / "trust" / key.name)
        names.append(key.name)
    if tls:
        cert, private = authority.issue(device_id)
        (out / "tls").mkdir()
        shutil.copyfile(authority.ca_file, out / "tls" / "ca.pem")
        (out / "tls" / "device.pem").write_bytes(cert)
        write_secret(out / "tls" / "device.key", private)
        login: dict[str, Any] = {"ca_file": "tls/ca.pem", "cert_file": "tls/device.pem", "key_file": "tls/device.key"}
    else:
        login = {"username": device_id, "password": authority.set_password(device_id)}
    config = _agent_config(device_id, group, board, broker_url, names, install_dir, login, data_dir)
    try:  # what the device will load, with the paths of this folder
        AgentConfig.model_validate(_agent_config(device_id, group, board, broker_url, names, out, login, data_dir))
    except ValidationError as exc:
        raise IdentityError(f"the agent configuration for {device_id} would not load: {exc}") from exc
    write_secret(out / "agent.yaml", yaml.safe_dump(config, sort_keys=False).encode())
    with sessions.begin() as session:
        device = session.get(Device, device_id) or Device(id=device_id, groups=[], tags={})
        device.groups, device.board = sorted({*device.groups, group}), board
        device.tags = {k: v for k, v in (device.tags or {}).items() if k != "access"}
        session.add(device)
    packed = None
    if tarball:
        packed = out.parent / f"{out.name}.tar.gz"
        with tarfile.open(packed, "w:gz") as tar:
            tar.add(out, arcname=device_id)
        packed.chmod(0o600)
    return Provisioned(out, packed, tls)


def revoke(authority: FleetAuthority, sessions: sessionmaker[Session], device_id: str) -> str:
    """Revoke every certificate issued to the device and remove its password; the store marks it
    ``access=revoked``. Mosquitto reads the CRL and password file again when restarted (or on SIGHUP
    for the password file); the embedded broker re-reads the password file at each connection."""
    certificates = authority.revoke(device_id)
    password = authority.remove_password(device_id)
    with sessions.begin() as session:
        device = session.get(Device, device_id)
        if device is not None:
            device.tags = {**(device.tags or {}), "access": f"revoked {datetime.now(UTC):%Y-%m-%d %H:%M}Z"}
    if not certificates and not password and device is None:
        raise IdentityError(f"{device_id} has no certificate, password or store entry to revoke")
    return f"{certificates} certificate(s) revoked, password {'removed' if password else 'none'}"
