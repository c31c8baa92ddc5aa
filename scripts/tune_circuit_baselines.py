"""Choose `acdc`'s pruning threshold by cross-validation on the train split (never on test prompts).

    python scripts/tune_circuit_baselines.py --model toy-4l --per-task 30

For every threshold of the grid it runs `acdc` on the train prompts of every toy task (those above the KL
floor, at most --per-task each) and records each episode's circuit efficiency. Five folds by prompt: each
fold's threshold is the grid value with the best mean on the other four, scored on the held-out fold (the
cross-validated estimate of the choice); the threshold to ship is the best on all train prompts. Prints both.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from acd_env.circuit import KL_FLOOR
from acd_env.circuit_env import CircuitSearchEnv
from acd_env.tasks import TOY_TASKS
from agents.circuit.acdc import ACDCAgent
from benchmarks.circuit_episode import run_circuit_episode

GRID = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
N_FOLDS = 5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy-4l")
    ap.add_argument("--per-task", type=int, default=30)
    ap.add_argument("--budget", type=int, default=20)
    args = ap.parse_args(argv)
    env = CircuitSearchEnv(model=args.model, task=list(TOY_TASKS), split="train", budget=args.budget,
                           descriptors=("graph", "atp"))  # fmt: skip
    by_task: dict[str, list[int]] = {}
    for i, p in enumerate(env.prompts):
        if env.backend.circuit(i).kl_empty >= KL_FLOOR and len(by_task.get(p.task, [])) < args.per_task:
            by_task.setdefault(p.task, []).append(i)
    prompts = [i for idx in by_task.values() for i in idx]
    scores = np.zeros((len(GRID), len(prompts)))
    for g, threshold in enumerate(GRID):
        agent = ACDCAgent(threshold=threshold)
        for j, i in enumerate(prompts):
            rows = run_circuit_episode(env, agent, i, 0, {"agent": "acdc", "protocol": "tune"}, args.budget)
            scores[g, j] = rows[-1]["metrics"]["efficiency"]
        print(f"threshold {threshold:g}: mean circuit efficiency {scores[g].mean():.4f}", flush=True)
    folds = np.arange(len(prompts)) % N_FOLDS
    held_out = []
    for k in range(N_FOLDS):
        best = int(np.argmax(scores[:, folds != k].mean(1)))
        held_out.append(scores[best, folds == k])
        print(f"fold {k}: chose {GRID[best]:g}, held-out mean {scores[best, folds == k].mean():.4f}")
    best = int(np.argmax(scores.mean(1)))
    print(f"cross-validated estimate {np.concatenate(held_out).mean():.4f}; ship threshold {GRID[best]:g} "
          f"({len(prompts)} train prompts of {args.model})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
