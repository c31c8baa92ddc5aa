"""Add the circuit track's data to circuit tables of the previous format (2) without re-attributing.

    python scripts/add_circuit_data.py --model toy-4l        # upgrades acd_env/models/zoo/toy-4l/tables/*.npz

A format-2 table already holds every prompt's candidates, tokens and answers; this computes what format 3 adds
(`acd_env.circuit_reference.measure_circuit`: keep(∅), the beam-search reference, atp-joint, integrated
gradients) from them with the same function `acd tables build` uses, and saves the table atomically as format
3. The result equals a fresh `acd tables build` of the same settings (attribution is deterministic on CPU).
Tables already in format 3 are left alone, except that `--refresh ig` recomputes their integrated gradients
(e.g. after a change of `IG_STEPS`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from acd_env import tables as table_format
from acd_env.case import clean_run
from acd_env.circuit_reference import BEAM_WIDTH, measure_circuit
from acd_env.models import load_model, model_info
from acd_env.table_build import _stack_circuit
from acd_env.table_store import shipped_table_path
from acd_env.tasks import TOY_TASKS


def load_previous(path) -> table_format.CircuitTable:
    with np.load(path, allow_pickle=False) as data:
        raw = {k: data[k] for k in data.files}
    meta = json.loads(str(raw["meta"]))
    return table_format._from_arrays(raw, meta, path)


def refresh_ig(model, table: table_format.CircuitTable, path) -> None:
    from acd_env.circuit_reference import CircuitMeasurer

    for i, case in enumerate(table.cases):
        tokens = torch.as_tensor(case.tokens, dtype=torch.long)
        logits, _ = clean_run(model, tokens)
        n = case.n_valid
        cm = CircuitMeasurer(
            model, tokens, case.features[:n], np.zeros(n, np.float32), logits[-1], case.answer_id,
            case.cf_answer_id, freeze_attention=table.meta["freeze_attention"],
        )  # fmt: skip
        table.circuit["ig"][i] = 0.0
        table.circuit["ig"][i, :n] = cm.integrated_gradients(case.clean_act[:n])
    table_format.save_table(table, path)
    print(f"refreshed ig in {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy-4l")
    ap.add_argument("--tasks", default=",".join(TOY_TASKS))
    ap.add_argument("--splits", default="test,train")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--refresh", choices=["ig"], help="recompute this array of format-3 tables")
    ap.add_argument(
        "--format-only",
        action="store_true",
        help="rewrite format-2 tables as format 3 without circuit data (they then serve the feature track only)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    weights = model_info(model).weights_hash
    for split in args.splits.split(","):
        for task in args.tasks.split(","):
            path = shipped_table_path(args.model, task, split)
            table = load_previous(path)
            if table.meta.get("format_version") == table_format.FORMAT_VERSION and table.has_circuit:
                if args.refresh == "ig":
                    refresh_ig(model, table, path)
                else:
                    print(f"keep {path}")
                continue
            if args.format_only:
                if table.meta.get("format_version") != table_format.FORMAT_VERSION:
                    meta = dict(table.meta, format_version=table_format.FORMAT_VERSION, circuit=False)
                    table_format.save_table(
                        table_format.CircuitTable(meta, table.cases, table.measurements), path
                    )
                    print(f"wrote {path} (format {table_format.FORMAT_VERSION}, no circuit data)")
                continue
            if table.meta["weights_hash"] != weights:
                raise SystemExit(
                    f"{path} was built for other weights; rebuild it with scripts/build_tables.py"
                )
            start = time.perf_counter()
            items = []
            for i, case in enumerate(table.cases):
                tokens = torch.as_tensor(case.tokens, dtype=torch.long)
                logits, _ = clean_run(model, tokens)
                n = case.n_valid
                items.append(
                    measure_circuit(
                        model,
                        tokens,
                        case.features[:n],
                        np.zeros(n, np.float32),
                        case.clean_act[:n],
                        logits[-1],
                        case.answer_id,
                        case.cf_answer_id,
                        len(case.features),
                        freeze_attention=table.meta["freeze_attention"],
                    )
                )
                print(f"\r{task}/{split} {i + 1}/{len(table.cases)}", end="", flush=True)
            meta = dict(
                table.meta,
                format_version=table_format.FORMAT_VERSION,
                circuit=True,
                circuit_beam=BEAM_WIDTH,
                circuit_complement="ablation",
            )
            table_format.save_table(
                table_format.CircuitTable(meta, table.cases, table.measurements, _stack_circuit(items)), path
            )
            print(f"\nwrote {path} ({path.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
