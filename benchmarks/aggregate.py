"""Aggregate episode scores over prompts × seeds with rliable: mean and IQM with 95 % stratified-bootstrap CIs,
and the probability of improvement of one agent over another (docs/design.md, Metrics).

Strata are tasks; the runs of a task are its (seed, prompt) episodes. Tasks may hold different numbers of runs
(the counting suite is small), so scores are passed to rliable as one `(n_runs_task, D)` array per task, which
`rliable.library.get_interval_estimates` resamples independently per task (its `StratifiedIndependentBootstrap`):
a stratified bootstrap that does not need equal strata.

rliable draws its bootstrap indices from NumPy's *global* generator (it ignores `random_state` there), so every
estimate here seeds that generator from a fixed seed (and an optional name) and restores its previous state:
the same scores give byte-identical intervals, independent of call order. The seed does not depend on the
agent, so agents scored on the same (seed, prompt) episodes are resampled with the same indices (paired).
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_REPS = 2000
CONFIDENCE = 0.95


def _rliable():
    """rliable's library and metrics (imported lazily: arch and scipy are slow to import)."""
    from rliable import library, metrics

    return library, metrics


@contextlib.contextmanager
def seeded_global_rng(seed: int, name: str) -> Iterator[None]:
    """Seed NumPy's global generator from (seed, name) for the block, then restore its state."""
    state = np.random.get_state()
    digest = hashlib.sha256(f"{seed}|{name}".encode()).digest()
    np.random.seed(int.from_bytes(digest[:4], "little"))
    try:
        yield
    finally:
        np.random.set_state(state)


def _bootstrap(
    strata: list[np.ndarray], func, reps: int, seed: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) 95 % CIs of func(*strata) by rliable's stratified bootstrap, seeded (see the module docstring)."""
    library, _ = _rliable()
    with seeded_global_rng(seed, name), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch's note on `random_state`, which rliable passes
        _, intervals = library.get_interval_estimates(
            {"x": strata},
            func,
            reps=reps,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(seed),
        )
    return intervals["x"][0], intervals["x"][1]


