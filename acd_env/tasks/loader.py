"""`load_task`: shipped suites, custom prompt lists and JSONL files, with validation against a tokenizer."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from acd_env.errors import ACDError, check_positive_int, unknown
from acd_env.tasks.grammar import SPLITS, TOY_TASKS, generate
from acd_env.tasks.prompt import Prompt
from acd_env.tasks.seed_prompts import SEED_SUITES

DEFAULT_SIZES = {"train": 60, "test": 40}
_SPLIT_SEEDS = {"train": 1_000, "test": 2_000}


def available_tasks() -> list[str]:
    return [*TOY_TASKS, *SEED_SUITES]


def _toy_suite(task: str, split: str, n: int) -> list[Prompt]:
    rng = random.Random(_SPLIT_SEEDS[split] + 97 * TOY_TASKS.index(task))
    seen: set[str] = set()
    out: list[Prompt] = []
    for _ in range(50 * n):  # the counting space is small: stop when it is exhausted
        inst = generate(task, rng, split)
        clean = " ".join(inst.words)
        if clean in seen:
            continue
        seen.add(clean)
        out.append(
            Prompt(
                id=f"{task}/{split}/{len(out):03d}",
                task=task,
                clean=clean,
                answer=inst.answer,
                counterfactual=" ".join(inst.cf_words),
                counterfactual_answer=inst.cf_answer,
            )
        )
        if len(out) == n:
            break
    return out


def _seed_suite(task: str, split: str) -> list[Prompt]:
    # Seed suites are tiny evaluation sets; both splits hold all of them (nothing is fitted on them).
    return [
        Prompt(
            id=f"{task}/{i:03d}", task=task, clean=c, answer=a, counterfactual=cf, counterfactual_answer=cfa
        )
        for i, (c, a, cf, cfa) in enumerate(SEED_SUITES[task])
    ]


def _prompt_from_item(item: Any, index: int, source: str) -> Prompt:
    if isinstance(item, Prompt):
        return item
    if isinstance(item, str):
        return Prompt(id=f"custom/{index:03d}", task="custom", clean=item, answer=None)
    if isinstance(item, dict):
        clean = item.get("clean", item.get("prompt"))
        if not isinstance(clean, str):
            raise ACDError(
                f"{source} item {index} has no 'clean' (or 'prompt') string; accepted keys: clean|prompt, "
                f"answer, counterfactual, counterfactual_answer, id, task"
            )
        for key in ("answer", "counterfactual", "counterfactual_answer"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ACDError(
                    f"{source} item {index}: {key!r} must be a string (or absent), got "
                    f"{type(item[key]).__name__} {item[key]!r}"
                )
        return Prompt(
            id=str(item.get("id", f"custom/{index:03d}")),
            task=str(item.get("task", "custom")),
            clean=clean,
            answer=item.get("answer"),
            counterfactual=item.get("counterfactual"),
            counterfactual_answer=item.get("counterfactual_answer"),
        )
    raise ACDError(f"{source} item {index} is a {type(item).__name__}; accepted: a string or a dict")


def prompts_from(spec: str | Path | Iterable[Any]) -> list[Prompt]:
    """Custom prompts from a list (strings, dicts or `Prompt`s) or a JSONL file path (one dict per line)."""
    if isinstance(spec, str | Path):
        path = Path(spec)
        if not path.is_file():
            hint = "" if str(spec).endswith(".jsonl") else f"; for one prompt pass a list: [{str(spec)!r}]"
            raise ACDError(
                f"prompts file {str(path)!r} does not exist (expected a JSONL file, one dict per line){hint}"
            )
        items = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ACDError(f"{path}:{n} is not valid JSON ({e.msg})") from None
        prompts = [_prompt_from_item(x, i, str(path)) for i, x in enumerate(items)]
    elif isinstance(spec, Iterable) and not isinstance(spec, bytes | dict):
        prompts = [_prompt_from_item(x, i, "prompts") for i, x in enumerate(spec)]
    else:
        raise ACDError(
            f"prompts must be a list of prompts (strings or dicts) or a JSONL path, got {type(spec).__name__}"
        )
    if not prompts:
        raise ACDError("the prompt list is empty; give at least one prompt")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ACDError("prompt ids must be unique")
    return prompts


def load_task(
    name: str | Path | Sequence[Any],
    model: Any = None,
    split: str = "train",
    *,
    n: int | None = None,
) -> list[Prompt]:
    """Prompts of a suite.

    Args:
        name: a shipped suite (`available_tasks()`), a JSONL path, or a list of custom prompts.
        model: a model name or `ReplacementModel`; when given, every prompt is checked against its tokenizer
            (known tokens, non-empty, fits the context, counterfactual of the same length).
        split: "train" or "test" (disjoint key words; see `acd_env.tasks.grammar`).
        n: number of prompts (default: 60 train, 40 test; counting has fewer distinct prompts).
    """
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    if n is not None:
        n = check_positive_int("n", n)
    if isinstance(name, str) and name in TOY_TASKS:
        prompts = _toy_suite(name, split, n or DEFAULT_SIZES[split])
    elif isinstance(name, str) and name in SEED_SUITES:
        prompts = _seed_suite(name, split)[: n or None]
    elif isinstance(name, Path) or (isinstance(name, str) and (name.endswith(".jsonl") or "/" in name)):
        prompts = prompts_from(name)
    elif isinstance(name, str):
        raise unknown("task", name, available_tasks())
    elif isinstance(name, Iterable) and not isinstance(name, bytes | dict):
        prompts = prompts_from(name)
    else:
        raise ACDError(
            f"task must be a suite name ({', '.join(available_tasks())}), a JSONL path or a list of prompts, "
            f"got {type(name).__name__} {name!r}"
        )
    if model is not None:
        from acd_env.tasks.validate import validate_prompts

        validate_prompts(prompts, model)
    return prompts
