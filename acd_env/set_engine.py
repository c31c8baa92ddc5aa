"""Set queries: many features intervened on *jointly*, many rows per forward pass (the circuit track's engine).

A row intervenes on a subset of a prompt's candidate features at once, setting each one to its row's value,
with `ReplacementModel.feature_intervention`'s semantics (circuit-tracer 0.5.0): the real model runs; at each
layer the transcoder is read on the *current* (already intervened) residual stream and
`(value - current activation) * W_dec[feature]` is added to the MLP output at the feature's position (a
cross-layer transcoder's feature: to the MLP output of its layer and of every later layer), so
upstream interventions move downstream readings and the transcoder's error is kept. Positions circuit-tracer
zeroes (BOS) read as 0. `freeze_attention=True` replays the clean attention patterns.

`keep(C)` (the complement of C intervened) and `ablate(C)` (C intervened) are both rows of this kind; which
features a row touches is a boolean mask over the candidates. Only the positions that hold candidates are
encoded, so a row costs about one forward pass. With `grad=True` the values may carry gradients (integrated
gradients); the ReplacementModel's permanent stop-gradient hooks are then set aside, as for AtP.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

SET_CHUNK = 128  # rows per forward pass


class SetOutcome(NamedTuple):
    """Per row: KL(clean ‖ row) of the last-position next-token distribution (nats) and the row's logit
    difference m = logit(answer) − logit(counterfactual answer) (the answer logit alone without one)."""

    kl: np.ndarray
    m: np.ndarray


def logit_difference(logits: torch.Tensor, answer: int, cf_answer: int) -> torch.Tensor:
    """m of last-position logits (..., d_vocab); `cf_answer` < 0 (or equal to `answer`): the answer logit."""
    z = logits.double()
    out = z[..., answer]
    if cf_answer >= 0 and cf_answer != answer:
        out = out - z[..., cf_answer]
    return out


def kl_from_logits(clean_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ rows): clean (d_vocab,), rows (B, d_vocab) → (B,) float64, clamped at 0."""
    clean_lp = clean_logits.double().log_softmax(-1)
    lp = logits.double().log_softmax(-1)
    return (clean_lp.exp() * (clean_lp - lp)).sum(-1).clamp(min=0.0)


def outcome(clean_logits: torch.Tensor, logits: torch.Tensor, answer: int, cf_answer: int) -> SetOutcome:
    kl = kl_from_logits(clean_logits, logits)
    m = logit_difference(logits, answer, cf_answer)
    out = SetOutcome(kl.cpu().numpy(), m.cpu().numpy())
    if not (np.isfinite(out.kl).all() and np.isfinite(out.m).all()):
        raise FloatingPointError("a set query gave a non-finite KL or logit difference")
    return out


def run_sets(
    model: Any,
    tokens: torch.Tensor,
    features: np.ndarray | torch.Tensor,
    values: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    *,
    freeze_attention: bool = False,
    chunk: int = SET_CHUNK,
    grad: bool = False,
) -> torch.Tensor:
    """Last-position logits (B, d_vocab) of B rows, each intervening jointly on the features its mask selects.

    Args:
        model: a circuit-tracer ReplacementModel (TransformerLens backend; single-layer or cross-layer
            transcoders).
        tokens: (n_pos,) token ids with BOS.
        features: (n, 3) [layer, pos, feature] of the candidates (distinct).
        values: (n,) the value each candidate is set to when a row intervenes on it, or (B, n) per row.
        masks: (B, n) bool, True where the row intervenes on that candidate.
        freeze_attention: replay the clean attention patterns.
        grad: let gradients flow into `values` (no chunking; stop-gradient hooks set aside).
    """
    dev = tokens.device
    feats = torch.as_tensor(np.asarray(features), dtype=torch.long, device=dev).reshape(-1, 3)
    masks = torch.as_tensor(masks, dtype=torch.bool, device=dev)
    if masks.ndim != 2 or masks.shape[1] != len(feats):
        raise ValueError(f"masks must be (B, {len(feats)}), got {tuple(masks.shape)}")
    dtype = model.cfg.dtype
    values = values if torch.is_tensor(values) else torch.as_tensor(np.asarray(values), dtype=dtype)
    values = values.to(dev)
    if values.ndim == 1:
        values = values.unsqueeze(0).expand(len(masks), -1)
    if values.shape != masks.shape:
        raise ValueError(f"values must be ({len(feats)},) or {tuple(masks.shape)}, got {tuple(values.shape)}")
    frozen: dict[str, torch.Tensor] = {}
    if freeze_attention:
        names = {f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)}
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens.unsqueeze(0), names_filter=lambda n: n in names)
        frozen = {n: cache[n] for n in names}
    plan = _LayerPlan(model, tokens, feats)
    if grad:
        from acd_env.attribution.atp import plain_forward

        # without the permanent hooks, `feature_output_hook` (a hook point inside one of them) never fires
        with torch.enable_grad(), plain_forward(model):
            return _run_chunk(model, tokens, plan, values, masks, frozen, model.original_feature_output_hook)
    with torch.no_grad():
        parts = [
            _run_chunk(
                model,
                tokens,
                plan,
                values[i : i + chunk],
                masks[i : i + chunk],
                frozen,
                model.feature_output_hook,
            )
            for i in range(0, len(masks), chunk)
        ]
    return torch.cat(parts) if parts else torch.zeros(0, model.cfg.d_vocab, device=dev)


