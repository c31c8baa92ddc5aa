"""Project the wall time of building circuit tables for many prompts on N GPUs (BENCHMARKS.md, "Scale").

    python scripts/scale_cost_model.py                          # 10,000 Gemma-2-2B prompts on 1, 8, 64 GPUs
    python scripts/scale_cost_model.py --perf perf.json         # per-prompt figures from an `acd perf` run
    python scripts/scale_cost_model.py --attribution-s 20 --sweep-s 1.5 --gpus 1,4,16

Model: each worker holds one model copy on one GPU and measures one prompt at a time (benchmarks.ray_tables),
so with W workers and P prompts

    wall = load_s + ceil(P / W) * (attribution_s + sweep_s) / efficiency

where `efficiency` (default 0.9) covers dispatch, result transfer, shard writes and stragglers. The per-prompt
figures are inputs: measured ones (`--perf`, from `acd perf --device cuda` on the model) or, by default, the
published figures named in the script (no Gemma-2-2B figure was measured here).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Defaults for Gemma-2-2B with its PLT transcoders (`gemma`), K = 64 × 3 types, IOI-length prompts. They are
# published figures, not measurements made here (the prior implementation, circuit-tracer on Gemma-2-2B,
# reported attribution ≈ 18 s and `feature_intervention` ≈ 0.03 s per call on a DGX Spark GB10): the sweep is
# taken as 192 calls one by one (an upper bound: the batched engine does them in a few forward passes), and
# the model + transcoder load per worker (≈ 60 s from a local cache) is an assumption.
DEFAULTS = {"attribution_s": 18.0, "sweep_s": 192 * 0.03, "load_s": 60.0}


def project(prompts: int, workers: int, attribution_s: float, sweep_s: float, load_s: float,
            efficiency: float) -> float:  # fmt: skip
    """Wall-clock seconds for `prompts` on `workers` GPUs."""
    return load_s + math.ceil(prompts / workers) * (attribution_s + sweep_s) / efficiency


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--gpus", default="1,8,64", help="GPU counts (one worker per GPU)")
    ap.add_argument("--attribution-s", type=float, default=None)
    ap.add_argument("--sweep-s", type=float, default=None)
    ap.add_argument("--load-s", type=float, default=None)
    ap.add_argument("--efficiency", type=float, default=0.9)
    ap.add_argument(
        "--perf", help="acd perf JSON: take table_prompt_attribution_s / table_prompt_sweep_s from it"
    )
    args = ap.parse_args(argv)
    figures = dict(DEFAULTS)
    source = "published (prior implementation, GB10) and assumed; see the script"
    if args.perf:
        measured = json.loads(Path(args.perf).read_text())["figures"]
        figures["attribution_s"] = measured["table_prompt_attribution_s"]
        figures["sweep_s"] = measured["table_prompt_sweep_s"]
        source = f"measured by acd perf ({args.perf})"
    for key in DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            figures[key] = value
            source = "given on the command line"
    if args.prompts <= 0 or not 0 < args.efficiency <= 1 or min(figures.values()) < 0:
        ap.error("--prompts must be > 0, --efficiency in (0, 1], times ≥ 0")
    gpus = [int(g) for g in args.gpus.split(",")]
    per_prompt = figures["attribution_s"] + figures["sweep_s"]
    print(f"{args.prompts:,} prompts; per prompt {per_prompt:.2f} s (attribution {figures['attribution_s']:.2f} s + "
          f"sweep {figures['sweep_s']:.2f} s), model load {figures['load_s']:.0f} s per worker, efficiency "
          f"{args.efficiency:g}; figures {source}\n")  # fmt: skip
    print("| GPUs | hours | GPU-hours |\n|---|---|---|")
    for g in gpus:
        wall = project(
            args.prompts, g, figures["attribution_s"], figures["sweep_s"], figures["load_s"], args.efficiency
        )
        print(f"| {g} | {wall / 3600:.2f} | {g * wall / 3600:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
