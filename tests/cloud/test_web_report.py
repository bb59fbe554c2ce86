"""The dashboard's compile report (cloud/web/report.py) from a manifest's pass records."""

from __future__ import annotations

from cloud.web.report import compile_report


def _manifest(calibration: object) -> dict[str, object]:
    return {"metrics": {"float_size_bytes": 400, "compiled_size_bytes": 100},
            "passes": [{"name": "quantize.static", "config": {"calibration": calibration, "per_channel": True,
                                                              "exclude_nodes": ["Conv_0"]}}]}


def test_a_calibration_fingerprint_is_shown_and_an_older_host_path_is_not() -> None:
    fingerprint = {"file": "calibration.npz", "sha256": "ab" * 32, "samples": 60}
    step = compile_report(_manifest(fingerprint)).steps[1]
    assert step.config == {"per_channel": True, "calibration": "60 samples, sha256 abababababab"}
    assert step.kept_in_float == ["Conv_0"]
    older = compile_report(_manifest("/home/build/out/.work/a72/calibration.npz")).steps[1]
    assert older.config == {"per_channel": True}  # the build host's path stays hidden
