"""`ucb`: LinUCB with one linear model shared by all candidates (and all prompts), learned online.

Each candidate k of a prompt is a context vector x_k = [1, z_k], where z_k are its static descriptors
standardised over the prompt's valid candidates (zero where a column is constant in the prompt) and clipped to
±5. Standardising within the prompt keeps the vectors of different prompts on one scale, so one set of
statistics can persist across episodes. The model predicts the measured log10(KL + 1e-6) of the agent's
intervention type (ridge regression):

    A = λ I + Σ x xᵀ,   b = Σ y x,   θ = A⁻¹ b,   score_k = θᵀ x_k + α √(x_kᵀ A⁻¹ x_k)

and the agent takes the valid candidate with the highest score (Li et al. 2010, LinUCB with a shared θ rather
than disjoint arms: candidates are new in every prompt, so strength must be shared through the descriptors).
A and b are updated from every observation (`info["kl"]` of the chosen candidate) and persist across episodes
until `reset_memory()`.

Defaults: `alpha = 0.3` (log10-KL units) and `lam = 1.0` (ridge prior, in units of one observation), from a
sweep on toy-4l train tables (BENCHMARKS.md, Agent defaults): larger α wastes a one-prompt budget on
exploration, 0.3 is the largest α that cost nothing measurable in a stream, and some exploration is what lets
the model recover when its estimates are wrong (tests: contradicting measurements).
It is not fitted offline (no `fit`): all its learning is online, which the `stream` protocol measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from acd_env.errors import ACDError
from agents.base import BaseAgent
from agents.ranker import EPS, static_names

CLIP = 5.0


def context_vectors(descriptors: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(K, 1 + F) LinUCB contexts: a bias and the descriptors z-scored over the valid rows (padding: zeros)."""
    d = np.asarray(descriptors, dtype=np.float64)
    x = np.zeros((d.shape[0], d.shape[1] + 1))
    if valid.any():
        rows = d[valid]
        mean, std = rows.mean(0), rows.std(0)
        z = np.where(std > 1e-12, (d - mean) / np.where(std > 1e-12, std, 1.0), 0.0)
        x[valid, 1:] = np.clip(z[valid], -CLIP, CLIP)
        x[valid, 0] = 1.0
    return x


class LinUCBAgent(BaseAgent):
    """LinUCB over the standardised static descriptors, predicting log10(KL + 1e-6).

    Args:
        seed: the agent's seed (LinUCB itself is deterministic; ties go to the lower candidate index).
        intervention: the type it acts with and learns the KL of (default `"ablation"`).
        alpha: exploration constant (width of the upper confidence bound, in log10-KL units).
        lam: ridge regularisation λ (A starts as λ I).
        columns: descriptor columns to use (default: every static column the env shows).
    """

    name = "ucb"

    def __init__(
        self,
        *,
        seed: int = 0,
        intervention: str = "ablation",
        alpha: float = 0.3,
        lam: float = 1.0,
        columns: Sequence[str] | None = None,
    ) -> None:
        super().__init__(seed=seed, intervention=intervention)
        if not np.isfinite(alpha) or alpha < 0:
            raise ACDError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not np.isfinite(lam) or lam <= 0:
            raise ACDError(f"lam must be a finite number > 0, got {lam!r}")
        self.alpha = float(alpha)
        self.lam = float(lam)
        self.requested_columns = tuple(columns) if columns is not None else None
        self.feature_names: tuple[str, ...] = ()
        self.A: np.ndarray | None = None
        self.A_inv: np.ndarray | None = None
        self.b: np.ndarray | None = None
        self.n_updates = 0
        self._x: np.ndarray | None = None

    # -- model ----------------------------------------------------------------------------------
    def _init_stats(self, dim: int) -> None:
        self.A = self.lam * np.eye(dim)
        self.A_inv = np.eye(dim) / self.lam
        self.b = np.zeros(dim)
        self.n_updates = 0

    @property
    def theta(self) -> np.ndarray:
        """The ridge estimate θ = A⁻¹ b (weights of [bias, *feature_names])."""
        if self.A_inv is None or self.b is None:
            raise ACDError("LinUCB has no statistics yet: run an episode first")
        return self.A_inv @ self.b

    def scores(self) -> np.ndarray:
        """(K,) upper confidence bounds of the current prompt's candidates."""
        if self._x is None:
            raise ACDError("call agent.reset(obs, info) at the start of each episode before act()")
        x = self._x
        if self.A_inv is None or self.b is None:  # reset_memory() was called mid-episode
            self._init_stats(x.shape[1])
        assert self.A_inv is not None and self.b is not None
        mean = x @ (self.A_inv @ self.b)
        width = np.sqrt(np.maximum(np.einsum("kd,de,ke->k", x, self.A_inv, x), 0.0))
        return mean + self.alpha * width

    def update(self, x: np.ndarray, y: float) -> None:
        """Add one observation (context x, target y) to A, A⁻¹ (Sherman-Morrison) and b."""
        assert self.A is not None and self.A_inv is not None and self.b is not None
        self.A += np.outer(x, x)
        ax = self.A_inv @ x
        self.A_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.b += y * x
        self.n_updates += 1

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        names = self.requested_columns or static_names(info["descriptor_names"])
        missing = [c for c in names if c not in self.columns]
        if missing:
            raise ACDError(
                f"ucb needs descriptor columns {missing}; this env provides {list(info['descriptor_names'])}"
            )
        if self.A is None:
            self.feature_names = tuple(names)
            self._init_stats(len(names) + 1)
        elif tuple(names) != self.feature_names:
            raise ACDError(
                f"ucb learned over descriptor columns {list(self.feature_names)} but this env shows {list(names)}; "
                "call agent.reset_memory() to start over on the new columns"
            )
        else:  # refresh A⁻¹ once per episode so Sherman-Morrison rounding cannot build up over long streams
            self.A_inv = np.linalg.inv(self.A)
        valid = self.valid_candidates(info, self.n_types)
        cols = [self.columns[c] for c in self.feature_names]
        self._x = context_vectors(np.asarray(obs["candidates"])[:, cols], valid)

    def act(self, obs: dict, info: dict) -> int:
        return self.pick(self.scores(), info)

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        if (
            self._x is None
            or self.A is None
            or info.get("invalid_action")
            or "kl" not in info
            or "candidate" not in info
        ):
            return
        if info.get("intervention", self.intervention) != self.interventions[self.type_index()]:
            return  # the KL of another intervention type is another quantity than the one this model predicts
        self.update(self._x[int(info["candidate"])], float(np.log10(float(info["kl"]) + EPS)))

    def reset_memory(self) -> None:
        super().reset_memory()
        self.A = self.A_inv = self.b = None  # the next reset() starts over (on that env's columns)
        self.n_updates = 0
