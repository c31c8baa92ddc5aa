"""`acd tables build`: measure every (candidate, intervention) of a task split with the live backend's batched
engine and save the circuit table atomically (acd_env.table_build).

    acd tables build --model toy-4l --task ioi --split test
    acd tables build --model toy-4l --task ioi --split train --n 20 --descriptors graph,atp --out /tmp/ioi.npz
    acd tables build --task ioi --executor ray --workers 2       # on Ray (benchmarks/executors.py)

Default output: `tables/<model>/<task>-<split>.npz` under the current directory; use it with
`acd bench --tables tables/<model>` or `CircuitDiscoveryEnv(backend="replay", tables=PATH)`. (The tables shipped
with the toy models are rebuilt by scripts/build_tables.py, with the attribution-patching columns.)

Resuming: finished prompts are written in shards to `.<name>.shards/` beside the output; a build that is
killed resumes from them when re-run with the same settings (`--restart` discards them). The table itself is
written atomically once every prompt is in, and the shards are removed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from acd_env.errors import ACDError, check_out_file, unknown
from benchmarks.executors import add_executor_args


def default_out(model: str, task: str, split: str) -> Path:
    safe = Path(model).name if Path(model).is_dir() else model.replace("/", "_").replace(":", "_")
    return Path("tables") / safe / f"{task}-{split}.npz"


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
    common = dict(progress=not args.no_progress, restart=args.restart, shard_size=args.shard_size)
    if opts.is_ray:
        from benchmarks.ray_tables import build_table_on_ray

        job = TableJob(args.model, args.task, args.split, settings, args.n)
        path = build_table_on_ray(job, out, opts, device=args.device, **common)
    else:
        model = load_model_arg(args.model, args.device)
        path = build_table_file(model, args.task, args.split, out, settings, n=args.n, **common)
    print(f"wrote {path} ({time.perf_counter() - start:.1f} s); use it with acd bench --tables {path.parent}")
    return 0


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
    b.add_argument("--device", help="torch device")
    b.add_argument("--restart", action="store_true", help="discard the shards of an interrupted build")
    b.add_argument("--shard-size", type=int, default=16, help="prompts per shard (default: 16)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_args(b)
    b.set_defaults(func=build)
    p.set_defaults(func=lambda args: p.error("choose an action: build") if args.tables_command is None else 0)
