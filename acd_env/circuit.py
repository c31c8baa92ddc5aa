"""The circuit track's definitions: set queries, faithfulness, and the score of a declared circuit (torch-free).

One prompt, its n candidates, a circuit C ⊆ candidates; one query = one forward pass:
- `keep(C)`: every candidate *not* in C is intervened on jointly (ablated, or set to its counterfactual value
  in the `patching` variant); members of C and every non-candidate feature run as the model makes them.
- `ablate(C)`: the members of C are intervened on jointly.

Scores of C (values are reported as measured: f may exceed 1 or fall below 0):
- KL-faithfulness  f(C) = 1 − KL(clean ‖ keep C) ÷ KL(clean ‖ keep ∅)   (f(∅) = 0, f(all candidates) = 1)
- logit-difference faithfulness (MIB)  (m(C) − m(∅)) ÷ (m(clean) − m(∅)), m = logit(answer) − logit(cf answer)
- necessity  n(C) = KL(clean ‖ ablate C) ÷ KL(clean ‖ keep ∅)

An agent declares an ordered circuit (a ranking of the candidates); C_k is its first k members. Its
**circuit AUC** is the mean of f(C_k) over `K_GRID` (log-spaced, so small circuits count); CPR and CMD are
the trapezoid areas under f and under |1 − f| over the same grid, with the grid points equally spaced on
[0, 1] (MIB's circuit performance ratio and circuit-model distance). **Circuit efficiency** = the agent's AUC
÷ the reference's (a privileged beam search, `acd_env.circuit_reference`). Prompts whose KL(clean ‖ keep ∅)
is below `KL_FLOOR` have no behaviour to explain and are excluded (and counted).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from acd_env.errors import ACDError

QUERY_KINDS = ("keep", "ablate")
COMPLEMENTS = ("ablation", "patching")  # what keep(C) does to the candidates outside C
K_GRID = (1, 2, 3, 5, 8, 13, 20)
K_MAX = K_GRID[-1]
KL_FLOOR = (
    0.05  # nats: a prompt whose candidates, all ablated, move the next-token distribution less is excluded
)


def grid_sizes(n_valid: int) -> np.ndarray:
    """(len(K_GRID),) circuit sizes evaluated for a prompt with n_valid candidates (k capped at n_valid)."""
    return np.minimum(np.asarray(K_GRID), max(int(n_valid), 0))


def faithfulness(kl: np.ndarray | float, kl_empty: float) -> np.ndarray:
    """f = 1 − KL(clean ‖ keep C) ÷ KL(clean ‖ keep ∅), elementwise."""
    return 1.0 - np.asarray(kl, dtype=np.float64) / float(kl_empty)


def necessity(kl: np.ndarray | float, kl_empty: float) -> np.ndarray:
    """n = KL(clean ‖ ablate C) ÷ KL(clean ‖ keep ∅), elementwise."""
    return np.asarray(kl, dtype=np.float64) / float(kl_empty)


def logit_faithfulness(m: np.ndarray | float, m_clean: float, m_empty: float) -> np.ndarray:
    """(m(C) − m(∅)) ÷ (m(clean) − m(∅)); NaN where the denominator is 0 (the candidates do not move m)."""
    den = float(m_clean) - float(m_empty)
    m = np.asarray(m, dtype=np.float64)
    return (m - float(m_empty)) / den if den != 0 else np.full(m.shape, np.nan)


def circuit_auc(f_grid: np.ndarray) -> float:
    """Mean of f(C_k) over the grid. f_grid: (len(K_GRID),)."""
    return float(np.mean(np.asarray(f_grid, dtype=np.float64)))


def circuit_efficiency(f_grid: np.ndarray, ref_grid: np.ndarray) -> float:
    """Circuit efficiency: the circuit AUC ÷ the reference's over the same grid (NaN when the reference's AUC
    is not positive). f_grid, ref_grid: (len(K_GRID),) or the grid sizes a prompt has."""
    ref_auc = circuit_auc(ref_grid)
    return circuit_auc(f_grid) / ref_auc if ref_auc > 0 else float("nan")


def _trapezoid(y: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2:
        return float(y.mean()) if len(y) else float("nan")
    return float(np.sum((y[1:] + y[:-1]) / 2.0) / (len(y) - 1))


def cpr(f_grid: np.ndarray) -> float:
    """Circuit performance ratio: trapezoid area under f over the grid (points equally spaced on [0, 1])."""
    return _trapezoid(f_grid)


def cmd(f_grid: np.ndarray) -> float:
    """Circuit-model distance: trapezoid area under |1 − f| over the grid (0 = faithful at every size)."""
    return _trapezoid(np.abs(1.0 - np.asarray(f_grid, dtype=np.float64)))


def check_ranking(
    ranking: Sequence[int] | np.ndarray, n_valid: int, source: str = "circuit_ranking()"
) -> list[int]:
    """A declared ranking as a list of distinct candidate indices in [0, n_valid); raises ACDError otherwise.

    A ranking may list fewer than n_valid candidates; `complete_ranking` fills in the rest.
    """
    try:
        arr = np.asarray(ranking)
        if arr.dtype == bool or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise TypeError
        out = [int(x) for x in arr.reshape(-1)]
    except (TypeError, ValueError):
        raise ACDError(f"{source} must be a sequence of candidate indices (ints), got {ranking!r}") from None
    bad = [k for k in out if not 0 <= k < n_valid]
    if bad:
        raise ACDError(
            f"{source} holds candidate index {bad[0]}, outside [0, {n_valid}) (the prompt's candidates)"
        )
    if len(set(out)) != len(out):
        seen: set[int] = set()
        dup = next(k for k in out if k in seen or seen.add(k))
        raise ACDError(f"{source} lists candidate {dup} twice; a circuit ranking names each candidate once")
    return out


def complete_ranking(ranking: Sequence[int], fallback: Sequence[int], n_valid: int) -> list[int]:
    """`ranking` followed by the candidates of `fallback` (then any others, in index order) it does not hold."""
    seen = set(ranking)
    out = list(ranking)
    for k in [*fallback, *range(n_valid)]:
        if 0 <= k < n_valid and k not in seen:
            seen.add(k)
            out.append(int(k))
    return out


def prefix_masks(ranking: Sequence[int], n_valid: int, sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    """(len(sizes), n_valid) bool: row i marks the first sizes[i] candidates of the ranking (C_k)."""
    masks = np.zeros((len(sizes), n_valid), dtype=bool)
    order = np.asarray(ranking, dtype=np.int64)
    for i, k in enumerate(sizes):
        masks[i, order[:k]] = True
    return masks
