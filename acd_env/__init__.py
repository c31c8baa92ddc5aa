"""Active Circuit Discovery: sequential circuit discovery in language models as a Gymnasium environment.

`import acd_env` registers `CircuitDiscovery-v0` (the feature track) and `CircuitSearch-v0` (the circuit track); heavy libraries (torch, circuit-tracer) load lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acd_env import _offline  # noqa: F401  (sets HF offline defaults before anything imports the hub)

if TYPE_CHECKING:  # the lazy exports below, for type checkers (at run time `__getattr__` imports them)
    from acd_env.circuit_env import CircuitSearchEnv
    from acd_env.env import CircuitDiscoveryEnv
    from acd_env.errors import ACDError
    from acd_env.interventions import INTERVENTION_TYPES
    from acd_env.models import available_models, load_model
    from acd_env.tables import load_table
    from acd_env.tasks import Prompt, available_tasks, load_task

ENV_ID = "CircuitDiscovery-v0"
CIRCUIT_ENV_ID = "CircuitSearch-v0"
__version__ = "0.1.0"

_LAZY = {
    "CircuitDiscoveryEnv": ("acd_env.env", "CircuitDiscoveryEnv"),
    "CircuitSearchEnv": ("acd_env.circuit_env", "CircuitSearchEnv"),
    "load_model": ("acd_env.models", "load_model"),
    "available_models": ("acd_env.models", "available_models"),
    "load_task": ("acd_env.tasks", "load_task"),
    "available_tasks": ("acd_env.tasks", "available_tasks"),
    "Prompt": ("acd_env.tasks", "Prompt"),
    "load_table": ("acd_env.tables", "load_table"),
    "ACDError": ("acd_env.errors", "ACDError"),
    "INTERVENTION_TYPES": ("acd_env.interventions", "INTERVENTION_TYPES"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'acd_env' has no attribute {name!r}")


def _register() -> None:
    from gymnasium.envs.registration import register, registry

    if ENV_ID not in registry:
        register(id=ENV_ID, entry_point="acd_env.env:CircuitDiscoveryEnv")
    if CIRCUIT_ENV_ID not in registry:
        register(id=CIRCUIT_ENV_ID, entry_point="acd_env.circuit_env:CircuitSearchEnv")


_register()

__all__ = [  # `_LAZY` spelled out for type checkers (tests/test_typing.py checks they match)
    "CIRCUIT_ENV_ID",
    "ENV_ID",
    "INTERVENTION_TYPES",
    "ACDError",
    "CircuitDiscoveryEnv",
    "CircuitSearchEnv",
    "Prompt",
    "available_models",
    "available_tasks",
    "load_model",
    "load_table",
    "load_task",
]