class _LayerPlan:
    """Per layer: which candidates live there, their (unique) positions and decoder vectors.

    A single-layer transcoder's decoder is (n_l, 1, d_model), written at the feature's own layer; a cross-layer
    transcoder's is (n_l, n_layers - layer, d_model), written at that layer and every later one (circuit-tracer's
    `_get_feature_intervention_hooks`). `targets` lists every layer that receives a write."""

    def __init__(self, model: Any, tokens: torch.Tensor, feats: torch.Tensor) -> None:
        zeroed = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        zeroed[model.zero_positions] = True
        self.layers: dict[int, tuple] = {}
        targets: set[int] = set()
        for layer in feats[:, 0].unique().tolist():
            idx = (feats[:, 0] == layer).nonzero(as_tuple=True)[0]
            pos = feats[idx, 1]
            uniq, inv = pos.unique(return_inverse=True)
            decoder = model.transcoders._get_decoder_vectors(int(layer), feats[idx, 2])
            if decoder.ndim == 2:  # single-layer transcoder: (n_l, d_model)
                decoder = decoder.unsqueeze(1)
            targets.update(range(int(layer), int(layer) + decoder.shape[1]))
            self.layers[int(layer)] = (idx, pos, uniq, inv, feats[idx, 2], zeroed[pos], decoder)
        self.targets = sorted(targets)


def _run_chunk(
    model: Any,
    tokens: torch.Tensor,
    plan: _LayerPlan,
    values: torch.Tensor,
    masks: torch.Tensor,
    frozen: dict[str, torch.Tensor],
    output_hook: str,
) -> torch.Tensor:
    b = len(masks)
    pending: dict[int, torch.Tensor] = {}

    def read(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        idx, pos, uniq, inv, fids, zeroed, decoder = plan.layers[layer]
        enc = model.transcoders.encode_layer(acts[:, uniq], layer)  # (b, n_uniq, d_tc)
        current = enc[:, inv, fids]  # (b, n_l): each candidate's reading at its position
        current = torch.where(zeroed, torch.zeros_like(current), current)
        delta = torch.where(masks[:, idx], values[:, idx].to(current.dtype) - current, 0.0)
        for k in range(
            decoder.shape[1]
        ):  # a cross-layer transcoder's feature writes to every later layer too
            add = pending.get(layer + k)
            if add is None:
                add = torch.zeros(b, acts.shape[1], decoder.shape[-1], dtype=acts.dtype, device=acts.device)
                pending[layer + k] = add
            add.index_add_(1, pos, delta.unsqueeze(-1) * decoder[:, k].unsqueeze(0))
        return acts

    def write(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        add = pending.pop(layer, None)
        return acts if add is None else acts + add

    def freeze(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
        return frozen[hook.name].expand_as(pattern)

    hooks = [(name, freeze) for name in frozen]
    for layer in plan.layers:
        hooks.append((f"blocks.{layer}.{model.feature_input_hook}", _bind(read, layer)))
    for layer in plan.targets:
        hooks.append((f"blocks.{layer}.{output_hook}", _bind(write, layer)))
    with model.hooks(fwd_hooks=hooks):
        return model(tokens.unsqueeze(0).expand(b, -1))[:, -1]


def _bind(fn: Any, layer: int) -> Any:
    return lambda acts, hook: fn(acts, hook, layer)
