from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.errors import PayloadError
from contract.manifest import dump_manifest, load_manifest, schema_for

GOLDEN = Path(__file__).parent / "golden"


def _manifest() -> dict:  # type: ignore[type-arg]
    return json.loads((GOLDEN / "manifest.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.onnx", "a/../../b", "manifest.json"])
def test_file_paths_stay_inside_the_bundle(path: str) -> None:
    data = _manifest()
    data["files"][0]["path"] = path
    with pytest.raises(PayloadError, match="relative inside the bundle"):
        load_manifest(json.dumps(data).encode())


def test_chunk_hash_count_must_match_size() -> None:
    data = _manifest()
    data["files"][0]["size"] = 10_000_000
    with pytest.raises(PayloadError, match="need 77 chunk hashes, got 3"):
        load_manifest(json.dumps(data).encode())


def test_golden_file_must_be_listed() -> None:
    data = _manifest()
    data["golden"]["file"] = "elsewhere.npz"
    with pytest.raises(PayloadError, match="not listed in files"):
        load_manifest(json.dumps(data).encode())


def test_schema_name_is_checked() -> None:
    data = _manifest()
    data["schema"] = "coldchain.manifest/v9"
    with pytest.raises(PayloadError, match="schema"):
        load_manifest(json.dumps(data).encode())


def test_every_design_field_is_present() -> None:
    manifest = load_manifest((GOLDEN / "manifest.json").read_bytes())
    assert manifest.model.sha256 and manifest.target.runtime.min_version
    assert manifest.files[0].chunks and manifest.io.preprocessing.mean
    assert manifest.passes and manifest.toolchain and manifest.calibration_sha256
    assert manifest.metrics.compiled_latency is not None and manifest.golden.cases == 4
    assert manifest.reference is not None and manifest.sequence == 7


def test_a_v1_manifest_belongs_to_its_models_stream_and_dumps_unchanged() -> None:
    raw = (GOLDEN / "manifest.json").read_bytes()
    manifest = load_manifest(raw)
    assert manifest.schema_ == "coldchain.manifest/v1" and manifest.stream is None
    assert manifest.stream_name == manifest.model.name
    assert "stream" not in json.loads(dump_manifest(manifest))
    data = _manifest()
    data["stream"] = "fridge/eu"
    with pytest.raises(PayloadError, match="has no stream field"):
        load_manifest(json.dumps(data).encode())


def test_a_v2_manifest_names_its_stream() -> None:
    data = _manifest() | {"schema": "coldchain.manifest/v2"}
    with pytest.raises(PayloadError, match="must name its stream"):
        load_manifest(json.dumps(data).encode())
    manifest = load_manifest(json.dumps(data | {"stream": "fridge/eu"}).encode())
    assert manifest.stream_name == "fridge/eu" and json.loads(dump_manifest(manifest))["stream"] == "fridge/eu"
    for bad in ("", "x" * 129, "line\nbreak"):
        with pytest.raises(PayloadError, match="stream"):
            load_manifest(json.dumps(data | {"stream": bad}).encode())


def test_a_v3_manifest_names_its_boards_and_older_ones_are_not_board_checked() -> None:
    v2 = _manifest() | {"schema": "coldchain.manifest/v2", "stream": "fridge"}
    with pytest.raises(PayloadError, match="has no boards field"):
        load_manifest(json.dumps(v2 | {"boards": ["rpi4"]}).encode())
    assert load_manifest(json.dumps(v2).encode()).board_refusal("rpi4") is None
    assert "boards" not in json.loads(dump_manifest(load_manifest(json.dumps(v2).encode())))
    v3 = v2 | {"schema": "coldchain.manifest/v3"}
    with pytest.raises(PayloadError, match="must name its boards"):
        load_manifest(json.dumps(v3).encode())
    manifest = load_manifest(json.dumps(v3 | {"boards": ["rpi4", "cm4"]}).encode())
    assert manifest.board_refusal("cm4") is None and manifest.board_refusal("unknown") is None
    assert manifest.board_refusal("jetson-orin-nano") == (
        f"the bundle is for boards rpi4, cm4 (target {manifest.target.name}); this device is a jetson-orin-nano")
    for bad in ([], ["rpi 4"], ["x"] * 33):
        with pytest.raises(PayloadError, match="boards"):
            load_manifest(json.dumps(v3 | {"boards": bad}).encode())


def test_a_v4_manifest_describes_short_side_resizing_and_centre_crops() -> None:
    """Issue 15: torchvision's ImageNet preprocessing (tests/contract/golden/manifest_crop.json) needs v4;
    a v3 manifest cannot carry it, and a preprocessing without it dumps exactly as v3 did."""
    crop = json.loads((GOLDEN / "manifest_crop.json").read_text())
    manifest = load_manifest(json.dumps(crop).encode())
    pre = manifest.io.preprocessing
    assert (pre.resize, pre.short_side, pre.crop, pre.width, pre.height) == ("short_side", 256, "center", 224, 224)
    assert schema_for(manifest.io) == "coldchain.manifest/v4"
    with pytest.raises(PayloadError, match="cannot describe short-side resizing"):
        load_manifest(json.dumps(crop | {"schema": "coldchain.manifest/v3"}).encode())
    cubic = crop | {"schema": "coldchain.manifest/v3", "io": {**crop["io"], "preprocessing": {
        **_manifest()["io"]["preprocessing"], "interpolation": "cubic"}}}
    with pytest.raises(PayloadError, match=r"came with coldchain\.manifest/v4"):
        load_manifest(json.dumps(cubic).encode())
    plain = load_manifest((GOLDEN / "manifest.json").read_bytes())
    assert schema_for(plain.io) == "coldchain.manifest/v3"
    assert set(json.loads(dump_manifest(plain))["io"]["preprocessing"]) == set(_manifest()["io"]["preprocessing"])
    for bad in ({"short_side": 0}, {"short_side": 8193}, {"crop": "corner"}, {"interpolation": "lanczos"}):
        data = crop | {"io": {**crop["io"], "preprocessing": {**crop["io"]["preprocessing"], **bad}}}
        with pytest.raises(PayloadError, match="preprocessing"):
            load_manifest(json.dumps(data).encode())
