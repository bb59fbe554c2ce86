"""The ``coldchain`` command: one typer app whose sub-apps are imported only when used.

``coldchain agent ...`` on a device must not import the compiler's or the cloud's
dependencies, and ``coldchain --help`` must stay fast, so each sub-app is named here by
module path and loaded on first use. A sub-app appears here only once it exists.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Annotated, Any

import typer
from typer import _click  # typer's vendored click
from typer.core import TyperCommand, TyperGroup

from coldchain import __version__

# name -> (module:attribute of a typer.Typer, one-line help shown in `coldchain --help`)
SUBAPPS: dict[str, tuple[str, str]] = {
    "compile": ("coldchain.compile_cli:app", "Compile a model into signed per-target bundles."),
    "targets": ("coldchain.targets_cli:app", "List and show target profiles."),
    "bundle": ("coldchain.bundle_cli:app", "Inspect and verify bundles."),
    "model": ("coldchain.model_cli:app", "Register models in the MLflow registry."),
    "agent": ("coldchain.agent_cli:app", "Run the device agent, inspect it, infer locally, simulate a fleet."),
    "fleet": ("coldchain.fleet_cli:app", "List, show, tag, provision and revoke devices."),
    "rollout": ("coldchain.rollout_cli:app", "Staged rollouts with health gates and automatic rollback."),
    "monitor": ("coldchain.monitor_cli:app", "Fleet health and drift from telemetry."),
    "cloud": ("coldchain.cloud_cli:app", "Run the cloud; manage bundles, dead letters and alerts."),
    "token": ("coldchain.token_cli:app", "Create, list and revoke API tokens (read, operate, admin)."),
    "audit": ("coldchain.audit_cli:app", "The audit log: who changed what, when, and how it ended."),
    "login": ("coldchain.login_cli:login_app", "Use a cloud's HTTP API: store its URL and a token (0600)."),
    "logout": ("coldchain.login_cli:logout_app", "Forget the stored URL and token."),
    "whoami": ("coldchain.login_cli:whoami_app", "The API token in use: its name and scope."),
    "broker": ("coldchain.broker_cli:app", "Run the embedded MQTT broker; write a Mosquitto configuration."),
    "keys": ("coldchain.keys_cli:app", "Signing keys: generate, sign and verify manifests."),
    "demo": ("coldchain.demo_cli:app", "Run the end-to-end demo on embedded defaults."),
}

# name -> (the extra a sub-app needs beyond the core install, a module only that extra installs).
# A device installs `coldchain[agent]` alone: `coldchain --help` lists only what it can run.
NEEDS: dict[str, tuple[str, str]] = {
    "agent": ("agent", "paho"),
    **{name: ("compiler", "onnxslim") for name in ("compile", "targets", "model", "keys")},
    **{name: ("cloud", "sqlalchemy") for name in ("fleet", "rollout", "monitor", "cloud", "broker", "demo",
                                                                 "token", "audit", "login", "logout",
                                                                 "whoami")},
}


def missing_extra(name: str) -> str | None:
    """The extra to install for sub-app ``name``, or None when this install can run it."""
    if name not in NEEDS:
        return None
    extra, module = NEEDS[name]
    return None if importlib.util.find_spec(module) is not None else extra


def _needs_extra(name: str, extra: str) -> TyperCommand:
    """A stand-in for a sub-app whose extra is missing: any invocation says what to install."""

    def explain() -> None:
        typer.echo(f"coldchain {name} needs the {extra} extra, which is not installed here: "
                   f"pip install 'coldchain[{extra}]'", err=True)
        raise typer.Exit(2)

    return TyperCommand(name, callback=explain, add_help_option=False, hidden=True,
                        context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


class LazyGroup(TyperGroup):
    """A TyperGroup that imports a sub-app only when it is invoked (or asked for its own help)."""

    _listing = False

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in SUBAPPS if missing_extra(name) is None)]

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name not in SUBAPPS:
            return super().get_command(ctx, cmd_name)
        target, short_help = SUBAPPS[cmd_name]
        extra = missing_extra(cmd_name)
        if extra is not None:
            return _needs_extra(cmd_name, extra)
        if self._listing:  # the top-level help only needs the one-liner
            return TyperCommand(cmd_name, help=short_help)
        module_name, attr = target.split(":")
        sub: typer.Typer = getattr(importlib.import_module(module_name), attr)
        command = typer.main.get_command(sub)
        command.name = cmd_name
        return command

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyGroup,
    name="coldchain",
    help="Get ML models onto home appliances and keep them healthy there.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"coldchain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Get ML models onto home appliances and keep them healthy there."""


def main(*args: Any) -> None:
    app(*args)
