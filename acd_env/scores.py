"""The score of the feature track, defined once: per-episode discovery metrics, pure functions on arrays
(docs/design.md, Metrics), and `play_episode`, the episode loop that `acd bench` (benchmarks.runner) and PPO
training (agents.ppo) score agents with. Torch-free; benchmarks.metrics re-exports the metrics.

Ground truth is the privileged table of measured effects, `env.unwrapped.oracle_effects()`. Every metric
scores the *features* an agent chose by the effect of ablating them (or, per type, of that type's
intervention), never by the reward it was paid: steering's larger KL would otherwise inflate the score.

Shapes and conventions used throughout:
    chosen:  (n,) int   candidate index chosen at each step taken (n ≤ B); −1 for a step that changed nothing
                        (an invalid action). A candidate chosen twice counts once.
    effect:  (K,) float the true effect of every candidate (e.g. ablation KL), ≥ 0; padding rows hold 0.
    effects: (K, T)     one column per intervention type.
    valid:   (K,) bool  real candidates (padding rows False).
    budget:  B, the steps an episode may take. The oracle's reference is its best B candidates (all valid
             candidates when fewer than B exist).

When the oracle's reference total is 0 (nothing on the prompt has any effect) every choice is optimal:
ratios are defined as 1.0 there, so that such prompts neither crash nor skew an aggregate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

THRESHOLD_80 = 0.8


def _gains(chosen: Sequence[int] | np.ndarray, effect: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(n,) the effect each step added: its candidate's effect the first time a valid candidate is chosen."""
    chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)
    effect = np.asarray(effect, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    gains = np.zeros(len(chosen))
    seen: set[int] = set()
    for i, c in enumerate(chosen):
        if 0 <= c < len(effect) and valid[c] and c not in seen:
            gains[i] = effect[c]
            seen.add(int(c))
    return gains


def oracle_gains(effect: np.ndarray, valid: np.ndarray, budget: int) -> np.ndarray:
    """(B,) the oracle's gain per step: the valid effects in descending order, zero-padded to B."""
    values = np.sort(np.asarray(effect, dtype=np.float64)[np.asarray(valid, dtype=bool)])[::-1][:budget]
    out = np.zeros(budget)
    out[: len(values)] = values
    return out


def _ratio(num: float, den: float) -> float:
    return 1.0 if den <= 0 else float(num / den)


def discovery_efficiency(
    chosen: Sequence[int] | np.ndarray, effect: np.ndarray, valid: np.ndarray, budget: int
) -> float:
    """Σ effect of the distinct valid candidates chosen ÷ Σ of the B largest valid effects. In [0, 1].

    Example: effect = [4, 3, 2, 1], B = 2, chosen = [1, 2] → (3 + 2) / (4 + 3) = 5/7.
    """
    return _ratio(_gains(chosen, effect, valid).sum(), oracle_gains(effect, valid, budget).sum())


def efficiency_by_type(chosen: np.ndarray, effects: np.ndarray, valid: np.ndarray, budget: int) -> np.ndarray:
    """(T,) discovery efficiency of the chosen candidates scored by each type's effect, against that type's own
    oracle (its best B candidates by that type's effect)."""
    effects = np.asarray(effects, dtype=np.float64)
    return np.array(
        [discovery_efficiency(chosen, effects[:, t], valid, budget) for t in range(effects.shape[1])]
    )


def top_k(effect: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """(min(k, n_valid),) indices of the k largest valid effects, largest first (ties: lower index first)."""
    effect = np.where(np.asarray(valid, dtype=bool), np.asarray(effect, dtype=np.float64), -np.inf)
    order = np.argsort(-effect, kind="stable")
    n = int(np.asarray(valid, dtype=bool).sum())
    return order[: min(k, n)]


def recall_at_k(chosen: np.ndarray, effect: np.ndarray, valid: np.ndarray, k: int) -> float:
    """Share of the oracle's top-k candidates (by `effect`) among the chosen ones. recall@B uses k = B.

    Example: effect = [4, 3, 2, 1], k = 2 (top = {0, 1}), chosen = [1, 2] → 1/2.
    """
    top = top_k(effect, valid, k)
    if len(top) == 0:
        return 1.0
    picked = {int(c) for c in np.asarray(chosen).reshape(-1)}
    return float(np.mean([int(t) in picked for t in top]))


def cumulative_curve(chosen: np.ndarray, effect: np.ndarray, valid: np.ndarray, budget: int) -> np.ndarray:
    """(B,) cumulative effect after steps 1..B as a fraction of the oracle's total over B steps.

    An episode that ended before B steps (no valid candidate left) keeps its last value. The oracle's own curve
    is `oracle_curve`; the value at step B is the discovery efficiency.
    """
    gains = np.zeros(budget)
    g = _gains(chosen, effect, valid)[:budget]
    gains[: len(g)] = g
    total = oracle_gains(effect, valid, budget).sum()
    cum = np.cumsum(gains)
    return np.ones(budget) if total <= 0 else cum / total


def oracle_curve(effect: np.ndarray, valid: np.ndarray, budget: int) -> np.ndarray:
    """(B,) the oracle's cumulative curve on the same scale as `cumulative_curve` (ends at 1)."""
    gains = oracle_gains(effect, valid, budget)
    total = gains.sum()
    return np.ones(budget) if total <= 0 else np.cumsum(gains) / total


def anytime_auc(chosen: np.ndarray, effect: np.ndarray, valid: np.ndarray, budget: int) -> float:
    """Area under the cumulative-effect curve over steps 1..B ÷ the oracle's area. In [0, 1]; 1 = the oracle's
    order. Rewards finding the big effects early, not only by step B.

    Example: effect = [4, 3, 2, 1], B = 2, chosen = [1, 0]: agent curve (3, 7), oracle (4, 7) → 10/11.
    """
    return _ratio(
        cumulative_curve(chosen, effect, valid, budget).sum(), oracle_curve(effect, valid, budget).sum()
    )


def steps_to_fraction(
    chosen: np.ndarray,
    effect: np.ndarray,
    valid: np.ndarray,
    budget: int,
    fraction: float = THRESHOLD_80,
    never: float | None = None,
) -> float:
    """First step s (1-based) at which the cumulative effect reaches `fraction` of the oracle's total over B steps.

    Never reached within the episode → `never`, by default B + 1 (so that the mean over episodes stays finite
    and an agent that never gets there ranks below one that does at step B); pass `never=np.nan` to exclude
    such episodes instead. The oracle reaches 80 % at its own `steps_to_fraction(oracle order)`.

    Example: effect = [4, 3, 2, 1], B = 3 (oracle total 9, 80 % = 7.2), chosen = [0, 1, 2] → 3 (4, 7, 9).
    """
    curve = cumulative_curve(chosen, effect, valid, budget)
    hit = np.flatnonzero(curve >= fraction - 1e-12)
    if len(hit):
        return float(hit[0] + 1)
    return float(budget + 1) if never is None else float(never)


def episode_metrics(
    chosen: Sequence[int] | np.ndarray,
    effects: np.ndarray,
    valid: np.ndarray,
    budget: int,
    interventions: Sequence[str],
    primary: str = "ablation",
) -> dict:
    """Every per-episode metric for one episode.

    `effects` is (K, T) with T = len(interventions); the headline numbers use the `primary` type's column
    (ablation; the first type when the env has no ablation). Returns a flat dict of floats plus
    `efficiency_<type>` for every type and `curve` (list of B floats, the cumulative curve).
    """
    effects = np.asarray(effects, dtype=np.float64)
    chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)
    p = list(interventions).index(primary) if primary in interventions else 0
    effect = effects[:, p]
    by_type = efficiency_by_type(chosen, effects, valid, budget)
    steps80 = steps_to_fraction(chosen, effect, valid, budget)
    out = {
        "efficiency": discovery_efficiency(chosen, effect, valid, budget),
        "recall": recall_at_k(chosen, effect, valid, budget),
        "auc": anytime_auc(chosen, effect, valid, budget),
        "steps80": steps80,
        "reached80": steps80 <= budget,
    }
    out.update({f"efficiency_{kind}": float(v) for kind, v in zip(interventions, by_type, strict=True)})
    out["curve"] = [float(x) for x in cumulative_curve(chosen, effect, valid, budget)]
    return out


# ---------------------------------------------------------------------------------------------- scoring an agent
@dataclass
class Played:
    """One episode as `play_episode` ran it: the reset `info`, the privileged effects table and the candidate
    chosen at each step (−1 for an invalid action)."""

    info: dict
    effects: Any  # acd_env.backends.Effects: kl, ... (K, T) and valid (K,)
    chosen: list[int]

    def efficiency(self, budget: int, primary: str = "ablation") -> float:
        """The episode's discovery efficiency, scored by the `primary` type's effect (the first type without it)."""
        interventions = list(self.info["interventions"])
        p = interventions.index(primary) if primary in interventions else 0
        return discovery_efficiency(
            self.chosen, np.asarray(self.effects.kl)[:, p], self.effects.valid, budget
        )


def play_episode(
    env: Any,
    agent: Any,
    prompt_index: int,
    *,
    seed: int,
    budget: int,
    on_step: Callable[[int, Any, float, dict, float], None] | None = None,
) -> Played:
    """Run one episode of `agent` on prompt `prompt_index` of `env` (reset with `seed`), at most `budget` steps.

    `on_step(step, action, reward, info, seconds)` is called after every step (step from 0; seconds: the agent's
    act, the env step and the agent's observe)."""
    obs, info = env.reset(seed=seed, options={"prompt_index": prompt_index})
    first = info
    agent.reset(obs, info)
    effects = env.unwrapped.oracle_effects()
    chosen: list[int] = []
    for step in range(budget):
        start = time.perf_counter()
        action = agent.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        agent.observe(action, reward, obs, info)
        elapsed = time.perf_counter() - start
        chosen.append(-1 if info.get("invalid_action", False) else int(info["candidate"]))
        if on_step is not None:
            on_step(step, action, reward, info, elapsed)
        if terminated or truncated:
            break
    return Played(first, effects, chosen)


def episode_efficiency(env: Any, agent: Any, prompt_index: int, seed: int = 0) -> float:
    """Run one episode of `agent` on prompt `prompt_index` (env reset with `seed`); its discovery efficiency."""
    budget = env.unwrapped.budget
    return play_episode(env, agent, int(prompt_index), seed=seed, budget=budget).efficiency(budget)
