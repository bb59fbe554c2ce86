"""``coldchain targets``: the target profiles the compiler knows."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from rich.syntax import Syntax
from rich.table import Table

from coldchain.console import console, user_errors

app = typer.Typer(help="List and show target profiles.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """Every target with its board, runtime, precision and passes."""
    from compiler.errors import CompilerError
    from compiler.target import list_targets, load_target

    table = Table(title="Targets")
    for col in ("name", "board", "runtime", "precision", "passes", "min fidelity (cls/ml/det)"):
        table.add_column(col)
    with user_errors(CompilerError):
        for name in list_targets():
            t = load_target(name)
            floors = "/".join(f"{t.budget.min_fidelity.get(k, 0):.2f}" for k in ("classification", "multilabel",
                                                                                 "detection"))
            table.add_row(t.name, f"{t.board.arch} {t.board.cpu} x{t.board.cores}",
                          f"{t.runtime.name.value} >= {t.runtime.min_version}", t.precision,
                          " -> ".join(p.name for p in t.passes), floors)
    console.print(table)


@app.command()
def show(name: Annotated[str, typer.Argument(help="Target name or path to a target YAML.")]) -> None:
    """The fully resolved profile of one target."""
    from compiler.errors import CompilerError
    from compiler.target import load_target

    with user_errors(CompilerError):
        profile = load_target(name)
    console.print(Syntax(yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False), "yaml"))