def fast_iqm(values: np.ndarray) -> float:
    """rliable's `aggregate_iqm` (scipy `trim_mean(x, 0.25, axis=None)`: the mean of the middle half after
    cutting int(0.25 n) values from each end), without scipy's per-call overhead, which dominates thousands of
    bootstrap replications. tests/test_metrics.py checks it equals `rliable.metrics.aggregate_iqm`."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    cut = int(0.25 * len(x))
    return float(x[cut : len(x) - cut].mean())


def summarize(
    per_task: Mapping[str, np.ndarray], *, reps: int = DEFAULT_REPS, seed: int = 0, name: str = ""
) -> dict[str, Any]:
    """Mean and IQM of a score, and mean curves, with 95 % stratified-bootstrap CIs — all in one bootstrap.

    per_task: task → (n_runs, D) array per episode: column 0 the score (discovery efficiency), columns 1.. any
    per-episode curve (e.g. the cumulative efficiency after steps 1..B). Tasks are strata.
    Returns floats "mean", "mean_lo", "mean_hi", "iqm", "iqm_lo", "iqm_hi" for column 0 and (D,) arrays
    "columns", "columns_lo", "columns_hi" with the mean of the per-task means of every column.
    The mean is rliable's `aggregate_mean` (mean of per-task means); the IQM is `aggregate_iqm` over all runs.
    rliable resamples every column of a task independently, so each column gets its own marginal interval.
    With fewer than two runs in every task the CIs collapse to the point estimates.
    """
    _, metrics = _rliable()
    strata = [
        np.asarray(per_task[t], dtype=np.float64).reshape(len(per_task[t]), -1) for t in sorted(per_task)
    ]
    strata = [s for s in strata if len(s)]
    if not strata:
        nan = float("nan")
        return {"mean": nan, "mean_lo": nan, "mean_hi": nan, "iqm": nan, "iqm_lo": nan, "iqm_hi": nan}

    def iqm_and_means(*xs: np.ndarray) -> np.ndarray:
        iqm = fast_iqm(np.concatenate([x[:, 0] for x in xs]))
        means = np.mean([x.mean(axis=0) for x in xs], axis=0)  # every column: mean of the per-task means
        means[0] = np.mean([metrics.aggregate_mean(x[:, :1]) for x in xs])  # the score: rliable's own
        return np.concatenate([[iqm], means])

    point = iqm_and_means(*strata)
    if all(len(s) < 2 for s in strata):
        lo = hi = point
    else:
        lo, hi = _bootstrap(strata, iqm_and_means, reps, seed, name)
    return {
        "mean": float(point[1]),
        "mean_lo": float(lo[1]),
        "mean_hi": float(hi[1]),
        "iqm": float(point[0]),
        "iqm_lo": float(lo[0]),
        "iqm_hi": float(hi[0]),
        "columns": point[1:],
        "columns_lo": lo[1:],
        "columns_hi": hi[1:],
    }


def interval_estimates(
    per_task: Mapping[str, Sequence[float]], *, reps: int = DEFAULT_REPS, seed: int = 0, name: str = ""
) -> dict[str, float]:
    """Mean and IQM with 95 % stratified-bootstrap CIs of one score.

    per_task: task → (n_runs,) scores. Returns {"mean", "mean_lo", "mean_hi", "iqm", "iqm_lo", "iqm_hi"}.
    """
    out = summarize(
        {t: np.asarray(v, dtype=np.float64).reshape(-1, 1) for t, v in per_task.items()},
        reps=reps,
        seed=seed,
        name=name,
    )
    return {k: out[k] for k in ("mean", "mean_lo", "mean_hi", "iqm", "iqm_lo", "iqm_hi")}


def probability_of_improvement(
    x: Mapping[str, Sequence[float] | np.ndarray], y: Mapping[str, Sequence[float] | np.ndarray]
) -> float:
    """P(X > Y): rliable's probability of improvement (Mann-Whitney per task, ties count half), averaged over
    the tasks both agents ran. NaN when they share no task.

    x, y: task → (n_runs,) scores of agents X and Y.
    """
    _, metrics = _rliable()
    tasks = sorted(set(x) & set(y))
    if not tasks:
        return float("nan")
    values = [
        metrics.probability_of_improvement(
            np.asarray(x[t], dtype=np.float64).reshape(-1, 1),
            np.asarray(y[t], dtype=np.float64).reshape(-1, 1),
        )
        for t in tasks
    ]
    return float(np.mean(values))


def ordered_episodes(episodes: Sequence[Mapping]) -> list[Mapping]:
    return sorted(episodes, key=lambda e: (e["task"], e["seed"], e["prompt_id"], e.get("fold", "")))


def scores_by_task(episodes: Sequence[Mapping], metric: str) -> dict[str, np.ndarray]:
    """task → (n_runs,) values of `metric` over episode rows, ordered by (seed, prompt id) for determinism."""
    out: dict[str, list[float]] = {}
    for e in ordered_episodes(episodes):
        out.setdefault(e["task"], []).append(float(e["metrics"][metric]))
    return {t: np.asarray(v) for t, v in out.items()}


def curves_by_task(episodes: Sequence[Mapping], budget: int) -> dict[str, np.ndarray]:
    """task → (n_runs, 1 + 2B): [efficiency, cumulative curve after steps 1..B, gain of each step] per episode
    row, ordered as in `scores_by_task` (the input of `summarize`)."""
    out: dict[str, list[np.ndarray]] = {}
    for e in ordered_episodes(episodes):
        c = np.asarray(e["metrics"]["curve"], dtype=np.float64)[:budget]
        curve = np.full(budget, c[-1] if len(c) else 0.0)
        curve[: len(c)] = c
        row = np.concatenate([[float(e["metrics"]["efficiency"])], curve, np.diff(curve, prepend=0.0)])
        out.setdefault(e["task"], []).append(row)
    return {t: np.stack(v) for t, v in out.items()}
