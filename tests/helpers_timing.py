"""Comparing two `acd bench` output folders apart from timing (tests/test_determinism.py, tests/test_ray.py).

`benchmarks.leaderboard.TIMING_COLUMNS` are the leaderboard's timing columns; `wall_time_s` is the per-row wall
time in results.jsonl.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from benchmarks.leaderboard import TIMING_COLUMNS

TIMING_KEYS = {"wall_time_s", *TIMING_COLUMNS}  # per-row wall times in results.jsonl; step_ms / fit_s


def without_timing(value):
    """`value` (parsed JSON) with every timing key removed, recursively."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def markdown_without_timing(text: str) -> str:
    """leaderboard.md with the last column cut from every line of the tables whose last column is `step_ms`
    (the only timing column; other tables, e.g. the circuit track's per-task efficiencies, are kept whole)."""
    out, strip = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            strip = False
        elif line.startswith("| agent |"):
            strip = line.rstrip(" |").endswith("step_ms")
        out.append(line.rsplit("|", 2)[0] if strip else line)
    assert any(
        line.startswith("| agent |") and line.rstrip(" |").endswith("step_ms") for line in text.splitlines()
    )
    return "\n".join(out)


def csv_without_timing(text: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and all(c in rows[0] for c in TIMING_COLUMNS)
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def json_without_timing(text: str) -> dict:
    doc = json.loads(text)
    assert doc["timing_columns"] == list(TIMING_COLUMNS)
    doc["rows"] = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in doc["rows"]]
    return doc


def results_without_timing(path: Path) -> list[dict]:
    return [without_timing(json.loads(line)) for line in path.read_text().splitlines()]


def assert_same_leaderboards(a: Path, b: Path) -> None:
    assert markdown_without_timing((a / "leaderboard.md").read_text()) == markdown_without_timing(
        (b / "leaderboard.md").read_text()
    )
    assert csv_without_timing((a / "leaderboard.csv").read_text()) == csv_without_timing(
        (b / "leaderboard.csv").read_text()
    )
    assert json_without_timing((a / "leaderboard.json").read_text()) == json_without_timing(
        (b / "leaderboard.json").read_text()
    )
