"""Certificates for TLS tests, from the production code (cloud/pki.py FleetAuthority): a CA, a
server certificate for 127.0.0.1 and client certificates whose common name is the MQTT identity
(Mosquitto's use_identity_as_username)."""

from __future__ import annotations

from pathlib import Path

from cloud.pki import FleetAuthority


class CertificateAuthority(FleetAuthority):
    def issue_files(self, common: str, server: bool = False) -> tuple[Path, Path]:
        """(certificate, key) files signed by this CA; a server certificate is valid for 127.0.0.1."""
        cert = self.identity(common, self.folder / f"{common}.pem", self.folder / f"{common}.key",
                             ["127.0.0.1", "localhost"] if server else None)
        return cert, self.folder / f"{common}.key"
