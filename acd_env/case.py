"""Everything the environment knows about one prompt before any intervention: a `PromptCase`.

Built once per (model, prompt, settings) by the live backend (attribution graph, candidates, descriptors,
intervention values) and stored verbatim in circuit tables, so live and replay episodes see identical data.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from acd_env.attribution.descriptors import descriptor_names, graph_descriptors
from acd_env.attribution.graph import GraphView, attribute_graph, node_influence, top_candidates, view
from acd_env.errors import ACDError, check_positive_int, unknown
from acd_env.interventions import INTERVENTION_TYPES, clean_run, intervention_value
from acd_env.tasks.prompt import Prompt
from acd_env.tasks.validate import validate_prompt

N_TOP_TOKENS = 10
PATCH_SOURCES = ("counterfactual", "mean_activation")


@dataclass(frozen=True)
class CaseSettings:
    """The settings a PromptCase (and a circuit table) depends on."""

    n_candidates: int = 64
    interventions: tuple[str, ...] = ("ablation", "patching", "steering")
    steering_scale: float = 4.0
    descriptors: tuple[str, ...] = ("graph",)
    freeze_attention: bool = False

    def __post_init__(self) -> None:
        """Validate (bad settings → ACDError naming the value and what is accepted) and normalise to tuples."""
        set_ = object.__setattr__  # frozen dataclass
        set_(self, "n_candidates", check_positive_int("n_candidates", self.n_candidates))
        interventions = self.interventions
        if isinstance(interventions, str):
            interventions = (interventions,)
        if interventions is None or not isinstance(interventions, Sequence):
            raise ACDError(
                f"interventions must be a list of types from {INTERVENTION_TYPES}, got {self.interventions!r}"
            )
        interventions = tuple(interventions)
        for kind in interventions:
            if kind not in INTERVENTION_TYPES:
                raise unknown("intervention", kind, INTERVENTION_TYPES)
        if not interventions or len(set(interventions)) != len(interventions):
            raise ACDError(
                f"interventions must be a non-empty list of distinct types from {INTERVENTION_TYPES}, "
                f"got {interventions!r}"
            )
        set_(self, "interventions", interventions)
        descriptors = (self.descriptors,) if isinstance(self.descriptors, str) else self.descriptors
        descriptors = tuple(descriptors) if isinstance(descriptors, Sequence) else descriptors
        if descriptors not in (("graph",), ("graph", "atp")):
            raise ACDError(f"descriptors must be ('graph',) or ('graph', 'atp'), got {self.descriptors!r}")
        set_(self, "descriptors", descriptors)
        scale = self.steering_scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
            raise ACDError(f"steering_scale must be a finite number (e.g. 4.0), got {scale!r}")
        set_(self, "steering_scale", float(scale))

    @property
    def descriptor_names(self) -> tuple[str, ...]:
        return descriptor_names(self.descriptors)


@dataclass
class PromptCase:
    """One prompt, ready for an episode. Arrays are padded to K = n_candidates rows.

    features: (K, 3) int64 [layer, pos, feature], -1 in padding rows; n_valid: real candidates.
    clean_act: (K,) clean activation; values: (K, n_types) the value each intervention sets the feature to.
    descriptors: (K, F) float32 static descriptors (zeros in padding rows).
    patch_source: "counterfactual" or "mean_activation" (the documented fallback).
    answer_id / cf_answer_id: target tokens of logit_diff (cf_answer_id −1 when none).
    top_ids / top_probs: the clean next-token distribution's top tokens.
    """

    prompt: Prompt
    tokens: np.ndarray
    features: np.ndarray
    n_valid: int
    clean_act: np.ndarray
    values: np.ndarray
    descriptors: np.ndarray
    patch_source: str
    answer_id: int
    cf_answer_id: int
    top_ids: np.ndarray
    top_probs: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return np.arange(len(self.features)) < self.n_valid

    def feature_id(self, k: int) -> str:
        return self.feature_ids[k]

    @property
    def feature_ids(self) -> list[str]:
        """`L{layer}_P{pos}_F{idx}` of every candidate row ("" for padding), computed once."""
        ids = self.__dict__.get("_feature_ids")
        if ids is None:
            ids = [f"L{a}_P{b}_F{c}" if a >= 0 else "" for a, b, c in self.features.tolist()]
            self.__dict__["_feature_ids"] = ids
        return ids


@dataclass
class CleanState:
    """Live-only tensors of a prompt's clean run (not stored in tables)."""

    tokens: torch.Tensor
    logits: torch.Tensor  # (d_vocab,) last position
    activations: torch.Tensor  # (n_layers, n_pos, d_tc)


