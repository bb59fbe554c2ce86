"""``coldchain agent``: run the device agent, read its state, infer locally, simulate a fleet.

Imports only the agent and the contract: a device installs ``coldchain[agent]`` and nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from coldchain.console import console, err_console, existing_bundle, user_errors

app = typer.Typer(help="Run the device agent and inspect it.", no_args_is_help=True)


@app.command()
def run(
    config: Annotated[Path, typer.Option(help="Agent configuration (TOML or YAML); COLDCHAIN_* overrides.")],
    seconds: Annotated[float | None, typer.Option(min=1, help="Stop after this long (default: run forever).")] = None,
    broker: Annotated[str | None, typer.Option(help="Broker URL, over the file and COLDCHAIN_BROKER__URL.")] = None,
) -> None:
    """Connect to the broker, install bundles, infer on frames, report telemetry."""
    import logging
    import os

    # stderr, one line per event (journald stamps the time): the agent's INFO lines say what came back
    # (connected, the frame source available, the local API listening), not only what failed
    logging.basicConfig(format="%(message)s")
    for name in ("coldchain", "agent", "transport"):
        logging.getLogger(name).setLevel(logging.INFO)

    from agent.config import load_config
    from agent.errors import AgentError
    from agent.service import run_agent

    with user_errors(AgentError):
        overrides = {"COLDCHAIN_BROKER__URL": broker} if broker else {}
        settings = load_config(config, {**os.environ, **overrides})
        console.print(f"agent [bold]{settings.device_id}[/] -> {settings.broker.url} (data in {settings.data_dir})")
        run_agent(settings, None, seconds)  # a missing camera or broker is logged and retried, never fatal


@app.command()
def install(
    bundle: Annotated[Path, typer.Argument(help="Signed bundle tarball (.tar.gz) to install as the active bundle.")],
    config: Annotated[Path, typer.Option(help="Agent configuration (TOML or YAML); COLDCHAIN_* overrides.")],
) -> None:
    """Put a bundle on this device without a broker (a factory default).

    The same checks as a deploy over MQTT: signature with the device's trust, hashes, board, runtime,
    self-test. Refused while the agent runs (stop it first); it judges the bundle (probation) on live
    frames when it runs."""
    from agent.config import load_config
    from agent.errors import AgentError
    from agent.install import install_offline
    from contract.jobs import JobState

    def show(job_id: str, state: JobState, reason: str | None, progress: float | None) -> None:
        console.print(f"{job_id}: {state.value}" + (f" ({escape(reason)})" if reason else ""), highlight=False)

    with user_errors(AgentError):
        settings = load_config(config)
        record = install_offline(settings, bundle, show)
    if record.state not in (JobState.PROBATION, JobState.SUCCEEDED):  # SUCCEEDED: installed before, known-good
        err_console.print(f"[bold red]error:[/] {escape(bundle.name)} was not installed: {record.state.value}"
                          + (f" ({escape(record.reason)})" if record.reason else ""), highlight=False)
        raise typer.Exit(1)
    console.print(f"{bundle.name} is the active bundle in {settings.data_dir} (sequence {record.sequence}); "
                  "the agent judges it on live frames when it runs", highlight=False)


@app.command()
def status(
    config: Annotated[Path | None, typer.Option(help="Agent configuration (TOML or YAML), as for run.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The agent's data directory (default: from --config, "
                                                        "else /var/lib/coldchain).")] = None,
) -> None:
    """Device id, connection, bundles per slot, the job in progress and the last errors.

    Asked of the running agent over its local API socket when it answers, else read from its data
    directory (what the agent last recorded there; it need not be running). The spool and trust come
    from the directory."""
    from agent.config import whereabouts
    from agent.errors import AgentError
    from agent.status import check_data_dir, data_dir_status, live_status

    with user_errors(AgentError):
        settings, refused = whereabouts(config) if config is not None else (None, None)
        if refused:
            err_console.print(f"warning: {escape(refused)}\n(agent run would refuse it; status reads its device_id, "
                              "data_dir and local_api.socket anyway)", highlight=False)
        directory = data_dir or (settings.data_dir if settings is not None else Path("/var/lib/coldchain"))
        sock = settings.socket_path if settings is not None and data_dir is None else directory / "agent.sock"
        live, why = live_status(sock)
        if live is None:
            check_data_dir(directory, config if data_dir is None else None)  # refused before "showing" it
            console.print(f"{escape(why)}: showing what the agent recorded in {escape(str(directory))}",
                          highlight=False)
        info = data_dir_status(directory)
    health: dict[str, Any] = info["health"]  # type: ignore[assignment]
    device = (settings.device_id if settings is not None else None) or health.get("device_id") \
        or "(unknown: pass --config)"
    table = Table(title=f"agent data in {directory}" if live is None else f"agent {live.device_id} (live via {sock})",
                  show_header=False)
    table.add_column(overflow="fold")
    table.add_column(overflow="fold")  # a sha, a path or a cause is shown whole, folded, never cut
    if live is not None:  # why the broker or the camera is missing: what the running agent recorded in health.json
        cause = health.get("connection_cause") if health.get("connection") != "connected" else None
        table.add_row("connection", "connected to the broker" if live.connected else
                      escape("not connected to the broker" + (f": {cause}" if cause else "")))
        table.add_row("active bundle", "-" if live.active is None else escape(
            f"{live.active.model_name} v{live.active.model_version} (sequence {live.active.sequence}) "
            f"{live.active.sha256}"))
        table.add_row("job in progress", "-" if live.job is None else f"{live.job.job_id}: {live.job.state.value}")
        table.add_row("frames", escape(f"trigger {live.trigger}, source {health.get('source', 'not recorded')}"))
        table.add_row("last error", escape(live.last_error or "-"))
    else:
        table.add_row("device", escape(str(device)))
        if health:
            cause = f": {health['connection_cause']}" if health.get("connection_cause") else ""
            table.add_row("connection", escape(f"{health.get('connection')} to {health.get('broker')}{cause} "
                                               f"(recorded {health.get('updated', '?')})"))
            table.add_row("frame source", escape(str(health.get("source"))))
        else:
            table.add_row("connection", "no record: the agent has not run on this data directory yet")
        table.add_row("active slot", f"{info['active']} (sequence {info['active_sequence']})")
    table.add_row("rollback goes to", "-" if info["previous"] is None else f"slot {info['previous']}")
    table.add_row("telemetry spool", f"{info['spool_pending']} windows waiting, {info['spool_evicted']} evicted")
    table.add_row("trust", escape(str(info["trust"])))
    faults = [f for f in health.get("faults", []) if isinstance(f, dict)]  # what its state reports (health.json)
    table.add_row("faults now", escape("; ".join(f"{f.get('code')} since {f.get('since')}: {f.get('message')}"
                                                 for f in faults) or "none"))
    console.print(table)
    if live is not None:
        slot_rows = [(name + (" (live, active)" if s.bundle is not None and live.active is not None
                              and s.bundle.sha256 == live.active.sha256 else ""), s.status.value,
                      str(s.bundle.sequence) if s.bundle else "-",
                      f"{s.bundle.model_name} v{s.bundle.model_version} ({s.bundle.target})" if s.bundle else "-",
                      s.bundle.sha256 if s.bundle else "-") for name, s in live.slots.items()]
    else:
        slot_rows = [(name + (" (active)" if name == info["active"] else ""), slot["status"],
                      str(slot["sequence"] or "-"), slot["model"] or "-", slot["sha256"] or "-")
                     for name, slot in info["slots"].items()]  # type: ignore[attr-defined]
    _rows("slots", ("slot", "status", "sequence", "model", "bundle sha256"), slot_rows)
    _rows("jobs", ("job", "state", "reason"), [(j, s, r or "") for j, s, r in info["jobs"]])  # type: ignore[attr-defined]
    _rows("last errors", ("when (UTC)", "code", "message"), [tuple(e) for e in health.get("last_errors", [])[-5:]])


def _rows(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A table whose cells wrap instead of being cut (a sha or a path is shown whole)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)


def _expand(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Image files from the arguments: files as given, folders as the images below them (name order).
    A missing path or a folder without images is one problem line; the rest go on."""
    from agent.frames import IMAGE_SUFFIXES

    images: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            images += found
            if not found:
                problems.append(f"{path}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif path.exists():
            images.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return images, problems


@app.command()
def infer(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    trusted: Annotated[list[Path], typer.Option(help="Trusted public key (.pub) or folder; repeatable.")],
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image and line (JSON Lines): "
                                          "detections with boxes, inventory, every label's score, timings.")] = False,
) -> None:
    """One-shot local inference with a verified bundle (for firmware developers).

    A frame that cannot be used is a row (or an object with ``error``) with the reason; a missing path
    is one error line, the other images are still inferred, and the exit code is then 1. Nothing is
    cut: every detection is listed and long labels and paths wrap."""
    import tempfile
    import time

    from agent.errors import AgentError, FrameError
    from agent.frames import decode
    from agent.model import LoadedBundle
    from agent.postprocess import prediction_json
    from contract.bundle import unpack
    from contract.signing import TrustStore

    files, problems = _expand(images)
    for problem in problems:
        err_console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False)
    with tempfile.TemporaryDirectory() as tmp, user_errors(AgentError, OSError):
        existing_bundle(bundle)
        trust = TrustStore.from_paths(trusted)
        directory = unpack(bundle, Path(tmp), trust) if bundle.is_file() else bundle
        loaded = LoadedBundle.open_bundle(directory, trust, threads)
        manifest = loaded.manifest
        table = Table(title=f"{manifest.model.name} v{manifest.model.version} ({manifest.target.name})")
        for col in ("image", "prediction", "inventory", "ms"):
            table.add_column(col, overflow="fold")
        for image in files:
            record: dict[str, object] = {"image": str(image), "bundle": loaded.sha256}
            started = time.perf_counter()
            try:
                frame = decode(image.read_bytes(), 8192 * 8192)
            except (OSError, FrameError) as exc:
                kind = exc.kind if isinstance(exc, FrameError) else "unreadable"
                message = str(exc) if isinstance(exc, FrameError) else f"cannot read: {exc.strerror or exc}"
                record["error"] = {"kind": kind, "message": message}
                _emit(as_json, record, table, [str(image), f"[red]{escape(message)}[/]", "", ""])
                continue
            decode_ms = (time.perf_counter() - started) * 1000
            result = loaded.predict(frame)
            record.update(prediction_json(result.prediction, manifest.io.labels))
            record["timings_ms"] = {"decode": round(decode_ms, 3), "model": round(result.model_ms, 3),
                                    "total": round(result.total_ms, 3)}
            shown = ", ".join(f"{d.label} {d.score:.2f}" for d in result.prediction.detections) or "(nothing)"
            inventory = ", ".join(f"{k} x{v}" for k, v in result.prediction.inventory.items())
            _emit(as_json, record, table, [str(image), escape(shown), escape(inventory), f"{result.total_ms:.1f}"])
        loaded.close()
    if not as_json:
        console.print(table)
    if problems:
        raise typer.Exit(1)


