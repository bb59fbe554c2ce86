"""Exceptions of the agent.

AgentError                  anything the agent refuses or cannot do
├── FrameError              a frame that cannot be used (``kind`` says why: empty, truncated, ...)
├── ImagePathRefused        a local API ``image_path`` the agent will not open (outside image_dirs, not a file)
├── LocalApiError           the local API's socket cannot be opened (path too long, unsafe folder, in use)
├── SourceEnded             a finite frame source (a folder with ``loop = false``) has no frames left
├── ProcessingError         pre/post-processing cannot follow the manifest (bad spec or output)
├── RuntimeUnavailableError the runtime a bundle needs is not installed here
├── ModelLoadFailed         the runtime is there but cannot load the model
├── ConfigError             the agent configuration is missing or invalid (names each field)
├── SlotError               the A/B slot store refuses an operation (e.g. nothing to roll back to)
├── TransferError           an artifact download cannot continue (wrong size, hash mismatch)
└── SpoolError              the telemetry spool cannot be opened or written
"""

from __future__ import annotations

import shutil


class AgentError(Exception):
    """Base of the agent's errors."""


class FrameError(AgentError, ValueError):
    """A frame is unusable; ``kind`` is the counter it is reported under."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class ImagePathRefused(AgentError):
    """The firmware named an image file the agent will not read (``agent/image_files.py``)."""


class LocalApiError(AgentError):
    """The local API's socket cannot be opened (a path too long, a folder others may write, another
    agent already serving it, another file in its place)."""


class SourceEnded(AgentError):
    """A finite frame source has given every frame it has: the agent reports it once and waits."""


class ProcessingError(AgentError, ValueError):
    """The manifest's pre/post-processing cannot be applied."""


class RuntimeUnavailableError(AgentError):
    """The runtime the bundle needs is not installed on this device."""


class ModelLoadFailed(AgentError):
    """The runtime cannot load the model file."""


class ConfigError(AgentError, ValueError):
    """The agent configuration is missing or invalid."""


class SlotError(AgentError):
    """The A/B slot store refuses an operation."""


class TransferError(AgentError):
    """An artifact download cannot continue."""


class SpoolError(AgentError):
    """The telemetry spool cannot be opened or written."""


def disk_error(exc: OSError) -> str:
    """What a failing disk said, for a job's reason: "No space left on device: <file>"."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        return str(exc.args[0][0][-1])  # copytree gathers each file's error as (src, dst, text)
    return f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".strip(": ")
