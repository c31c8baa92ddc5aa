"""Command-line options written once, as dataclass fields: the field holds the default and, in its metadata, the
help text and how the option is spelled and parsed; `add_options` builds the argparse options from the fields
and `from_args` builds the dataclass back from the parsed arguments.

    @dataclass
    class Config:
        budget: int = option(20, help="interventions per episode (default: %(default)s)")
        tasks: list[str] | None = option(None, help="task(s), comma-separated or repeated", action="append",
                                         parse=names)

    add_options(parser, Config); Config(**from_args(Config, parser.parse_args()))

Metadata keys: `help` (a field without it has no option), `flag` (default `--field-name`), `dest` (the argparse
attribute, default the field's name), `type` (default: the type of a non-None default), `action` (`append`;
a bool field is a switch: `store_true` when its default is False, `store_false` when True), `parse` (applied to
the parsed value; a parsed None takes the field's default).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

_NO_DEFAULT: Any = dataclasses.MISSING


def option(
    default: Any = _NO_DEFAULT,
    *,
    help: str,
    default_factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    dest: str | None = None,
    type: Callable[[str], Any] | None = None,
    action: str | None = None,
    parse: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring)."""
    meta = {"help": help, "flag": flag, "dest": dest, "type": type, "action": action, "parse": parse}
    meta = {k: v for k, v in meta.items() if v is not None}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def default_of(cls: Any, name: str) -> Any:
    """A dataclass field's default value (calling its factory)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def add_options(parser: Any, cls: Any) -> None:
    """Add an option to `parser` (a parser or an argument group) for every field of `cls` with help text."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        kwargs: dict[str, Any] = {"dest": meta.get("dest", f.name), "help": meta["help"]}
        default = default_of(cls, f.name)
        if isinstance(default, bool):
            kwargs["action"] = "store_false" if default else "store_true"
        elif meta.get("action") == "append":
            kwargs["action"] = "append"
        else:
            kwargs["default"] = default
            kind = meta.get("type", type(default) if default is not None else None)
            if kind not in (None, str):
                kwargs["type"] = kind
        parser.add_argument(flag, **kwargs)


def from_args(cls: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `cls` that `args` holds (by each field's `dest`), parsed; None → the default."""
    out = {}
    for f in dataclasses.fields(cls):
        dest = f.metadata.get("dest", f.name)
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        parse = f.metadata.get("parse")
        if parse is not None:
            value = parse(value)
        out[f.name] = default_of(cls, f.name) if value is None else value
    return out
