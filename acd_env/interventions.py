"""The three single-feature interventions and a batched engine with `feature_intervention`'s semantics.

Semantics (circuit-tracer 0.5.0, `ReplacementModel.feature_intervention`): the real model runs; at the
intervened layer `(value - current activation) * W_dec[feature]` is added to the MLP output at the
intervened position, so the transcoder's error is kept. `freeze_attention=True` replays the clean attention
patterns. The engine runs many single-feature interventions in a few forward passes (batch axis =
interventions) and reads every later layer's transcoder activations on the way, so each row also yields how
much later-layer features moved. A row only differs from the clean run at and after its position and layer,
so each pass runs only that suffix, on the clean residual stream and the clean keys and values of the
earlier positions, and unembeds only the last position. It is tested against `feature_intervention` one row
at a time (≤ 1e-5), single-layer and cross-layer transcoders alike.
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
    """Run each row as its own single-feature intervention, batched.

    A row intervening at (layer L, position p) leaves every position before p, and every layer before L, as
    in the clean run (attention is causal). Rows are grouped by where they start (`plan_groups`); a group
    runs only positions ≥ its start, from its first layer on, starting from the clean residual stream and
    attending to the clean keys and values of the earlier positions (TransformerLens's key-value cache), and
    only the last position is unembedded. A forward pass holds at most `chunk` × n_pos row-positions.

    Args:
        model: a circuit-tracer ReplacementModel (TransformerLens backend).
        tokens: (n_pos,) token ids with BOS.
        rows: interventions (layer, pos, feature, value).
        clean_acts: (n_layers, n_pos, d_tc) clean activations, from `clean_run`.
        freeze_attention: replay the clean attention patterns (circuit-tracer's default); False lets
            attention respond to the intervention.
    """
    dev = tokens.device
    n_pos, n_layers = int(tokens.shape[0]), int(model.cfg.n_layers)
    logits = torch.empty(len(rows), int(model.cfg.d_vocab), dtype=clean_acts.dtype, device=dev)
    diff_sq = torch.zeros(len(rows), device=dev)
    ref_sq = torch.zeros(len(rows), device=dev)
    affected = torch.zeros(len(rows), dtype=torch.long, device=dev)
    if not rows:
        return BatchResult(logits, diff_sq, ref_sq, affected)
    clean = _clean_pass(model, tokens, freeze_attention)
    if clean.kv is None:  # a positional scheme the suffix path does not cover: whole sequence, every layer
        groups = [(0, 0, list(range(len(rows))))]
    else:
        groups = plan_groups([(r.pos, r.layer) for r in rows], n_pos, n_layers)
    budget = max(1, chunk) * n_pos
    for start, first_layer, members in groups:
        per_pass = max(1, budget // (n_pos - start))
        for i in range(0, len(members), per_pass):
            part = members[i : i + per_pass]
            res = _run_suffix(model, clean, [rows[j] for j in part], clean_acts, start, first_layer)
            idx = torch.tensor(part, device=dev)
            for target, value in zip((logits, diff_sq, ref_sq, affected), res, strict=True):
                target[idx] = value.to(target.dtype)
    return BatchResult(logits, diff_sq, ref_sq, affected)


# The fixed cost of one forward pass, in units of (row × position) of work per layer run. Only the grouping
# depends on it (never the numbers): larger values give fewer, longer passes.
PASS_OVERHEAD = 64


def plan_groups(
    starts: Sequence[tuple[int, int]], n_pos: int, n_layers: int
) -> list[tuple[int, int, list[int]]]:
    """Partition rows, given as (position, layer), into groups (start position, first layer, row indices).

    A group runs positions ≥ its start from its first layer on; every row in it has its position ≥ the
    start and its layer ≥ the first layer. Groups are contiguous runs of the sorted distinct positions,
    chosen by dynamic programming to minimise Σ (PASS_OVERHEAD + rows × positions run) × layers run.
    """
    if not starts:
        return []
    by_pos: dict[int, list[int]] = {}
    for i, (p, _) in enumerate(starts):
        by_pos.setdefault(p, []).append(i)
    positions = sorted(by_pos)
    min_layer = [min(starts[i][1] for i in by_pos[p]) for p in positions]
    m = len(positions)
    best = [0.0] * (m + 1)  # best[i]: cheapest cost of positions[i:]
    cut = [m] * (m + 1)
    for i in range(m - 1, -1, -1):
        best[i], n_rows, first = float("inf"), 0, n_layers
        for j in range(i, m):
            n_rows += len(by_pos[positions[j]])
            first = min(first, min_layer[j])
            cost = (PASS_OVERHEAD + n_rows * (n_pos - positions[i])) * (n_layers - first) + best[j + 1]
            if cost < best[i]:
                best[i], cut[i] = cost, j + 1
    groups, i = [], 0
    while i < m:
        j = cut[i]
        groups.append((positions[i], min(min_layer[i:j]), [r for p in positions[i:j] for r in by_pos[p]]))
        i = j
    return groups


class _Clean(NamedTuple):
    resid: list[torch.Tensor]  # per layer: the clean residual stream entering the block (n_pos, d_model)
    kv: (
        list[tuple[torch.Tensor, torch.Tensor]] | None
    )  # per layer: clean cached keys and values (1, n_pos, h, d)
    patterns: dict[int, torch.Tensor]  # layer -> clean attention pattern (1, heads, n_pos, n_pos) if frozen
    zeroed: torch.Tensor  # (n_pos,) bool: positions circuit-tracer reads as 0 (BOS)


def _clean_pass(model: Any, tokens: torch.Tensor, freeze_attention: bool) -> _Clean:
    """One clean forward pass recording what the suffix passes start from."""
    n_layers = int(model.cfg.n_layers)
    resid: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]
    patterns: dict[int, torch.Tensor] = {}

    def keep_resid(x: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        resid[layer] = x[0]
        return x

    def keep_pattern(x: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        patterns[layer] = x
        return x

    hooks = [(f"blocks.{layer}.hook_resid_pre", _bind(keep_resid, layer)) for layer in range(n_layers)]
    if freeze_attention:
        hooks += [
            (f"blocks.{layer}.attn.hook_pattern", _bind(keep_pattern, layer)) for layer in range(n_layers)
        ]
    cache = None
    if _suffix_supported(model):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        cache = TransformerLensKeyValueCache.init_cache(model.cfg, tokens.device, 1)
    with model.hooks(fwd_hooks=hooks):
        model(tokens.unsqueeze(0), past_kv_cache=cache)
    kv = None if cache is None else [(e.past_keys, e.past_values) for e in cache.entries]
    zeroed = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    zeroed[model.zero_positions] = True
    return _Clean(resid, kv, patterns, zeroed)


def _suffix_supported(model: Any) -> bool:
    """Positions attend through TransformerLens's key-value cache exactly as in a full pass (causal
    attention; learned absolute or rotary positions, which start at the cache's length)."""
    cfg = model.cfg
    return cfg.attention_dir == "causal" and cfg.positional_embedding_type in ("standard", "rotary")


def _prefix_cache(clean: _Clean, start: int, b: int) -> Any:
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

    assert clean.kv is not None
    entries = [
        Entry(k[:, :start].expand(b, -1, -1, -1), v[:, :start].expand(b, -1, -1, -1), frozen=True)
        for k, v in clean.kv
    ]
    mask = torch.ones(b, start, dtype=torch.int, device=clean.zeroed.device)
    return TransformerLensKeyValueCache(entries, mask, frozen=True)


def _run_suffix(
    model: Any,
    clean: _Clean,
    part: Sequence[Intervention],
    clean_acts: torch.Tensor,
    start: int,
    first_layer: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows `part` (positions ≥ start, layers ≥ first_layer) over positions start.. and layers first_layer..;
    returns last-position logits and the downstream statistics, as in BatchResult."""
    dev = clean_acts.device
    n_layers = int(model.cfg.n_layers)
    b = len(part)
    local = torch.tensor([r.pos - start for r in part], device=dev)  # position within the suffix
    feats = torch.tensor([r.feature for r in part], device=dev)
    vals = torch.tensor([r.value for r in part], dtype=clean_acts.dtype, device=dev)
    by_layer = [r.layer for r in part]
    upstream = {  # rows whose intervention can move this layer's features
        layer: torch.tensor([i for i, lyr in enumerate(by_layer) if lyr < layer], device=dev)
        for layer in range(first_layer + 1, n_layers)
    }
    at = {layer: torch.tensor([i for i, lyr in enumerate(by_layer) if lyr == layer], device=dev)
          for layer in set(by_layer)}  # fmt: skip
    zeroed = clean.zeroed[start:]
    diff_sq = torch.zeros(b, device=dev)
    ref_sq = torch.zeros(b, device=dev)
    affected = torch.zeros(b, dtype=torch.long, device=dev)
    clean_sq = clean_acts.pow(2).sum((1, 2))  # (n_layers,): over every position, as feature_intervention
    pending: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def read(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        up = upstream.get(layer)
        if up is not None and len(up):
            tc = model.transcoders.encode_layer(acts[up], layer)  # (n_up, n_suffix, d_tc)
            tc[:, zeroed] = 0
            diff = tc - clean_acts[layer, start:].unsqueeze(0)
            diff_sq[up] += diff.pow(2).sum((1, 2))
            ref_sq[up] += clean_sq[layer]
            affected[up] += (diff.abs() > AFFECT_THRESHOLD).sum((1, 2))
        idx = at.get(layer)
        if idx is not None:
            reading = model.transcoders.encode_layer(acts[idx, local[idx]], layer)  # (n_idx, d_tc)
            current = reading[torch.arange(len(idx), device=dev), feats[idx]]
            current = torch.where(zeroed[local[idx]], 0.0, current)  # circuit-tracer reads BOS as 0
            decoder = model.transcoders._get_decoder_vectors(layer, feats[idx])
            scale = vals[idx] - current
            if decoder.ndim == 2:  # single-layer transcoder: (n_idx, d_model), written at this layer
                pending.setdefault(layer, []).append((idx, scale.unsqueeze(-1) * decoder))
            else:  # cross-layer transcoder: (n_idx, n_layers - layer, d_model), written at every later layer
                delta = scale[:, None, None] * decoder
                for k in range(delta.shape[1]):
                    pending.setdefault(layer + k, []).append((idx, delta[:, k]))
        return acts

    def write(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        writes = pending.pop(layer, None)
        if not writes:
            return acts
        acts = acts.clone()
        for idx, delta in writes:
            acts[idx, local[idx]] += delta
        return acts

    def freeze(pattern: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        return clean.patterns[layer][:, :, start:].expand_as(pattern)

    hooks = []
    for layer in range(first_layer, n_layers):
        if layer in clean.patterns:
            hooks.append((f"blocks.{layer}.attn.hook_pattern", _bind(freeze, layer)))
        hooks.append((f"blocks.{layer}.{model.feature_input_hook}", _bind(read, layer)))
        hooks.append((f"blocks.{layer}.{model.feature_output_hook}", _bind(write, layer)))
    resid = clean.resid[first_layer][start:].unsqueeze(0).expand(b, -1, -1)
    cache = _prefix_cache(clean, start, b) if start > 0 else None
    with model.hooks(fwd_hooks=hooks):
        resid = model(resid, start_at_layer=first_layer, stop_at_layer=n_layers, past_kv_cache=cache)
    return _unembed_last(model, resid), diff_sq, ref_sq, affected


def _unembed_last(model: Any, resid: torch.Tensor) -> torch.Tensor:
    """The logits of the last position only, as HookedTransformer.forward computes them (final norm,
    unembedding, output soft-capping)."""
    x = resid[:, -1:]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = model.unembed(x)[:, 0]
    cap = model.cfg.output_logits_soft_cap
    if cap > 0.0:
        logits = cap * torch.tanh(logits / cap)
    return logits


def _bind(fn: Any, layer: int) -> Any:
    return lambda acts, hook: fn(acts, hook, layer)
