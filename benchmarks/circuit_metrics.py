"""Per-episode circuit-track metrics: pure functions on arrays (the definitions are `acd_env.circuit`'s).

Shapes: every grid array is (G,) with G = len(K_GRID), the declared circuit's first k members evaluated at
each k of the grid (k capped at the prompt's number of candidates):
    f:         KL-faithfulness of keep(C_k)
    logit_f:   logit-difference faithfulness of keep(C_k) (NaN where the candidates do not move m)
    necessity: KL(ablate C_k) ÷ KL(keep ∅)
    ref_f:     the reference circuit's f at the same sizes
"""

from __future__ import annotations

import numpy as np

from acd_env.circuit import circuit_auc, circuit_efficiency, cmd, cpr


def circuit_metrics(f: np.ndarray, logit_f: np.ndarray, necessity: np.ndarray, ref_f: np.ndarray) -> dict:
    """Every per-episode circuit metric: `efficiency` (AUC ÷ the reference's AUC), `auc`, `cpr`, `cmd`,
    `logit_auc` (mean logit faithfulness over the grid, NaN-aware), `necessity` (mean over the grid), `ref_auc`,
    and the grid curves `f`, `logit_f`, `necessity_curve`, `ref_f` as lists.

    Example: f = ref_f = [0.5, 1.0] → auc 0.75, efficiency 1.0, cmd 0.25.
    """
    f = np.asarray(f, dtype=np.float64)
    ref_f = np.asarray(ref_f, dtype=np.float64)
    logit_f = np.asarray(logit_f, dtype=np.float64)
    necessity = np.asarray(necessity, dtype=np.float64)
    auc, ref_auc = circuit_auc(f), circuit_auc(ref_f)
    finite = logit_f[np.isfinite(logit_f)]
    return {
        "efficiency": circuit_efficiency(f, ref_f),
        "auc": auc,
        "cpr": cpr(f),
        "cmd": cmd(f),
        "logit_auc": float(finite.mean()) if len(finite) else float("nan"),
        "necessity": float(necessity.mean()),
        "ref_auc": ref_auc,
        "f": [float(x) for x in f],
        "logit_f": [float(x) for x in logit_f],
        "necessity_curve": [float(x) for x in necessity],
        "ref_f": [float(x) for x in ref_f],
    }
