"""``coldchain bundle``: inspect and verify bundles (directories or .tar.gz)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coldchain.console import console, existing_bundle, user_errors
from contract.manifest import MANIFEST_FILE, Manifest, load_manifest
from contract.signing import TrustStore

app = typer.Typer(help="Inspect and verify bundles.", no_args_is_help=True)


def _manifest_table(m: Manifest) -> Table:
    table = Table(title=f"{m.model.name} v{m.model.version} for {m.target.name} (sequence {m.sequence})",
                  show_header=False)
    pre = m.io.preprocessing
    rows = [
        ("source", f"{m.model.source_uri} (sha256 {m.model.sha256[:16]}…)"),
        ("runtime", f"{m.target.runtime.name.value} >= {m.target.runtime.min_version}"),
        ("input", ", ".join(f"{t.name} {t.dtype} {t.shape} {t.layout.value if t.layout else ''}" for t in m.io.inputs)),
        ("preprocessing", f"{pre.resize} {pre.width}x{pre.height} {pre.color} mean {pre.mean} std {pre.std} "
                          f"{pre.layout.value} {pre.dtype}"),
        ("task", f"{m.io.task.value}, {len(m.io.labels)} labels, postprocessor {m.io.postprocessor.name}"),
        ("passes", " -> ".join(p.name for p in m.passes)),
        ("size", f"{m.metrics.compiled_size_bytes:,} bytes (float {m.metrics.float_size_bytes:,})"),
        ("fidelity", f"{m.metrics.compiled_metrics.get('fidelity', float('nan')):.4f}"),
        ("accuracy", f"float {m.metrics.float_metrics.get('accuracy', float('nan')):.4f}, "
                     f"compiled {m.metrics.compiled_metrics.get('accuracy', float('nan')):.4f}"),
        ("latency p50", f"float {m.metrics.float_latency.p50_ms if m.metrics.float_latency else 0:.2f} ms, compiled "
                        f"{m.metrics.compiled_latency.p50_ms if m.metrics.compiled_latency else 0:.2f} ms"),
        ("golden I/O", f"{m.golden.cases} cases, atol {m.golden.atol:.4g}"),
        ("files", ", ".join(f"{f.path} ({f.size:,} B, {len(f.chunks)} chunks)" for f in m.files)),
        ("toolchain", ", ".join(f"{k} {v}" for k, v in sorted(m.toolchain.items()))),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table


def _open(path: Path, scratch: Path, trust: TrustStore | None = None) -> Path:
    """A bundle directory as given, or the tarball extracted under ``scratch`` (signature first when
    ``trust`` is given; never more than the manifest declares)."""
    from contract.bundle import unpack

    return unpack(path, scratch, trust) if path.is_file() else path


@app.command()
def inspect(path: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")]) -> None:
    """Show what a bundle holds (without verifying it)."""
    with tempfile.TemporaryDirectory() as tmp, user_errors(OSError):
        manifest = load_manifest((_open(existing_bundle(path), Path(tmp)) / MANIFEST_FILE).read_bytes())
    console.print(_manifest_table(manifest))


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")],
    trusted: Annotated[list[Path], typer.Option(help="Trusted public key (.pub) or folder of them; repeatable.")],
) -> None:
    """Verify the signature and every file and chunk hash."""
    from contract.bundle import verify_dir
    from contract.signing import TrustStore

    with tempfile.TemporaryDirectory() as tmp, user_errors(OSError):
        existing_bundle(path)
        trust = TrustStore.from_paths(trusted)
        manifest = verify_dir(_open(path, Path(tmp), trust), trust)
    console.print(f"[green]valid[/]: {manifest.model.name} v{manifest.model.version} for {manifest.target.name}, "
                  f"sequence {manifest.sequence}, {len(manifest.files)} files verified")
