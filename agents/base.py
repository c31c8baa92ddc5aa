"""The agent interface every agent follows, and a small base class for agents that rank candidates.

Interface (`Agent`, a `typing.Protocol`; duck-typed, `make_agent` checks the methods with `check_interface`):
    reset(obs, info)                       a new episode starts (info: prompt_id, action_mask,
                                           descriptor_names, interventions, n_candidates)
    act(obs, info) -> int                  an action valid under info["action_mask"]
    observe(action, reward, obs, info)     the outcome of that action (info carries the measurements)
    reset_memory()                         forget everything learned across episodes
    fit(tables) (optional)                 learn offline from circuit tables (`acd_env.tables.CircuitTable`)

("Interface" here, to keep "protocol" for the evaluation protocols of `benchmarks.protocols`: zero-shot,
stream, train-test, held-out-task.)

What an agent needs, declared as class attributes the harness reads (`BaseAgent` holds the defaults; an agent
that does not subclass it may leave them out, they default to False):
    needs_atp        True: it reads the attribution-patching descriptor columns, so it runs on envs built with
                     descriptors=("graph", "atp") (tables that have them); e.g. `atp`
    learns_offline   True: `fit(tables)` is what makes it what it is (e.g. `ranker`, `ppo`); the protocols that
                     do not fit (zero-shot, stream) report it as n/a
    privileged       True: it is given `env.unwrapped.oracle_effects` (only the oracle)

Agents keep what they learn across episodes unless `reset_memory()` is called. Every agent is seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

INTERFACE_METHODS = ("reset", "act", "observe", "reset_memory")


@runtime_checkable
class Agent(Protocol):
    """The agent interface (see the module docstring). `fit(tables)` is optional, so it is not part of it."""

    def reset(self, obs: dict, info: dict) -> None: ...

    def act(self, obs: dict, info: dict) -> int: ...

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None: ...

    def reset_memory(self) -> None: ...


@runtime_checkable
class FittableAgent(Agent, Protocol):
    """An agent that can also learn offline from circuit tables (CircuitTable objects or .npz paths)."""

    def fit(self, tables: Any) -> Any: ...


class BaseAgent:
    """Shared plumbing: seeding, the action mask, column lookup, and greedy choice by a score."""

    name = "base"
    needs_atp = False  # True: reads the attribution-patching descriptor columns (envs with ("graph", "atp"))
    learns_offline = False  # True when fit(tables) is what makes the agent what it is (e.g. ranker)
    privileged = False  # True: given env.unwrapped.oracle_effects (the oracle only)

    def __init__(self, *, seed: int = 0, intervention: str = "ablation") -> None:
        self.seed = seed
        self.intervention = intervention
        self.rng = np.random.default_rng(seed)
        self.columns: dict[str, int] = {}
        self.interventions: tuple[str, ...] = ()
        self.n_candidates = 0

    # -- interface ------------------------------------------------------------------------------
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
        return np.asarray(np.asarray(info["action_mask"], dtype=bool).reshape(-1, n_types).any(axis=1))

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


def check_interface(agent: object, source: str) -> None:
    """Raise `ACDError` unless `agent` (a class or an object) has every method of the agent interface."""
    missing = [m for m in INTERFACE_METHODS if not callable(getattr(agent, m, None))]
    if missing:
        from acd_env.errors import ACDError

        raise ACDError(f"agent {source!r} does not follow the agent interface: missing method(s) {missing}")


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
