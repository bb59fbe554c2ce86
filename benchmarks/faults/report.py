"""One row of the fault table per fault kind, and the table itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.table import Table

MAX_SHOWN = 12  # violations listed per row (all are counted)


@dataclass
class Row:
    fault: str
    must_hold: str
    how_often: str = ""
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None  # why the row could not run here
    notes: list[str] = field(default_factory=list)

    def violated(self, where: str, problems: list[str] | str) -> None:
        for problem in [problems] if isinstance(problems, str) else problems:
            self.violations.append(f"{where}: {problem}")

    @property
    def result(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        return "holds (0 violations)" if not self.violations else f"BROKEN: {len(self.violations)} violations"

    @contextmanager
    def timed(self) -> Iterator[Row]:
        started = time.monotonic()
        try:
            yield self
        finally:
            self.seconds = time.monotonic() - started


def table(rows: list[Row], title: str = "fault harness") -> Table:
    out = Table(title=title, show_lines=True)
    for column in ("fault", "how often", "what must hold", "result", "seconds"):
        out.add_column(column, justify="right" if column == "seconds" else "left")
    for row in rows:
        result = row.result if not row.violations else "[bold red]" + row.result + "[/]"
        out.add_row(row.fault, row.how_often, row.must_hold, result, f"{row.seconds:.0f}")
    return out


def details(rows: list[Row]) -> list[str]:
    """Notes and violations, one line each, under the table."""
    lines = []
    for row in rows:
        lines += [f"{row.fault}: {note}" for note in row.notes]
        lines += [f"{row.fault}: VIOLATION {v}" for v in row.violations[:MAX_SHOWN]]
        if len(row.violations) > MAX_SHOWN:
            lines.append(f"{row.fault}: ... and {len(row.violations) - MAX_SHOWN} more violations")
    return lines
