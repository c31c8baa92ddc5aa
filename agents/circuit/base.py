"""The common base of circuit-track agents: seeding, descriptor columns, actions, and the declared ranking."""

from __future__ import annotations

import zlib
from typing import Protocol, runtime_checkable

import numpy as np

from acd_env.circuit import QUERY_KINDS
from acd_env.errors import ACDError
from agents.base import Agent


@runtime_checkable
class CircuitAgentProtocol(Agent, Protocol):
    """The circuit-track agent interface: the feature track's `agents.base.Agent` plus the declared ranking."""

    def circuit_ranking(self) -> list[int]:
        """Candidate indices, most important first."""
        ...


class CircuitAgent:
    """Interface (`CircuitAgentProtocol`): `reset(obs, info)`, `act(obs, info) -> int`, `observe(action, reward, obs, info)`,
    `reset_memory()`, `circuit_ranking() -> list[int]` (candidate indices, most important first).

    Class attributes the harness reads: `uses_queries` (False: ranked without stepping), `needs_atp` (needs the
    gradient-based descriptor columns), `privileged` (gets the reference), `learns_offline` (needs `fit`).
    """

    name = "circuit-base"
    track = "circuit"
    uses_queries = True
    needs_atp = False
    privileged = False
    learns_offline = False

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.columns: dict[str, int] = {}
        self.n_valid = 0

    def reset(self, obs: dict, info: dict) -> None:
        self.columns = {name: i for i, name in enumerate(info["descriptor_names"])}
        self.n_valid = int(info["n_valid"])
        prompt_key = zlib.crc32(str(info.get("prompt_id", "")).encode())
        self.episode_rng = np.random.default_rng([self.seed, prompt_key])

    def act(self, obs: dict, info: dict) -> int:
        ranking = self.circuit_ranking()
        return self.action(ranking[0] if ranking else 0, "keep")

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        return None

    def reset_memory(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def circuit_ranking(self) -> list[int]:
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def action(candidate: int, kind: str) -> int:
        return 2 * int(candidate) + QUERY_KINDS.index(kind)

    def column(self, obs: dict, name: str) -> np.ndarray:
        if name not in self.columns:
            raise ACDError(
                f"circuit agent {self.name!r} needs descriptor column {name!r}; the env provides "
                f"{sorted(self.columns)} (gradient-based columns need descriptors=('graph', 'atp'))"
            )
        return np.asarray(obs["candidates"][: self.n_valid, self.columns[name]], dtype=np.float64)

    def order_by(self, scores: np.ndarray) -> list[int]:
        """Candidates by descending score (ties: lower index, i.e. higher influence, first)."""
        return [int(k) for k in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]
