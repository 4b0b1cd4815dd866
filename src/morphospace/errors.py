"""Exceptions raised on bad input; the CLI prints their message and exits non-zero."""

from __future__ import annotations

__all__ = ["MorphospaceError", "InputError", "StoreError"]


class MorphospaceError(Exception):
    """Base of every error that is the user's data or settings rather than a bug."""


class InputError(MorphospaceError, ValueError):
    """An input file is missing, unreadable or malformed; the message names the file and the problem."""


class StoreError(MorphospaceError):
    """A crop store is missing, incomplete or inconsistent."""
