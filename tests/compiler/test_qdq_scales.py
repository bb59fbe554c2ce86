from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from compiler.passes import get_pass
from tests.compiler.graphs import shufflenet_units

X = np.random.default_rng(3).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)


def _outputs(path: Path) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {"image": X})]


def _scale_of(model: onnx.ModelProto, tensor: str) -> tuple[float, int]:
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == tensor)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return float(inits[dq.input[1]]), int(inits[dq.input[2]])


def test_shared_concat_scales_make_concat_a_copy_and_cover_every_range(tmp_path: Path) -> None:
    source = shufflenet_units(tmp_path / "units.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "cal.npz", image=rng.normal(0, 1, (8, 3, 8, 8)).astype(np.float32))
    quantize = get_pass("quantize.static")
    outs = {}
    for share in (False, True):
        work = tmp_path / f"share-{share}"
        work.mkdir()
        config = quantize.config({"calibration": tmp_path / "cal.npz", "quantize_bias": False,
                                  "share_concat_scales": share})
        outs[share] = quantize().run(source, config, work)
    plain, shared = (onnx.load(str(outs[s])) for s in (False, True))
    for concat in (n for n in shared.graph.node if n.op_type == "Concat"):
        params = {_scale_of(shared, name) for name in concat.input}
        assert len(params) == 1  # every input in the output's range: a plain copy
        for name in concat.input:  # and that range covers what calibration saw for each input
            s0, z0 = _scale_of(plain, name)
            s1, z1 = _scale_of(shared, name)
            assert (0 - z1) * s1 <= (0 - z0) * s0 + 1e-6 and (255 - z1) * s1 >= (255 - z0) * s0 - 1e-6
    reference = _outputs(source)[0]
    error = np.abs(_outputs(outs[True])[0] - reference).mean() / np.abs(reference).mean()
    assert error < 0.1
