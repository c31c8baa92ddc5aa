"""Zero-query circuit baselines: a ranking read off the prompt's descriptors, no set query run.

`influence` is circuit-tracer's own order (the candidates come sorted by `compute_node_influence`); `atp` ranks
single-feature attribution-patching estimates; `atp-joint` is greedy selection on the AtP-linearised model's
predicted keep-only faithfulness, which sees cancellation between candidates but not saturation; `ig` ranks
integrated gradients of the candidates' values from keep(∅) to the clean run. The last two come with
`descriptors=("graph", "atp")` as the columns `atp_joint_rank` and `ig` (computed once per prompt when the
circuit tables are built).
"""

from __future__ import annotations

import numpy as np

from agents.circuit.base import CircuitAgent


class RankingAgent(CircuitAgent):
    """Ranks by descending `score_column` at reset; never queries."""

    uses_queries = False
    score_column = ""

    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        self._ranking = self.order_by(self.scores(obs))

    def scores(self, obs: dict) -> np.ndarray:
        return self.column(obs, self.score_column)

    def circuit_ranking(self) -> list[int]:
        return list(self._ranking)


class RandomRanking(RankingAgent):
    """A uniformly random ranking, drawn from a generator seeded by (seed, prompt id)."""

    name = "random"

    def scores(self, obs: dict) -> np.ndarray:
        return self.episode_rng.random(self.n_valid)


class InfluenceRanking(RankingAgent):
    """circuit-tracer's influence order (candidate 0 is the most influential)."""

    name = "influence"

    def scores(self, obs: dict) -> np.ndarray:
        return -np.arange(self.n_valid, dtype=np.float64)


class AtPRanking(RankingAgent):
    """Descending first-order (AtP) estimate of each candidate's single ablation effect."""

    name = "atp"
    needs_atp = True
    score_column = "atp_kl_ablation"


class AtPJointRanking(RankingAgent):
    """Greedy selection on the AtP-linearised model's predicted faithfulness."""

    name = "atp-joint"
    needs_atp = True
    score_column = "atp_joint_rank"


class IGRanking(RankingAgent):
    """Descending integrated gradients of −KL from keep(∅) to the clean run."""

    name = "ig"
    needs_atp = True
    score_column = "ig"
