"""Build the circuit tables shipped with a toy model (every toy task, train and test split).

    python scripts/build_tables.py --model toy-4l          # writes acd_env/models/zoo/toy-4l/tables/

Tables use the benchmark's settings: K = 64 candidates, all three intervention types, steering 4x,
attention free, graph + attribution-patching descriptors. Each file is written atomically; an existing
table that loads cleanly for the current weights is kept unless --force.
"""

from __future__ import annotations

import argparse
import sys

import torch

from acd_env.case import CaseSettings
from acd_env.errors import TableError
from acd_env.table_build import build_table_file
from acd_env.table_store import expected_hash, shipped_table_path
from acd_env.tables import load_table
from acd_env.tasks import TOY_TASKS

SHIPPED = CaseSettings(
    n_candidates=64, steering_scale=4.0, descriptors=("graph", "atp"), freeze_attention=False
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy-4l")
    ap.add_argument("--tasks", default=",".join(TOY_TASKS))
    ap.add_argument("--splits", default="test,train")
    ap.add_argument("--n-train", type=int, default=60, help="train prompts per task (test: the whole split)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights, _ = expected_hash(args.model)
    for split in args.splits.split(","):
        for task in args.tasks.split(","):
            path = shipped_table_path(args.model, task, split)
            if path.exists() and not args.force:
                try:
                    load_table(path, weights_hash=weights)
                    print(f"keep {path}")
                    continue
                except TableError as e:
                    print(f"rebuild {path}: {e}")
            n = args.n_train if split == "train" else None
            build_table_file(args.model, task, split, path, SHIPPED, n=n, progress=True)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
