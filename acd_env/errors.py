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


def _check_writable_home(out: Path, start: Path, flag: str, kind: str) -> None:
    """The nearest existing folder at or above `start` (where `out` would be created) must be a writable
    directory."""
    home = start
    while not home.exists() and home.parent != home:
        home = home.parent
    if home.exists() and not home.is_dir():
        raise ACDError(f"{flag} {str(out)!r} lies under the file {str(home)!r}; give a {kind} path")
    if home.exists() and not os.access(home, os.W_OK | os.X_OK):
        raise ACDError(f"{flag} {str(out)!r} is not writable ({str(home)!r} is read-only); choose another")


def check_out_dir(path: object, flag: str = "--out") -> Path:
    """Refuse an output directory that cannot be one, before any work is done (nothing is created here).

    Raises ACDError when `path` (or a folder above it) is a regular file, or when the folder that would hold
    it is not writable.
    """
    out = Path(path)  # type: ignore[arg-type]
    if out.exists() and not out.is_dir():
        raise ACDError(f"{flag} {str(out)!r} is a file, not a directory; give a directory path")
    _check_writable_home(out, out, flag, "directory")
    return out


def check_out_file(path: object, flag: str = "--out", *, suffix: str) -> Path:
    """Refuse an output file path that cannot be written (wrong suffix, a directory, under a file, in a
    read-only folder), before any work is done; nothing is created here."""
    out = Path(path)  # type: ignore[arg-type]
    if out.suffix != suffix:
        raise ACDError(f"{flag} {str(out)!r} must end in {suffix}")
    if out.is_dir():
        raise ACDError(f"{flag} {str(out)!r} is a directory; give a file path ending in {suffix}")
    _check_writable_home(out, out.parent, flag, "file")
    return out


def _on_output_path(path: Path, out: Path) -> bool:
    """True when `path` is `out`, a folder above it, inside it, or one of its hidden helpers beside it
    (`.NAME.tmp`, `.NAME.shards/`, ...): a path that writing `out` touches."""
    if path == out or path in out.parents or out in path.parents:
        return True
    return any(p.parent == out.parent and p.name.startswith(f".{out.name}") for p in (path, *path.parents))


def output_error(error: OSError, out: object, flag: str = "--out") -> ACDError | None:
    """The one-line error for an OSError raised while writing the output `out` (a file or a folder; e.g. a
    path under /proc or /sys, a full disk, a permission the early checks could not foresee), or None when the
    error concerns some other path (a bug or an input problem: let it show)."""
    given = os.fspath(out)  # type: ignore[arg-type]
    bases = {Path(os.path.abspath(given)), Path(os.path.realpath(given))}
    names = [n for n in (error.filename, error.filename2) if n is not None]
    paths = [Path(os.path.abspath(os.fsdecode(n))) for n in names]
    if not any(_on_output_path(p, base) for p in paths for base in bases):
        return None
    where = os.fsdecode(names[0])
    reason = error.strerror or type(error).__name__
    return ACDError(f"{flag} {given!r} cannot be written: {reason} ({where!r}); choose another {flag}")
