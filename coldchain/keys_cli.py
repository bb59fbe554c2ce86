"""``coldchain keys``: Ed25519 key pairs, signing/verifying manifest bytes, and the fleet's
root-signed trust document (``init``, ``rotate``, ``list``, ``push``; docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coldchain.cloud_views import DEFAULT_DB, Db
from coldchain.console import console, user_errors
from contract import signing
from contract.errors import KeyFileError
from contract.manifest import SIGNATURE_FILE

app = typer.Typer(help="Signing keys and roles: generate, sign and verify manifests; the trust document "
                  "(init, rotate, list, push).")
TRUST = Annotated[Path, typer.Option("--trust", help="The fleet's trust document.")]
DEFAULT_TRUST = Path("keys") / "trust.json"


@app.callback(invoke_without_command=True)
def _keys(ctx: typer.Context) -> None:
    """Without a command: the keys of keys/trust.json with their roles (as ``keys list``)."""
    if ctx.invoked_subcommand is None:
        if not DEFAULT_TRUST.is_file():
            console.print(ctx.get_help())
            raise typer.Exit(0)
        list_(DEFAULT_TRUST)


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


@app.command()
def init(
    out: Annotated[Path, typer.Option(help="Folder for the keys and trust.json.")] = Path("keys"),
    bundle_signer: Annotated[list[Path], typer.Option(help="Existing bundle-signing .pub (else one is made).")] = [],  # noqa: B006
    operator: Annotated[list[Path], typer.Option(help="Existing operator .pub (else one is made).")] = [],  # noqa: B006
) -> None:
    """A root key (keep it offline), bundle-signer and operator keys, and trust.json version 1."""
    from contract.trust import TRUST_FILE, TrustDocument, TrustedKey, sign_trust

    with user_errors(OSError):
        if (out / TRUST_FILE).exists():
            raise KeyFileError(f"{out / TRUST_FILE} exists: rotate keys with `coldchain keys rotate`")
        root = signing.write_keypair(out, "root")
        keys = [TrustedKey.of(signing.load_public_key(root.public), signing.Role.ROOT)]
        for role, given in ((signing.Role.BUNDLE_SIGNER, bundle_signer), (signing.Role.OPERATOR, operator)):
            pubs = given or [signing.write_keypair(out, f"{role.value}-1").public]
            keys += [TrustedKey.of(signing.load_public_key(p), role) for p in pubs]
        signed = sign_trust(TrustDocument(version=1, keys=keys), [signing.load_private_key(root.private)])
        _write(out / TRUST_FILE, signed.to_json())
    console.print(f"trust document version 1 -> {out / TRUST_FILE}; [bold]move {root.private} offline[/]: it "
                  "signs every later trust document")
    list_(out / TRUST_FILE)


@app.command()
def rotate(
    role: Annotated[str, typer.Option(help="operator, bundle-signer or root.")],
    root_key: Annotated[Path, typer.Option(help="The current root private key (.key).")],
    trust: TRUST = DEFAULT_TRUST,
    revoke: Annotated[list[str], typer.Option(help="Key id to revoke in the same document; repeatable.")] = [],  # noqa: B006
    valid_days: Annotated[int | None, typer.Option(min=1, help="The new key's not_after, days from now.")] = None,
) -> None:
    """A new key for ROLE beside the current one (two per role at most), in the next trust document
    signed by root; --revoke retires a key (a compromised one at once). Then `coldchain keys push`."""
    from datetime import timedelta

    from contract.base import utc_now
    from contract.errors import TrustUpdateError
    from contract.trust import TrustedKey, load_signed, next_document, sign_trust

    with user_errors(OSError):
        try:
            wanted = signing.Role(role)
        except ValueError as exc:
            raise TrustUpdateError(f"--role {role!r}: use one of {', '.join(r.value for r in signing.Role)}") \
                from exc
        current = load_signed(trust.read_bytes()).document()
        root = signing.load_private_key(root_key)
        if signing.key_id(root.public_key()) not in current.roots():
            raise TrustUpdateError(f"{root_key} is not a root key of {trust} (roots: {', '.join(current.roots())})")
        new = signing.generate_private_key()
        not_after = None if valid_days is None or wanted is signing.Role.ROOT else \
            utc_now() + timedelta(days=valid_days)
        document = next_document(current, [TrustedKey.of(new.public_key(), wanted, not_after)], revoke)
        pair = signing.save_keypair(trust.parent, f"{wanted.value}-{document.version}", new)  # once it is valid
        _write(trust, sign_trust(document, [root, new] if wanted is signing.Role.ROOT else [root]).to_json())
    console.print(f"new {wanted.value} key {pair.key_id} ({pair.private}); trust document version "
                  f"{document.version} -> {trust}" + (f"; revoked {', '.join(revoke)}" if revoke else ""))
    list_(trust)


@app.command("list")
def list_(trust: TRUST = DEFAULT_TRUST) -> None:
    """The trust document's keys with their roles, validity and revocations."""
    from contract.trust import load_signed

    with user_errors(OSError):
        document = load_signed(trust.read_bytes()).document()
    mine = {}
    for pub in trust.parent.glob("*.pub"):
        try:
            mine[signing.key_id(signing.load_public_key(pub))] = pub.with_suffix(".key")
        except KeyFileError:
            continue
    table = Table(title=f"{trust}: version {document.version}, issued {document.issued_at:%Y-%m-%d %H:%M}")
    for col in ("key id", "role", "not after", "private key here"):
        table.add_column(col)
    for key in sorted(document.keys, key=lambda k: (k.role.value, k.key_id)):
        private = mine.get(key.key_id)
        table.add_row(key.key_id, key.role.value, f"{key.not_after:%Y-%m-%d}" if key.not_after else "-",
                      str(private) if private is not None and private.exists() else "-")
    for kid in document.revoked:
        table.add_row(kid, "[red]revoked[/]", "-", "-")
    console.print(table)


@app.command()
def push(
    trust: TRUST = DEFAULT_TRUST,
    group: Annotated[list[str], typer.Option(help="Only devices of this group; repeatable.")] = [],  # noqa: B006
    device: Annotated[list[str], typer.Option(help="Only this device; repeatable.")] = [],  # noqa: B006
    db: Db = DEFAULT_DB,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for the devices' answers.")] = 60.0,
) -> None:
    """Queue the trust document for the fleet's devices and show each one's answer: the running
    cloud sends it (re-sent until each device answers, also to devices offline now) and stores the
    answers. Pushing again is harmless."""
    import time

    from cloud import trust as cloud_trust
    from cloud.plan import Selector
    from cloud.store import open_store
    from contract.trust import load_signed

    with user_errors(OSError):
        signed = load_signed(trust.read_bytes())
        sessions = open_store(db)
        jobs = cloud_trust.push(sessions, signed, Selector(groups=group, devices=device))
        deadline = time.monotonic() + wait
        answers = cloud_trust.results(sessions, jobs)
        while len(answers) < len(jobs) and time.monotonic() < deadline:
            time.sleep(1.0)  # the running cloud sends the commands and stores the devices' answers
            answers = cloud_trust.results(sessions, jobs)
    table = Table(title=f"trust document version {signed.document().version} to {len(jobs)} devices")
    for col in ("device", "answer", "reason"):
        table.add_column(col)
    for device_id in sorted(jobs):
        state, reason = answers.get(device_id, ("no answer", None))
        table.add_row(device_id, state, reason or "")
    console.print(table)
    if any(a[0] != "SUCCEEDED" for a in answers.values()) or len(answers) < len(jobs):
        raise typer.Exit(1)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)
