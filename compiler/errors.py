"""Exceptions of the compiler.

CompilerError                 anything the compiler refuses or cannot do
├── DescriptionError          a model description file (model.yaml) that is missing or invalid
├── TargetError               an unknown or invalid target profile (lists the valid ones)
├── ModelLoadError            a model that cannot be read: missing, corrupt, not ONNX, bad registry URI
├── UnsupportedOpsError       ops the target runtime cannot run (named in the message)
├── CalibrationError          too few or unreadable calibration / evaluation images
├── PassError                 a pass that failed or was configured wrongly
├── BudgetError               no configuration meets the accuracy budget (``best`` holds the best found,
│   │                         ``front`` the candidates a search tried)
│   └── EvaluationCapReached  the compile used its ``--max-evaluations`` before anything met the budget
└── RegressionError           the bundle is less accurate than the production model (champion) by more
                              than the target's budget

Bundles that fail verification raise ``contract.errors.BundleError`` (shared with the agent).
"""

from __future__ import annotations

from typing import Any


class CompilerError(Exception):
    """Base of the compiler's errors."""


class DescriptionError(CompilerError, ValueError):
    """The model description (model.yaml) is missing or invalid."""


class TargetError(CompilerError, ValueError):
    """A target profile is unknown or invalid."""


class ModelLoadError(CompilerError):
    """A source model cannot be loaded."""


class UnsupportedOpsError(CompilerError):
    """The model uses ops that the target runtime cannot run."""


class CalibrationError(CompilerError):
    """Calibration or evaluation images are missing, too few or unreadable."""


class PassError(CompilerError):
    """A pass failed or its configuration is invalid."""


def first_line(exc: BaseException) -> str:
    """An exception's message on one line (onnx and onnxruntime messages run over many)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class BudgetError(CompilerError):
    """No configuration met the accuracy budget; ``best`` describes the best one found."""

    def __init__(self, message: str, best: Any = None, front: Any = None) -> None:
        self.best = best
        self.front = front
        super().__init__(message)


class RegressionError(CompilerError):
    """The compiled model is further below the registry's production model than the budget allows."""


class EvaluationCapReached(BudgetError):
    """The compile's evaluation cap (``--max-evaluations``) was reached."""
