"""Every write operators make, for the CLI and the HTTP API alike, each recorded in the audit
log with who made it (``actor``), on what, and how it ended (``ok``, ``refused: why``, ``failed:
why``). The reads are :mod:`cloud.queries`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from cloud import rollouts
from cloud.audit import record
from cloud.commands import enqueue
from cloud.errors import CloudError, NotFoundError
from cloud.fleet import add_bundle, tag
from cloud.plan import RolloutPlan
from cloud.queries.fleet import bundle_view, device_view
from cloud.queries.models import BundleView, DeviceView
from cloud.store import Device, now
from contract.commands import SetConfigCommand
from contract.errors import ContractError
from contract.signing import TrustStore

T = TypeVar("T")
Action = Literal["pause", "resume", "abort", "rollback"]


class Operations:
    def __init__(self, sessions: sessionmaker[Session], actor: str) -> None:
        self.sessions, self.actor = sessions, actor

    def audited(self, action: str, target: str | None, detail: dict[str, Any], act: Callable[[], T]) -> T:
        """Run ``act`` and record it: ok, refused (the project's errors) or failed (anything else)."""
        try:
            done = act()
        except (CloudError, ContractError, ValueError) as exc:
            record(self.sessions, self.actor, action, target, f"refused: {exc}", detail)
            raise
        except Exception as exc:
            record(self.sessions, self.actor, action, target, f"failed: {exc.__class__.__name__}", detail)
            raise
        record(self.sessions, self.actor, action, target, "ok", detail)
        return done

    def refused(self, action: str, target: str | None, why: str, detail: dict[str, Any] | None = None) -> None:
        """Record a write refused before it could be tried (not configured, too large, empty)."""
        record(self.sessions, self.actor, action, target, f"refused: {why}", detail)

    def start_rollout(self, bundle: str, plan: RolloutPlan, rollout_id: str | None = None,
                      supersede: bool = False) -> str:
        rollout_id = rollout_id or rollouts.new_id()
        detail = {"bundle": bundle, "plan": plan.model_dump(mode="json"), "supersede": supersede}
        return self.audited("rollout.start", rollout_id, detail, lambda: rollouts.start(
            self.sessions, bundle, plan, rollout_id, supersede=supersede))

    def rollout(self, action: Action, rollout_id: str, reason: str | None = None) -> None:
        function = getattr(rollouts, action)

        def act() -> None:
            if reason and action in ("abort", "rollback"):
                function(self.sessions, rollout_id, reason)
            else:
                function(self.sessions, rollout_id)

        self.audited(f"rollout.{action}", rollout_id, {"reason": reason} if reason else {}, act)

    def tag(self, device_ids: Sequence[str], tags: dict[str, str | None], add_groups: Sequence[str] = (),
            remove_groups: Sequence[str] = ()) -> list[DeviceView]:
        def act() -> list[DeviceView]:
            with self.sessions.begin() as session:
                return [device_view(d) for d in tag(session, device_ids, tags, add_groups, remove_groups)]

        detail = {"tags": tags, "add_groups": list(add_groups), "remove_groups": list(remove_groups)}
        return self.audited("device.tag", ",".join(device_ids), detail, act)

    def add_bundle(self, tarball: Path, trust: TrustStore) -> BundleView:
        def act() -> BundleView:
            with self.sessions.begin() as session:
                return bundle_view(add_bundle(session, tarball, trust))

        return self.audited("bundle.add", tarball.name, {"path": str(tarball)}, act)

    def set_config(self, device_id: str, inference_interval_s: float | None,
                   telemetry_window_s: float | None) -> str:
        def act() -> str:
            if inference_interval_s is None and telemetry_window_s is None:
                raise CloudError("nothing to change: give inference_interval_s or telemetry_window_s "
                                 "(--inference-interval-s, --telemetry-window-s)")
            with self.sessions.begin() as session:
                if session.get(Device, device_id) is None:
                    raise NotFoundError(f"device {device_id} is not in the store (see `coldchain fleet list`)")
                command = SetConfigCommand(job_id=f"config-{uuid.uuid4().hex[:12]}",
                                           inference_interval_s=inference_interval_s,
                                           telemetry_window_s=telemetry_window_s)
                return enqueue(session, device_id, command, None, now()).job_id

        detail = {"inference_interval_s": inference_interval_s, "telemetry_window_s": telemetry_window_s}
        return self.audited("device.config", device_id, detail, act)
