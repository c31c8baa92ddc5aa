"""Build circuit tables with the live backend's batched engine (`acd tables build`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acd_env.backends import LiveBackend
from acd_env.case import CaseSettings
from acd_env.discretise import BIN_EDGES
from acd_env.tables import CircuitTable, build_table, make_meta, save_table
from acd_env.tasks import TOY_TASKS, load_task


def build_task_table(
    model: Any,
    task: str,
    split: str,
    settings: CaseSettings,
    *,
    n: int | None = None,
    progress: bool = False,
) -> CircuitTable:
    """Measure every (candidate, type) of a task split's prompts; `model` is a name or a ReplacementModel."""
    from acd_env.models import load_model, model_info

    loaded = load_model(model)
    info = model_info(loaded)
    prompts = load_task(task, model=loaded, split=split, n=n)
    reference = load_task(task, split="train") if task in TOY_TASKS else None
    backend = LiveBackend(loaded, prompts, settings, reference_prompts=reference)
    meta = make_meta(
        info.name, info.weights_hash, str(task), split, settings, {k: list(v) for k, v in BIN_EDGES.items()}
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts), desc=f"{info.name} {task}/{split}", unit="prompt")

    def tick(done: int, total: int) -> None:
        if bar is not None:
            bar.update(1)

    try:
        return build_table(backend, meta, progress=tick)
    finally:
        if bar is not None:
            bar.close()


def build_table_file(
    model: Any, task: str, split: str, out: str | Path, settings: CaseSettings, **kw: Any
) -> Path:
    return save_table(build_task_table(model, task, split, settings, **kw), out)
