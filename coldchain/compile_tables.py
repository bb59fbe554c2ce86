"""The tables ``coldchain compile`` prints: each target's steps, each search's front, the bundles."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table


def _latency(latency: Any, float_row: bool) -> str:
    return "1.00x (reference)" if float_row else latency.text


def steps_table(title: str, rows: list[Any], latency_title: str, counts: Any,
                memory: dict[int, Any] | None = None) -> Table:
    """Every step measured, kept or not; an exact pass's fidelity is carried over and marked. ``memory``
    (``compiler.memory.Memory`` by ``id`` of a kept step) gives weights in memory and peak working memory."""
    memory = memory or {}
    caption = f"{latency_title}\n{counts.text}" if counts is not None else latency_title
    table = Table(title=title, caption=escape(caption), caption_justify="left")
    for col in ("step", "precision", "size", "params", "GFLOPs", "weights in memory", "peak memory", "fidelity",
                "accuracy", "p50 ms", "vs float", "budget", "note"):
        table.add_column(col, justify="left" if col in ("step", "precision", "note", "budget") else "right")
    for i, s in enumerate(rows):
        fidelity = f"{s.fidelity:.4f}" + ("" if s.evaluated else " (checked)")
        budget = ("[green]ok[/]" if s.within_budget else "[red]over[/]") if s.kept else "[yellow]not kept[/]"
        mem = memory.get(id(s))
        in_memory = ["-", "-"] if mem is None else [f"{mem.weights_bytes / 1024:.0f} KiB",
                                                    f"{mem.peak_bytes / 2**20:.1f} MiB"]
        table.add_row(escape(s.name), escape(s.precision), f"{s.stats.size_bytes / 1024:.0f} KiB",
                      f"{s.stats.parameters:,}", f"{s.stats.flops / 1e9:.3f}", *in_memory, fidelity,
                      "-" if s.accuracy is None else f"{s.accuracy:.4f}", f"{s.latency_p50:.2f}",
                      _latency(s.latency, i == 0), budget, escape(s.note))
    return table


def front_table(target: str, record: Any, latency_title: str) -> Table:
    """The candidates a search tried: size, fidelity, latency, and what became of each."""
    caption = [f"chosen: {record.reason}", f"gave up: {record.gave_up}"] if record.chosen is not None else []
    caption += [latency_title] + ([f"search stopped: {record.stopped}"] if record.stopped else [])
    table = Table(title=f"{target}: {record.pass_name} over budget (fidelity >= {record.budget:.4f}): candidates",
                  caption=escape("\n".join(caption)), caption_justify="left")
    for col in ("", "candidate", "precision", "size", "vs float", "fidelity", "latency vs float", "status"):
        table.add_column(col, justify="right" if col in ("size", "vs float", "fidelity") else "left")
    for c in record.candidates:
        chosen = c is record.chosen
        if c.step is not None:
            fidelity = f"{c.step.fidelity:.4f}" + ("" if c.step.evaluated else " (checked)")
        elif c.predicted is not None:
            fidelity = f"~{c.predicted:.3f} (screened)"
        else:
            fidelity = "-"
        style = "bold green" if chosen else ("" if c.within_budget else "dim" if c.step is None else "")
        table.add_row("*" if chosen else "", escape(c.label), escape(c.precision), f"{c.size_bytes / 1024:.0f} KiB",
                      f"{c.size_bytes / max(1, record.float_size):.2f}x", fidelity,
                      "-" if c.latency is None else c.latency.text, escape(c.status), style=style)
    return table


def summary_table(outcomes: list[Any]) -> Table:
    summary = Table(title="Bundles")
    for col in ("target", "outcome", "bundle", "precision", "model", "model vs float", "bundle .tar.gz",
                "bundle vs float", "in memory vs float", "peak memory vs float", "fidelity", "latency vs float",
                "evaluations", "vs champion"):
        summary.add_column(col)
    for o in outcomes:
        if o.failure is not None:
            summary.add_row(o.profile.name, f"[red]FAILED[/] at {escape(o.failure.stage)}: {escape(o.failure.reason)}",
                            str(o.failure.log), *[""] * 9, "" if o.counts is None else str(o.counts.evaluations), "")
            continue
        first, last = o.result.float_step, o.result.final
        packed = o.bundle.tarball.stat().st_size
        mem_first, mem_last = o.review.memory[0], o.review.memory[-1]
        comparison = o.review.champion
        summary.add_row(o.profile.name, "[green]ok[/]", str(o.bundle.tarball), escape(last.precision),
                        f"{last.stats.size_bytes / 1024:.0f} KiB",
                        f"{last.stats.size_bytes / first.stats.size_bytes:.2f}x", f"{packed / 1024:.0f} KiB",
                        f"{packed / first.stats.size_bytes:.2f}x",
                        f"{mem_last.weights_bytes / max(mem_first.weights_bytes, 1):.2f}x",
                        f"{mem_last.peak_bytes / max(mem_first.peak_bytes, 1):.2f}x "
                        f"({mem_last.peak_bytes / 2**20:.1f} MiB)",
                        f"{last.fidelity:.4f}", last.latency.text, str(o.result.counts.evaluations),
                        "-" if comparison is None
                        else f"{-comparison.drop:+.4f} ({escape(comparison.champion.resolved)})")
    return summary
