"""`acd`: the command line. Subcommands are registered by their modules (each exposes `add_parser(subparsers)`
and sets `func`), so a new one is one line in `SUBCOMMANDS`:

    acd bench    run the benchmark (benchmarks.bench)
    acd tables   build circuit tables (benchmarks.tables_cli)
    acd graph    export a prompt's attribution graph with measured effects for circuit-tracer's viewer
                 (benchmarks.graph_export)
    acd perf     measure the performance targets (benchmarks.perf)

Bad input ends with one line, `acd <command>: error: <what was wrong and what is valid>`, and exit code 2, as
argparse does for its own errors; never with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

SUBCOMMANDS = ("benchmarks.bench", "benchmarks.tables_cli", "benchmarks.graph_export", "benchmarks.perf")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: message` (exit 2), without the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="acd", description="Active Circuit Discovery: benchmark, circuit tables, graph export."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in SUBCOMMANDS:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # One intra-op thread unless told otherwise: the toy models are too small to gain from more, and on a
    # busy 2-core machine torch's second thread makes every forward pass tens of times slower (acd perf).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from acd_env.errors import ACDError

    # circuit-tracer's attribution warns about a backward hook on every graph: noise for a CLI user
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    prog = f"acd {args.command}"
    try:
        return int(args.func(args) or 0)
    except ACDError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
