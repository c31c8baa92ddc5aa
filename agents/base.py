"""The agent protocol every agent follows, and a small base class for agents that rank candidates.

Protocol (duck-typed; `make_agent` checks it):
    reset(obs, info)                       a new episode starts (info: prompt_id, action_mask,
                                           descriptor_names, interventions, n_candidates)
    act(obs, info) -> int                  an action valid under info["action_mask"]
    observe(action, reward, obs, info)     the outcome of that action (info carries the measurements)
    reset_memory()                         forget everything learned across episodes
    fit(tables) (optional)                 learn offline from circuit tables (`acd_env.tables.CircuitTable`)

Agents keep what they learn across episodes unless `reset_memory()` is called. Every agent is seeded.
Only agents with `privileged = True` (the oracle) are given `env.unwrapped.oracle_effects`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROTOCOL_METHODS = ("reset", "act", "observe", "reset_memory")


class BaseAgent:
    """Shared plumbing: seeding, the action mask, column lookup, and greedy choice by a score."""

    name = "base"
    privileged = False
    learns_offline = False  # True when fit(tables) is what makes the agent what it is (e.g. ranker)

    def __init__(self, *, seed: int = 0, intervention: str = "ablation") -> None:
        self.seed = seed
        self.intervention = intervention
        self.rng = np.random.default_rng(seed)
        self.columns: dict[str, int] = {}
        self.interventions: tuple[str, ...] = ()
        self.n_candidates = 0

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, obs: dict, info: dict) -> None:
        self.columns = {name: i for i, name in enumerate(info["descriptor_names"])}
        self.interventions = tuple(info["interventions"])
        self.n_candidates = int(info["n_candidates"])

    def act(self, obs: dict, info: dict) -> int:
        raise NotImplementedError

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        return None

    def reset_memory(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    # -- helpers --------------------------------------------------------------------------------
    @property
    def n_types(self) -> int:
        return len(self.interventions)

    def type_index(self) -> int:
        """Index of this agent's intervention type in the env's types."""
        if self.intervention not in self.interventions:
            from acd_env.errors import ACDError

            raise ACDError(
                f"agent {self.name!r} uses intervention {self.intervention!r}, but the env offers "
                f"{list(self.interventions)}; pass intervention=... with one of those"
            )
        return self.interventions.index(self.intervention)

    @staticmethod
    def valid_candidates(info: dict, n_types: int) -> np.ndarray:
        """(K,) bool: candidates with at least one valid action."""
        return np.asarray(info["action_mask"], dtype=bool).reshape(-1, n_types).any(1)

    def column(self, obs: dict, name: str) -> np.ndarray:
        if name not in self.columns:
            raise KeyError(
                f"agent {self.name!r} needs descriptor column {name!r}; the env provides {sorted(self.columns)}"
            )
        return obs["candidates"][:, self.columns[name]]

    def pick(self, scores: np.ndarray, info: dict, t: int | None = None) -> int:
        """The valid candidate with the highest score (ties broken by lower index), with type t."""
        mask = np.asarray(info["action_mask"], dtype=bool).reshape(-1, self.n_types)
        t = self.type_index() if t is None else t
        valid = mask[:, t]
        if not valid.any():  # this type is used up everywhere: any valid action
            flat = np.flatnonzero(mask.ravel())
            return int(flat[0])
        masked = np.where(valid, scores, -np.inf)
        k = int(np.argmax(masked))
        return k * self.n_types + t


def check_protocol(agent: Any, source: str) -> None:
    missing = [m for m in PROTOCOL_METHODS if not callable(getattr(agent, m, None))]
    if missing:
        from acd_env.errors import ACDError

        raise ACDError(f"agent {source!r} does not follow the agent protocol: missing method(s) {missing}")


def as_sequence(tables: Any) -> Sequence[Any]:
    return tables if isinstance(tables, list | tuple) else [tables]


def load_tables(tables: Any) -> list[Any]:
    """What `fit(tables)` accepts, as CircuitTables: CircuitTable objects or .npz paths (at least one)."""
    from acd_env.errors import ACDError
    from acd_env.tables import CircuitTable, load_table

    out = []
    for t in as_sequence(tables):
        if isinstance(t, str | Path):
            t = load_table(t)
        if not isinstance(t, CircuitTable):
            raise ACDError(
                f"fit() needs circuit tables (CircuitTable objects or .npz paths), got {type(t).__name__}"
            )
        out.append(t)
    if not out:
        raise ACDError("fit() got no circuit tables")
    return out
