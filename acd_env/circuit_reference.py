"""What the circuit tables store per prompt: the reference circuit and the zero-query rankings.

- **Reference** (privileged, no budget): greedy forward selection on KL-faithfulness f with a beam. From the
  empty circuit, every path in the beam is extended by every candidate it lacks; paths reaching the same set
  keep the better one; the `beam` paths with the largest running sum of f(C_1) + … + f(C_k) (the area under
  their curve so far) survive. After `k_max` steps the best path is the reference ranking, the rest of the
  candidates following in influence order. Each step is one batch of keep-only rows (`acd_env.set_engine`).
- **atp-joint**: greedy selection on the AtP-linearised model — the logit change of keep(C) predicted as
  Σ_{j∉C} J_j·Δθ_j (J the Jacobian of the clean top-token logits in every candidate's scale, from
  `acd_env.attribution.atp.atp_jacobian`), f predicted from the KL it implies. Captures cancellation between
  candidates, not saturation. Zero queries.
- **ig**: integrated gradients of −KL(clean ‖ ·) in the candidates' values along the straight path from
  keep(∅) (all candidates ablated) to the clean run (midpoint rule, `IG_STEPS` points). Completeness:
  Σ_j ig_j ≈ KL(clean ‖ keep ∅) when activations are continuous along the path; with JumpReLU transcoders
  (Gemma Scope) features jumping across their thresholds carry no gradient, so Σ ig can fall well short (up to
  half on the tiny Gemma-2/Llama-shaped test models). Zero queries (gradients only; the EAP-IG analogue).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from acd_env.circuit import K_MAX, faithfulness, logit_faithfulness
from acd_env.set_engine import kl_from_logits, logit_difference, run_sets

BEAM_WIDTH = 4
IG_STEPS = 64  # midpoint rule: Σ ig is within a few % of KL(clean ‖ keep ∅) on the toy zoo (16 steps: up to 30 % off)
CIRCUIT_ARRAYS = ("kl_empty", "m_clean", "m_empty", "ref_order", "ref_curve", "ref_lcurve", "atp_joint", "ig")


def beam_search(
    evaluate: Callable[[np.ndarray], np.ndarray], n: int, *, beam: int = BEAM_WIDTH, k_max: int = K_MAX
) -> tuple[list[int], np.ndarray]:
    """(ranking prefix of length min(k_max, n), f along it). `evaluate(masks (B, n) bool) -> f (B,)` scores
    keep-only circuits. Deterministic: ties go to the path that is lexicographically smaller."""
    paths: list[tuple[float, tuple[int, ...], tuple[float, ...]]] = [(0.0, (), ())]
    for _ in range(min(k_max, n)):
        expansions: dict[frozenset, tuple[float, tuple[int, ...], tuple[float, ...]]] = {}
        rows: list[tuple[tuple[int, ...], float, tuple[float, ...]]] = []
        for score, path, curve in paths:
            for j in range(n):
                if j not in path:
                    rows.append(((*path, j), score, curve))
        unique: dict[frozenset, int] = {}
        for i, (path, _, _) in enumerate(rows):
            unique.setdefault(frozenset(path), i)
        sets = list(unique)
        masks = np.zeros((len(sets), n), dtype=bool)
        for r, s in enumerate(sets):
            masks[r, list(s)] = True
        f = np.asarray(evaluate(masks), dtype=np.float64)
        value = {s: float(v) for s, v in zip(sets, f, strict=True)}
        for path, score, curve in rows:
            key = frozenset(path)
            cand = (score + value[key], path, (*curve, value[key]))
            best = expansions.get(key)
            if best is None or (cand[0], _neg(cand[1])) > (best[0], _neg(best[1])):
                expansions[key] = cand
        paths = sorted(expansions.values(), key=lambda c: (-c[0], c[1]))[:beam]
    _, path, curve = paths[0]
    return list(path), np.asarray(curve)


def _neg(path: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-x for x in path)


def greedy_on(predict_f: Callable[[np.ndarray], np.ndarray], n: int) -> list[int]:
    """A full ranking by greedy forward selection on a predicted f (`predict_f(masks (B, n)) -> (B,)`)."""
    chosen: list[int] = []
    mask = np.zeros(n, dtype=bool)
    for _ in range(n):
        rest = np.flatnonzero(~mask)
        trial = np.repeat(mask[None], len(rest), 0)
        trial[np.arange(len(rest)), rest] = True
        j = int(rest[int(np.argmax(predict_f(trial)))])
        chosen.append(j)
        mask[j] = True
    return chosen


class CircuitMeasurer:
    """Set queries of one prompt on the model, and what the tables store about its circuit."""

    def __init__(
        self,
        model: Any,
        tokens: torch.Tensor,
        features: np.ndarray,
        values: np.ndarray,
        clean_logits: torch.Tensor,
        answer: int,
        cf_answer: int,
        *,
        freeze_attention: bool = False,
    ) -> None:
        self.model, self.tokens = model, tokens
        self.features = np.asarray(features)
        self.values = np.asarray(values, dtype=np.float32)
        self.clean_logits = clean_logits
        self.answer, self.cf_answer = int(answer), int(cf_answer)
        self.freeze_attention = freeze_attention
        self.n = len(self.features)
        self.m_clean = float(logit_difference(clean_logits, self.answer, self.cf_answer))
        empty = self.run(np.ones((1, self.n), dtype=bool))
        self.kl_empty, self.m_empty = float(empty[0][0]), float(empty[1][0])

    def run(self, intervene: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(KL, m) of rows intervening on the candidates `intervene` (B, n) marks."""
        logits = run_sets(
            self.model,
            self.tokens,
            self.features,
            self.values,
            intervene,
            freeze_attention=self.freeze_attention,
        )
        return (
            kl_from_logits(self.clean_logits, logits).cpu().numpy(),
            logit_difference(logits, self.answer, self.cf_answer).cpu().numpy(),
        )

    def keep_f(self, keep: np.ndarray) -> np.ndarray:
        kl, _ = self.run(~np.asarray(keep, dtype=bool))
        return faithfulness(kl, self.kl_empty)

    def reference(self, k_pad: int, *, beam: int = BEAM_WIDTH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order (k_pad,) −1-padded, f (K_MAX,), logit faithfulness (K_MAX,)) along the reference ranking."""
        path, _ = beam_search(self.keep_f, self.n, beam=beam)
        order = [*path, *(j for j in range(self.n) if j not in path)]
        sizes = np.arange(1, K_MAX + 1)
        masks = np.zeros((K_MAX, self.n), dtype=bool)
        for i, k in enumerate(sizes):
            masks[i, order[: min(k, self.n)]] = True
        kl, m = self.run(~masks)  # re-measured in one batch: the stored curve is what the evaluation sees
        padded = np.full(k_pad, -1, np.int64)
        padded[: self.n] = order
        f = faithfulness(kl, self.kl_empty)
        lf = logit_faithfulness(m, self.m_clean, self.m_empty)
        return padded, f.astype(np.float32), np.nan_to_num(lf, nan=0.0).astype(np.float32)

    def integrated_gradients(self, clean_act: np.ndarray, steps: int = IG_STEPS) -> np.ndarray:
        """(n,) IG of −KL(clean ‖ ·) per candidate from keep(∅) (values 0) to clean (values = clean_act)."""
        act = torch.as_tensor(np.asarray(clean_act, dtype=np.float32), dtype=self.model.cfg.dtype)
        alphas = (torch.arange(steps, dtype=act.dtype) + 0.5) / steps
        values = (alphas[:, None] * act[None, :]).to(self.tokens.device).requires_grad_(True)
        masks = np.ones((steps, self.n), dtype=bool)
        logits = run_sets(
            self.model,
            self.tokens,
            self.features,
            values,
            masks,
            freeze_attention=self.freeze_attention,
            grad=True,
        )
        (-kl_from_logits(self.clean_logits.detach(), logits).sum()).backward()
        assert values.grad is not None  # set by backward(): values requires grad
        grads = values.grad.detach().double().mean(0).cpu()
        return (grads * act.double()).numpy()

    def atp_joint(self, clean_act: np.ndarray) -> list[int]:
        """Greedy ranking on the AtP-linearised model's predicted keep-only faithfulness."""
        from acd_env.attribution.atp import atp_jacobian, first_order_kl

        jac, _, clean_top = atp_jacobian(self.model, self.tokens, torch.as_tensor(self.features))
        act = np.asarray(clean_act, dtype=np.float64)
        dtheta = np.where(act > 0, self.values.astype(np.float64) / np.maximum(act, 1e-12), 0.0) - 1.0
        contrib = jac.double().cpu().numpy() * dtheta[None, :]  # (n_top, n): each candidate's logit change
        top_logits = clean_top.double().cpu()

        def predict_f(keep: np.ndarray) -> np.ndarray:
            change = torch.as_tensor(contrib @ (~keep).T.astype(np.float64))  # (n_top, B)
            kl = first_order_kl(top_logits, change).numpy()
            return 1.0 - kl / max(kl_all, 1e-12)

        kl_all = float(first_order_kl(top_logits, torch.as_tensor(contrib.sum(1, keepdims=True)))[0])
        return greedy_on(predict_f, self.n)


