"""Errors raised for bad user input.

Every error names the bad value and what is accepted, so that a user never has to read a traceback from
deep inside torch. `ACDError` subclasses `ValueError`, so callers that already catch `ValueError` keep working.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from pathlib import Path


class ACDError(ValueError):
    """Bad input to an Active Circuit Discovery entry point (the message says what is accepted)."""


class TableError(ACDError):
    """A circuit table is missing, corrupt, truncated, of an old version, or built for another model."""


def unknown(kind: str, value: object, valid: Iterable[str]) -> ACDError:
    """The standard error for a name that is not one of the valid names."""
    return ACDError(f"unknown {kind} {value!r}; valid {kind}s: {', '.join(sorted(map(str, valid)))}")


def is_integer(value: object) -> bool:
    """True for Python and NumPy integers; False for bools, floats (even 3.0) and strings ("3")."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value: object) -> int:
    """Return `value` as an int if it is a positive integer (bools, floats and strings refused), else raise."""
    if not is_integer(value) or value <= 0:  # type: ignore[operator]
        raise ACDError(f"{name} must be a positive integer (1, 2, ...), got {value!r}")
    return int(value)  # type: ignore[arg-type]


def check_seed(value: object, name: str = "seed") -> int:
    """Return `value` as an int if it is a non-negative integer (NumPy's seeding accepts no other), else raise."""
    if not is_integer(value) or value < 0:  # type: ignore[operator]
        raise ACDError(f"{name} must be a non-negative integer (0, 1, ...), got {value!r}")
    return int(value)  # type: ignore[arg-type]


def check_out_dir(path: object, flag: str = "--out") -> Path:
    """Refuse an output directory that cannot be one, before any work is done (nothing is created here).

    Raises ACDError when `path` (or a folder above it) is a regular file, or when the folder that would hold
    it is not writable.
    """
    out = Path(path)  # type: ignore[arg-type]
    if out.exists() and not out.is_dir():
        raise ACDError(f"{flag} {str(out)!r} is a file, not a directory; give a directory path")
    parent = out
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ACDError(f"{flag} {str(out)!r} lies under the file {str(parent)!r}; give a directory path")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ACDError(f"{flag} {str(out)!r} is not writable ({str(parent)!r} is read-only); choose another")
    return out
