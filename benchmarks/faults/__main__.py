"""``python -m benchmarks.faults [--kills 300] [--fuzz 20000] [--quick] [--only ROW ...]``

Builds signed bundles of the demo fridge model, runs every fault row (see ``harness.ROWS``) and
prints one table: fault, how often, what must hold, result, seconds. Exits 1 if any invariant
broke (the work folder is then kept, with the agents' logs, for a post-mortem)."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from benchmarks.faults.harness import ROWS, sized
from benchmarks.faults.report import Row, details, table
from benchmarks.faults.world import build_world

console = Console(width=max(Console().width, 160))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.splitlines()[2])
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs of a real agent process (default 300)")
    parser.add_argument("--fuzz", type=int, default=None, help="fuzz payloads (default 20000)")
    parser.add_argument("--quick", action="store_true", help="the small sample the test suite runs")
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), help="run only these rows")
    args = parser.parse_args(argv)
    sizes = sized(args.quick, args.kills, args.fuzz)
    work = Path(tempfile.mkdtemp(prefix="coldchain-faults-"))
    logging.basicConfig(filename=work / "harness.log", level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    console.print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"{platform.platform()}; work folder {work}")
    started = time.monotonic()
    rows: list[Row] = []
    try:
        with console.status("compiling and signing the bundles"):
            world = build_world(work / "world")
        for name in args.only or list(ROWS):
            with console.status(f"{name} ..."):
                row = ROWS[name](world, sizes, work)
            rows.append(row)
            console.print(f"{row.fault}: {row.result} in {row.seconds:.0f} s")
    finally:
        console.print(table(rows, f"fault harness ({'quick sample' if args.quick else 'full run'}, "
                                  f"{time.monotonic() - started:.0f} s in all)"))
        for line in details(rows):
            console.print(line, markup=False, highlight=False)
    broken = sum(len(r.violations) for r in rows)
    if broken:
        console.print(f"[bold red]{broken} violations[/]; kept {work} (harness.log, the devices of failed kills)")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
