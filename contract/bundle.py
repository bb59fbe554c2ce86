"""Bundle files on disk: hashing entries, packing and safely unpacking the tarball, and
verifying a bundle directory (signature, then every file and chunk hash).

Shared by the compiler (which writes bundles), the agent (which installs them) and the
cloud (which publishes them), so all three check a bundle the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from contract.errors import BundleError
from contract.manifest import MANIFEST_FILE, MAX_MANIFEST_BYTES, SIGNATURE_FILE, FileEntry, Manifest, load_manifest
from contract.signing import TrustStore, verify
from contract.transfer import DEFAULT_CHUNK_SIZE, chunk_hashes, sha256_hex

MAX_BUNDLE_FILES = 256
MAX_SIGNATURE_BYTES = 4096
RESERVE_BYTES = 16 * 1024 * 1024  # left free on the disk after a bundle is extracted


def file_entry(root: Path, relative: str, role: str = "model", chunk_size: int = DEFAULT_CHUNK_SIZE) -> FileEntry:
    data = (root / relative).read_bytes()
    return FileEntry(path=relative, size=len(data), sha256=sha256_hex(data), chunk_size=chunk_size,
                     chunks=chunk_hashes(data, chunk_size), role=role)


def pack(directory: Path, tarball: Path) -> Path:
    """A reproducible .tar.gz of a bundle directory (zero times, root owner): the manifest and its
    signature first, so a device can check them before it extracts anything else; then the other
    files in name order."""
    first = [directory / MANIFEST_FILE, directory / SIGNATURE_FILE]
    rest = sorted(p for p in directory.rglob("*") if p.is_file() and p not in first)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [p for p in first if p.is_file()] + rest:
            info = tarfile.TarInfo(str(path.relative_to(directory).as_posix()))
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    tarball.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
    return tarball


def _plain_name(member: tarfile.TarInfo) -> str:
    name = PurePosixPath(member.name)
    if not member.isfile() or name.is_absolute() or ".." in name.parts or not name.parts:
        raise BundleError(f"bundle tarball entry {member.name!r} is not a plain relative file")
    return name.as_posix()


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo | None, name: str, cap: int) -> bytes:
    if member is None or _plain_name(member) != name:
        found = "nothing" if member is None else repr(member.name)
        raise BundleError(f"bundle tarball must start with {MANIFEST_FILE} and {SIGNATURE_FILE}; found {found} "
                          f"where {name} belongs (packed by an older coldchain, or not a bundle)")
    if member.size > cap:
        raise BundleError(f"bundle {name} is {member.size} bytes, more than the {cap} allowed")
    handle = tar.extractfile(member)
    return b"" if handle is None else handle.read(cap + 1)


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would: its nearest existing parent)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def unpack(tarball: Path | bytes, destination: Path, trust: TrustStore | None = None,
           reserve_bytes: int = RESERVE_BYTES) -> Path:
    """Extract a bundle tarball as a stream, never writing more than its manifest declares.

    The manifest and its signature come first and are checked before anything is written (the
    signature against ``trust`` when given); the free space must hold the declared sizes plus
    ``reserve_bytes``; then each entry must be a plain relative file the manifest lists, with the
    declared size, written with its hash checked on the way. Links, devices, absolute paths, '..',
    unlisted or repeated entries and anything larger than declared are refused."""
    try:
        source = tarball.open("rb") if isinstance(tarball, Path) else io.BytesIO(tarball)
    except OSError as exc:
        raise BundleError(f"cannot read bundle tarball {exc.filename}: {exc.strerror}") from exc
    try:
        with source, tarfile.open(fileobj=source, mode="r|*") as tar:
            manifest_bytes = _read_small(tar, tar.next(), MANIFEST_FILE, MAX_MANIFEST_BYTES)
            signature = _read_small(tar, tar.next(), SIGNATURE_FILE, MAX_SIGNATURE_BYTES)
            if trust is not None:
                verify(manifest_bytes, signature, trust)
            manifest = load_manifest(manifest_bytes)
            declared = {f.path: f for f in manifest.files}
            need = sum(f.size for f in manifest.files) + len(manifest_bytes) + len(signature)
            free = free_bytes(destination)
            if need + reserve_bytes > free:
                raise BundleError(f"not enough space for the bundle: it needs {need} bytes (plus {reserve_bytes} "
                                  f"kept free), {free} are free")
            destination.mkdir(parents=True, exist_ok=True)
            (destination / MANIFEST_FILE).write_bytes(manifest_bytes)
            (destination / SIGNATURE_FILE).write_bytes(signature)
            written: set[str] = set()
            count = 2
            while (member := tar.next()) is not None:  # (iterating ``tar`` would start again at the manifest)
                count += 1
                if count > MAX_BUNDLE_FILES:
                    raise BundleError(f"bundle tarball holds more than {MAX_BUNDLE_FILES} entries")
                _extract(tar, member, declared, written, destination)
            missing = sorted(set(declared) - written)
            if missing:
                raise BundleError(f"bundle tarball lacks files its manifest lists: {missing[:8]}")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BundleError(f"bundle tarball is unreadable ({exc}); it is corrupt or not a bundle") from exc
    except OSError as exc:
        raise BundleError(f"cannot extract the bundle into {destination}: {exc.strerror or exc}") from exc
    return destination


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, declared: dict[str, FileEntry], written: set[str],
             destination: Path) -> None:
    name = _plain_name(member)
    entry = declared.get(name)
    if entry is None or name in written:
        what = "twice" if name in written else "but its manifest does not list it"
        raise BundleError(f"bundle tarball holds {name!r} {what}")
    if member.size != entry.size:
        raise BundleError(f"bundle file {name} is {member.size} bytes in the tarball, {entry.size} in its manifest")
    handle = tar.extractfile(member)
    if handle is None:
        raise BundleError(f"bundle tarball entry {name!r} has no data")
    target = destination / name
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with target.open("wb") as out:
        while block := handle.read(min(1 << 20, entry.size - size + 1)):
            size += len(block)
            if size > entry.size:
                raise BundleError(f"bundle file {name} is larger than its manifest declares")
            digest.update(block)
            out.write(block)
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise BundleError(f"bundle file {name} does not match its manifest hash: it was changed after signing")
    written.add(name)


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

