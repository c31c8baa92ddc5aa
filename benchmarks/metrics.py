"""Per-episode discovery metrics (docs/design.md, Metrics): defined in acd_env.scores, below the agents, so that
PPO training scores with the same functions as `acd bench`; re-exported here under their benchmark names."""

from acd_env.scores import (  # noqa: F401 (re-exported)
    THRESHOLD_80,
    anytime_auc,
    cumulative_curve,
    discovery_efficiency,
    efficiency_by_type,
    episode_metrics,
    oracle_curve,
    oracle_gains,
    recall_at_k,
    steps_to_fraction,
    top_k,
)
