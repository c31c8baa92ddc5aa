"""`acdc`: ACDC's pruning rule (Conmy et al. 2023) run within the query budget.

Candidates are tried from the output backwards (descending layer, then position, then influence). Each is
ablated into the working set W with an `ablate` query; when the measured necessity n(W) = KL(clean ‖ ablate W)
÷ KL(clean ‖ keep ∅) rises by less than `threshold`, the candidate stays ablated (pruned); otherwise it is
important and the next step takes it back out (a repeat of an already measured set, which costs no query).
Its circuit: the important candidates by their measured rise, then the untried ones by their estimated effect
(AtP when the env shows it, else influence), then the pruned ones by their rise.
"""

from __future__ import annotations

import numpy as np

from agents.circuit.base import CircuitAgent

DEFAULT_THRESHOLD = (
    0.05  # by 5-fold CV on toy-4l train prompts (scripts/tune_circuit_baselines.py; BENCHMARKS.md)
)


class ACDCAgent(CircuitAgent):
    name = "acdc"

    def __init__(self, *, seed: int = 0, threshold: float = DEFAULT_THRESHOLD) -> None:
        super().__init__(seed=seed)
        self.threshold = float(threshold)

    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        cols = obs["candidates"][: self.n_valid]
        layer = cols[:, self.columns["layer_frac"]]
        pos = cols[:, self.columns["pos_frac"]]
        self.queue = [int(k) for k in np.lexsort((np.arange(self.n_valid), -pos, -layer))]
        self.estimate = (
            self.column(obs, "atp_kl_ablation")
            if "atp_kl_ablation" in self.columns
            else -np.arange(self.n_valid)
        )
        self.rise: dict[int, float] = {}
        self.pruned: list[int] = []
        self.important: list[int] = []
        self.level = 0.0  # n(W) of the current pruned set (n(∅) = 0)
        self._undo: int | None = None

    def act(self, obs: dict, info: dict) -> int:
        if self._undo is not None:
            return self.action(self._undo, "ablate")
        untried = [k for k in self.queue if k not in self.rise]
        return self.action(untried[0] if untried else self.queue[0], "ablate")

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        if info.get("invalid_action"):
            return
        k = int(info["candidate"])
        if self._undo is not None and k == self._undo:
            self._undo = None
            return
        if k in self.rise:
            return
        rise = float(info["score"]) - self.level
        self.rise[k] = rise
        if rise < self.threshold:
            self.pruned.append(k)
            self.level = float(info["score"])
        else:
            self.important.append(k)
            self._undo = k

    def circuit_ranking(self) -> list[int]:
        important = sorted(self.important, key=lambda k: -self.rise[k])
        untried = [k for k in self.order_by(self.estimate) if k not in self.rise]
        pruned = sorted(self.pruned, key=lambda k: -self.rise[k])
        return [*important, *untried, *pruned]