def measure_circuit(
    model: Any,
    tokens: torch.Tensor,
    features: np.ndarray,
    values: np.ndarray,
    clean_act: np.ndarray,
    clean_logits: torch.Tensor,
    answer: int,
    cf_answer: int,
    k_pad: int,
    *,
    freeze_attention: bool = False,
) -> dict[str, np.ndarray | np.float32]:
    """Everything the circuit tables store for one prompt (`CIRCUIT_ARRAYS`), arrays padded to k_pad.

    features/values/clean_act: the n real candidates' [layer, pos, feature], the value keep(∅) sets each to
    (0 for ablation), and their clean activations.
    """
    cm = CircuitMeasurer(
        model, tokens, features, values, clean_logits, answer, cf_answer, freeze_attention=freeze_attention
    )
    order, curve, lcurve = cm.reference(k_pad)
    joint = np.full(k_pad, -1, np.int64)
    joint[: cm.n] = cm.atp_joint(clean_act)
    ig = np.zeros(k_pad, np.float32)
    ig[: cm.n] = cm.integrated_gradients(clean_act)
    return {
        "kl_empty": np.float32(cm.kl_empty),
        "m_clean": np.float32(cm.m_clean),
        "m_empty": np.float32(cm.m_empty),
        "ref_order": order,
        "ref_curve": curve,
        "ref_lcurve": lcurve,
        "atp_joint": joint,
        "ig": ig,
    }
