"""What one intervention did to the model, measured (never read off the attribution graph)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

MEASUREMENT_NAMES = ("kl", "logit_diff", "downstream", "n_affected", "top1_changed")


class Measurements(NamedTuple):
    """Arrays of shape (B,) for B interventions (float32 except n_affected int32, top1_changed bool).

    kl: KL(clean ‖ intervened) of the next-token distribution at the last position (nats).
    logit_diff: change of (answer logit − counterfactual-answer logit), or of the answer logit alone when the
        prompt has no counterfactual answer.
    downstream: ‖Δ later-layer transcoder activations‖ ÷ ‖clean later-layer activations‖ (0 for the last layer).
    n_affected: number of later-layer features whose activation moved by more than `AFFECT_THRESHOLD`.
    top1_changed: the most likely next token changed.
    """

    kl: np.ndarray
    logit_diff: np.ndarray
    downstream: np.ndarray
    n_affected: np.ndarray
    top1_changed: np.ndarray


def measure(
    clean_logits: torch.Tensor,
    logits: torch.Tensor,
    downstream_sq: torch.Tensor,
    downstream_ref_sq: torch.Tensor,
    n_affected: torch.Tensor,
    answer: int,
    cf_answer: int | None,
) -> Measurements:
    """Measurements from last-position logits: clean (d_vocab,), intervened (B, d_vocab)."""
    clean_lp = clean_logits.double().log_softmax(-1)
    lp = logits.double().log_softmax(-1)
    kl = (clean_lp.exp() * (clean_lp - lp)).sum(-1).clamp(min=0.0)

    def target(z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return z[..., answer] - (z[..., cf_answer] if cf_answer is not None and cf_answer != answer else 0.0)

    logit_diff = target(logits) - target(clean_logits)
    ref = downstream_ref_sq.double()
    downstream = torch.where(ref > 0, (downstream_sq.double() / ref.clamp(min=1e-30)).sqrt(), 0.0)
    top1 = logits.argmax(-1) != clean_logits.argmax(-1)
    out = Measurements(
        kl.float().cpu().numpy(),
        logit_diff.float().cpu().numpy(),
        downstream.float().cpu().numpy(),
        n_affected.to(torch.int32).cpu().numpy(),
        top1.cpu().numpy(),
    )
    for name in ("kl", "logit_diff", "downstream"):
        values = getattr(out, name)
        if not np.isfinite(values).all():
            raise FloatingPointError(
                f"measurement {name!r} is not finite ({values[~np.isfinite(values)][:3]})"
            )
    return out
