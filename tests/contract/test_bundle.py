from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults.hostile import signed_head, tar_gz, zeros
from contract import signing
from contract.bundle import pack, unpack, verify_dir
from contract.errors import BundleError, ContractError, SignatureError

GOLDEN = Path(__file__).parent / "golden"


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
    with pytest.raises(BundleError, match="not a plain relative file"):
        unpack(tar_gz([("../escape.txt", b"x")]), tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(BundleError, match="unreadable"):
        unpack(b"not a tarball", tmp_path / "out2")


def test_an_unsigned_gzip_bomb_is_refused_before_anything_is_written(tmp_path: Path,
                                                                     bundle: tuple[Path, signing.TrustStore]) -> None:
    """2 MB compressed, 2 GiB of zeros inside, no manifest first: refused at the first header."""
    _, trust = bundle
    bomb = tar_gz([zeros("model.onnx", 2 * 1024**3)])
    assert len(bomb) < 3 * 1024**2
    out = tmp_path / "out"
    with pytest.raises(BundleError, match=r"must start with manifest\.json"):
        unpack(bomb, out, trust)
    assert not out.exists() or not any(out.iterdir())


def test_a_signed_manifest_caps_what_is_extracted(tmp_path: Path, bundle: tuple[Path, signing.TrustStore]) -> None:
    directory, trust = bundle
    model = (directory / "model.onnx").read_bytes()
    golden = (directory / "golden.npz").read_bytes()
    head = signed_head(directory)
    cases = {
        "larger": ([*head, ("model.onnx", model + b"x" * 10000000), ("golden.npz", golden)], "bytes in the tarball"),
        "unlisted": ([*head, ("model.onnx", model), ("golden.npz", golden), ("evil.so", b"x")], "does not list"),
        "twice": ([*head, ("model.onnx", model), ("model.onnx", model), ("golden.npz", golden)], "twice"),
        "missing": ([*head, ("model.onnx", model)], "lacks files"),
        "changed": ([*head, ("model.onnx", model[:-1] + b"!"), ("golden.npz", golden)], "does not match"),
        "escape": ([*head, ("../model.onnx", model)], "not a plain relative file"),
    }
    for case, (members, message) in cases.items():
        out = tmp_path / case
        with pytest.raises(BundleError, match=message):
            unpack(tar_gz(members), out, trust)
        written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.exists() else 0
        assert written <= len(model) + len(golden) + 100_000, case  # never more than declared
    forged = [("manifest.json", head[0][1].replace(b'"sequence":7', b'"sequence":8')), head[1]]
    with pytest.raises(SignatureError):
        unpack(tar_gz([*forged, ("model.onnx", model), ("golden.npz", golden)]), tmp_path / "forged", trust)
    assert not (tmp_path / "forged").exists()  # refused before a byte was written


def test_too_little_space_is_refused_up_front(tmp_path: Path, bundle: tuple[Path, signing.TrustStore]) -> None:
    directory, trust = bundle
    tarball = pack(directory, tmp_path / "b.tar.gz")
    with pytest.raises(BundleError, match="not enough space"):
        unpack(tarball, tmp_path / "out", trust, reserve_bytes=1 << 60)
    assert not (tmp_path / "out").exists()


def test_a_deeply_nested_signed_manifest_is_an_error(tmp_path: Path) -> None:
    pair = signing.write_keypair(tmp_path / "k2", "k")
    nested = b'{"schema_version": 1, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    signature = signing.sign(nested, signing.load_private_key(pair.private))
    with pytest.raises(ContractError, match="nests"):
        unpack(tar_gz([("manifest.json", nested), ("manifest.sig", signature)]), tmp_path / "n",
               signing.TrustStore.from_paths([pair.public]))
