"""Modules the agent imports on first use, not at start: an idle agent without a bundle never
loads OpenCV, numpy or onnxruntime (together about 50 MiB resident; see benchmarks/README.md).

    if TYPE_CHECKING:
        import cv2
    else:
        cv2 = lazy("cv2")

The first attribute read imports the module; every name read is then cached on the stand-in,
so a call in the per-frame path costs one instance-dict lookup, as a module attribute does.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module ``name`` and imports it when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _load(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._load(), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> Any:
    """A stand-in for module ``name`` (typed as the module under TYPE_CHECKING by the caller)."""
    return LazyModule(name)