def _emit(as_json: bool, record: dict[str, object], table: Table, row: list[str]) -> None:
    """One image: a JSON line on stdout (flushed: a firmware reads it as it comes), or a table row."""
    import json

    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        table.add_row(escape(row[0]), *row[1:])


@app.command()
def simulate(
    count: Annotated[int, typer.Option(min=1, max=2000, help="How many agents.")],
    trusted: Annotated[list[Path], typer.Option(help="Trusted public key (.pub); repeatable.")],
    broker: Annotated[str, typer.Option(help="Broker URL.")] = "mqtt://127.0.0.1:1883",
    protocol: Annotated[str, typer.Option(help="MQTT protocol: 5 or 3.1.1 (amqtt).")] = "5",
    group: Annotated[list[str], typer.Option(help="Group of every simulated device; repeatable.")] = ["sim"],  # noqa: B006
    frames: Annotated[Path | None, typer.Option(help="Folder of frames every agent loops over.")] = None,
    data: Annotated[Path, typer.Option(help="Root of the agents' data directories.")] = Path("sim-agents"),
    seconds: Annotated[float | None, typer.Option(min=1, help="Stop after this long.")] = None,
) -> None:
    """N agents in one process, each with its own identity, state and spool, sharing model sessions."""
    from agent.errors import AgentError
    from agent.simulate import run_all, simulated_agents
    from transport.config import BrokerConfig

    with user_errors(AgentError, ValueError):
        agents = simulated_agents(count, BrokerConfig(url=broker, protocol=protocol), data, trusted,
                                  group, frames)
    console.print(f"{count} simulated agents -> {broker} (groups {', '.join(group)}, data in {data})")
    run_all(agents, seconds)
