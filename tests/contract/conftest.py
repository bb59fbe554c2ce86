"""The contract tests' shared fixture: a small signed bundle directory and the store that trusts its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract import signing
from contract.bundle import file_entry
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
