"""Protocols: what an agent may learn from before and during the test prompts (docs/design.md, Protocols).

| protocol | fitted before the test prompts on | memory across test prompts |
|---|---|---|
| `zero-shot` | nothing | reset (`reset_memory()` before every prompt) |
| `stream` | nothing | kept, prompts in a seeded order (learning curve: efficiency vs prompt index) |
| `train-test` | the train tables of the same model and tasks | kept, seeded order |
| `held-out-task` | the train tables of every *other* task of the model; each task held out in turn | kept, seeded order |
| `held-out-model` | another zoo model's train tables of the same tasks | kept, seeded order |

After fitting, the test prompts run as a stream (the protocol says what the agent may learn from; an agent that
also learns online uses the test prompts it has seen, as in `stream`). A leaderboard row is (protocol, agent).

Applicability: an agent whose whole point is offline learning (`learns_offline = True`, e.g. `ranker`) has
nothing to be in `zero-shot` and `stream`, and is listed there as not applicable (never silently dropped).
An agent without `fit` runs the fitted protocols without fitting: agents that cannot learn run identically in
every protocol, so each protocol has the same baselines.

A protocol is planned as one or more **folds** (`held-out-task`: one per task; the others: one): the tables to
fit on and the test prompts, with an order per seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acd_env.errors import ACDError, unknown

DEFAULT_PROTOCOLS = ("zero-shot", "train-test")


@dataclass(frozen=True)
class Protocol:
    name: str
    fits: bool  # fit(tables) before the test prompts
    keep_memory: bool  # memory kept across the test prompts (no reset_memory between them)
    description: str


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("zero-shot", False, False, "reset_memory() before every prompt; only the episode itself"),
        Protocol("stream", False, True, "memory kept across the test prompts, in a seeded order"),
        Protocol("train-test", True, True, "fit on the train tables of the same model and tasks first"),
        Protocol(
            "held-out-task", True, True, "fit on the train tables of every other task; each task in turn"
        ),
        Protocol("held-out-model", True, True, "fit on another zoo model's train tables of the same tasks"),
    )
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise unknown("protocol", name, PROTOCOLS)
    return PROTOCOLS[name]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class Fold:
    """One unit of a protocol run: fit on `fit_tables` (None: nothing to fit on), then the `test` prompts.

    test: indices into the test env's prompt list, in the canonical (table) order.
    """

    name: str
    test: list[int]
    fit_tables: list[Any] | None = None
    fit_source: str = ""  # e.g. "toy-4l train: agreement, counting, induction"
    tables_loader: Callable[[], list[Any]] | None = field(default=None, repr=False)

    def tables(self) -> list[Any] | None:
        """The tables to fit on, loaded on first use (so that a fully finished fold loads nothing)."""
        if self.fit_tables is None and self.tables_loader is not None:
            self.fit_tables = self.tables_loader()
        return self.fit_tables

    @property
    def fits(self) -> bool:
        return self.fit_tables is not None or self.tables_loader is not None

    def order(self, protocol: Protocol, seed: int) -> list[int]:
        """The order of the test prompts for a seed: canonical for zero-shot, seeded otherwise."""
        if not protocol.keep_memory:
            return list(self.test)
        rng = np.random.default_rng(derive_seed("order", protocol.name, self.name, seed))
        return [self.test[i] for i in rng.permutation(len(self.test))]


def plan_folds(
    protocol: Protocol,
    *,
    test_tasks: Sequence[str],
    test_by_task: dict[str, list[int]],
    train_tables: Callable[[str, str], Any],
    model: str,
    fit_tasks: Sequence[str],
    fit_models: Sequence[str] = (),
    train_tasks: Sequence[str] | None = None,
) -> list[Fold]:
    """The folds of a protocol.

    test_by_task: task → indices of its test prompts in the env. train_tables(model, task) loads a train table.
    fit_tasks: the tasks that have train tables for `model` (held-out-task fits on these, minus the held-out one).
    fit_models: other models with train tables of every train task (held-out-model fits on the first).
    train_tasks: the tasks train-test and held-out-model fit on (default: the test tasks; custom prompts, whose
    task has no train tables, use every task that has them).
    """
    train_tasks = list(test_tasks if train_tasks is None else train_tasks)
    everything = [i for t in test_tasks for i in test_by_task[t]]
    if not protocol.fits:
        return [Fold("all", everything)]
    if protocol.name == "train-test":
        missing = [t for t in train_tasks if t not in fit_tasks]
        if missing:
            raise ACDError(
                f"protocol 'train-test' needs train tables of model {model!r} for tasks {missing}; build them with "
                f"`acd tables build --model {model} --task TASK --split train`"
            )
        return [
            Fold(
                "all",
                everything,
                fit_source=f"{model} train: {', '.join(train_tasks)}",
                tables_loader=lambda: [train_tables(model, t) for t in train_tasks],
            )
        ]
    if protocol.name == "held-out-task":
        folds = []
        for held in test_tasks:
            others = [t for t in fit_tasks if t != held]
            if not others:
                raise ACDError(
                    f"protocol 'held-out-task' needs train tables of another task than {held!r} for model {model!r}; "
                    f"tasks with train tables: {list(fit_tasks)}"
                )
            folds.append(
                Fold(
                    f"held-out:{held}",
                    list(test_by_task[held]),
                    fit_source=f"{model} train: {', '.join(others)}",
                    tables_loader=lambda others=tuple(others): [train_tables(model, t) for t in others],
                )
            )
        return folds
    if protocol.name == "held-out-model":
        if not fit_models:
            raise ACDError(
                f"protocol 'held-out-model' needs a second zoo model with train tables of tasks {train_tasks} "
                f"to fit on (test model: {model!r}); none was found. Build one (scripts/train_zoo.py, then "
                "`acd tables build`) or pass --fit-model"
            )
        source = fit_models[0]
        return [
            Fold(
                f"from:{source}",
                everything,
                fit_source=f"{source} train: {', '.join(train_tasks)}",
                tables_loader=lambda: [train_tables(source, t) for t in train_tasks],
            )
        ]
    raise unknown("protocol", protocol.name, PROTOCOLS)  # pragma: no cover (every protocol is handled above)


def applicability(agent: Any, protocol: Protocol) -> str | None:
    """None when the agent can run under the protocol, else the reason it is not applicable."""
    if getattr(agent, "learns_offline", False) and not protocol.fits:
        return f"needs fit(tables); protocol {protocol.name!r} gives nothing to fit on"
    return None


def restrict_table(table: Any, descriptor_names: Sequence[str]) -> Any:
    """acd_env.table_store.restrict_columns: the table showing only `descriptor_names`, as an env would."""
    from acd_env.table_store import restrict_columns

    return restrict_columns(table, descriptor_names)
