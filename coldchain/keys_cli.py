"""``coldchain keys``: Ed25519 key pairs, and signing/verifying manifest bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coldchain.console import console, user_errors
from contract import signing
from contract.manifest import SIGNATURE_FILE

app = typer.Typer(help="Signing keys: generate, sign and verify manifests.", no_args_is_help=True)


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder for the key pair.")] = Path("keys"),
    name: Annotated[str, typer.Option(help="File stem: NAME.key (private, 0600) and NAME.pub.")] = "coldchain",
    force: Annotated[bool, typer.Option(help="Overwrite an existing key pair.")] = False,
) -> None:
    """Generate an Ed25519 key pair with safe file permissions."""
    with user_errors():
        pair = signing.write_keypair(out, name, force)
    table = Table(title="New signing key", show_header=False)
    table.add_row("key id", pair.key_id)
    table.add_row("private key (keep secret, mode 0600)", str(pair.private))
    table.add_row("public key (give to devices)", str(pair.public))
    console.print(table)


@app.command()
def sign(
    manifest: Annotated[Path, typer.Argument(help="manifest.json to sign (its exact bytes are signed).")],
    key: Annotated[Path, typer.Option(help="Private key (.key).")],
    out: Annotated[Path | None, typer.Option(help="Signature file; default: manifest.sig beside it.")] = None,
) -> None:
    """Sign a manifest's exact bytes."""
    target = out or manifest.with_name(SIGNATURE_FILE)
    with user_errors(OSError):
        data = manifest.read_bytes()
        signature = signing.sign(data, signing.load_private_key(key))
        target.write_bytes(signature)
    console.print(f"signed {manifest} ({len(data)} bytes) -> {target}")


@app.command()
def verify(
    manifest: Annotated[Path, typer.Argument(help="manifest.json to check.")],
    trusted: Annotated[list[Path], typer.Option(help="Trusted public key (.pub) or folder of them; repeatable.")],
    sig: Annotated[Path | None, typer.Option(help="Signature file; default: manifest.sig beside it.")] = None,
) -> None:
    """Verify a manifest's signature against trusted public keys (several keys: rotation)."""
    with user_errors(OSError):
        data = manifest.read_bytes()
        signature = (sig or manifest.with_name(SIGNATURE_FILE)).read_bytes()
        kid = signing.verify(data, signature, signing.TrustStore.from_paths(trusted))
    console.print(f"[green]valid[/]: {manifest} is signed by trusted key {kid}")
