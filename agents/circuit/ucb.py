"""`ucb` on the circuit track: greedy forward selection whose tests are chosen by a marginal-gain LinUCB.

The agent grows a circuit W with keep-only queries. An **arm** is "add candidate c to W"; pulling it costs one
keep query on W ∪ {c} and returns the gain f(W ∪ {c}) − f(W), which it normalises by the gap left,
g = (f(W ∪ {c}) − f(W)) ÷ max(1 − f(W), 0.05) (the share of the missing behaviour c closes; this keeps the
target on one scale as W grows). Then it steps back out to W, for free (the env answers a repeated (kind, W)
without charge). One linear model shared by every candidate, every round and (until `reset_memory()`) every
prompt predicts g from a small context x_c (`CONTEXT`: a bias, IG's and AtP's shares of KL(clean ‖ keep ∅),
their per-prompt ranks and the atp-joint rank):

    A = λ I + Σ x xᵀ,   b = λ θ₀ + Σ g x,   θ = A⁻¹ b,   UCB_c = θᵀ x_c + α √(x_cᵀ A⁻¹ x_c)

with the ridge prior θ₀ = "g equals IG's share" (so that its first test of a fresh prompt is not by width
alone). A candidate already tested in this prompt has its last measured g as its mean instead, with the bonus
shrunk by √(1 + times tested) (gains change as W grows, so an old measurement is not the final word).

Each round it tests the arm with the highest UCB among those not yet tested in this round; it **commits** the
best measured arm of the round to W (a free step: that set was measured) as soon as no untested arm's UCB
exceeds that arm's measured g, or after `max_tests` tests. The bonus is what makes it look past its model's
favourite: with α = 0 it is greedy on its prediction. Its circuit: the committed candidates in order, then this
round's tested arms by measured gain, then the rest by the model's predicted gain (no bonus).

Defaults α = 0.1 and `max_tests` = 6 were chosen on the train split of toy-4l (zero-shot circuit efficiency over
its 120 ioi + induction train prompts, `scripts/tune_circuit_agents.py`: α 0 / 0.1 / 0.3 / 1 → 0.890 / 0.905 /
0.903 / 0.897 at max_tests 4; max_tests 2 / 4 / 6 → 0.899 / 0.905 / 0.912 at α 0.1); never on test prompts. No `fit`: it learns online only (stream and the
fitted protocols keep its memory across prompts; zero-shot resets it).
"""

from __future__ import annotations

import numpy as np

from acd_env.errors import ACDError
from agents.circuit.base import CircuitAgent
from agents.circuit.ranker import rank_score

CONTEXT = ("bias", "ig_share", "atp_share", "rank_ig", "rank_atp", "atp_joint_rank")
MIN_GAP = 0.05
CLIP = 5.0


def gain_contexts(obs: dict, n: int, columns: dict[str, int], kl_empty: float) -> np.ndarray:
    """(n, len(CONTEXT)) contexts of a prompt's valid candidates from the env's candidate matrix."""
    cand = np.asarray(obs["candidates"], dtype=np.float64)[:n]
    ig, atp, joint = (cand[:, columns[c]] for c in ("ig", "atp_kl_ablation", "atp_joint_rank"))
    scale = max(float(kl_empty), 1e-9)
    x = np.stack(
        [
            np.ones(n),
            np.clip(ig / scale, -CLIP, CLIP),
            np.clip(atp / scale, -CLIP, CLIP),
            rank_score(ig),
            rank_score(atp),
            joint,
        ],
        axis=1,
    )
    return x


