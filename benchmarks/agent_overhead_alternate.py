"""Two checkouts' agent pipelines alternately on the SAME bundles: a process per run, each importing its own
checkout's ``benchmarks.agent_overhead.measure`` (and so its own agent), runs in the order A B, B A, A B, ...

    .venv/bin/python -m benchmarks.agent_overhead --frames 30 --bundles /tmp/b     # compile the bundles once
    .venv/bin/python -m benchmarks.agent_overhead_alternate /tmp/b /work/main . --pairs 6

On a shared host, consecutive runs of one checkout drift with the load; alternating runs and comparing
medians (and the same bundles: a compile's search may choose another variant under load) is what makes
two checkouts comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RUN = r'''
import json, sys, tempfile
from pathlib import Path
from benchmarks.agent_overhead import SHARED, measure
from examples.fridge.synth import write_dataset

root, fridge_frames, nanodet_frames = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def pair(name):
    return tuple(next((root / name / kind).glob("*/manifest.json")).parent for kind in ("bundles", "unfolded"))

out = {}
with tempfile.TemporaryDirectory() as tmp:
    write_dataset(Path(tmp) / "frames", 50, seed=32)
    photos = [p.read_bytes() for p in sorted((Path(tmp) / "frames").glob("*.jpg"))]
out["fridge"] = measure(pair("fridge"), photos, fridge_frames, 2)
if nanodet_frames and (root / "nanodet").exists():
    grocery = [p.read_bytes() for p in sorted((SHARED / "grocery" / "val").rglob("*.jpg"))[:50]]
    out["nanodet"] = measure(pair("nanodet"), grocery, nanodet_frames, 2)
print("RESULT " + json.dumps(out))
'''


def run(tree: Path, bundles: Path, fridge_frames: int, nanodet_frames: int) -> dict[str, dict[str, float]]:
    done = subprocess.run([sys.executable, "-c", RUN, str(bundles), str(fridge_frames), str(nanodet_frames)],
                          env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, capture_output=True, text=True,
                          check=True)
    result: dict[str, dict[str, float]] = json.loads(done.stdout.split("RESULT ", 1)[1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", type=Path, help="a --bundles folder of benchmarks.agent_overhead")
    parser.add_argument("a", type=Path, help="checkout A (e.g. /work/main)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--frames", type=int, default=600, help="fridge frames; NanoDet gets a third")
    args = parser.parse_args()
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    rows: list[tuple[str, dict[str, dict[str, float]]]] = []
    for i in range(args.pairs):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            load = os.getloadavg()[0]
            result = run(trees[name], args.bundles.resolve(), args.frames, args.frames // 3)
            rows.append((name, result))
            print(f"{name} {i + 1}  load {load:4.1f}" + "".join(
                f"  {model}: bare {r['bare']:.3f} pipeline {r['pipeline']:.3f} ms {r['pipeline'] / r['bare']:.3f}x"
                f" (+{(r['pipeline'] - r['bare']) * 1000:.0f} us)" for model, r in result.items()), flush=True)
    for model in ("fridge", "nanodet"):
        for name, tree in trees.items():
            got = [r[model] for n, r in rows if n == name and model in r]
            if got:
                print(f"{model} {name} ({tree}): median ratio "
                      f"{statistics.median(g['pipeline'] / g['bare'] for g in got):.3f}x, pipeline "
                      f"{statistics.median(g['pipeline'] for g in got):.3f} ms, bare "
                      f"{statistics.median(g['bare'] for g in got):.3f} ms, overhead "
                      f"{statistics.median((g['pipeline'] - g['bare']) * 1000 for g in got):.0f} us")


if __name__ == "__main__":
    main()
