"""A user's own agents, loaded by tests through `make_agent("tests.helpers_user_agent:MyAgent")`."""

from __future__ import annotations

import numpy as np


class MyAgent:
    """Follows the protocol without subclassing BaseAgent: takes the last valid action each step."""

    def __init__(self, seed: int = 0, greeting: str = "hello") -> None:
        self.seed = seed
        self.greeting = greeting
        self.n_observed = 0

    def reset(self, obs: dict, info: dict) -> None:
        self.episode_start = info["prompt_id"]

    def act(self, obs: dict, info: dict) -> int:
        return int(np.flatnonzero(info["action_mask"])[-1])

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        self.n_observed += 1

    def reset_memory(self) -> None:
        self.n_observed = 0


class NoActAgent:
    """Lacks `act`: make_agent must refuse it and name the missing method."""

    def reset(self, obs: dict, info: dict) -> None:
        pass

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        pass

    def reset_memory(self) -> None:
        pass
