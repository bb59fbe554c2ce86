"""One frame -> prediction path (issue 11, finding 3): ``agent.model.LoadedModel`` is the only code
that opens a runtime and calls its ``run()``; everything else (agent loop, shadow runs, self-test,
profile, ``agent infer``, the demo, the compiler's evaluation, latency and golden I/O) goes
through it. Checked on the source, and on behaviour: the agent loop, the compiler's evaluation and
``agent infer`` give the same prediction for the same frame."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from agent.model import LoadedBundle
from compiler.evaluate import ImageSet, run_model

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("agent", "compiler", "coldchain", "cloud", "examples")
ALLOWED = {Path("agent/model.py")}


def _calls(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "agent.runtimes":
            names = {a.name for a in node.names}
            if names & {"open_runtime", "time_runs"}:
                found.append((node.lineno, f"imports {sorted(names & {'open_runtime', 'time_runs'})}"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = ast.unparse(node.func.value)
            if node.func.attr in ("run", "open_runtime", "time_runs") and "runtime" in receiver.lower():
                found.append((node.lineno, f"{receiver}.{node.func.attr}()"))
    return found


def test_only_the_loaded_model_runs_a_runtime() -> None:
    offenders = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative in ALLOWED or relative.parts[:2] == ("agent", "runtimes"):
                continue
            offenders += [f"{relative}:{line}: {what}" for line, what in _calls(ast.parse(path.read_text()))]
    assert not offenders, "run models through agent.model.LoadedModel:\n" + "\n".join(offenders)


def test_the_check_would_see_a_direct_call() -> None:
    tree = ast.parse("from agent.runtimes import open_runtime\nrt = open_runtime('onnxruntime', p)\nrt.run(feed)\n"
                     "self.runtime.run({})\n")
    assert [what for _, what in _calls(tree)] == ["imports ['open_runtime']", "self.runtime.run()"]


def test_loop_compiler_and_infer_see_the_same_thing(world: dict[str, object]) -> None:
    bundle = world["bundles"][5]  # type: ignore[index]
    _, evaluation = world["sets"]  # type: ignore[misc]
    assert isinstance(evaluation, ImageSet)
    with LoadedBundle.open_bundle(bundle.directory, world["trust"]) as loaded:  # type: ignore[arg-type]
        by_frame = [loaded.predict(frame) for frame in evaluation.frames]
        by_compiler = run_model(loaded, evaluation)
    for direct, compiled in zip(by_frame, by_compiler.predictions, strict=True):
        assert direct.prediction.labels == compiled.labels
        assert np.allclose(direct.prediction.scores, compiled.scores)


def test_an_inference_knows_whether_its_outputs_are_finite() -> None:
    """The loop counts non-finite outputs by one float64 sum per output: large finite float32 values do
    not overflow it, a NaN or an infinity (of either sign, or both) is found in any output."""
    from agent.model import Inference
    from agent.postprocess import Prediction

    def finite(*outputs: np.ndarray) -> bool:
        return Inference(Prediction((), np.zeros(1, np.float32)), list(outputs), 0.0, 0.0).finite()

    big = np.full(1000, 3e38, np.float32)
    assert finite(big, np.arange(4, dtype=np.int64)) and finite()
    assert not finite(big, np.array([0.0, np.nan], np.float32))
    assert not finite(np.array([np.inf, -np.inf], np.float32)) and not finite(np.array([-np.inf], np.float16))
