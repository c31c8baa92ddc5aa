"""The observation schema of both envs, in one torch-free place (agents import it without loading torch).

Each env's `candidates` matrix is (K, F): the static descriptor columns of its settings
(`acd_env.attribution.descriptors`), then the columns the env adds:

- `CircuitDiscovery-v0` (feature track): `FEATURE_DYNAMIC_COLUMNS`, filled as candidates are measured;
  `measured_log_kl` holds `measured_log_kl(kl)`.
- `CircuitSearch-v0` (circuit track): with `descriptors=("graph", "atp")` the zero-query scores
  `CIRCUIT_DESCRIPTORS`, then `CIRCUIT_DYNAMIC_COLUMNS`.

Every value is clipped to ±`OBS_BOUND` (descriptors are log-scaled or small; this is a safety net).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

OBS_BOUND = 1e4
LOG_KL_FLOOR = 1e-6  # measured_log_kl = log10(KL + LOG_KL_FLOOR) + 6: 0 for no effect
FEATURE_DYNAMIC_COLUMNS = (
    "visited",
    "measured_type",
    "measured_log_kl",
    "measured_downstream",
    "measured_log_affected",
)
CIRCUIT_DESCRIPTORS = ("ig", "atp_joint_rank")  # zero-query scores, with descriptors=("graph", "atp")
CIRCUIT_DYNAMIC_COLUMNS = ("in_circuit", "toggles", "keep_delta", "ablate_delta")


def measured_log_kl(kl: float) -> float:
    """The feature track's `measured_log_kl` column for a measured KL (nats)."""
    return math.log10(kl + LOG_KL_FLOOR) + 6.0


def static_columns(names: Sequence[str]) -> tuple[str, ...]:
    """The descriptor columns of an env's `descriptor_names` that do not change during an episode."""
    dynamic = {*FEATURE_DYNAMIC_COLUMNS, *CIRCUIT_DYNAMIC_COLUMNS}
    return tuple(n for n in names if n not in dynamic)
