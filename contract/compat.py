"""What Python 3.11 added and the device side needs on 3.10 (JetPack 6's system Python).

``coldchain[agent]`` (agent/, contract/, transport/) runs on 3.10-3.12; ``scripts/test.sh``
checks them with ruff and mypy at 3.10. Import these names from here, not from the stdlib.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
    from typing import Self
else:  # pragma: no cover - exercised only on 3.10
    from typing_extensions import Self

    class StrEnum(str, Enum):
        """3.11's ``enum.StrEnum``: members are strings and print as their value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)


__all__ = ["Self", "StrEnum"]
