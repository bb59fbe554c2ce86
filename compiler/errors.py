"""Exceptions of the compiler.

CompilerError               anything the compiler refuses or cannot do
└── DescriptionError        a model description file that is missing or invalid
"""

from __future__ import annotations


class CompilerError(Exception):
    """Base of the compiler's errors."""


class DescriptionError(CompilerError, ValueError):
    """The model description (model.yaml) is missing or invalid."""
