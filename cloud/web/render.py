"""Pages from Jinja2 templates (autoescaped), with the filters they format numbers and times with,
and the headers every dashboard response carries: a strict Content-Security-Policy (scripts and
styles only from ``/ui/static``; chart data travels as JSON data blocks, never inline script), no
framing, no caching of pages that hold fleet data."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cloud.store import now

TEMPLATES = Path(__file__).parent / "templates"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def ago(when: datetime | None, clock: datetime | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago' (or 'in 5 s' for a clock ahead of ours)."""
    if when is None:
        return "never"
    seconds = ((clock or now()) - when).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            text = f"{int(seconds // size)} {unit}"
            break
    else:
        text = f"{int(seconds)} s"
    return f"in {text}" if future else f"{text} ago"


def when(value: datetime | None) -> str:
    """ISO-like UTC, to the second: '2026-05-04 12:30:05 UTC'."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def num(value: float | None, digits: int = 4) -> str:
    """A measured value with ``digits`` significant digits ('n/a' for none): the gate table's text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def pct(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}g} %"


def size(value: int | None) -> str:
    if value is None:
        return "n/a"
    step = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if step < 1024 or unit == "GiB":
            return f"{step:.0f} {unit}" if unit == "B" else f"{step:.1f} {unit}"
        step /= 1024
    return f"{value} B"


def bundle_label(ref: dict[str, Any] | None) -> str:
    """A BundleRef as JSON -> 'fridge v1 #5'."""
    if not ref:
        return "none"
    return f"{ref.get('model_name', '?')} v{ref.get('model_version', '?')} #{ref.get('sequence', '?')}"


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ago=ago, when=when, num=num, pct=pct, size=size, bundle_label=bundle_label,
                       compact=compact, raw_float=lambda v: "" if v is None else repr(float(v)))
    env.globals["query"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v not in (None, "")})
    return env


class Renderer:
    def __init__(self) -> None:
        self.env = environment()

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(request=request, path=request.url.path, **context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)
