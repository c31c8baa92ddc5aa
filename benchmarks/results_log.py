"""`results.jsonl`, the results log of `acd bench`: its rows, their keys, appending and resuming.

`results.jsonl` holds one JSON object per line, each with a `kind`:
- `step`: one per step — agent, protocol, fold, task, prompt_id, seed, step, action, candidate, feature,
  intervention, invalid, reward, kl, logit_diff, downstream, n_affected, top1_changed, wall_time_s and
  `diag` (the agent's `diagnostics()` scalars after the step, e.g. `aif/belief_entropy`), if any; on the
  circuit track (`track: "circuit"`, benchmarks.circuit_episode) instead of the feature fields: `query` (keep or
  ablate), toggle, candidate, circuit_size, score, logit_f, kl, `repeat`, and for an agent with `posterior_top(n)`
  (the circuit `aif` and `aif-argmax`) `posterior_top`: its 5 likeliest circuit members after the step as
  `[[candidate, P(member)], ...]`, likeliest first (TensorBoard's `circuit/aif_posterior_top`);
- `episode`: one per finished episode, after its steps — the keys above plus `order` (index in the seed's
  prompt order), `metrics` (benchmarks.metrics.episode_metrics), `interventions` used, `reward`, `wall_time_s`,
  `step_ms`, and for agents with `importance_ranking()` that ranking (`importance_order`: candidate indices, most
  important first) beside the true ablation KL of every real candidate (`true_effect`);
- `fit`: one per fitted (agent, protocol, fold, seed): the tables it was fitted on and `fit_s`;
- `na`: an (agent, protocol) that does not apply, with the reason;
- `log`: an agent's training log (`training_log()`, e.g. PPO losses), once per agent.

Nothing is lost: all rows of an episode are written with one `write` and `fsync`ed, so a killed run keeps
every finished episode and at most leaves a torn tail, which the next run into the same directory truncates
back to the last complete episode. A re-run skips finished episodes (key: track, agent, protocol, prompt, seed;
benchmarks.runner).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acd_env.errors import ACDError

BLOCK_END = ("episode", "fit", "na", "log")


def track_of(row: dict) -> str:
    """A row's track (rows written before the circuit track existed are feature-track rows)."""
    return row.get("track", "features")


def episode_key(row: dict) -> tuple:
    return (track_of(row), row["agent"], row["protocol"], row["prompt_id"], int(row["seed"]))


def fit_key(row: dict) -> tuple:
    return (track_of(row), row["agent"], row["protocol"], row["fold"], int(row["seed"]))


def _clean(value: Any) -> Any:
    """JSON-safe value: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _numpy_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(row: dict) -> str:
    """One compact JSON line; NaN/inf become null (the slow path, only when present)."""
    try:
        return json.dumps(row, separators=(",", ":"), default=_numpy_default, allow_nan=False)
    except ValueError:
        return json.dumps(_clean(row), separators=(",", ":"))


class ResultsLog:
    """Append-only `results.jsonl` with atomic episode blocks and resume.

    On opening, a torn tail (a partial line, or the step rows of an episode whose `episode` row never made it)
    is cut off, so the file always ends with a complete block.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.episodes: dict[tuple, dict] = {}
        self.fits: set[tuple] = set()
        self.na: set[tuple] = set()
        self.logs: set[tuple[str, str]] = set()  # (track, agent)
        self.truncated_bytes = 0
        self._recover()

    def _recover(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0  # byte offset just after the last complete block
        pos = line = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break  # a partial last line
            line += 1
            row = _parse(data[pos:end])
            if row is None:
                if data[end + 1 :].strip():  # complete rows follow: corruption, not a torn last write
                    raise ACDError(
                        f"{str(self.path)!r} line {line} is not a results row, and rows follow it: the file is "
                        "corrupt, not torn by an interrupted write; move it away (or choose another --out)"
                    )
                break  # a torn last line (a killed write): dropped
            pos = end + 1
            if row.get("kind") in BLOCK_END:
                try:
                    self._register(row)
                except (KeyError, TypeError, ValueError) as e:
                    raise ACDError(
                        f"{str(self.path)!r} line {line}: a {row['kind']!r} row without a valid {e} field; the "
                        "file is corrupt; move it away (or choose another --out)"
                    ) from None
                good = pos
        if good < len(data):
            self.truncated_bytes = len(data) - good
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())

    def _register(self, row: dict) -> None:
        kind = row["kind"]
        if kind == "episode":
            self.episodes[episode_key(row)] = row
        elif kind == "fit":
            self.fits.add(fit_key(row))
        elif kind == "na":
            self.na.add((track_of(row), row["agent"], row["protocol"]))
        elif kind == "log":
            self.logs.add((track_of(row), row["agent"]))

    def append(self, rows: Sequence[dict]) -> None:
        """Append rows as one block: a single write, flushed and fsynced."""
        data = "".join(_dumps(r) + "\n" for r in rows).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        for row in rows:
            if row.get("kind") in BLOCK_END:
                self._register(row)


def _parse(line: bytes) -> dict | None:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) else None


def read_results(path: str | Path) -> list[dict]:
    """Every complete row of a results file (a torn last line is ignored)."""
    rows = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows
