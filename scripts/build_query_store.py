"""Refresh the query store shipped beside a toy model's tables, so that the default `acd bench` answers every
circuit-track query from it (no model load, milliseconds per query) on a fresh clone.

    python scripts/build_query_store.py                 # toy-4l: runs the default circuit-track bench
    python scripts/build_query_store.py -- --seeds 2    # extra `acd bench` arguments after --

It runs `acd bench --track circuit` (the default settings plus any extra arguments) with `ACD_CACHE_DIR`
pointing at an empty folder, so every query the run needs is measured into a fresh store; then it writes that
store, merged with the shipped one and sorted by key, to `acd_env/models/zoo/<model>/tables/queries.jsonl`
atomically. Queries depend only on the model, the prompts and the sets the agents test, so the file changes
only when the tables or the agents' choices change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from acd_env.models.toy import toy_dir, weights_hash
from acd_env.query_store import SHIPPED_NAME, STORE_VERSION, QueryStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy-4l")
    ap.add_argument("bench_args", nargs="*", help="extra `acd bench` arguments (after --)")
    args = ap.parse_args(argv)
    shipped = toy_dir(args.model) / "tables" / SHIPPED_NAME
    weights = weights_hash(toy_dir(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ACD_CACHE_DIR=tmp, OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "benchmarks.cli", "bench", "--model", args.model, "--track", "circuit",
               "--out", str(Path(tmp) / "run"), "--no-progress", *args.bench_args]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        fresh = [QueryStore(args.model, weights, read=list((Path(tmp) / "queries").glob("*.jsonl")))]
        if shipped.is_file():
            fresh.append(QueryStore(args.model, weights, read=[shipped]))
        merged: dict[str, tuple[float, float]] = {}
        for store in fresh:
            for key, value in store._data.items():
                merged.setdefault(key, value)
    header = {"store": STORE_VERSION, "model": args.model, "weights_hash": weights}
    lines = [json.dumps(header, sort_keys=True)]
    lines += [
        json.dumps({"q": k, "kl": v[0], "m": v[1]}, separators=(",", ":")) for k, v in sorted(merged.items())
    ]
    tmp_path = shipped.with_suffix(".tmp")
    tmp_path.write_text("\n".join(lines) + "\n")
    os.replace(tmp_path, shipped)
    print(f"wrote {shipped}: {len(merged)} queries, {shipped.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
