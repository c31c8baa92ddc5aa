"""`atp-search`: a naive searcher — greedy forward selection with keep-only queries over a short list.

The `shortlist` candidates with the largest AtP estimates are the only ones it considers. Each round it tests
adding every short-listed candidate to its circuit W (a `keep` query on W ∪ {c}, then a free step back to W)
and adds the one with the highest faithfulness; with a budget of 20 and a list of 6 that is five rounds
(6 + 5 + 4 + 3 + 2 queries). It finds interactions within its list and nothing outside it. Its circuit: the
chosen candidates in order, the rest of the list by their last measured f, then everything else by AtP.
"""

from __future__ import annotations

from collections import deque

from agents.circuit.base import CircuitAgent

DEFAULT_SHORTLIST = 6


class AtPSearchAgent(CircuitAgent):
    name = "atp-search"
    needs_atp = True

    def __init__(self, *, seed: int = 0, shortlist: int = DEFAULT_SHORTLIST) -> None:
        super().__init__(seed=seed)
        self.shortlist_size = int(shortlist)

    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        self.atp_order = self.order_by(self.column(obs, "atp_kl_ablation"))
        self.shortlist = self.atp_order[: self.shortlist_size]
        self.chosen: list[int] = []
        self.tested: dict[int, float] = {}  # this round: candidate -> f(W ∪ {c})
        self.last_f: dict[int, float] = {}
        self.plan: deque[tuple[int, str]] = deque()

    def _next_plan(self) -> None:
        untested = [c for c in self.shortlist if c not in self.chosen and c not in self.tested]
        if untested:
            c = untested[0]
            self.plan.extend([(c, "test"), (c, "back")])
        elif self.tested:
            best = max(self.tested, key=lambda c: (self.tested[c], -self.shortlist.index(c)))
            self.plan.append((best, "add"))
        else:  # the list is used up: test the next candidates by AtP
            rest = [c for c in self.atp_order if c not in self.chosen]
            self.shortlist = self.shortlist + rest[:1]
            self._next_plan()

    def act(self, obs: dict, info: dict) -> int:
        if not self.plan:
            self._next_plan()
        return self.action(self.plan[0][0], "keep")

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        if not self.plan:
            return
        c, purpose = self.plan.popleft()
        if info.get("invalid_action"):
            return
        if purpose == "test":
            self.tested[c] = self.last_f[c] = float(info["score"])
        elif purpose == "add":
            self.chosen.append(c)
            self.tested = {}

    def circuit_ranking(self) -> list[int]:
        listed = sorted(
            (c for c in self.shortlist if c not in self.chosen), key=lambda c: -self.last_f.get(c, -1e9)
        )
        return [
            *self.chosen,
            *listed,
            *(c for c in self.atp_order if c not in self.chosen and c not in listed),
        ]
