"""Exceptions of the agent.

AgentError                  anything the agent refuses or cannot do
├── FrameError              a frame that cannot be used (``kind`` says why: empty, truncated, ...)
├── ProcessingError         pre/post-processing cannot follow the manifest (bad spec or output)
├── RuntimeUnavailableError the runtime a bundle needs is not installed here
└── ModelLoadFailed         the runtime is there but cannot load the model
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of the agent's errors."""


class FrameError(AgentError, ValueError):
    """A frame is unusable; ``kind`` is the counter it is reported under."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class ProcessingError(AgentError, ValueError):
    """The manifest's pre/post-processing cannot be applied."""


class RuntimeUnavailableError(AgentError):
    """The runtime the bundle needs is not installed on this device."""


class ModelLoadFailed(AgentError):
    """The runtime cannot load the model file."""
