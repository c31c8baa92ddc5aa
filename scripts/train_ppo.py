"""Train the `ppo` agent's MaskablePPO policies on circuit tables (replay) and ship them to agents/policies/.

    # the train-test policy (every task) and the four held-out-task policies, as shipped:
    python scripts/train_ppo.py --model toy-4l --suite --tb runs/ppo
    # one policy on chosen tasks, or on every task but one:
    python scripts/train_ppo.py --model toy-4l --tasks ioi,agreement,counting,induction --tb runs/ppo/all
    python scripts/train_ppo.py --model toy-4l --exclude-task ioi --tb runs/ppo/no-ioi

Trains on the **train** split (the model's shipped tables, or `--tables DIR` holding TASK-train.npz), seeded,
with one torch thread; TensorBoard logs go to `--tb` (SB3's `train/*`, `rollout/*`, CleanRL-style `losses/*`,
`charts/episodic_return`, and `eval/train_efficiency`). Each policy is written atomically as
`<out>/<name>.zip` with a `<name>.json` sidecar (weights hash, tasks, descriptor columns, K, types, steps, seed,
hyperparameters, training time, final train efficiency, the training curve, and, unless `--no-eval`, the
discovery efficiency of ppo / random / greedy on the test split of the tasks it is meant for: the same tasks,
or the held-out task). `PPOAgent.fit(tables)` loads the shipped policy whose sidecar matches its tables.

Columns: `--descriptors graph` (default) trains on the graph descriptor columns only, which is what `acd bench`
shows every agent but `atp`; `graph,atp` keeps the attribution-patching columns (needs tables built with them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from acd_env.tasks import TOY_TASKS  # noqa: E402
from agents.ppo import PPOAgent  # noqa: E402
from agents.ppo_store import POLICY_DIR, save_policy  # noqa: E402
from agents.ppo_train import (  # noqa: E402
    ARCHS,
    REWARDS,
    TrainResult,
    evaluate,
    make_env,
    restrict_columns,
    train_policy,
)


def load_split(
    model: str, tasks: Sequence[str], split: str, tables_dir: str | Path | None, descriptors: Sequence[str]
) -> list[Any]:
    """The (model, task, split) circuit tables, restricted to the columns of `descriptors`."""
    from acd_env.table_store import resolve_tables, table_file

    paths: Any = None
    out = []
    for task in tasks:
        if tables_dir is not None:
            paths = table_file(tables_dir, task, split)
        out.append(restrict_columns(resolve_tables(model, task, split, paths), descriptors))
    return out


def policy_name(
    model: str,
    tasks: Sequence[str],
    held_out: str | None,
    descriptors: Sequence[str],
    act_types: Sequence[str] | None = ("ablation",),
) -> str:
    """MODEL-all / MODEL-no-TASK / MODEL-TASK+TASK, tagged `-atp` for the AtP columns and with the action types
    when they are not ablation only (`-alltypes`, `-steering`)."""
    tag = "-atp" if "atp" in descriptors else ""
    if act_types is None:
        tag += "-alltypes"
    elif list(act_types) != ["ablation"]:
        tag += "-" + "+".join(act_types)
    if held_out is not None:
        return f"{model}{tag}-no-{held_out}"
    return f"{model}{tag}-all" if sorted(tasks) == sorted(TOY_TASKS) else f"{model}{tag}-{'+'.join(tasks)}"


def split_efficiency(result: TrainResult, test_tables: list[Any], budget: int) -> dict:
    """Mean discovery efficiency of the policy, random and greedy on the test tables (per task and overall)."""
    from agents import make_agent

    env = make_env(test_tables, budget)
    tasks = [c.prompt.task for t in test_tables for c in t.cases]
    report = {}
    agents = {
        "ppo": PPOAgent.from_model(result.model, result.meta),
        "random": make_agent("random", seed=0),
        "greedy": make_agent("greedy"),
    }
    for name, agent in agents.items():
        eff = evaluate(env, agent)
        by_task = {t: round(float(eff[[x == t for x in tasks]].mean()), 4) for t in dict.fromkeys(tasks)}
        report[name] = {"overall": round(float(eff.mean()), 4), **by_task}
    report["n_test_prompts"] = len(tasks)
    return report


def train_one(
    *,
    model: str,
    tasks: Sequence[str],
    held_out: str | None = None,
    tables_dir: str | Path | None = None,
    descriptors: Sequence[str] = ("graph",),
    out: str | Path = POLICY_DIR,
    name: str | None = None,
    tb: str | Path | None = None,
    evaluate_test: bool = True,
    **train_kw: Any,
) -> Path:
    """Train one policy on the train tables of `tasks` and save it; returns the .zip path."""
    train = load_split(model, tasks, "train", tables_dir, descriptors)
    name = name or policy_name(model, tasks, held_out, descriptors, train_kw.get("act_types", ("ablation",)))
    started = time.perf_counter()
    result = train_policy(train, tb_dir=tb, **train_kw)
    result.meta.update(
        name=name,
        model=model,
        held_out_task=held_out,
        descriptors=list(descriptors),
        protocol="held-out-task" if held_out else "train-test",
    )
    if evaluate_test:
        test_tasks = [held_out] if held_out else list(tasks)
        test = load_split(model, test_tasks, "test", tables_dir, descriptors)
        result.meta["test_efficiency"] = split_efficiency(result, test, train_kw.get("budget", 20))
    path = save_policy(result, Path(out) / name)
    m = result.meta
    print(
        f"{path}: {m['timesteps']} steps in {m['train_seconds']:.0f} s, train efficiency {m['train_efficiency']:.3f}"
        + (f", test {json.dumps(m['test_efficiency'])}" if "test_efficiency" in m else "")
        + f" ({time.perf_counter() - started:.0f} s in all, {path.stat().st_size / 1024:.0f} KiB)",
        flush=True,
    )
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="toy-4l")
    p.add_argument("--tasks", default=",".join(TOY_TASKS), help="comma-separated train tasks")
    p.add_argument(
        "--exclude-task", default=None, help="held-out-task: train on every task of --tasks but this"
    )
    p.add_argument(
        "--suite",
        action="store_true",
        help="train the shipped set: all tasks, then each task held out in turn",
    )
    p.add_argument(
        "--tables", default=None, help="directory of TASK-SPLIT.npz (default: the model's shipped)"
    )
    p.add_argument("--descriptors", default="graph", help="graph (default) or graph,atp")
    p.add_argument("--out", default=str(POLICY_DIR), help="where policies are written")
    p.add_argument("--name", default=None, help="policy file name (default: MODEL-all / MODEL-no-TASK)")
    p.add_argument("--tb", default=None, help="TensorBoard log dir (with --suite: one subdir per policy)")
    p.add_argument("--steps", type=int, default=60_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default="set", choices=ARCHS)
    p.add_argument("--reward", default="prompt", choices=REWARDS)
    p.add_argument(
        "--act-types",
        default="ablation",
        help="intervention types the policy acts with: comma-separated, or 'all' (default ablation)",
    )
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--n-steps", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--anneal-lr", action="store_true")
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--ent-coef", type=float, default=0.003)
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def training_runs(
    tasks: list[str], *, suite: bool, exclude_task: str | None, name: str | None
) -> list[tuple[list[str], str | None]]:
    """(train tasks, held-out task) of each policy a run trains: every task; with `suite` also each task held out
    in turn; with `exclude_task` every task but that one. Bad combinations end the script with one line."""
    if suite:
        if name or exclude_task:
            raise SystemExit("--suite trains every policy itself; drop --name / --exclude-task")
        return [(tasks, None), *(([t for t in tasks if t != held], held) for held in tasks)]
    if exclude_task:
        if exclude_task not in tasks:
            raise SystemExit(f"--exclude-task {exclude_task!r} is not one of --tasks {tasks}")
        return [([t for t in tasks if t != exclude_task], exclude_task)]
    return [(tasks, None)]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    a = parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    act_types = None if a.act_types == "all" else [t for t in a.act_types.split(",") if t]
    descriptors = tuple(d for d in a.descriptors.split(",") if d)
    train_kw = dict(
        steps=a.steps,
        seed=a.seed,
        arch=a.arch,
        reward=a.reward,
        act_types=act_types,
        hidden=a.hidden,
        budget=a.budget,
        n_envs=a.n_envs,
        n_steps=a.n_steps,
        batch_size=a.batch_size,
        n_epochs=a.n_epochs,
        learning_rate=a.lr,
        anneal_lr=a.anneal_lr,
        gamma=a.gamma,
        ent_coef=a.ent_coef,
        eval_every=a.eval_every,
        threads=a.threads,
        verbose=a.verbose,
    )
    common = dict(
        model=a.model,
        tables_dir=a.tables,
        descriptors=descriptors,
        out=a.out,
        evaluate_test=not a.no_eval,
        **train_kw,
    )
    paths = []
    for run_tasks, held in training_runs(tasks, suite=a.suite, exclude_task=a.exclude_task, name=a.name):
        name = a.name or policy_name(a.model, run_tasks, held, descriptors, act_types)
        tb = None if a.tb is None else (Path(a.tb) / name if a.suite else Path(a.tb))
        paths.append(train_one(tasks=run_tasks, held_out=held, name=name, tb=tb, **common))
    return paths


if __name__ == "__main__":
    main()