def tokenize(model: Any, prompt: Prompt) -> torch.Tensor:
    validate_prompt(prompt, model.tokenizer, int(model.cfg.n_ctx))
    return model.ensure_tokenized(prompt.clean)


def _token_id(model: Any, word: str | None) -> int:
    if word is None:
        return -1
    ids = model.tokenizer.encode(word, add_special_tokens=False)
    return int(ids[0])


@torch.no_grad()
def mean_activations(model: Any, prompts: Sequence[Prompt]) -> torch.Tensor:
    """(n_layers, d_tc) mean activation of every feature over the prompts' non-BOS positions."""
    total, count = None, 0
    for p in prompts:
        _, acts = clean_run(model, tokenize(model, p))
        acts = acts[:, 1:]
        total = acts.sum(1) if total is None else total + acts.sum(1)
        count += acts.shape[1]
    if total is None:
        raise ACDError("mean activations need at least one prompt")
    return total / max(count, 1)


def build_case(
    model: Any,
    prompt: Prompt,
    settings: CaseSettings,
    *,
    graph: Any | None = None,
    fallback_means: torch.Tensor | None = None,
) -> tuple[PromptCase, CleanState, GraphView]:
    """Attribute `prompt`, pick the top-K candidates by influence and compute their descriptors."""
    tokens = tokenize(model, prompt)
    logits, acts = clean_run(model, tokens)
    g = view(graph if graph is not None else attribute_graph(model, tokens))
    n_features = len(g.features)
    if n_features == 0:
        raise ACDError(
            f"prompt {prompt.id!r} has no active transcoder features, so there is nothing to intervene on; "
            "choose a prompt the model has features for (e.g. one of the shipped tasks' prompts)"
        )
    influence = node_influence(g)
    idx = top_candidates(influence, settings.n_candidates)
    feats = g.features[torch.as_tensor(idx)]
    layers, poss, fids = feats[:, 0], feats[:, 1], feats[:, 2]
    clean_act = g.activations[torch.as_tensor(idx)]
    if prompt.counterfactual is not None:
        cf_tokens = tokenize(model, Prompt(prompt.id, prompt.task, prompt.counterfactual, None))
        _, cf_acts = clean_run(model, cf_tokens)
        patch = cf_acts[layers, poss, fids].cpu().float()
        source = "counterfactual"
    else:
        if fallback_means is None:
            raise ACDError(
                f"prompt {prompt.id!r} has no counterfactual and no mean activations were given for the "
                "patching fallback"
            )
        patch = fallback_means[layers, fids].cpu().float()
        source = "mean_activation"
    decoder_norms = (
        torch.stack(
            [
                model.transcoders._get_decoder_vectors(int(lyr), fid.view(1))[0].norm()
                for lyr, fid in zip(layers, fids, strict=True)
            ]
        )
        .cpu()
        .float()
    )
    names = settings.descriptor_names
    k_pad, n_valid = settings.n_candidates, len(idx)
    desc = np.zeros((k_pad, len(names)), np.float32)
    n_layers = int(model.cfg.n_layers)
    graph_cols = graph_descriptors(g, idx, influence, decoder_norms, patch, settings.steering_scale, n_layers)
    desc[:n_valid, : graph_cols.shape[1]] = graph_cols
    if "atp" in settings.descriptors:
        from acd_env.attribution.atp import atp_descriptors

        start = graph_cols.shape[1]
        desc[:n_valid, start:] = atp_descriptors(
            model, tokens, feats, clean_act, patch, settings.steering_scale
        )
    features = np.full((k_pad, 3), -1, np.int64)
    features[:n_valid] = feats.numpy()
    cact = np.zeros(k_pad, np.float32)
    cact[:n_valid] = clean_act.numpy()
    values = np.zeros((k_pad, len(settings.interventions)), np.float32)
    for t, kind in enumerate(settings.interventions):
        for k in range(n_valid):
            values[k, t] = intervention_value(kind, float(cact[k]), float(patch[k]), settings.steering_scale)
    probs = logits[-1].double().softmax(-1)
    top = torch.argsort(probs, descending=True)[:N_TOP_TOKENS]
    answer = _token_id(model, prompt.answer) if prompt.answer is not None else int(top[0])
    case = PromptCase(
        prompt=prompt,
        tokens=tokens.cpu().numpy().astype(np.int64),
        features=features,
        n_valid=n_valid,
        clean_act=cact,
        values=values,
        descriptors=desc,
        patch_source=source,
        answer_id=answer,
        cf_answer_id=_token_id(model, prompt.counterfactual_answer),
        top_ids=top.cpu().numpy().astype(np.int64),
        top_probs=probs[top].float().cpu().numpy(),
    )
    return case, CleanState(tokens, logits[-1], acts), g
