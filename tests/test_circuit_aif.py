"""The circuit-track `aif` (agents/circuit/aif.py) and its ablation `aif-argmax`: behaviour, determinism,
protocol conformance, bad input. A small synthetic set function stands in for the env (fast; JIT included)."""

from __future__ import annotations

import numpy as np
import pytest

from acd_env.errors import ACDError
from agents import make_agent
from agents.circuit.aif import CircuitAIFAgent

K, N = 64, 12
NAMES = ("influence", "ig", "in_circuit", "toggles", "keep_delta", "ablate_delta")


class FakeSetEnv:
    """f(W) = min(1, Σ weights of W) minus a cancellation when both 0 and 5 are in W; n(W) likewise."""

    def __init__(self, ig: np.ndarray, weights: np.ndarray, budget: int = 20) -> None:
        self.ig, self.w, self.budget = ig, weights, budget

    def f(self, members: frozenset) -> float:
        return float(min(1.0, sum(self.w[c] for c in members)))

    def reset(self):
        self.W: set[int] = set()
        self.left = self.budget
        self.seen = {("keep", frozenset()), ("ablate", frozenset())}
        cand = np.zeros((K, len(NAMES)), np.float32)
        cand[:N, 0] = -np.arange(N)
        cand[:N, 1] = self.ig
        self.cand = cand
        mask = np.zeros(2 * K, np.int8)
        mask[: 2 * N] = 1
        self.mask = mask
        info = {"descriptor_names": NAMES, "n_valid": N, "action_mask": mask, "prompt_id": "p"}
        return self._obs(), info

    def _obs(self):
        return {"candidates": self.cand.copy(), "budget": np.array([self.left / self.budget], np.float32)}

    def step(self, a: int):
        assert 0 <= a < 2 * K and self.mask[a], f"invalid action {a}"
        c, u = divmod(a, 2)
        kind = ("keep", "ablate")[u]
        toggle = "out" if c in self.W else "in"
        self.W ^= {c}
        key = (kind, frozenset(self.W))
        repeat = key in self.seen
        if not repeat:
            self.seen.add(key)
            self.left -= 1
        score = self.f(frozenset(self.W))
        info = dict(candidate=c, kind=kind, toggle=toggle, score=score, repeat=repeat, invalid_action=False,
                    queries_left=self.left, action_mask=self.mask)  # fmt: skip
        return self._obs(), 0.0, self.left <= 0, False, info


def episode(agent, env, steps: int = 200):
    obs, info = env.reset()
    agent.reset(obs, info)
    actions = []
    for _ in range(steps):
        a = agent.act(obs, info)
        actions.append(int(a))
        obs, r, term, trunc, info = env.step(a)
        agent.observe(a, r, obs, info)
        if term or trunc:
            break
    return actions


def toy_env(**kw) -> FakeSetEnv:
    ig = np.linspace(1.0, 0.0, N)  # descriptor order 0, 1, 2, ...
    w = np.array([0.4, 0.3, 0.2, 0.0, 0.05, 0.1, 0, 0, 0, 0, 0, 0])
    return FakeSetEnv(ig, w, **kw)


def test_registered_and_valid_actions_under_the_mask():
    for name in ("aif", "aif-argmax"):
        agent = make_agent(name, track="circuit", seed=0)
        env = toy_env()
        actions = episode(agent, env)  # FakeSetEnv asserts every action is valid under the mask
        assert env.left == 0 and actions
        ranking = agent.circuit_ranking()
        assert sorted(ranking) == list(range(N))
        d = agent.diagnostics()
        assert set(d) == {"aif/belief_entropy", "aif/efe"} and all(np.isfinite(list(d.values())))


def test_deterministic():
    runs = []
    for _ in range(2):
        agent = make_agent("aif", track="circuit", seed=3)
        a1 = episode(agent, toy_env())
        a2 = episode(agent, toy_env())  # the second episode uses what the first taught
        runs.append((a1, a2, agent.circuit_ranking(), [p.sum() for p in agent.pA]))
    assert runs[0] == runs[1]


def test_information_gain_changes_the_choice():
    """The descriptor's top candidate is already certain (its prior bin is learned to be all core): its query
    would teach nothing. `aif` spends its first query on an uncertain candidate; `aif-argmax`, same model
    and learning, takes the top of its own score (which is the descriptor's top)."""
    choices = {}
    for name in ("aif", "aif-argmax"):
        agent = make_agent("aif" if name == "aif" else "aif-argmax", track="circuit", seed=0, info_weight=3.0)
        counts = np.zeros((6, 3))
        counts[0] = [0.0, 0.0, 400.0]  # the top rank bin: always core (as if learned from many prompts)
        delta = np.zeros((10, 3, 2, 3))
        agent._fit_counts = [counts, delta]
        env = toy_env()
        obs, info = env.reset()
        agent.reset(obs, info)
        a = agent.act(obs, info)
        choices[name] = a // 2
    assert choices["aif-argmax"] == 0  # the descriptor order's first
    assert choices["aif"] not in (0, 1)  # the certain top bin (ranks 0-1) is skipped for information


def test_measured_cancellation_changes_the_ranking():
    """Candidate 0 is first by the descriptor (and by the prior); a keep query shows that adding it *lowers*
    f (it cancels what the empty set restores): its posterior falls and it leaves the top of the ranking."""
    agent = CircuitAIFAgent(seed=0)
    env = toy_env()
    env.w = env.w.copy()
    env.w[0] = -0.3  # cancellation
    obs, info = env.reset()
    agent.reset(obs, info)
    before = agent.circuit_ranking()
    assert before[0] == 0
    obs, r, _, _, info = env.step(agent.action(0, "keep"))
    agent.observe(0, r, obs, info)
    after = agent.circuit_ranking()
    assert after[0] != 0 and after.index(0) >= 3
    assert 0 not in agent.W or agent._undo == 0


def test_learning_persists_and_reset_memory_forgets():
    agent = CircuitAIFAgent(seed=0)
    episode(agent, toy_env())
    prior = [p.copy() for p in agent.prior_pA()]
    learned = agent.pA
    assert learned[1].sum() > prior[1].sum() + 1
    agent.reset_memory()
    assert np.allclose(agent.pA[1], prior[1], rtol=1e-5)


def test_bad_input():
    with pytest.raises(ACDError):
        CircuitAIFAgent(rank="best")
    with pytest.raises(ACDError):
        CircuitAIFAgent(prior_concentration=0)
    with pytest.raises(ACDError):
        make_agent("aif", track="circuit", bogus=1)

    with pytest.raises(ACDError):
        CircuitAIFAgent().fit([])
