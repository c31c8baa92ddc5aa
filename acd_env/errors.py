"""Errors raised for bad user input.

Every error names the bad value and what is accepted, so that a user never has to read a traceback from
deep inside torch. `ACDError` subclasses `ValueError`, so callers that already catch `ValueError` keep working.
"""

from __future__ import annotations

from collections.abc import Iterable


class ACDError(ValueError):
    """Bad input to an Active Circuit Discovery entry point (the message says what is accepted)."""


class TableError(ACDError):
    """A circuit table is missing, corrupt, truncated, of an old version, or built for another model."""


def unknown(kind: str, value: object, valid: Iterable[str]) -> ACDError:
    """The standard error for a name that is not one of the valid names."""
    return ACDError(f"unknown {kind} {value!r}; valid {kind}s: {', '.join(sorted(map(str, valid)))}")


def check_positive_int(name: str, value: object) -> int:
    """Return `value` as an int if it is a positive integer (bools refused), else raise ACDError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ACDError(f"{name} must be a positive integer, got {value!r}")
    return value
