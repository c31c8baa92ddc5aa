"""`oracle`: privileged; always takes the best remaining candidate by its true measured effect.

It defines the 100 % line of discovery efficiency: with the default `intervention="ablation"` the candidates it
chooses in B steps are exactly the B with the highest ablation KL. The harness hands it the environment's
privileged table with `agent.attach_oracle(env.unwrapped.oracle_effects)`; no other agent gets it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from acd_env.errors import ACDError
from agents.base import BaseAgent


class OracleAgent(BaseAgent):
    """Highest true effect first: `measure` (default `"kl"`) of the agent's intervention type, per candidate."""

    name = "oracle"
    privileged = True

    def __init__(self, *, seed: int = 0, intervention: str = "ablation", measure: str = "kl") -> None:
        super().__init__(seed=seed, intervention=intervention)
        valid = ("kl", "logit_diff", "downstream", "n_affected")
        if measure not in valid:
            raise ACDError(f"unknown oracle measure {measure!r}; valid measures: {', '.join(valid)}")
        self.measure = measure
        self._oracle: Callable[[], Any] | None = None
        self._scores: np.ndarray | None = None

    def attach_oracle(self, oracle_effects: Callable[[], Any]) -> None:
        """Give the agent privileged access: a callable returning the current prompt's `Effects`."""
        if not callable(oracle_effects):
            raise ACDError(
                f"attach_oracle needs a callable (env.unwrapped.oracle_effects), got {oracle_effects!r}"
            )
        self._oracle = oracle_effects

    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        self._scores = None

    def act(self, obs: dict, info: dict) -> int:
        if self._oracle is None:
            raise ACDError(
                "the oracle agent is privileged and has no oracle attached: call "
                "agent.attach_oracle(env.unwrapped.oracle_effects) before running it"
            )
        if self._scores is None:  # the true effects of a prompt do not change within its episode
            values = np.abs(np.asarray(getattr(self._oracle(), self.measure), dtype=np.float64))
            self._scores = values[:, self.type_index()]
        return self.pick(self._scores, info)
