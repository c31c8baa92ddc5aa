"""The three single-feature interventions and a batched engine with `feature_intervention`'s semantics.

Semantics (circuit-tracer 0.5.0, `ReplacementModel.feature_intervention`): the real model runs; at the
intervened layer `(value - current activation) * W_dec[feature]` is added to the MLP output at the
intervened position, so the transcoder's error is kept. `freeze_attention=True` replays the clean attention
patterns. The engine runs many single-feature interventions in one forward pass (batch axis = interventions)
and reads every layer's transcoder activations on the way, so each row also yields how much later-layer
features moved. It is tested against `feature_intervention` one row at a time (≤ 1e-5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

INTERVENTION_TYPES = ("ablation", "patching", "steering")
AFFECT_THRESHOLD = 0.1  # a later feature is "affected" when its activation moves by more than this


class Intervention(NamedTuple):
    layer: int
    pos: int
    feature: int
    value: float


class BatchResult(NamedTuple):
    """Per row: last-position logits (B, d_vocab); Σ over later layers of the squared activation change (B,);
    Σ over later layers of the squared clean activations (B,); number of later features moved by more than
    `AFFECT_THRESHOLD` (B,)."""

    logits: torch.Tensor
    downstream_sq: torch.Tensor
    downstream_ref_sq: torch.Tensor
    n_affected: torch.Tensor


def intervention_value(kind: str, clean_act: float, cf_act: float, steering_scale: float) -> float:
    """The value a feature is set to: ablation 0, patching its counterfactual activation, steering scale×clean."""
    if kind == "ablation":
        return 0.0
    if kind == "patching":
        return float(cf_act)
    if kind == "steering":
        return float(steering_scale) * float(clean_act)
    raise ValueError(f"unknown intervention {kind!r}; valid: {', '.join(INTERVENTION_TYPES)}")


def clean_run(model: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean logits (n_pos, d_vocab) and transcoder activations (n_layers, n_pos, d_transcoder)."""
    logits, acts = model.get_activations(tokens)
    return logits[0], acts


def downstream_stats(acts: torch.Tensor, clean_acts: torch.Tensor, layer: int) -> tuple[float, float, int]:
    """Squared change, squared clean norm and affected count over layers after `layer` for one run's
    activations (n_layers, n_pos, d_tc), as returned by `feature_intervention`."""
    diff = (acts[layer + 1 :] - clean_acts[layer + 1 :]).float()
    ref = clean_acts[layer + 1 :].float()
    return float(diff.pow(2).sum()), float(ref.pow(2).sum()), int((diff.abs() > AFFECT_THRESHOLD).sum())


@torch.no_grad()
def run_batch(
    model: Any,
    tokens: torch.Tensor,
    rows: Sequence[Intervention],
    clean_acts: torch.Tensor,
    *,
    freeze_attention: bool = False,
    chunk: int = 256,
) -> BatchResult:
    """Run each row as its own single-feature intervention, `chunk` rows per forward pass.

    Args:
        model: a circuit-tracer ReplacementModel (TransformerLens backend).
        tokens: (n_pos,) token ids with BOS.
        rows: interventions (layer, pos, feature, value).
        clean_acts: (n_layers, n_pos, d_tc) clean activations, from `clean_run`.
        freeze_attention: replay the clean attention patterns (circuit-tracer's default); False lets
            attention respond to the intervention.
    """
    n_layers = model.cfg.n_layers
    frozen: dict[str, torch.Tensor] = {}
    if freeze_attention:
        names = {f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)}
        _, cache = model.run_with_cache(tokens.unsqueeze(0), names_filter=lambda n: n in names)
        frozen = {n: cache[n] for n in names}
    parts = [
        _run_chunk(model, tokens, rows[i : i + chunk], clean_acts, frozen) for i in range(0, len(rows), chunk)
    ]
    return BatchResult(*(torch.cat(field) for field in zip(*parts, strict=True)))


def _run_chunk(
    model: Any,
    tokens: torch.Tensor,
    part: Sequence[Intervention],
    clean_acts: torch.Tensor,
    frozen: dict[str, torch.Tensor],
) -> BatchResult:
    dev = tokens.device
    b = len(part)
    layers = torch.tensor([r.layer for r in part], device=dev)
    poss = torch.tensor([r.pos for r in part], device=dev)
    feats = torch.tensor([r.feature for r in part], device=dev)
    vals = torch.tensor([r.value for r in part], dtype=clean_acts.dtype, device=dev)
    zero = model.zero_positions
    pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    diff_sq = torch.zeros(b, device=dev)
    ref_sq = torch.zeros(b, device=dev)
    affected = torch.zeros(b, dtype=torch.long, device=dev)

    clean_sq = clean_acts.pow(2).sum((1, 2))  # (n_layers,)
    zeroed = torch.zeros(tokens.shape[0], dtype=torch.bool, device=dev)
    zeroed[zero] = True

    def read(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        upstream = (layers < layer).nonzero(as_tuple=True)[0]  # rows whose intervention can move this layer
        if len(upstream):
            tc = model.transcoders.encode_layer(acts[upstream], layer)  # (n_up, n_pos, d_tc)
            tc[:, zero] = 0
            diff = tc - clean_acts[layer].unsqueeze(0)
            diff_sq[upstream] += diff.pow(2).sum((1, 2))
            ref_sq[upstream] += clean_sq[layer]
            affected[upstream] += (diff.abs() > AFFECT_THRESHOLD).sum((1, 2))
        idx = (layers == layer).nonzero(as_tuple=True)[0]
        if len(idx):
            at = model.transcoders.encode_layer(acts[idx, poss[idx]], layer)  # (n_idx, d_tc): current reading
            current = at[torch.arange(len(idx), device=dev), feats[idx]]
            current = torch.where(zeroed[poss[idx]], 0.0, current)  # circuit-tracer reads BOS as 0
            decoder = model.transcoders._get_decoder_vectors(layer, feats[idx])
            pending[layer] = (idx, (vals[idx] - current).unsqueeze(-1) * decoder)
        return acts

    def write(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        if layer not in pending:
            return acts
        idx, delta = pending.pop(layer)
        acts = acts.clone()
        acts[idx, poss[idx]] += delta
        return acts

    def freeze(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
        return frozen[hook.name].expand_as(pattern)

    hooks = [(name, freeze) for name in frozen]
    for layer in range(model.cfg.n_layers):
        hooks.append((f"blocks.{layer}.{model.feature_input_hook}", _bind(read, layer)))
        hooks.append((f"blocks.{layer}.{model.feature_output_hook}", _bind(write, layer)))
    with model.hooks(fwd_hooks=hooks):
        logits = model(tokens.unsqueeze(0).expand(b, -1))[:, -1]
    return BatchResult(logits, diff_sq, ref_sq, affected)


def _bind(fn: Any, layer: int) -> Any:
    return lambda acts, hook: fn(acts, hook, layer)
