"""`random`: uniform over the valid actions. The floor every other agent must clear.

With K = 64 candidates and a budget of 20 it finds about a third of what the oracle finds on the toy zoo
(BENCHMARKS.md). Seeded: each episode draws from a generator seeded by (seed, prompt id), so an
episode's actions do not depend on which episodes ran before it (a resumed or reordered benchmark gives the
same actions), and the same prompt under different seeds gives different actions.
"""

from __future__ import annotations

import zlib

import numpy as np

from agents.base import BaseAgent


class RandomAgent(BaseAgent):
    """Uniform over valid actions.

    `intervention=None` (default): any valid (candidate, type) action, uniformly. With an intervention type
    (e.g. `"ablation"`): a uniform valid candidate, always with that type.
    """

    name = "random"

    def __init__(self, *, seed: int = 0, intervention: str | None = None) -> None:
        super().__init__(seed=seed, intervention=intervention or "ablation")
        self.any_type = intervention is None

    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        prompt_key = zlib.crc32(str(info.get("prompt_id", "")).encode())
        self.rng = np.random.default_rng([self.seed, prompt_key])

    def act(self, obs: dict, info: dict) -> int:
        mask = np.asarray(info["action_mask"], dtype=bool)
        if self.any_type:
            valid = np.flatnonzero(mask)
            if valid.size == 0:
                return 0  # nothing valid is left: the env answers with its documented invalid-action no-op
            return int(self.rng.choice(valid))
        scores = self.rng.random(self.n_candidates)
        return self.pick(scores, info)
