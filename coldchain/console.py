"""Shared rich console and the one place where expected errors become a clean exit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from coldchain.errors import CliError
from contract.errors import ContractError

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    return typer.Exit(code)


@contextmanager
def user_errors(*extra: type[Exception]) -> Iterator[None]:
    """Turn the project's own errors (and ``extra`` ones) into a one-line message and an exit code:
    the error's ``exit_code`` (``coldchain.errors``), else 1."""
    expected: tuple[type[Exception], ...] = (ContractError, CliError, *extra)
    try:
        yield
    except Exception as exc:
        if isinstance(exc, expected):
            raise fail(str(exc), getattr(exc, "exit_code", 1)) from exc
        raise


def existing_bundle(path: Path) -> Path:
    """``path`` if something is there; else a CliError naming it (not a missing ``path/manifest.json``)."""
    if not path.exists():
        raise CliError(f"{path}: no such bundle (a signed .tar.gz or its unpacked directory)")
    return path
