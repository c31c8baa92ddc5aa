"""The agent zoo: `make_agent(name, **kw)` builds any agent by name or by a user's `"package.module:Class"`.

| name | agent |
|---|---|
| `random` | uniform over valid actions (seeded) |
| `greedy` | descending circuit-tracer influence (the ranking `prune_graph` uses) |
| `magnitude` | descending activation × decoder norm (`log10_magnitude`) |
| `atp` | descending attribution-patching estimate (needs `descriptors=("graph", "atp")`) |
| `ucb` | LinUCB: a shared linear model of log KL on the standardised descriptors, persisted across episodes |
| `oracle` | privileged: the best remaining candidate by `oracle_effects()` (defines 100 %) |
| `ranker` | gradient-boosted trees fitted on circuit tables (`fit(tables)`), greedy on the prediction |
| `aif` | active inference (pymdp) |
| `aif-argmax` | `aif`'s planning ablation: same model and learning, argmax of its expected importance (no EFE) |
| `ppo` | sb3-contrib MaskablePPO policy |

The circuit track (`CircuitSearch-v0`) has its own agents (`agents.circuit`): pass `track="circuit"` to
`available_agents`, `agent_class` and `make_agent` (`random`, `influence`, `atp`, `atp-joint`, `ig`, `acdc`,
`atp-search`, `ranker`, `ucb`, `aif`, `aif-argmax`, `ppo`, `reference`).

Agent modules are imported lazily, on first use, so that e.g. `make_agent("greedy")` never imports JAX.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from acd_env.errors import ACDError, check_seed
from agents.base import INTERFACE_METHODS, Agent, BaseAgent, check_interface

REGISTRY: dict[str, str] = {
    "random": "agents.random_agent:RandomAgent",
    "greedy": "agents.greedy:GreedyAgent",
    "magnitude": "agents.greedy:MagnitudeAgent",
    "atp": "agents.greedy:AtPAgent",
    "ucb": "agents.ucb:LinUCBAgent",
    "oracle": "agents.oracle:OracleAgent",
    "ranker": "agents.ranker:RankerAgent",
    "aif": "agents.aif:AIFAgent",
    "aif-argmax": "agents.aif:AIFArgmaxAgent",
    "ppo": "agents.ppo:PPOAgent",
}

CIRCUIT_REGISTRY: dict[str, str] = {
    "random": "agents.circuit.rankings:RandomRanking",
    "influence": "agents.circuit.rankings:InfluenceRanking",
    "atp": "agents.circuit.rankings:AtPRanking",
    "atp-joint": "agents.circuit.rankings:AtPJointRanking",
    "ig": "agents.circuit.rankings:IGRanking",
    "acdc": "agents.circuit.acdc:ACDCAgent",
    "atp-search": "agents.circuit.atp_search:AtPSearchAgent",
    "ranker": "agents.circuit.ranker:CircuitRankerAgent",
    "ucb": "agents.circuit.ucb:CircuitUCBAgent",
    "aif": "agents.circuit.aif:CircuitAIFAgent",
    "aif-argmax": "agents.circuit.aif:CircuitAIFArgmaxAgent",
    "ppo": "agents.circuit.ppo:CircuitPPOAgent",
    "reference": "agents.circuit.reference:ReferenceAgent",
}
TRACKS = ("features", "circuit")
_REGISTRIES = {"features": REGISTRY, "circuit": CIRCUIT_REGISTRY}

__all__ = [
    "CIRCUIT_REGISTRY",
    "INTERFACE_METHODS",
    "REGISTRY",
    "TRACKS",
    "Agent",
    "BaseAgent",
    "agent_class",
    "available_agents",
    "make_agent",
]


def _registry(track: str) -> dict[str, str]:
    if track not in _REGISTRIES:
        from acd_env.errors import unknown

        raise unknown("track", track, TRACKS)
    return _REGISTRIES[track]


def available_agents(track: str = "features") -> list[str]:
    """The registered agent names of a track (any `"package.module:Class"` path works as well)."""
    return list(_registry(track))


def _load(path: str, source: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ACDError(f"agent path {path!r} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(
            e.name
        ):  # the module itself (or its package) is absent
            raise ACDError(
                f"agent {source!r}: module {module_name!r} cannot be imported ({e}); "
                f"valid agent names: {', '.join(REGISTRY)}, or 'package.module:Class'"
            ) from None
        raise  # the module exists but one of its own imports is missing: show the real error
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ACDError(f"agent {source!r}: module {module_name!r} has no attribute {attr!r}") from None


def agent_class(name: str, track: str = "features") -> Any:
    """The class (or factory) behind an agent name or a `"package.module:Class"` path, protocol-checked."""
    registry = _registry(track)
    if not isinstance(name, str):
        raise ACDError(f"agent name must be a string, got {type(name).__name__}")
    if name in registry:
        cls = _load(registry[name], name)
    elif ":" in name:
        cls = _load(name, name)
    else:
        where = "" if track == "features" else f" on the {track} track"
        raise ACDError(
            f"unknown agent {name!r}{where}; valid agents: {', '.join(registry)}, or a user class as "
            "'package.module:Class'"
        )
    if inspect.isclass(cls):
        check_interface(cls, name)
    elif not callable(cls):
        raise ACDError(f"agent {name!r} resolves to {type(cls).__name__}, not a class or factory")
    return cls


def make_agent(name: str | Any, *, track: str = "features", **kw: Any) -> Any:
    """Build an agent: a registered name (`available_agents()`) or a `"package.module:Class"` path.

    Keyword arguments go to the agent's constructor (every shipped agent takes `seed`; most take
    `intervention`). An agent object (anything with the protocol methods) is returned as it is.
    Raises `ACDError` for an unknown name, an unimportable path, arguments the class does not accept, or a
    class that lacks a protocol method (`reset`, `act`, `observe`, `reset_memory`).
    """
    if not isinstance(name, str):
        if inspect.isclass(name):
            check_interface(name, name.__name__)
            return _construct(name, name.__name__, kw)
        if not any(callable(getattr(name, m, None)) for m in INTERFACE_METHODS):
            raise ACDError(
                f"agent must be a name ({', '.join(REGISTRY)}), a 'package.module:Class' path or an agent "
                f"object, got {type(name).__name__} {name!r}"
            )
        check_interface(name, type(name).__name__)
        if kw:
            raise ACDError(
                f"make_agent got an agent object and keyword arguments {sorted(kw)}; pass one or the other"
            )
        return name
    return _construct(agent_class(name, track), name, kw)


def _construct(cls: Any, source: str, kw: dict[str, Any]) -> Any:
    if "seed" in kw:  # numpy's seeding would fail deep inside with a TypeError/ValueError
        kw = {**kw, "seed": check_seed(kw["seed"], f"seed of agent {source!r}")}
    if kw.get("intervention") is not None:  # BaseAgent.type_index would silently fall back to the first type
        from acd_env.interventions import INTERVENTION_TYPES

        if kw["intervention"] not in INTERVENTION_TYPES:
            raise ACDError(
                f"unknown intervention {kw['intervention']!r} for agent {source!r}; "
                f"valid interventions: {', '.join(INTERVENTION_TYPES)}"
            )
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # some builtins/extension classes have no signature: just try it
        signature = None
    if signature is not None:
        try:
            signature.bind(**kw)
        except TypeError as e:
            raise ACDError(
                f"agent {source!r} does not accept arguments {sorted(kw)} ({e}); its signature is {signature}"
            ) from None
    agent = cls(**kw)
    check_interface(agent, source)
    return agent
