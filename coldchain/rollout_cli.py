"""``coldchain rollout``: start, watch, pause, resume, abort and roll back staged rollouts.

These commands write the store (``--db``) or ask the cloud's API to (an ``operate`` token); the
running cloud (``coldchain cloud serve``) acts on them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from coldchain.cloud_views import rollback_plan_table, rollout_table, rollouts_table, shown
from coldchain.console import console, fail
from coldchain.sources import Db, Token, Url, connected

app = typer.Typer(help="Staged rollouts with health gates and automatic rollback.", no_args_is_help=True)
Id = Annotated[str, typer.Argument(help="Rollout id (see `coldchain rollout status`).")]
Reason = Annotated[str | None, typer.Option(help="Why (recorded and sent to the devices).")]


@app.command()
def start(
    bundle: Annotated[str, typer.Argument(help="Bundle manifest sha256 (or a unique prefix), from `cloud bundles`.")],
    waves: Annotated[str, typer.Option(help="Cumulative wave sizes: device counts or percentages.")] = "1,10%,50%,100%",
    group: Annotated[list[str], typer.Option(help="Select devices of this group (repeatable).")] = [],  # noqa: B006
    board: Annotated[list[str], typer.Option(help="Select devices of this board (repeatable).")] = [],  # noqa: B006
    tag: Annotated[list[str], typer.Option(help="Select devices with tag key=value (repeatable).")] = [],  # noqa: B006
    min_success: Annotated[float, typer.Option(min=0, max=1, help="Gate: jobs succeeded per wave.")] = 1.0,
    max_error_rate: Annotated[float, typer.Option(min=0, max=1, help="Gate: inference errors.")] = 0.02,
    max_latency_ratio: Annotated[float, typer.Option(
        min=0, help="Gate: model p95 vs the previous bundle on the same devices, also judged on each device "
                    "(0 = off; above 1).")] = 1.5,
    max_prediction_drift: Annotated[float, typer.Option(min=0, max=1, help="Gate: JS vs previous bundle.")] = 0.15,
    max_input_drift: Annotated[float, typer.Option(min=0, help="Gate: PSI vs reference (0 = off).")] = 0.0,
    min_inferences: Annotated[int, typer.Option(min=0, help="Inferences needed per wave to judge.")] = 20,
    probation_s: Annotated[float, typer.Option(min=1, help="Device-side probation after activation.")] = 300.0,
    shadow_s: Annotated[float, typer.Option(min=0, help="Shadow run beside the active model first (0 = none).")] = 0.0,
    min_shadow_agreement: Annotated[float, typer.Option(min=0, max=1, help="Gate: shadow agreement (0 = off).")] = 0.0,
    observe_s: Annotated[float, typer.Option(min=0, help="Telemetry gathered after a wave's jobs end.")] = 120.0,
    wave_timeout_s: Annotated[float, typer.Option(min=1, help="A job not done by then counts as failed.")] = 1800.0,
    rollout_id: Annotated[str | None, typer.Option("--id", help="Rollout id (idempotent).")] = None,
    supersede: Annotated[bool, typer.Option(
        "--supersede", help="Take over devices an unfinished rollout holds (it stops for them: SUPERSEDED); "
                            "without it such a start is refused.")] = False,
    db: Db = None, url: Url = None, token: Token = None,
) -> None:
    """Create a rollout; the running cloud sends wave 1 at its next step."""
    from cloud.plan import Gates, RolloutPlan, Selector, Timeouts

    tags = {}
    for pair in tag:
        key, sep, value = pair.partition("=")
        if not sep:
            raise fail(f"--tag takes key=value, got {pair!r}")
        tags[key] = value
    with connected(db, url, token) as source:
        plan = RolloutPlan(
            selector=Selector(groups=group, boards=board, tags=tags), waves=waves,
            gates=Gates(min_success_ratio=min_success, max_error_rate=max_error_rate,
                        max_latency_ratio=max_latency_ratio or None, max_prediction_drift=max_prediction_drift,
                        max_input_drift=max_input_drift or None, min_inferences=min_inferences,
                        min_shadow_agreement=min_shadow_agreement or None),
            timeouts=Timeouts(observe_s=observe_s, wave_s=wave_timeout_s), probation_s=probation_s,
            shadow_s=shadow_s or None)
        new_id = source.writes.start_rollout(bundle, plan, rollout_id, supersede=supersede)
        console.print(rollout_table(source.reads.rollout(new_id)))


@app.command()
def status(rollout: Annotated[str | None, typer.Argument(help="A rollout id; none: the recent ones.")] = None,
           db: Db = None, url: Url = None, token: Token = None,
           offset: Annotated[int, typer.Option(min=0, help="Rollouts to skip.")] = 0,
           limit: Annotated[int, typer.Option(min=1, max=500, help="Rollouts to show.")] = 20) -> None:
    """Recent rollouts, or one rollout wave by wave with its gate results."""
    from cloud.queries import Paging

    with connected(db, url, token) as source:
        if rollout is None:
            page = source.reads.rollouts(Paging(offset=offset, limit=limit))
            table = rollouts_table(page.items)
            table.caption = shown(page, "rollouts")
            console.print(table)
        else:
            console.print(rollout_table(source.reads.rollout(rollout)))


def _act(action: Literal["pause", "resume", "abort", "rollback"], rollout: str, db: str | None, url: str | None,
         token: str | None, reason: str | None = None, confirm: bool = False) -> None:
    with connected(db, url, token) as source:
        if confirm:
            console.print(rollback_plan_table(rollout, source.reads.rollback_plan(rollout)))
            if not typer.confirm("Roll back as shown?", default=False):
                raise fail("nothing was changed", code=1)
        source.writes.rollout(action, rollout, reason)
        console.print(rollout_table(source.reads.rollout(rollout)))


@app.command()
def pause(rollout: Id, db: Db = None, url: Url = None, token: Token = None) -> None:
    """No new wave starts; jobs already sent continue."""
    _act("pause", rollout, db, url, token)


@app.command()
def resume(rollout: Id, db: Db = None, url: Url = None, token: Token = None) -> None:
    """Continue a paused rollout."""
    _act("resume", rollout, db, url, token)


@app.command()
def abort(rollout: Id, reason: Reason = None, db: Db = None, url: Url = None, token: Token = None) -> None:
    """Stop: cancel jobs not yet activated; devices already on the new bundle keep it."""
    _act("abort", rollout, db, url, token, reason)


@app.command()
def rollback(rollout: Id, reason: Reason = None, db: Db = None, url: Url = None, token: Token = None,
             yes: Annotated[bool, typer.Option("--yes", "-y", help="Act without showing the plan first.")] = False,
             ) -> None:
    """Put every device the rollout touched back on its own last known-good bundle (operator-signed).

    Shows first which device goes to which bundle (from what each device reported), then asks."""
    _act("rollback", rollout, db, url, token, reason, confirm=not yes)
