"""Where measurements come from: `LiveBackend` runs circuit-tracer; `ReplayBackend` reads a circuit table.

Both give, for prompt i, its `PromptCase`, the measurements of one (candidate, type) and the privileged
full (K, n_types) table (`oracle`). They hold the same numbers for the same prompt and settings.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from acd_env.case import CaseSettings, CleanState, PromptCase, build_case, mean_activations
from acd_env.interventions import BatchResult, Intervention, downstream_stats, run_batch
from acd_env.measurements import MEASUREMENT_NAMES, Measurements, measure
from acd_env.tables import CircuitTable
from acd_env.tasks.prompt import Prompt


class Effects(NamedTuple):
    """Measurements of every (candidate, type), each (K, n_types); padding rows hold zeros."""

    kl: np.ndarray
    logit_diff: np.ndarray
    downstream: np.ndarray
    n_affected: np.ndarray
    top1_changed: np.ndarray
    valid: np.ndarray  # (K,) bool


class Step(NamedTuple):
    kl: float
    logit_diff: float
    downstream: float
    n_affected: int
    top1_changed: bool


CASE_CACHE_SIZE = 512
# Attributed prompts shared by every live backend of the process (an attribution graph is the expensive
# part of a prompt), per model object, keyed by the prompt and the settings; oldest out first.
_CASE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class LiveBackend:
    """Runs the model: attribution per prompt (cached), `feature_intervention` per step, batched oracle."""

    def __init__(
        self,
        model: Any,
        prompts: Sequence[Prompt],
        settings: CaseSettings,
        *,
        reference_prompts: Sequence[Prompt] | None = None,
    ) -> None:
        self.model = model
        self.prompts = list(prompts)
        self.settings = settings
        self._reference = list(reference_prompts) if reference_prompts else self.prompts
        self._cases: dict[int, tuple[PromptCase, CleanState]] = {}
        self._oracle: dict[int, Effects] = {}
        self._means: torch.Tensor | None = None

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    def _fallback_means(self) -> torch.Tensor:
        if self._means is None:
            self._means = mean_activations(self.model, self._reference)
        return self._means

    def _key(self, i: int) -> tuple:
        prompt = self.prompts[i]
        reference = None if prompt.counterfactual else tuple(p.id for p in self._reference)
        return (prompt, self.settings, reference)

    def _entry(self, i: int) -> tuple[PromptCase, CleanState]:
        if i not in self._cases:
            prompt = self.prompts[i]
            key = self._key(i)
            cache = _CASE_CACHE.setdefault(self.model, {})
            cached = cache.get(key)
            if cached is None:
                means = self._fallback_means() if prompt.counterfactual is None else None
                case, clean, _ = build_case(self.model, prompt, self.settings, fallback_means=means)
                cached = cache[key] = (case, clean)
                while len(cache) > CASE_CACHE_SIZE:
                    cache.pop(next(iter(cache)))
            self._cases[i] = cached
        return self._cases[i]

    def case(self, i: int) -> PromptCase:
        return self._entry(i)[0]

    def forget(self, i: int) -> None:
        """Drop prompt i from this backend and from the process-wide cache (a table build measures each prompt
        once; on a large model the cached clean activations of hundreds of prompts would not fit)."""
        self._cases.pop(i, None)
        self._oracle.pop(i, None)
        _CASE_CACHE.get(self.model, {}).pop(self._key(i), None)

    def step(self, i: int, k: int, t: int) -> Step:
        case, clean = self._entry(i)
        layer, pos, feature = (int(x) for x in case.features[k])
        value = float(case.values[k, t])
        logits, acts = self.model.feature_intervention(
            clean.tokens, [(layer, pos, feature, value)], freeze_attention=self.settings.freeze_attention
        )
        sq, ref, n = downstream_stats(acts, clean.activations, layer)
        one = BatchResult(logits[0, -1:], torch.tensor([sq]), torch.tensor([ref]), torch.tensor([n]))
        m = _measured(case, clean, one)
        return Step(*(getattr(m, name)[0].item() for name in MEASUREMENT_NAMES))

    def oracle(self, i: int) -> Effects:
        if i not in self._oracle:
            case, clean = self._entry(i)
            n_types = len(self.settings.interventions)
            rows = [
                Intervention._make([*(int(x) for x in case.features[k]), float(case.values[k, t])])
                for k in range(case.n_valid)
                for t in range(n_types)
            ]
            result = run_batch(
                self.model,
                clean.tokens,
                rows,
                clean.activations,
                freeze_attention=self.settings.freeze_attention,
            )
            self._oracle[i] = _pad_effects(_measured(case, clean, result), case, n_types)
        return self._oracle[i]


def _measured(case: PromptCase, clean: CleanState, result: BatchResult) -> Measurements:
    """The measurements of engine rows (or of one feature_intervention call) against the clean run."""
    cf_answer = case.cf_answer_id if case.cf_answer_id >= 0 else None
    return measure(
        clean.logits,
        result.logits,
        result.downstream_sq,
        result.downstream_ref_sq,
        result.n_affected,
        case.answer_id,
        cf_answer,
    )


def _pad_effects(m: Measurements, case: PromptCase, n_types: int) -> Effects:
    k_pad = len(case.features)
    fields = {}
    for name in MEASUREMENT_NAMES:
        values = getattr(m, name).reshape(case.n_valid, n_types)
        full = np.zeros((k_pad, n_types), values.dtype)
        full[: case.n_valid] = values
        fields[name] = full
    return Effects(**fields, valid=case.valid)


class ReplayBackend:
    """Answers from a circuit table: no model, microseconds per step."""

    def __init__(self, table: CircuitTable, settings: CaseSettings) -> None:
        self.table = table
        self.settings = settings
        ts = settings.interventions
        table_types = list(table.meta["interventions"])
        type_idx = [table_types.index(t) for t in ts]
        k = settings.n_candidates
        self._m = {
            n: np.ascontiguousarray(table.measurements[n][:, :k][:, :, type_idx]) for n in MEASUREMENT_NAMES
        }
        self.prompts = [c.prompt for c in table.cases]
        self._cases = [
            _slice_case(c, k, type_idx, table.meta["descriptor_names"], settings) for c in table.cases
        ]

    @property
    def n_prompts(self) -> int:
        return len(self._cases)

    def case(self, i: int) -> PromptCase:
        return self._cases[i]

    def step(self, i: int, k: int, t: int) -> Step:
        m = self._m
        return Step(
            float(m["kl"][i, k, t]),
            float(m["logit_diff"][i, k, t]),
            float(m["downstream"][i, k, t]),
            int(m["n_affected"][i, k, t]),
            bool(m["top1_changed"][i, k, t]),
        )

    def oracle(self, i: int) -> Effects:
        return Effects(**{n: self._m[n][i] for n in MEASUREMENT_NAMES}, valid=self._cases[i].valid)


def _slice_case(
    case: PromptCase, k: int, type_idx: list[int], table_names: list[str], settings: CaseSettings
):
    from dataclasses import replace

    cols = [table_names.index(n) for n in settings.descriptor_names]
    return replace(
        case,
        features=case.features[:k],
        n_valid=min(case.n_valid, k),
        clean_act=case.clean_act[:k],
        values=case.values[:k][:, type_idx],
        descriptors=case.descriptors[:k][:, cols],
    )
