"""Zero-learning baselines: greedy by one static descriptor column, best first.

- `greedy`: descending circuit-tracer node influence (`influence`), the ranking `prune_graph` uses and the
  EAP-style baseline prior work could not beat.
- `magnitude`: descending activation × decoder norm (`log10_magnitude`), the size of what an ablation removes.
- `atp`: descending attribution-patching estimate of the agent's intervention type (`atp_kl_<type>`); needs an
  env built with `descriptors=("graph", "atp")`.

Ties are broken by the lower candidate index (candidates come in descending influence). They learn nothing,
so `reset_memory()` changes nothing and every protocol runs them the same way.
"""

from __future__ import annotations

import numpy as np

from acd_env.errors import ACDError
from agents.base import BaseAgent
from agents.ranker import static_names


class ColumnGreedyAgent(BaseAgent):
    """Greedy by the descriptor column `column` (descending), with the agent's intervention type."""

    name = "column-greedy"
    column_name = ""

    def __init__(self, *, seed: int = 0, intervention: str = "ablation", column: str | None = None) -> None:
        super().__init__(seed=seed, intervention=intervention)
        if column is not None:
            self.column_name = column
        if not self.column_name:
            raise ACDError(f"agent {self.name!r} needs a descriptor column to rank by (column=...)")

    def required_column(self) -> str:
        return self.column_name

    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        name = self.required_column()
        if name not in self.columns:
            raise ACDError(
                f"agent {self.name!r} ranks by descriptor column {name!r}, which this environment does not provide; "
                f"its columns: {', '.join(info['descriptor_names'])}"
            )
        self._scores: np.ndarray | None = None

    def act(self, obs: dict, info: dict) -> int:
        if self._scores is None:  # static descriptors: read them once per episode
            self._scores = np.array(self.column(obs, self.required_column()), dtype=np.float64)
        return self.pick(self._scores, info)


class GreedyAgent(ColumnGreedyAgent):
    """Descending circuit-tracer influence."""

    name = "greedy"
    column_name = "influence"


class MagnitudeAgent(ColumnGreedyAgent):
    """Descending activation × decoder norm (log10)."""

    name = "magnitude"
    column_name = "log10_magnitude"


class AtPAgent(ColumnGreedyAgent):
    """Descending attribution-patching estimate of the KL of the agent's intervention type."""

    name = "atp"
    needs_atp = True

    def __init__(self, *, seed: int = 0, intervention: str = "ablation") -> None:
        super().__init__(seed=seed, intervention=intervention, column="atp_kl_*")

    def required_column(self) -> str:
        kind = self.interventions[self.type_index()] if self.interventions else self.intervention
        return f"atp_kl_{kind}"

    def reset(self, obs: dict, info: dict) -> None:
        try:
            super().reset(obs, info)
        except ACDError:
            raise ACDError(
                f"agent 'atp' needs the attribution-patching columns ({self.required_column()!r}): build the env with "
                "descriptors=('graph', 'atp') (and, for replay, tables built with them); this env provides "
                f"{', '.join(static_names(info['descriptor_names']))}"
            ) from None
