"""The fleet's identities: a certificate authority (``cryptography``, EC P-256) that signs one
client certificate per device (CN = device id, Mosquitto's ``use_identity_as_username``), the
cloud's client certificate and the broker's server certificate; a certificate revocation list;
and, where TLS is off, generated passwords kept only as Mosquitto ``$7$`` hashes (PBKDF2-SHA512).

Everything lives in one folder (the fleet's key folder), created on first use::

    ca.pem ca.key          the fleet CA (ca.key never leaves this folder)
    crl.pem                revoked certificates (Mosquitto's crlfile; the embedded broker reads it too)
    cloud.pem cloud.key    the cloud's identity (CN coldchain-cloud)
    broker.pem broker.key  the broker's server certificate
    issued/NAME.SERIAL.pem every certificate issued, so revoking a name revokes them all
    passwd                 username:$7$... lines (Mosquitto's password_file) when TLS is off
    cloud.password         the cloud's own password when TLS is off
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.errors import IdentityError
from contract import topics
from transport.config import BrokerConfig

PBKDF2_ITERATIONS = 1000  # passwords are 256-bit random tokens: iterations guard nothing a guess could find
CERT_DAYS = 3650  # an appliance lives about ten years; revocation goes through the CRL
_LOCK = threading.Lock()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2's password hash: ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>``."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (Mosquitto's format); anything else is refused."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit() or not 1 <= int(parts[2]) <= 10_000_000:
        return False
    try:
        salt, expected = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2])), expected)


def read_password_file(path: Path) -> dict[str, str]:
    """``username:hash`` lines (comments and blank lines skipped); a missing file has no users."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise IdentityError(f"cannot read the password file {path}: {exc.strerror}") from exc
    users = {}
    for line in text.splitlines():
        name, sep, hashed = line.strip().partition(":")
        if sep and name and not name.startswith("#"):
            users[name] = hashed
    return users


def _write_password_file(path: Path, users: dict[str, str]) -> None:
    write_secret(path, "".join(f"{n}:{h}\n" for n, h in sorted(users.items())).encode())


class FleetAuthority:
    """The fleet's key folder (see the module doc); the CA, the CRL and the cloud's certificate are
    made on first use. Safe to use from several threads of one process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca_file, self.crl_file, self.passwd_file = folder / "ca.pem", folder / "crl.pem", folder / "passwd"
        with _LOCK:
            if not self.ca_file.exists():
                self._create_ca()
            try:
                key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
                self._ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            except (OSError, ValueError) as exc:
                raise IdentityError(f"the fleet CA in {folder} cannot be read: {exc}") from exc
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise IdentityError(f"{folder / 'ca.key'} is not an EC private key")
            self._ca_key = key
            if not self.crl_file.exists():
                self._write_crl(set())
        self.cloud_cert = self.identity(topics.CLOUD_IDENTITY, folder / "cloud.pem", folder / "cloud.key")

    def _create_ca(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(_name("coldchain fleet CA")).issuer_name(
            _name("coldchain fleet CA")).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2 * CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
        write_secret(self.folder / "ca.key", _private(key))
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common: str, hosts: list[str] | None = None,
              days: int = CERT_DAYS) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM) signed by the fleet CA: a client certificate whose CN is
        the MQTT identity, or with ``hosts`` a server certificate valid for those names/addresses."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if hosts else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(self._ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        pem = cert.public_bytes(serialization.Encoding.PEM)
        issued = self.folder / "issued" / f"{common}.{cert.serial_number:x}.pem"
        issued.parent.mkdir(exist_ok=True)
        issued.write_bytes(pem)
        return pem, _private(key)

    def identity(self, common: str, cert_path: Path, key_path: Path, hosts: list[str] | None = None) -> Path:
        """A certificate for ``common`` at ``cert_path`` (issued now unless one for the same hosts is
        there); returns ``cert_path``."""
        if cert_path.exists() and key_path.exists() and _hosts_of(cert_path) == sorted(hosts or []):
            return cert_path
        cert, key = self.issue(common, hosts)
        write_secret(key_path, key)
        cert_path.write_bytes(cert)
        return cert_path

    def broker_identity(self, hosts: list[str]) -> tuple[Path, Path]:
        """The broker's server certificate for ``hosts`` (made, or re-made when the hosts change)."""
        cert = self.identity("coldchain-broker", self.folder / "broker.pem", self.folder / "broker.key", hosts)
        return cert, self.folder / "broker.key"

    # ---- revocation -------------------------------------------------------------------

    def revoked_serials(self) -> set[int]:
        try:
            crl = x509.load_pem_x509_crl(self.crl_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise IdentityError(f"the revocation list {self.crl_file} cannot be read: {exc}") from exc
        return {entry.serial_number for entry in crl}

    def revoke(self, common: str) -> int:
        """Revoke every certificate issued for ``common``; returns how many were newly revoked."""
        serials = {int(p.name.rsplit(".", 2)[1], 16)
                   for p in (self.folder / "issued").glob(f"{common}.*.pem") if p.name.count(".") == 2}
        with _LOCK:
            revoked = self.revoked_serials()
            self._write_crl(revoked | serials)
        return len(serials - revoked)

    def _write_crl(self, serials: set[int]) -> None:
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self._ca.subject)
                   .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=CERT_DAYS)))
        for serial in sorted(serials):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        crl = builder.sign(self._ca_key, hashes.SHA256())
        tmp = self.crl_file.with_suffix(".tmp")
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        tmp.replace(self.crl_file)

    # ---- passwords (TLS off) ----------------------------------------------------------

    def set_password(self, name: str) -> str:
        """A new random password for ``name``; only its hash is kept (in ``passwd``)."""
        password = secrets.token_urlsafe(32)
        with _LOCK:
            users = read_password_file(self.passwd_file)
            users[name] = hash_password(password)
            _write_password_file(self.passwd_file, users)
        return password

    def remove_password(self, name: str) -> bool:
        with _LOCK:
            users = read_password_file(self.passwd_file)
            found = users.pop(name, None) is not None
            _write_password_file(self.passwd_file, users)
        return found

    def cloud_login(self, url: str, protocol: Literal["5", "3.1.1"] = "5") -> BrokerConfig:
        """How the cloud connects to the fleet's broker at ``url``: its client certificate over
        mqtts://, its password over mqtt://."""
        if url.startswith("mqtts://"):
            return BrokerConfig(url=url, protocol=protocol, ca_file=self.ca_file, cert_file=self.cloud_cert,
                                key_file=self.folder / "cloud.key")
        return BrokerConfig(url=url, protocol=protocol, username=topics.CLOUD_IDENTITY, password=self.cloud_password())

    def cloud_password(self) -> str:
        """The cloud's own password (made on first use, kept in ``cloud.password``, mode 0600)."""
        path = self.folder / "cloud.password"
        if path.exists() and topics.CLOUD_IDENTITY in read_password_file(self.passwd_file):
            return path.read_text().strip()
        password = self.set_password(topics.CLOUD_IDENTITY)
        write_secret(path, password.encode())
        return password


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _hosts_of(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return sorted(str(n.value) for n in names)
