from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from contract import signing
from contract.bundle import file_entry, pack, unpack, verify_dir
from contract.errors import BundleError, SignatureError
from contract.manifest import dump_manifest, load_manifest

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, signing.TrustStore]:
    directory = tmp_path / "b"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(b"model-bytes" * 20000)
    (directory / "golden.npz").write_bytes(b"golden")
    manifest = load_manifest((GOLDEN / "manifest.json").read_bytes())
    manifest = manifest.model_copy(update={"files": [file_entry(directory, "model.onnx", "model"),
                                                     file_entry(directory, "golden.npz", "golden")]})
    data = dump_manifest(manifest)
    (directory / "manifest.json").write_bytes(data)
    pair = signing.write_keypair(tmp_path / "keys", "k")
    (directory / "manifest.sig").write_bytes(signing.sign(data, signing.load_private_key(pair.private)))
    return directory, signing.TrustStore.from_paths([pair.public])


def test_verify_and_round_trip(bundle: tuple[Path, signing.TrustStore], tmp_path: Path) -> None:
    directory, trust = bundle
    assert verify_dir(directory, trust).files[0].path == "model.onnx"
    first = pack(directory, tmp_path / "a.tar.gz").read_bytes()
    assert pack(directory, tmp_path / "b.tar.gz").read_bytes() == first  # reproducible
    assert verify_dir(unpack(tmp_path / "a.tar.gz", tmp_path / "out"), trust).sequence == 7


def test_tampered_file_is_named(bundle: tuple[Path, signing.TrustStore]) -> None:
    directory, trust = bundle
    data = bytearray((directory / "model.onnx").read_bytes())
    data[150_000] ^= 1  # in the second 128 KiB chunk
    (directory / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.onnx does not match .*chunks \[1\]"):
        verify_dir(directory, trust)


def test_extra_missing_and_resigned(bundle: tuple[Path, signing.TrustStore], tmp_path: Path) -> None:
    directory, trust = bundle
    (directory / "evil.so").write_bytes(b"x")
    with pytest.raises(BundleError, match="does not list"):
        verify_dir(directory, trust)
    (directory / "evil.so").unlink()
    (directory / "golden.npz").unlink()
    with pytest.raises(BundleError, match=r"golden\.npz is missing"):
        verify_dir(directory, trust)
    (directory / "manifest.json").write_bytes((directory / "manifest.json").read_bytes().replace(b'"sequence":7',
                                                                                                 b'"sequence":9'))
    with pytest.raises(SignatureError):
        verify_dir(directory, trust)


def test_unpack_refuses_escapes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="not a plain relative file"):
        unpack(buffer.getvalue(), tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(BundleError, match="unreadable"):
        unpack(b"not a tarball", tmp_path / "out2")
