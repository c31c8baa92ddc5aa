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
    agent = CircuitAIFAgent(seed=0, learning_rate=1.0)
    episode(agent, toy_env())
    prior = [p.copy() for p in agent.prior_pA()]
    learned = agent.pA
    assert learned[1].sum() > prior[1].sum() + 1
    agent.reset_memory()
    assert np.allclose(agent.pA[1], prior[1], rtol=1e-5)


def test_no_online_learning_by_default():
    """Default: the likelihood is learned offline only (fit); the beliefs still move with every reading, and a
    later episode acts exactly as a fresh agent would (nothing self-labelled carried over)."""
    agent = CircuitAIFAgent(seed=0)
    prior = [p.copy() for p in agent.prior_pA()]
    first = episode(agent, toy_env())
    assert np.allclose(agent.pA[1], prior[1], rtol=1e-6, atol=0)
    assert agent._measured.any() and not np.allclose(agent._q_measured[agent._measured], 1 / 3)
    assert episode(agent, toy_env()) == first == episode(CircuitAIFAgent(seed=0), toy_env())


def test_bad_input():
    with pytest.raises(ACDError):
        CircuitAIFAgent(rank="best")
    with pytest.raises(ACDError):
        CircuitAIFAgent(prior_concentration=0)
    with pytest.raises(ACDError):
        make_agent("aif", track="circuit", bogus=1)

    with pytest.raises(ACDError):
        CircuitAIFAgent().fit([])


def test_planning_option_names_both_agents():
    from agents.circuit.aif import CircuitAIFArgmaxAgent

    assert CircuitAIFAgent().planning == "efe" and CircuitAIFArgmaxAgent().planning == "argmax"
    same = CircuitAIFAgent(seed=0, planning="argmax")  # the option and the registered row are one agent
    assert episode(same, toy_env()) == episode(make_agent("aif-argmax", track="circuit", seed=0), toy_env())
    with pytest.raises(ACDError, match=r"planning must be 'efe' .* or 'argmax' .*got 'greedy'"):
        make_agent("aif", track="circuit", planning="greedy")


def test_posterior_top_is_the_likeliest_members_highest_first():
    agent = CircuitAIFAgent(seed=0)
    env = toy_env()
    episode(agent, env)
    top = agent.posterior_top(5)
    assert len(top) == 5 and len({c for c, _ in top}) == 5 and all(0 <= c < N for c, _ in top)
    p = [p for _, p in top]
    assert p == sorted(p, reverse=True) and all(0.0 <= x <= 1.0 for x in p)
    member = agent._q[:N, 1:].sum(1)
    assert p[0] == pytest.approx(member.max()) and p[-1] >= np.sort(member)[-5] - 1e-9
    assert len(agent.posterior_top(100)) == N and agent.posterior_top(0) == []


def test_bench_rows_and_tensorboard_carry_the_posterior_top(tmp_path):
    """A short real `acd bench --track circuit --agents aif`: every step row carries the 5 likeliest members
    (sorted by P(member)); the circuit TensorBoard run holds `circuit/aif_posterior_top` (text, described) per
    episode, naming the candidates the rows name, and the aif diagnostics scalars."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from acd_env.table_store import shipped_table_path
    from benchmarks.cli import main
    from benchmarks.tb import CIRCUIT_TAG_DESCRIPTIONS, POSTERIOR_TOP_TAG

    if not shipped_table_path("toy-4l", "counting", "test").is_file():
        pytest.skip("the shipped toy-4l tables are not built yet")
    out = tmp_path / "run"
    args = ["bench", "--track", "circuit", "--agents", "aif", "--tasks", "counting", "--prompts-per-task", "2",
            "--seeds", "1", "--protocol", "zero-shot", "--reps", "50", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step" and r["agent"] == "aif"]
    episodes = sorted((r for r in rows if r["kind"] == "episode"), key=lambda e: e["order"])
    assert len(episodes) == 2 and steps
    for s in steps:
        top = s["posterior_top"]
        assert len(top) == 5 and len({c for c, _ in top}) == 5
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
        assert all(0.0 <= p <= 1.0 for _, p in top)
    acc = EventAccumulator(str(out / "tb" / "circuit" / "zero-shot" / "aif"), size_guidance={"tensors": 0})
    acc.Reload()
    assert POSTERIOR_TOP_TAG in acc.Tags()["tensors"]
    assert {"aif/belief_entropy", "aif/efe"} <= set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
    meta = acc.SummaryMetadata(POSTERIOR_TOP_TAG)
    assert meta.plugin_data.plugin_name == "text"
    assert meta.summary_description == CIRCUIT_TAG_DESCRIPTIONS[POSTERIOR_TOP_TAG]
    events = acc.Tensors(POSTERIOR_TOP_TAG)
    assert [e.step for e in events] == [0, 1]
    for event, ep in zip(events, episodes, strict=True):
        text = event.tensor_proto.string_val[0].decode()
        assert ep["prompt_id"] in text
        ep_steps = sorted((s for s in steps if s["prompt_id"] == ep["prompt_id"]), key=lambda s: s["step"])
        table = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
        assert len(table) == len(ep_steps)
        for line, s in zip(table, ep_steps, strict=True):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[0] == str(s["step"])
            if not s["invalid"]:
                assert cells[1].startswith(s["query"]) and cells[2] == s["toggle"]
                assert cells[3] == str(s["candidate"])
            assert cells[5] == ", ".join(f"{c} ({p:.3f})" for c, p in s["posterior_top"])