class CircuitUCBAgent(CircuitAgent):
    """Marginal-gain LinUCB over "add c to W" arms, greedy forward selection with keep queries.

    Args:
        seed: the agent's seed (the agent is deterministic; ties go to the lower candidate index).
        alpha: exploration constant (width of the bound, in units of normalised gain).
        lam: ridge strength λ of the prior θ₀ (in observations).
        max_tests: most arms tested before committing one in a round.
    """

    name = "ucb"
    needs_atp = True

    def __init__(self, *, seed: int = 0, alpha: float = 0.1, lam: float = 4.0, max_tests: int = 6) -> None:
        super().__init__(seed=seed)
        if not np.isfinite(alpha) or alpha < 0:
            raise ACDError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not np.isfinite(lam) or lam <= 0:
            raise ACDError(f"lam must be a finite number > 0, got {lam!r}")
        if int(max_tests) < 1:
            raise ACDError(f"max_tests must be >= 1, got {max_tests!r}")
        self.alpha, self.lam, self.max_tests = float(alpha), float(lam), int(max_tests)
        self.theta0 = np.zeros(len(CONTEXT))
        self.theta0[CONTEXT.index("ig_share")] = 1.0
        self._init_stats()
        self._x: np.ndarray | None = None

    # -- model ----------------------------------------------------------------------------------
    def _init_stats(self) -> None:
        d = len(CONTEXT)
        self.A = self.lam * np.eye(d)
        self.b = self.lam * self.theta0.copy()
        self.n_updates = 0

    @property
    def theta(self) -> np.ndarray:
        return np.linalg.solve(self.A, self.b)

    def update(self, x: np.ndarray, g: float) -> None:
        self.A += np.outer(x, x)
        self.b += g * x
        self.n_updates += 1

    def predicted(self) -> np.ndarray:
        """(n,) the model's mean normalised gain of every candidate (no bonus, no per-arm measurement)."""
        if self._x is None:
            raise ACDError("call agent.reset(obs, info) at the start of each episode before act()")
        return self._x @ self.theta

    def bounds(self) -> np.ndarray:
        """(n,) upper confidence bounds of adding each candidate to W (−inf for members of W)."""
        if self._x is None:
            raise ACDError("call agent.reset(obs, info) at the start of each episode before act()")
        x = self._x
        a_inv = np.linalg.inv(self.A)
        mean = x @ (a_inv @ self.b)
        width = np.sqrt(np.maximum(np.einsum("kd,de,ke->k", x, a_inv, x), 0.0))
        for c, g in self.last_g.items():
            mean[c] = g
            width[c] /= np.sqrt(1.0 + self.times[c])
        ucb = mean + self.alpha * width
        ucb[self.chosen] = -np.inf
        return ucb

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        missing = [c for c in ("ig", "atp_kl_ablation", "atp_joint_rank") if c not in self.columns]
        if missing:
            raise ACDError(
                f"circuit ucb needs descriptor columns {missing}; run it with descriptors=('graph', 'atp')"
            )
        self._x = gain_contexts(obs, self.n_valid, self.columns, float(info["kl_empty"]))
        self.chosen: list[int] = []
        self.f_w = 0.0  # f(W) of the committed circuit
        self.round: dict[int, float] = {}  # this round: candidate -> normalised gain measured
        self.last_g: dict[int, float] = {}
        self.times: dict[int, int] = {}
        self.pending: tuple[int, str] | None = None  # the step just asked for: (candidate, purpose)

    def _choice(self) -> tuple[int, str]:
        """The next (candidate, purpose): "back" out of a tested set, "add" the round's best, or "test"."""
        ucb = self.bounds()
        ucb[list(self.round)] = -np.inf
        best = max(self.round, key=lambda c: (self.round[c], -c)) if self.round else None
        top = int(np.argmax(ucb)) if np.isfinite(ucb).any() else None
        if best is not None and (
            top is None or len(self.round) >= self.max_tests or self.round[best] >= ucb[top]
        ):
            return best, "add"
        if top is None:  # every candidate is in W
            return (self.chosen[-1] if self.chosen else 0), "noop"
        return top, "test"

    def act(self, obs: dict, info: dict) -> int:
        if self._x is None:
            raise ACDError("call agent.reset(obs, info) at the start of each episode before act()")
        if self.pending is not None and self.pending[1] == "test":  # W ∪ {c} measured: step back (free)
            self.pending = (self.pending[0], "back")
        else:
            self.pending = self._choice()
        return self.action(self.pending[0], "keep")

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        if self.pending is None or info.get("invalid_action"):
            self.pending = None
            return
        c, purpose = self.pending
        if purpose == "test":
            g = (float(info["score"]) - self.f_w) / max(1.0 - self.f_w, MIN_GAP)
            assert self._x is not None
            self.update(self._x[c], g)
            self.round[c] = self.last_g[c] = g
            self.times[c] = self.times.get(c, 0) + 1
            return  # pending stays "test": act() steps back next
        if purpose == "add":
            self.chosen.append(c)
            self.f_w = float(info["score"])
            self.round = {}
        self.pending = None

    def reset_memory(self) -> None:
        super().reset_memory()
        self._init_stats()

    def circuit_ranking(self) -> list[int]:
        if self._x is None:
            return []
        tested = sorted(self.round, key=lambda c: (-self.round[c], c))
        pred = self.predicted()
        rest = [c for c in self.order_by(pred) if c not in self.chosen and c not in self.round]
        return [*self.chosen, *tested, *rest]

    def diagnostics(self) -> dict[str, float]:
        return {"ucb/f_w": self.f_w, "ucb/n_updates": float(self.n_updates)}
