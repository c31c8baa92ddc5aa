"""Where circuit tables live: the ones shipped beside each toy model, or paths a user gives."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acd_env.errors import ACDError, TableError, unknown
from acd_env.tables import CircuitTable, load_table, merge_tables
from acd_env.tasks import available_tasks
from acd_env.tasks.grammar import TOY_TASKS


def shipped_table_path(model: str, task: str, split: str) -> Path:
    from acd_env.models.toy import toy_dir

    return toy_dir(model) / "tables" / f"{task}-{split}.npz"


def expected_hash(model: Any) -> tuple[str | None, str | None]:
    """(weights hash, name) a table must match, without loading a toy model's weights into torch."""
    if isinstance(model, str):
        from acd_env.models import is_toy_model
        from acd_env.models.toy import toy_dir, weights_hash

        if is_toy_model(model):
            return weights_hash(toy_dir(model)), model
        return None, model  # a pretrained name: the table's own metadata names its weights
    from acd_env.models import model_info

    info = model_info(model)
    return info.weights_hash, info.name


def resolve_tables(
    model: Any, task: str | Sequence[str] | None, split: str, tables: str | Path | Sequence[Any] | None
) -> CircuitTable:
    """Load (and merge) the tables for replay, validating them against the model's weights."""
    if isinstance(tables, CircuitTable):
        return tables
    weights, name = expected_hash(model)
    if tables is None:
        if not isinstance(model, str):
            raise ACDError(
                "replay with a model object needs tables=PATH (shipped tables exist for toy models only)"
            )
        from acd_env.models import available_models, is_toy_model
        from acd_env.models.pretrained import parse_pretrained

        if not is_toy_model(model):
            if parse_pretrained(model) is None:
                raise unknown("model", model, [*available_models(), "HF_MODEL::TRANSCODER_SET"])
            raise TableError(
                f"no circuit tables ship with the pretrained model {model!r}; build them with `acd tables build "
                f"--model {model} --task TASK --split {split}` and pass tables=PATH"
            )
        tasks = list(TOY_TASKS) if task is None else ([task] if isinstance(task, str) else list(task))
        for t in tasks:
            if t not in available_tasks():
                raise unknown("task", t, available_tasks())
        paths = [shipped_table_path(model, t, split) for t in tasks]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise TableError(
                f"no shipped circuit table for model {model!r}, split {split!r}: {absent[0]} is missing; build one "
                f"with `acd tables build --model {model} --task TASK --split {split}` and pass tables=PATH"
            )
    else:
        paths = [tables] if isinstance(tables, str | Path) else list(tables)
    loaded = [
        t if isinstance(t, CircuitTable) else load_table(t, weights_hash=weights, model_name=name)
        for t in paths
    ]
    return loaded[0] if len(loaded) == 1 else merge_tables(loaded)
