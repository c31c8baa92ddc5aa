"""`acd tables build`: measure every (candidate, intervention) of a task split with the live backend's batched
engine and save the circuit table atomically (acd_env.table_build).

    acd tables build --model toy-4l --task ioi --split test
    acd tables build --model toy-4l --task ioi --split train --n 20 --descriptors graph,atp --out /tmp/ioi.npz
    acd tables build --task ioi --executor ray --workers 2       # on Ray (benchmarks/executors.py)

Default output: `tables/<model>/<task>-<split>.npz` under the current directory. When it is done the command
prints how to use the table, as commands that work as printed: `acd bench --tables tables/<model> --tasks TASK`
(with `--k` and `--protocol` as the table and its neighbours need; `acd bench` reads `TASK-SPLIT.npz` names, so
another file name comes with the `mv` to make first) or `CircuitDiscoveryEnv(backend="replay", tables=PATH)`. (The tables shipped
with the toy models are rebuilt by scripts/build_tables.py, with the attribution-patching columns.)

Resuming: finished prompts are written in shards to `.<name>.shards/` beside the output; a build that is
killed resumes from them when re-run with the same settings (`--restart` discards them). The table itself is
written atomically once every prompt is in, and the shards are removed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path
from typing import Any

from acd_env.errors import ACDError, check_out_file, output_error, unknown
from acd_env.table_store import table_file, table_name
from benchmarks.executors import add_executor_args


def default_out(model: str, task: str, split: str) -> Path:
    safe = Path(model).name if Path(model).is_dir() else model.replace("/", "_").replace(":", "_")
    return table_file(Path("tables") / safe, task, split)


def build(args: argparse.Namespace) -> int:
    from acd_env.case import CaseSettings
    from acd_env.interventions import INTERVENTION_TYPES
    from acd_env.table_build import TableJob, build_table_file
    from acd_env.tasks import available_tasks
    from acd_env.tasks.grammar import SPLITS
    from benchmarks.executors import check_available, executor_options
    from benchmarks.modelarg import check_model_name, load_model_arg

    check_model_name(args.model)
    if args.task not in available_tasks() and not Path(args.task).is_file():
        raise unknown("task", args.task, available_tasks())
    if args.split not in SPLITS:
        raise unknown("split", args.split, SPLITS)
    descriptors = tuple(d.strip() for d in args.descriptors.split(",") if d.strip())
    if descriptors not in (("graph",), ("graph", "atp")):
        raise ACDError(f"unknown descriptors {args.descriptors!r}; valid: graph, graph,atp")
    interventions = tuple(t.strip() for t in args.interventions.split(",") if t.strip())
    for t in interventions:
        if t not in INTERVENTION_TYPES:
            raise unknown("intervention", t, INTERVENTION_TYPES)
    for name in ("k", "n", "shard_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ACDError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    settings = CaseSettings(
        n_candidates=args.k,
        interventions=interventions,
        steering_scale=args.steering_scale,
        descriptors=descriptors,
        freeze_attention=args.freeze_attention,
    )
    opts = executor_options(args)
    out = Path(args.out) if args.out else default_out(args.model, args.task, args.split)
    check_out_file(out, "--out", suffix=".npz")  # before any model is loaded
    check_available(opts)
    start = time.perf_counter()
    common: dict[str, Any] = dict(
        progress=not args.no_progress, restart=args.restart, shard_size=args.shard_size
    )
    try:
        if opts.is_ray:
            from benchmarks.ray_tables import build_table_on_ray

            job = TableJob(args.model, args.task, args.split, settings, args.n, circuit=args.circuit)
            path = build_table_on_ray(job, out, opts, device=args.device, **common)
        else:
            model = load_model_arg(args.model, args.device)
            path = build_table_file(
                model, args.task, args.split, out, settings, n=args.n, circuit=args.circuit, **common
            )
    except OSError as e:  # e.g. --out under /proc or /sys, a full disk: one line, not a traceback
        error = output_error(e, out, "--out")
        if error is None:
            raise
        raise error from None
    print(f"wrote {path} ({time.perf_counter() - start:.1f} s)")
    print(usage_hint(Path(path), args.model, args.task, args.split, args.k))
    return 0


def _quote(text: str | Path) -> str:
    return shlex.quote(str(text))


def bench_command(folder: Path, model: str, task: str, k: int, protocols: str | None) -> str:
    """The `acd bench` command line that runs on the tables in `folder` (TASK-SPLIT.npz) as they are."""
    parts = ["acd bench", "--tables", _quote(folder), "--tasks", _quote(task)]
    if model != "toy-4l":
        parts += ["--model", _quote(model)]
    if k != 64:
        parts += ["--k", str(k)]
    if protocols:
        parts += ["--protocol", protocols]
    return " ".join(parts)


def usage_hint(path: Path, model: str, task: str, split: str, k: int) -> str:
    """How to use the table just written, as commands that work as printed: `acd bench --tables DIR` reads
    `TASK-SPLIT.npz` files from a folder (test tables to run on; train tables, beside them, for protocols that
    fit agents), with the same K; from Python, `CircuitDiscoveryEnv` takes the file itself."""
    model_arg = f"model={json.dumps(model)}, " if model != "toy-4l" else ""
    python = (
        f'from Python: CircuitDiscoveryEnv({model_arg}backend="replay", split={json.dumps(split)}, '
        f"tables={json.dumps(str(path))}, n_candidates={k})"
    )
    folder, name = path.parent, table_name(task, split)
    if path.name != name:
        move = f"mv {_quote(path)} {_quote(folder / name)}"
        return (
            f"use it {python}; acd bench reads tables named TASK-SPLIT.npz from a folder, so for acd bench "
            f"rename it first: {move}"
        )
    test = table_file(folder, task, "test")
    train = table_file(folder, task, "train")
    if not test.is_file():  # a train table alone: acd bench needs the test table beside it
        return (
            f"use it {python}; acd bench runs on test tables: build {test.name} beside it (acd tables build "
            f"--model {_quote(model)} --task {_quote(task)} --split test --k {k} --out {_quote(test)}), then "
            f"{bench_command(folder, model, task, k, None)}"
        )
    protocols = None if train.is_file() else "zero-shot,stream"
    note = "" if protocols is None else f" (protocols that fit agents need {train.name} beside it)"
    return f"use it with: {bench_command(folder, model, task, k, protocols)}{note}; or {python}"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tables",
        help="circuit tables (replay data)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="tables_command", metavar="ACTION", parser_class=type(p))
    b = sub.add_parser(
        "build",
        help="build a circuit table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--model", default="toy-4l", help="model name or toy model directory (default: toy-4l)")
    b.add_argument("--task", required=True, help="task name (or a JSONL prompts file)")
    b.add_argument("--split", default="test", help="train or test (default: test)")
    b.add_argument("--out", help="output .npz path (default: tables/<model>/<task>-<split>.npz)")
    b.add_argument("--n", type=int, help="number of prompts (default: the whole split)")
    b.add_argument("--k", type=int, default=64, help="candidates per prompt (default: 64)")
    b.add_argument("--descriptors", default="graph", help="graph (default) or graph,atp")
    b.add_argument(
        "--interventions", default="ablation,patching,steering", help="intervention types to measure"
    )
    b.add_argument("--steering-scale", type=float, default=4.0, help="steering factor (default: 4.0)")
    b.add_argument("--freeze-attention", action="store_true", help="measure with attention patterns frozen")
    b.add_argument(
        "--no-circuit",
        dest="circuit",
        action="store_false",
        help="skip the circuit track's data (reference search, atp-joint, IG): a feature-track table, built "
        "faster (the reference search runs ~4,000 set rows per prompt)",
    )
    b.add_argument("--device", help="torch device")
    b.add_argument("--restart", action="store_true", help="discard the shards of an interrupted build")
    b.add_argument("--shard-size", type=int, default=16, help="prompts per shard (default: 16)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_args(b)
    b.set_defaults(func=build)
    p.set_defaults(func=lambda args: p.error("choose an action: build") if args.tables_command is None else 0)
