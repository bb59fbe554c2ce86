"""The MLflow run that compiled a bundle, when the compile was recorded (``coldchain compile
--mlflow-uri``): found by its tag ``coldchain.manifest_sha256`` in the tracking server the cloud's
configuration names (``dashboard.mlflow_tracking_uri``), linked in MLflow's UI
(``dashboard.mlflow_ui_url``; an http(s) tracking URI is its own UI), with the run's metrics per
compile step. Looked up at most every ``ttl_s`` per bundle; a tracking server that does not
answer costs a warning in the log and no link, never the page."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloud.web.report import MEASURES

log = logging.getLogger("coldchain.cloud.web")
TAG = "coldchain.manifest_sha256"


@dataclass(frozen=True)
class CompileRun:
    run_id: str
    experiment_id: str
    url: str | None  # in MLflow's UI; None without a UI address
    per_step: list[dict[str, float]] = field(default_factory=list)  # metrics by step index


class MlflowLinks:
    def __init__(self, tracking_uri: str | None, ui_url: str | None = None, ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tracking_uri = tracking_uri
        web = tracking_uri if tracking_uri and tracking_uri.startswith(("http://", "https://")) else None
        self.ui_url = (ui_url or web or "").rstrip("/") or None
        self.ttl_s, self.clock = ttl_s, clock
        self._cache: dict[str, tuple[float, CompileRun | None]] = {}
        self._lock = threading.Lock()

    def run(self, sha256: str) -> CompileRun | None:
        if self.tracking_uri is None:
            return None
        with self._lock:
            cached = self._cache.get(sha256)
            if cached is not None and self.clock() - cached[0] < self.ttl_s:
                return cached[1]
        try:
            found = self._find(sha256)
        except Exception as exc:  # whatever the tracking server or its client raise: no link, a warning
            log.warning("MLflow at %s: cannot look up the compile run of %s: %s", self.tracking_uri, sha256[:12], exc)
            found = None
        with self._lock:
            self._cache[sha256] = (self.clock(), found)
        return found

    def _find(self, sha256: str) -> CompileRun | None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        if not experiments:
            return None
        runs = client.search_runs(experiments, filter_string=f"tags.`{TAG}` = '{sha256}'", max_results=1)
        if not runs:
            return None
        run: Any = runs[0]
        steps: dict[int, dict[str, float]] = {}
        for key in MEASURES:
            for metric in client.get_metric_history(run.info.run_id, key):
                steps.setdefault(int(metric.step), {})[key] = float(metric.value)
        per_step = [steps.get(i, {}) for i in range(max(steps) + 1)] if steps else []
        url = (f"{self.ui_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
               if self.ui_url else None)
        return CompileRun(run.info.run_id, run.info.experiment_id, url, per_step)
