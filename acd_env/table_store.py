"""Circuit tables as files: the one owner of the `{task}-{split}.npz` layout and the queries on it.

A folder of tables holds one `TASK-SPLIT.npz` per (task, split) (acd_env.tables: the format of one file); the
tables of a toy model ship in its zoo folder's `tables/`. This module answers every question about such files
that the harness, the agents and the scripts ask: a table's path (`table_file`, `shipped_table_path`,
`table_path`), whether it exists (`has_table`), the tasks a folder holds (`tasks_in`), whether tables carry the
attribution-patching columns (`have_atp`) or circuit data (`have_circuit`), a table restricted to the columns an
env shows (`restrict_columns`, `restrict_descriptors`), what a table set is specific to (`table_key`), the env
settings a table was built with (`env_settings`), and loading them for replay (`resolve_tables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acd_env.errors import ACDError, TableError, unknown
from acd_env.tasks.grammar import TOY_TASKS

if TYPE_CHECKING:
    from acd_env.tables import CircuitTable

# acd_env.tables (and through it torch) is imported where a table is read, so that the layout functions stay
# light: `acd bench` checks its arguments with them before torch loads.

SUFFIX = ".npz"


# ---------------------------------------------------------------------------------------------- the layout
def table_name(task: str, split: str) -> str:
    """The file name of a (task, split) table in a folder of tables: `TASK-SPLIT.npz`."""
    return f"{task}-{split}{SUFFIX}"


def table_file(folder: str | Path, task: str, split: str) -> Path:
    """The path of a (task, split) table in `folder`."""
    return Path(folder) / table_name(task, split)


def shipped_tables_dir(model: str) -> Path:
    """The folder of the tables shipped with a toy model."""
    from acd_env.models.toy import toy_dir

    return toy_dir(model) / "tables"


def shipped_table_path(model: str, task: str, split: str) -> Path:
    return table_file(shipped_tables_dir(model), task, split)


def table_path(model: str, task: str, split: str, folder: str | Path | None = None) -> Path:
    """A model's (task, split) table: in `folder` when one is given, else the model's shipped one."""
    if folder is not None:
        return table_file(folder, task, split)
    return shipped_table_path(model, task, split)


def has_table(model: str, task: str, split: str, folder: str | Path | None = None) -> bool:
    """Whether that table file exists (False for a model that has no zoo folder)."""
    try:
        return table_path(model, task, split, folder).is_file()
    except Exception:
        return False


def tasks_in(folder: str | Path, split: str) -> list[str]:
    """The tasks with a `split` table in `folder`: the toy tasks in their order, then others alphabetically."""
    tail = f"-{split}{SUFFIX}"
    found = sorted(p.name[: -len(tail)] for p in Path(folder).glob(f"*{tail}"))
    order = {t: i for i, t in enumerate(TOY_TASKS)}
    return sorted(found, key=lambda t: (order.get(t, len(order)), t))


# ---------------------------------------------------------------------------------------------- queries
def metas(paths: Sequence[str | Path]) -> list[dict | None]:
    """Each table file's metadata, without loading its arrays (None for a file that cannot be read)."""
    from acd_env.tables import read_meta

    return [read_meta(p) for p in paths]


def has_atp_columns(meta: dict | None) -> bool:
    """Whether a table (its metadata) has the attribution-patching descriptor columns (`atp_*`)."""
    return meta is not None and any(n.startswith("atp_") for n in meta.get("descriptor_names", []))


def have_atp(paths: Sequence[str | Path]) -> bool:
    """Whether every table file has the attribution-patching columns."""
    return all(has_atp_columns(m) for m in metas(paths))


def have_circuit(paths: Sequence[str | Path]) -> bool:
    """Whether every table file holds circuit-track data."""
    return all(m is not None and bool(m.get("circuit")) for m in metas(paths))


def restrict_columns(table: Any, descriptor_names: Sequence[str], *, hint: str = "rebuild it") -> Any:
    """A copy of a CircuitTable showing only `descriptor_names` (in that order), as an env with those columns
    would show them, so that an agent fitted on it sees the same columns in the env."""
    names = list(table.meta["descriptor_names"])
    if names == list(descriptor_names):
        return table
    missing = [n for n in descriptor_names if n not in names]
    if missing:
        raise ACDError(f"table {table.meta.get('task')!r} lacks descriptor columns {missing}; {hint}")
    cols = [names.index(n) for n in descriptor_names]
    families = ("graph", "atp") if any(n.startswith("atp_") for n in descriptor_names) else ("graph",)
    meta = dict(table.meta, descriptor_names=list(descriptor_names), descriptors=list(families))
    cases = [replace(c, descriptors=c.descriptors[:, cols]) for c in table.cases]
    return replace(table, meta=meta, cases=cases)


def restrict_descriptors(table: Any, descriptors: Sequence[str]) -> Any:
    """The table as an env built with descriptor families `descriptors` shows it (`restrict_columns` by family)."""
    from acd_env.case import CaseSettings

    names = list(CaseSettings(descriptors=tuple(descriptors)).descriptor_names)
    hint = f"build it with --descriptors {','.join(descriptors)} or use descriptors=('graph',)"
    out = restrict_columns(table, names, hint=hint)
    if out is not table:
        out.meta["descriptors"] = list(descriptors)
    return out


def table_key(tables: Sequence[Any]) -> dict[str, Any]:
    """What anything learned from `tables` is specific to (e.g. a trained policy's sidecar): the weights, tasks,
    columns and measurement settings. Tables of different weights or settings → ACDError."""
    first = tables[0].meta
    for t in tables[1:]:
        for k in ("weights_hash", "descriptor_names", "n_candidates", "interventions"):
            if t.meta[k] != first[k]:
                raise ACDError(
                    f"fit() got tables with different {k}: {first[k]!r} vs {t.meta[k]!r}; "
                    "build them for the same model and settings"
                )
    tasks = sorted({task for t in tables for task in str(t.meta["task"]).split("+")})
    return {
        "weights_hash": first["weights_hash"],
        "tasks": tasks,
        "descriptor_names": list(first["descriptor_names"]),
        "n_candidates": int(first["n_candidates"]),
        "interventions": list(first["interventions"]),
        "steering_scale": float(first["steering_scale"]),
        "freeze_attention": bool(first["freeze_attention"]),
    }


def env_settings(table: Any) -> dict[str, Any]:
    """The env keyword arguments a table was built with (model, K, intervention types, steering scale,
    descriptor families, frozen attention): a replay env over it with these shows the table as built."""
    m = table.meta
    return dict(
        model=m["model"],
        n_candidates=m["n_candidates"],
        interventions=tuple(m["interventions"]),
        steering_scale=m["steering_scale"],
        descriptors=tuple(m["descriptors"]),
        freeze_attention=m["freeze_attention"],
    )


# ---------------------------------------------------------------------------------------------- loading
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
    from acd_env.tables import CircuitTable, load_table, merge_tables
    from acd_env.tasks import available_tasks

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
