"""Bundle files on disk: hashing entries, packing and safely unpacking the tarball, and
verifying a bundle directory (signature, then every file and chunk hash).

Shared by the compiler (which writes bundles), the agent (which installs them) and the
cloud (which publishes them), so all three check a bundle the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path, PurePosixPath

from contract.errors import BundleError
from contract.manifest import MANIFEST_FILE, SIGNATURE_FILE, FileEntry, Manifest, load_manifest
from contract.signing import TrustStore, verify
from contract.transfer import DEFAULT_CHUNK_SIZE, chunk_hashes, sha256_hex

MAX_BUNDLE_FILES = 256


def file_entry(root: Path, relative: str, role: str = "model", chunk_size: int = DEFAULT_CHUNK_SIZE) -> FileEntry:
    data = (root / relative).read_bytes()
    return FileEntry(path=relative, size=len(data), sha256=sha256_hex(data), chunk_size=chunk_size,
                     chunks=chunk_hashes(data, chunk_size), role=role)


def pack(directory: Path, tarball: Path) -> Path:
    """A reproducible .tar.gz of a bundle directory (sorted names, zero times, root owner)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(str(path.relative_to(directory).as_posix()))
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    tarball.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
    return tarball


def unpack(tarball: Path | bytes, destination: Path) -> Path:
    """Extract a bundle tarball, refusing links, devices, absolute paths and '..'."""
    try:
        data = tarball.read_bytes() if isinstance(tarball, Path) else tarball
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
            if len(members) > MAX_BUNDLE_FILES:
                raise BundleError(f"bundle tarball holds {len(members)} entries, more than {MAX_BUNDLE_FILES}")
            for member in members:
                name = PurePosixPath(member.name)
                if not member.isfile() or name.is_absolute() or ".." in name.parts:
                    raise BundleError(f"bundle tarball entry {member.name!r} is not a plain relative file")
            destination.mkdir(parents=True, exist_ok=True)
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BundleError(f"bundle tarball is unreadable ({exc}); it is corrupt or not a bundle") from exc
    return destination


def verify_dir(directory: Path, trust: TrustStore) -> Manifest:
    """Signature first, then every listed file's size, sha256 and chunk hashes; no unlisted files."""
    try:
        manifest_bytes = (directory / MANIFEST_FILE).read_bytes()
        signature = (directory / SIGNATURE_FILE).read_bytes()
    except OSError as exc:
        raise BundleError(f"{directory} is not a bundle: {exc.strerror}: {exc.filename}") from exc
    verify(manifest_bytes, signature, trust)
    manifest = load_manifest(manifest_bytes)
    listed = {f.path for f in manifest.files} | {MANIFEST_FILE, SIGNATURE_FILE}
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    if present - listed:
        raise BundleError(f"bundle holds files its manifest does not list: {sorted(present - listed)}")
    for entry in manifest.files:
        path = directory / entry.path
        if not path.is_file():
            raise BundleError(f"bundle file {entry.path} is missing")
        data = path.read_bytes()
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            bad = [i for i, h in enumerate(chunk_hashes(data, entry.chunk_size)) if i >= len(entry.chunks)
                   or h != entry.chunks[i]]
            raise BundleError(f"bundle file {entry.path} does not match its manifest hash (chunks {bad[:8]} differ): "
                              "it was changed after signing; do not install it")
    return manifest


def manifest_sha256(directory: Path) -> str:
    return sha256_hex((directory / MANIFEST_FILE).read_bytes())

