"""Circuit-track `ranker` and `ucb`: determinism, interface, bad input, and their behaviour (no model, seconds).

A small fake `CircuitSearch-v0` stands in for the env: the same action encoding, mask, free repeats and budget,
with a known faithfulness f(W) = 1 − Π_{c ∈ W} (1 − w_c) over hidden weights w (KL(clean ‖ keep ∅) = 1).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from acd_env.errors import ACDError
from acd_env.tables import CircuitTable
from agents import CIRCUIT_REGISTRY, make_agent
from agents.circuit.ranker import CircuitRankerAgent
from agents.circuit.ucb import CONTEXT, CircuitUCBAgent

STATIC = ("influence", "direct_logit", "layer_frac", "atp_kl_ablation")
NAMES = (*STATIC, "ig", "atp_joint_rank", "in_circuit", "toggles", "keep_delta", "ablate_delta")


class FakeCircuitEnv:
    def __init__(self, n: int = 12, k: int = 16, budget: int = 8, seed: int = 0) -> None:
        self.n, self.k, self.budget = n, k, budget
        rng = np.random.default_rng(seed)
        self.w = np.zeros(k)
        self.w[:n] = rng.uniform(0.0, 0.6, n) ** 2
        self.cand = np.zeros((k, len(NAMES)), np.float32)
        self.cand[:n, 0] = -np.arange(n)
        self.cand[:n, 1] = self.w[:n] + rng.normal(0, 0.05, n)
        self.cand[:n, 3] = self.w[:n] + rng.normal(0, 0.1, n)
        self.cand[:n, 4] = self.w[:n] + rng.normal(0, 0.1, n)
        self.cand[:n, 5] = rng.permutation(n) / n

    def f(self, members: np.ndarray) -> float:
        return float(1.0 - np.prod(1.0 - self.w[members.astype(bool)]))

    def reset(self) -> tuple[dict, dict]:
        self.members = np.zeros(self.k, np.int8)
        self.left, self.steps = self.budget, 0
        self.seen = {("keep", self.members.tobytes()), ("ablate", self.members.tobytes())}
        self.mask = np.zeros(2 * self.k, np.int8)
        self.mask[: 2 * self.n] = 1
        info = {"prompt_id": "fake-0", "n_valid": self.n, "kl_empty": 1.0, "descriptor_names": NAMES}
        return self.obs(), {**info, "action_mask": self.mask}

    def obs(self) -> dict:
        return {"candidates": self.cand.copy(), "circuit": self.members.copy()}

    def step(self, a: int) -> tuple[dict, float, bool, bool, dict]:
        assert self.mask[a], f"masked action {a}"
        c, kind = divmod(int(a), 2)
        self.members[c] ^= 1
        key = (("keep", "ablate")[kind], self.members.tobytes())
        repeat = key in self.seen
        self.seen.add(key)
        self.left -= 0 if repeat else 1
        self.steps += 1
        f = self.f(self.members)
        score = f if kind == 0 else 1.0 - self.f(1 - self.members)
        info = {"score": score, "repeat": repeat, "queries_left": self.left, "action_mask": self.mask}
        return self.obs(), 0.0, self.left <= 0, self.steps >= 4 * self.budget, info


def run(agent, env: FakeCircuitEnv) -> tuple[list[int], list[int]]:
    obs, info = env.reset()
    agent.reset(obs, info)
    actions = []
    if agent.uses_queries:
        while True:
            a = agent.act(obs, info)
            assert info["action_mask"][a], "action not valid under the mask"
            actions.append(int(a))
            obs, r, term, trunc, info = env.step(a)
            agent.observe(a, r, obs, info)
            if term or trunc:
                break
    return actions, agent.circuit_ranking()


def synthetic_table(n_prompts: int = 30, n: int = 12, k: int = 16, seed: int = 0, circuit: bool = True):
    """A CircuitTable whose reference order is descending `direct_logit` (the other scores are noise)."""
    rng = np.random.default_rng(seed)
    cases, ref, joint, ig = (
        [],
        np.full((n_prompts, k), -1),
        np.full((n_prompts, k), -1),
        np.zeros((n_prompts, k)),
    )
    for p in range(n_prompts):
        d = np.zeros((k, len(STATIC)))
        d[:n] = rng.normal(size=(n, len(STATIC)))
        d[:n, 0] = -np.arange(n)
        cases.append(SimpleNamespace(descriptors=d, n_valid=n, prompt=SimpleNamespace(id=f"s{p}")))
        ref[p, :n] = np.argsort(-d[:n, 1], kind="stable")
        joint[p, :n] = rng.permutation(n)
        ig[p, :n] = rng.normal(size=n)
    data = {"ref_order": ref, "ref_curve": np.linspace(0.5, 1.0, 20)[None].repeat(n_prompts, 0),
            "kl_empty": np.ones(n_prompts), "atp_joint": joint, "ig": ig}  # fmt: skip
    meta = {
        "model": "fake",
        "task": "synthetic",
        "split": "train",
        "n_candidates": k,
        "descriptor_names": list(STATIC),
    }
    return CircuitTable(meta, cases, {}, data if circuit else None)  # type: ignore[arg-type]


# -- registry and interface -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ranker", "ucb"])
def test_registered_with_the_interface(name):
    assert name in CIRCUIT_REGISTRY
    agent = make_agent(name, track="circuit", seed=0)
    for method in ("reset", "act", "observe", "reset_memory", "circuit_ranking"):
        assert callable(getattr(agent, method))
    assert agent.needs_atp


def test_ranker_class_attributes():
    assert CircuitRankerAgent.learns_offline and not CircuitRankerAgent.uses_queries
    assert CircuitUCBAgent.uses_queries and not CircuitUCBAgent.learns_offline


# -- ranker ------------------------------------------------------------------------------------------
def test_ranker_recovers_an_obvious_ranking():
    agent = CircuitRankerAgent(seed=0, max_iter=100, learning_rate=0.1, min_samples_leaf=10)
    agent.fit(synthetic_table(n_prompts=60))
    env = FakeCircuitEnv(seed=3)
    _, ranking = run(agent, env)
    truth = list(np.argsort(-env.cand[: env.n, 1], kind="stable"))
    assert sorted(ranking) == list(range(env.n))
    assert set(ranking[:3]) == set(truth[:3])
    assert ranking[0] == truth[0]


def test_ranker_is_deterministic_and_keeps_its_fit_across_reset_memory():
    table = synthetic_table()
    a = CircuitRankerAgent(seed=1, max_iter=30).fit(table)
    b = CircuitRankerAgent(seed=1, max_iter=30).fit(table)
    ra, rb = run(a, FakeCircuitEnv(seed=5))[1], run(b, FakeCircuitEnv(seed=5))[1]
    assert ra == rb
    a.reset_memory()
    assert run(a, FakeCircuitEnv(seed=5))[1] == ra


def test_ranker_unfitted_is_a_clear_error():
    agent = make_agent("ranker", track="circuit")
    obs, info = FakeCircuitEnv().reset()
    with pytest.raises(ACDError, match="not fitted"):
        agent.reset(obs, info)


def test_ranker_refuses_tables_without_circuit_data_naming_them():
    with pytest.raises(ACDError, match=r"'synthetic'.*no circuit data"):
        CircuitRankerAgent().fit(synthetic_table(circuit=False))
    with pytest.raises(ACDError, match="circuit tables"):
        CircuitRankerAgent().fit([3])


def test_ranker_refuses_an_env_without_the_circuit_columns():
    agent = CircuitRankerAgent(max_iter=10).fit(synthetic_table())
    obs, info = FakeCircuitEnv().reset()
    info = dict(info, descriptor_names=(*STATIC, "x", "y", *NAMES[6:]))
    with pytest.raises(ACDError, match="lacks"):
        agent.reset(obs, info)


# -- ucb ---------------------------------------------------------------------------------------------
def test_ucb_is_deterministic_and_valid():
    a1, r1 = run(CircuitUCBAgent(seed=0), FakeCircuitEnv(seed=2))
    a2, r2 = run(CircuitUCBAgent(seed=0), FakeCircuitEnv(seed=2))
    assert a1 == a2 and r1 == r2
    assert sorted(r1) == list(range(12))
    assert all(a % 2 == 0 for a in a1)  # keep queries only


def test_ucb_spends_its_budget_and_steps_back_for_free():
    env = FakeCircuitEnv(seed=4, budget=8)
    agent = CircuitUCBAgent(alpha=0.3, max_tests=3)
    actions, ranking = run(agent, env)
    assert env.left == 0 and len(actions) > env.budget  # the steps back and the commits were free
    assert agent.chosen and ranking[: len(agent.chosen)] == agent.chosen
    # every committed candidate was the best measured arm of its round: f grows along the commits
    fs = [env.f(np.isin(np.arange(env.k), agent.chosen[: i + 1])) for i in range(len(agent.chosen))]
    assert fs == sorted(fs)


def test_ucb_learns_across_prompts_until_reset_memory():
    agent = CircuitUCBAgent()
    run(agent, FakeCircuitEnv(seed=1))
    assert agent.n_updates > 0
    theta = agent.theta.copy()
    run(agent, FakeCircuitEnv(seed=2))
    assert not np.allclose(agent.theta, theta)
    agent.reset_memory()
    assert agent.n_updates == 0 and np.allclose(agent.theta, agent.theta0)


def test_ucb_bonus_changes_its_choice():
    """Two candidates: A has the higher predicted gain but its direction is well measured; B is slightly worse
    by prediction and unexplored. Greedy on the prediction (α = 0) tests A; the bonus (α = 1) tests B."""
    env = FakeCircuitEnv(n=2, k=2)
    obs, info = env.reset()
    picks = {}
    for alpha in (0.0, 1.0):
        agent = CircuitUCBAgent(alpha=alpha, lam=1.0)
        agent.reset(obs, info)
        x = np.zeros((2, len(CONTEXT)))
        x[:, 0] = 1.0
        x[0, 1], x[1, 2] = 1.0, 1.0  # A: ig_share direction; B: atp_share direction
        agent._x = x
        for _ in range(50):  # A's direction measured often at gain 0.5; B's never
            agent.update(np.array([1.0, 1.0, 0, 0, 0, 0]), 0.5)
        agent.update(np.array([1.0, 0, 0, 0, 0, 0]), 0.4)
        pred = agent.predicted()
        assert pred[0] > pred[1]
        picks[alpha] = agent.act(obs, info) // 2
    assert picks[0.0] == 0 and picks[1.0] == 1


@pytest.mark.parametrize("kw", [{"alpha": -1.0}, {"alpha": float("nan")}, {"lam": 0.0}, {"max_tests": 0}])
def test_ucb_bad_settings(kw):
    with pytest.raises(ACDError):
        CircuitUCBAgent(**kw)


def test_ucb_needs_the_atp_columns():
    obs, info = FakeCircuitEnv().reset()
    info = dict(info, descriptor_names=("influence", "a", "b", "c", "d", "e", *NAMES[6:]))
    with pytest.raises(ACDError, match="descriptors=\\('graph', 'atp'\\)"):
        CircuitUCBAgent().reset(obs, info)


def test_ucb_act_before_reset_is_a_clear_error():
    obs, info = FakeCircuitEnv().reset()
    with pytest.raises(ACDError, match="reset"):
        CircuitUCBAgent().act(obs, info)
