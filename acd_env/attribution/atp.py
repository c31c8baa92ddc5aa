"""Attribution patching (AtP): a first-order estimate of each intervention's effect, no intervention run.

One batched forward + backward pass through the real model per prompt: every candidate k gets a scale
θ_k on its decoder contribution (θ = 1 is the clean run; the hook adds (θ_k − 1)·a_k·W_dec[k] at its layer
and position, exactly the intervention engine's hook, linearised). The batch holds one copy per output
token, so one backward pass yields the Jacobian J[v, k] = ∂ logit_v / ∂θ_k for the clean run's top tokens.
An intervention setting the feature to value x is θ_k = x / a_k, so its first-order logit change is
J[:, k]·(x/a_k − 1); the descriptor is log10 of the KL it implies over the top tokens (renormalised).

circuit-tracer's ReplacementModel permanently stops gradients at attention patterns, LayerNorm scales and
MLP outputs (what attribution graphs need). AtP here linearises the real model with attention, LayerNorm and
MLPs free, so those hooks are set aside for the duration of the pass and restored afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

N_TOP_TOKENS = 12  # the clean top tokens hold almost all of the next-token mass on the toy models
EPS = 1e-6


@contextmanager
def plain_forward(model: Any):
    """Temporarily disable every permanent hook of the ReplacementModel (restored on exit).

    Its permanent hooks stop gradients at attention patterns, LayerNorm scales and MLP outputs (what the
    attribution graph's linearisation needs) without changing the forward values; AtP needs the gradient of
    the real model, so they are set aside and put back exactly as they were.
    """
    points = list(model.hook_dict.values())
    saved = [(hp, hp._forward_hooks.copy(), list(hp.fwd_hooks)) for hp in points]
    for hp in points:
        hp._forward_hooks.clear()
        hp.fwd_hooks = []
    try:
        yield
    finally:
        for hp, hooks, handles in saved:
            hp._forward_hooks.clear()
            hp._forward_hooks.update(hooks)
            hp.fwd_hooks = handles


def atp_jacobian(
    model: Any, tokens: torch.Tensor, features: torch.Tensor, n_top: int = N_TOP_TOKENS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """J (n_top, K) = ∂ logit_v / ∂θ_k at θ = 1, the top token ids (n_top,) and their clean logits (n_top,).

    features: (K, 3) [layer, pos, feature] of the candidates.
    """
    layers, poss, fids = (features[:, i].long().to(tokens.device) for i in range(3))
    n_cand = len(features)
    with torch.no_grad():
        clean = model(tokens.unsqueeze(0))[0, -1]
    top = torch.argsort(clean, descending=True)[:n_top]
    v = len(top)
    theta = torch.ones(v, n_cand, dtype=clean.dtype, device=tokens.device, requires_grad=True)
    pending: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}

    def read(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        idx = (layers == layer).nonzero(as_tuple=True)[0]
        if len(idx):
            current = model.transcoders.encode_layer(acts[:, poss[idx]], layer)  # (v, n, d_tc)
            current = current[:, torch.arange(len(idx)), fids[idx]]  # (v, n)
            decoder = model.transcoders._get_decoder_vectors(layer, fids[idx])
            if decoder.ndim == 2:  # single-layer transcoder: (n, d_model), written at this layer
                pending.setdefault(layer, []).append((idx, current, decoder))
            else:  # cross-layer transcoder: (n, n_layers - layer, d_model), written at this and every later layer
                for k in range(decoder.shape[1]):
                    pending.setdefault(layer + k, []).append((idx, current, decoder[:, k]))
        return acts

    def write(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        for idx, current, decoder in pending.pop(layer, []):
            delta = ((theta[:, idx] - 1.0) * current).unsqueeze(-1) * decoder.unsqueeze(0)  # (v, n, d_model)
            acts = acts.index_add(1, poss[idx], delta)
        return acts

    hooks = []
    for layer in range(model.cfg.n_layers):
        hooks.append((f"blocks.{layer}.{model.feature_input_hook}", _bind(read, layer)))
        hooks.append((f"blocks.{layer}.{model.original_feature_output_hook}", _bind(write, layer)))
    with torch.enable_grad(), plain_forward(model), model.hooks(fwd_hooks=hooks):
        logits = model(tokens.unsqueeze(0).expand(v, -1))[:, -1]  # (v, d_vocab)
        logits[torch.arange(v), top].sum().backward()
    assert theta.grad is not None  # set by backward(): theta requires grad
    return theta.grad.detach(), top, clean[top].detach()


def _bind(fn: Any, layer: int) -> Any:
    return lambda acts, hook: fn(acts, hook, layer)


def first_order_kl(clean_top_logits: torch.Tensor, logit_change: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ clean + change) over the top tokens, renormalised; logit_change (n_top, K) → (K,)."""
    log_p = clean_top_logits.double().log_softmax(0)
    log_q = (clean_top_logits.double()[:, None] + logit_change.double()).log_softmax(0)
    return (log_p.exp()[:, None] * (log_p[:, None] - log_q)).sum(0).clamp(min=0.0)


def atp_descriptors(
    model: Any,
    tokens: torch.Tensor,
    features: torch.Tensor,
    clean_act: torch.Tensor,
    patch_values: torch.Tensor,
    steering_scale: float,
) -> np.ndarray:
    """(K, 3) float32: log10 first-order KL of ablation, patching and steering (ATP_DESCRIPTORS order)."""
    jac, _, clean_top = atp_jacobian(model, tokens, features)
    act = clean_act.to(jac.dtype).to(jac.device).clamp(min=1e-12)
    dtheta = {
        "ablation": torch.full_like(act, -1.0),
        "patching": patch_values.to(jac.dtype).to(jac.device) / act - 1.0,
        "steering": torch.full_like(act, steering_scale - 1.0),
    }
    cols = [first_order_kl(clean_top, jac * d[None, :]) for d in dtheta.values()]
    out = torch.log10(torch.stack(cols, 1) + EPS).float().cpu().numpy()
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
