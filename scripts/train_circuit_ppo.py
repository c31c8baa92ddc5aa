"""Train the circuit-track `ppo` agent's policies on circuit tables (replay) and ship them to agents/policies/.

    # the shipped train-test policy circuit-toy-4l-all (every task; 80k steps, ~18 min on one busy thread)
    OMP_NUM_THREADS=1 python scripts/train_circuit_ppo.py --model toy-4l --tb runs/circuit-ppo/all
    # the shipped held-out-task policies circuit-toy-4l-no-TASK (40k steps, constant learning rate, ~12 min each)
    for t in ioi agreement counting induction; do
        OMP_NUM_THREADS=1 python scripts/train_circuit_ppo.py --model toy-4l --exclude-task $t --steps 40000 \
            --no-anneal-lr --tb runs/circuit-ppo/no-$t
    done
    # the shipped circuit-toy-4l-w144-all (toy-4l-w144's train tables; what held-out-model on toy-4l fits on)
    OMP_NUM_THREADS=1 python scripts/train_circuit_ppo.py --model toy-4l-w144 --steps 40000 --no-anneal-lr
    # or every policy with this script's defaults: --suite (all tasks, then each task held out in turn)

Trains on the **train** split only (the model's shipped tables, or `--tables DIR` holding TASK-train.npz, built
with descriptors graph,atp), seeded, with one torch thread: an IG warm start, then MaskablePPO with the
terminal reward eff(declared ranking) − eff(ig ranking), a validation fold of the train prompts held out and
the best validation snapshot kept (`agents.circuit.ppo_train` explains each choice). Set queries the query
store lacks run on the model and go to the user cache (`$ACD_CACHE_DIR`). TensorBoard logs go to `--tb`.
Each policy is written atomically as `<out>/circuit-<model>-all.zip` (or `-no-<task>`) with a `.json` sidecar
(its key with `track: circuit`, steps, seed, hyperparameters, training time, validation and train efficiency,
the training curve). `CircuitPPOAgent.fit(tables)` loads the shipped policy whose sidecar matches its tables.
The test split is never read here; `acd bench --track circuit` measures it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from acd_env.tasks import TOY_TASKS  # noqa: E402
from agents.circuit.ppo_train import train_circuit_policy  # noqa: E402
from agents.ppo_store import POLICY_DIR, save_policy  # noqa: E402
from scripts.train_ppo import training_runs  # noqa: E402 (the feature track's script: the same runs)


def policy_name(model: str, tasks: Sequence[str], held_out: str | None) -> str:
    """circuit-MODEL-all / circuit-MODEL-no-TASK / circuit-MODEL-TASK+TASK."""
    if held_out is not None:
        return f"circuit-{model}-no-{held_out}"
    return (
        f"circuit-{model}-all" if sorted(tasks) == sorted(TOY_TASKS) else f"circuit-{model}-{'+'.join(tasks)}"
    )


def load_train(model: str, tasks: Sequence[str], tables_dir: str | Path | None) -> list[Any]:
    from acd_env.table_store import resolve_tables, table_file

    return [
        resolve_tables(model, t, "train", None if tables_dir is None else table_file(tables_dir, t, "train"))
        for t in tasks
    ]


def train_one(
    *,
    model: str,
    tasks: Sequence[str],
    held_out: str | None = None,
    tables_dir: str | Path | None = None,
    out: str | Path = POLICY_DIR,
    name: str | None = None,
    tb: str | Path | None = None,
    **train_kw: Any,
) -> Path:
    """Train one policy on the train tables of `tasks` and save it; returns the .zip path."""
    name = name or policy_name(model, tasks, held_out)
    started = time.perf_counter()
    result = train_circuit_policy(load_train(model, tasks, tables_dir), tb_dir=tb, **train_kw)
    result.meta.update(
        name=name,
        model=model,
        held_out_task=held_out,
        descriptors=["graph", "atp"],
        protocol="held-out-task" if held_out else "train-test",
    )
    path = save_policy(result, Path(out) / name)
    m = result.meta
    print(
        f"{path}: {m['timesteps']} steps in {m['train_seconds']:.0f} s, train efficiency "
        f"{m['train_efficiency']:.3f} (ig {m['train_ig']:.3f}), validation {m.get('val')} "
        f"({time.perf_counter() - started:.0f} s in all, {path.stat().st_size / 1024:.0f} KiB)",
        flush=True,
    )
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--model", default="toy-4l")
    p.add_argument("--tasks", default=",".join(TOY_TASKS), help="comma-separated train tasks")
    p.add_argument(
        "--exclude-task", default=None, help="held-out-task: train on every task of --tasks but this"
    )
    p.add_argument("--suite", action="store_true", help="all tasks, then each task held out in turn")
    p.add_argument(
        "--tables", default=None, help="directory of TASK-train.npz (default: the model's shipped)"
    )
    p.add_argument("--out", default=str(POLICY_DIR), help="where policies are written")
    p.add_argument("--name", default=None, help="policy file name (default: circuit-MODEL-all / -no-TASK)")
    p.add_argument("--tb", default=None, help="TensorBoard log dir (with --suite: one subdir per policy)")
    p.add_argument("--steps", type=int, default=80_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--bc-epochs", type=int, default=5, help="IG warm-start epochs (0: none)")
    p.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of train prompts held out for validation"
    )
    p.add_argument(
        "--no-keep-best", action="store_true", help="ship the last policy, not the best on validation"
    )
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--n-steps", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--n-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument(
        "--anneal-lr", action=argparse.BooleanOptionalAction, default=True, help="learning rate decayed to 0"
    )
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--eval-every", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    a = parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    train_kw = dict(
        steps=a.steps,
        seed=a.seed,
        hidden=a.hidden,
        budget=a.budget,
        bc_epochs=a.bc_epochs,
        val_fraction=a.val_fraction,
        keep_best=not a.no_keep_best,
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
    paths = []
    for run_tasks, held in training_runs(tasks, suite=a.suite, exclude_task=a.exclude_task, name=a.name):
        name = a.name or policy_name(a.model, run_tasks, held)
        tb = None if a.tb is None else (Path(a.tb) / name if a.suite else Path(a.tb))
        paths.append(
            train_one(
                model=a.model,
                tasks=run_tasks,
                held_out=held,
                tables_dir=a.tables,
                out=a.out,
                name=name,
                tb=tb,
                **train_kw,
            )
        )
    return paths


if __name__ == "__main__":
    main()
