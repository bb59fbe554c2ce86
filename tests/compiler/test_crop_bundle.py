"""A model described with ImageNet-style preprocessing (short side, centre crop, bicubic) compiles into
a coldchain.manifest/v4 bundle whose golden self-test passes, and a device runs it (issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.model import LoadedBundle
from compiler.bundle import write_bundle
from compiler.description import parse_description
from compiler.evaluate import image_sets
from compiler.pipeline import Pipeline
from compiler.target import load_target
from contract import signing
from contract.bundle import verify_dir
from contract.manifest import ModelSource
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from examples.fridge.synth import write_dataset


def test_a_centre_crop_bundle_is_v4_and_runs(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(DESCRIPTION_FILE.read_text())
    data["preprocessing"].update(resize="short_side", short_side=146, crop="center", interpolation="cubic")
    description = parse_description(data, "test")
    write_dataset(tmp_path / "cal", 12, seed=1)
    write_dataset(tmp_path / "eval", 12, seed=2)
    cal, ev, _ = image_sets(tmp_path / "cal", tmp_path / "eval", 12, 0, description)
    target = load_target("arm64-cortex-a72-ort")
    result = Pipeline(description, target, cal, ev, tmp_path / "work").run(MODEL_FILE)
    keys = signing.write_keypair(tmp_path / "keys", "ops")
    source = ModelSource(name="fridge-crop", version="1", source_uri="file:///fridge.onnx", sha256="0" * 64)
    bundle = write_bundle(result, source, target, cal, ev, signing.load_private_key(keys.private),
                          tmp_path / "bundles", 1)  # runs the golden self-test on the bundle
    trust = signing.TrustStore.from_paths([keys.public])
    manifest = verify_dir(bundle.directory, trust)
    pre = manifest.io.preprocessing
    assert manifest.schema_ == "coldchain.manifest/v4"
    assert (pre.resize, pre.short_side, pre.crop, pre.interpolation) == ("short_side", 146, "center", "cubic")
    assert pre.dtype == "uint8" and [p.name for p in manifest.passes][-1] == "fold.normalize"
    with LoadedBundle.open_bundle(bundle.directory, trust) as loaded:
        result_ = loaded.predict(ev.frames[0])
    assert result_.seen is not None and result_.seen.shape == (128, 128, 3)
    assert result_.prediction.scores.shape == (8,) and np.all(np.isfinite(result_.prediction.scores))
