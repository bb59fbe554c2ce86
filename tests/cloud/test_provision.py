"""Provisioning and revocation: the factory folder, the store entry, the CA, CRL and password file."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from sqlalchemy.orm import Session, sessionmaker

from cloud.errors import IdentityError
from cloud.pki import FleetAuthority, check_password, hash_password, read_password_file
from cloud.provision import provision, revoke
from cloud.store import Device, open_store, sqlite_url
from contract import topics


def _setup(tmp_path: Path) -> tuple[FleetAuthority, sessionmaker[Session], Path]:
    key = tmp_path / "ops.pub"
    key.write_text("not parsed by provisioning\n")
    return FleetAuthority(tmp_path / "keys"), open_store(sqlite_url(tmp_path / "cloud.db")), key


def test_provision_makes_the_factory_folder_and_registers_the_device(tmp_path: Path) -> None:
    authority, sessions, key = _setup(tmp_path)
    done = provision(authority, sessions, "fridge-7", "eu", "rpi4", "mqtts://broker:8883", [key],
                     tmp_path / "out", install_dir=Path("/etc/coldchain"), tarball=True)
    config = yaml.safe_load((tmp_path / "out" / "agent.yaml").read_text())
    assert config["device_id"] == "fridge-7" and config["groups"] == ["eu"] and config["board"] == "rpi4"
    assert config["trusted_keys"] == ["/etc/coldchain/trust/ops.pub"]
    assert config["broker"]["cert_file"] == "/etc/coldchain/tls/device.pem" and "password" not in config["broker"]
    cert = x509.load_pem_x509_certificate((tmp_path / "out" / "tls" / "device.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=fridge-7"
    assert cert.issuer == x509.load_pem_x509_certificate(authority.ca_file.read_bytes()).subject
    assert (tmp_path / "out" / "tls" / "device.key").stat().st_mode & 0o077 == 0
    assert done.tarball is not None
    with tarfile.open(done.tarball) as tar:
        assert "fridge-7/tls/device.key" in tar.getnames()
    with sessions() as session:
        device = session.get(Device, "fridge-7")
        assert device.groups == ["eu"] and device.board == "rpi4"
    assert "1 certificate(s) revoked" in revoke(authority, sessions, "fridge-7")
    assert cert.serial_number in authority.revoked_serials()
    with sessions() as session:
        assert session.get(Device, "fridge-7").tags["access"].startswith("revoked")


def test_without_tls_only_a_hash_of_the_password_is_kept(tmp_path: Path) -> None:
    authority, sessions, key = _setup(tmp_path)
    provision(authority, sessions, "fridge-8", "eu", "rpi4", "mqtt://broker:1883", [key], tmp_path / "out")
    password = yaml.safe_load((tmp_path / "out" / "agent.yaml").read_text())["broker"]["password"]
    hashed = read_password_file(authority.passwd_file)["fridge-8"]
    assert hashed.startswith("$7$") and password not in hashed and check_password(password, hashed)
    revoke(authority, sessions, "fridge-8")
    assert "fridge-8" not in read_password_file(authority.passwd_file)


@pytest.mark.parametrize("device", [topics.CLOUD_IDENTITY, "a/b", "#", ""])
def test_ids_no_acl_rule_fits_are_refused(tmp_path: Path, device: str) -> None:
    authority, sessions, key = _setup(tmp_path)
    with pytest.raises(IdentityError):
        provision(authority, sessions, device, "eu", "rpi4", "mqtts://broker:8883", [key], tmp_path / "out")


@pytest.mark.parametrize("bad", ["", "plain", "$6$salt$hash", "$7$x$AAAA$AAAA", "$7$10$!!$AAAA", "$7$0$AAAA$AAAA"])
def test_malformed_password_hashes_refuse_everything(bad: str) -> None:
    assert not check_password("anything", bad)
    assert check_password("secret", hash_password("secret")) and not check_password("Secret", hash_password("secret"))
