"""Fixed log-scale bins for the outcome observation (never fitted on test prompts).

Level 0 of every outcome dimension is reserved for "no intervention yet"; a measurement x falls in level
1 + (number of edges ≤ x).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

BIN_EDGES: dict[str, tuple[float, ...]] = {
    "kl": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),  # nats
    "downstream": (0.01, 0.03, 0.1, 0.3, 1.0),  # relative change of later-layer activations
    "n_affected": (1, 4, 16, 64, 256),  # later features moved by > AFFECT_THRESHOLD
}
OUTCOME_DIMS = tuple(BIN_EDGES)
NONE_YET = 0


def n_levels(name: str) -> int:
    return len(BIN_EDGES[name]) + 2


def level(name: str, value: float) -> int:
    """Scalar `discretise` (the env's hot path)."""
    return 1 + bisect_right(BIN_EDGES[name], value)


def discretise(name: str, value: float | np.ndarray) -> np.ndarray:
    """Level (1 .. len(edges)+1) of a measurement; 0 is reserved for "none yet"."""
    return 1 + np.searchsorted(np.asarray(BIN_EDGES[name]), np.asarray(value, dtype=np.float64), side="right")
