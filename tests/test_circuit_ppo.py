"""The circuit-track `ppo` agent: the shipped policy and its choice by `fit(tables)`, the store keeping the two
tracks' policies apart, acting under the mask, the declared ranking, bad input, and a short training run.

Runs on the shipped `toy-4l` circuit tables (replay, real env, real SB3); set queries the query store lacks run
on the toy model (a few ms each). Tests that need the tables skip with the reason when they are absent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acd_env.errors import ACDError
from acd_env.tasks import TOY_TASKS
from agents.circuit.ppo import CircuitPPOAgent

MODEL = "toy-4l"
AGENT = "agents.circuit.ppo:CircuitPPOAgent"
POLICY_DIR = Path(__file__).resolve().parents[1] / "agents" / "policies"
SHIPPED = f"circuit-{MODEL}-all"


def shipped_tables(split: str, tasks=TOY_TASKS, descriptors=("graph", "atp")):
    from acd_env.table_store import resolve_tables, restrict_descriptors, shipped_table_path

    paths = [shipped_table_path(MODEL, t, split) for t in tasks]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"shipped circuit table {missing[0]} is absent (build it with `acd tables build`)")
    return [restrict_descriptors(resolve_tables(MODEL, t, split, None), descriptors) for t in tasks]


@pytest.fixture(scope="module")
def train_tables():
    return shipped_tables("train")


@pytest.fixture(scope="module")
def env(train_tables):
    from agents.circuit.ppo_train import make_env

    return make_env(train_tables)


def run_episode(env, agent, prompt_index: int) -> tuple[list[int], list[int], dict]:
    obs, info = env.reset(seed=0, options={"prompt_index": prompt_index})
    agent.reset(obs, info)
    actions, done = [], False
    first_info = info
    while not done:
        a = agent.act(obs, info)
        assert info["action_mask"][a] == 1, "a masked action"
        assert a % 2 == 0, "the policy acts with keep queries only"
        actions.append(a)
        obs, r, terminated, truncated, info = env.step(a)
        assert not info["invalid_action"]
        agent.observe(a, r, obs, info)
        done = terminated or truncated
    return actions, agent.circuit_ranking(), first_info


def small_table(table, n: int):
    """The first `n` prompts of a table, in memory."""
    from acd_env.tables import CircuitTable

    circuit = {k: v[:n] for k, v in table.circuit.items()} if table.circuit is not None else None
    return CircuitTable(
        dict(table.meta, n_prompts=n),
        table.cases[:n],
        {k: v[:n] for k, v in table.measurements.items()},
        circuit,
    )


# ---------------------------------------------------------------------------------------------- shipped policy
def test_shipped_policy_is_small_and_described():
    path = POLICY_DIR / f"{SHIPPED}.zip"
    assert path.is_file(), f"{path} is not shipped; run scripts/train_circuit_ppo.py"
    assert path.stat().st_size < 1_000_000
    meta = json.loads(path.with_suffix(".json").read_text())
    key = meta["key"]
    assert key["track"] == "circuit" and key["tasks"] == sorted(TOY_TASKS)
    assert "atp_kl_ablation" in key["descriptor_names"] and key["n_candidates"] == 64
    assert meta["act_types"] == ["keep"] and meta["held_out_task"] is None
    for field in (
        "steps",
        "seed",
        "train_seconds",
        "train_efficiency",
        "val",
        "hyperparameters",
        "training_log",
    ):
        assert field in meta
    assert any("eval/val_efficiency" in r for r in meta["training_log"])


def test_fit_loads_the_matching_shipped_policy(train_tables):
    agent = CircuitPPOAgent()
    assert agent.learns_offline and agent.needs_atp and not agent.is_fitted
    agent.fit(train_tables)
    assert agent.source == f"shipped:{SHIPPED}.zip"
    assert agent.training_log() and all("step" in r for r in agent.training_log())
    held = POLICY_DIR / f"circuit-{MODEL}-no-ioi.zip"
    if held.is_file():
        agent.fit([t for t in train_tables if t.meta["task"] != "ioi"])
        assert agent.source == f"shipped:{held.name}"


def test_the_two_tracks_never_share_a_policy(train_tables):
    from agents.circuit.ppo_train import circuit_key
    from agents.ppo import PPOAgent
    from agents.ppo_store import find_policy, load_policy, table_key

    feature_tables = shipped_tables("train", descriptors=("graph",))
    # the circuit key of graph-only tables: the feature policy trained on exactly these tables is not matched
    assert find_policy(table_key(feature_tables), ["ablation"], POLICY_DIR) == POLICY_DIR / f"{MODEL}-all.zip"
    assert find_policy(circuit_key(feature_tables), ["ablation"], POLICY_DIR) is None
    # and the circuit policy is not matched by a feature-track key of its own tables
    assert find_policy(circuit_key(train_tables), ["keep"], POLICY_DIR) == POLICY_DIR / f"{SHIPPED}.zip"
    assert find_policy(table_key(train_tables), ["keep"], POLICY_DIR) is None
    with pytest.raises(ACDError, match="circuit track"):
        load_policy(POLICY_DIR / f"{SHIPPED}.zip")  # the feature track's default
    with pytest.raises(ACDError, match="features track"):
        CircuitPPOAgent(policy=f"{MODEL}-all")
    with pytest.raises(ACDError, match="circuit track"):
        PPOAgent(policy=SHIPPED)


def test_make_agent_path_form_on_the_circuit_track(env):
    from agents import make_agent

    agent = make_agent(AGENT, track="circuit", policy=SHIPPED)
    assert isinstance(agent, CircuitPPOAgent) and agent.is_fitted


# ---------------------------------------------------------------------------------------------- acting
def test_acting_is_deterministic_masked_and_declares_a_full_ranking(env):
    from acd_env.circuit import check_ranking

    a = CircuitPPOAgent(policy=SHIPPED, seed=0)
    b = CircuitPPOAgent(policy=SHIPPED, seed=7)
    for i in (0, env.unwrapped.backend.n_prompts - 1):
        acts_a, rank_a, info = run_episode(env, a, i)
        acts_b, rank_b, _ = run_episode(env, b, i)
        assert acts_a == acts_b and rank_a == rank_b
        n = int(info["n_valid"])
        assert sorted(rank_a) == list(range(n)) and check_ranking(rank_a, n) == rank_a
        entered = env.unwrapped.entry_order()
        assert rank_a[: len(entered)] == entered  # W's members first, in the order they entered


def test_declared_ranking_falls_back_to_ig():
    from agents.circuit.ppo_train import declared_ranking

    ig = np.array([0.1, 0.5, -0.2, 0.5, 0.3])
    assert declared_ranking([], ig) == [1, 3, 4, 0, 2]
    assert declared_ranking([2, 0], ig) == [2, 0, 1, 3, 4]


# ---------------------------------------------------------------------------------------------- bad input
def test_unknown_policy_name_names_it_and_the_shipped_ones():
    with pytest.raises(ACDError, match=r"'nope'.*circuit-toy-4l-all") as e:
        CircuitPPOAgent(policy="nope")
    assert f"'{MODEL}-all'" not in str(e.value)  # only the circuit track's policies are offered


def test_unfitted_agent_and_env_without_gradient_columns(train_tables):
    from acd_env.circuit_env import CircuitSearchEnv

    env = CircuitSearchEnv(model=MODEL, backend="replay", tables=shipped_tables("train", ("counting",)),
                           descriptors=("graph", "atp"))  # fmt: skip
    obs, info = env.reset(seed=0)
    with pytest.raises(ACDError, match="fit"):
        CircuitPPOAgent().reset(obs, info)
    graph_only = CircuitSearchEnv(
        model=MODEL, backend="replay", tables=shipped_tables("train", ("counting",), ("graph",))
    )
    obs, info = graph_only.reset(seed=0)
    with pytest.raises(ACDError, match="ig"):
        CircuitPPOAgent(policy=SHIPPED).reset(obs, info)
    with pytest.raises(ACDError, match="gradient columns"):
        CircuitPPOAgent(train_steps=64).fit(shipped_tables("train", ("counting",), ("graph",)))


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_train(train_tables):
    counting = next(t for t in train_tables if t.meta["task"] == "counting")
    return [small_table(counting, 8)]


def test_short_training_improves_on_the_untrained_policy(tiny_train, tmp_path, caplog):
    """IG warm start + a little PPO against the same network untrained (learning rate 0, no warm start): the
    training objective (circuit efficiency on the train prompts) rises, and the in-process fit says so."""
    from agents.circuit.ppo_train import train_circuit_policy

    small: dict[str, Any] = dict(n_envs=2, n_steps=32, batch_size=32, eval_every=0, val_fraction=0.0)
    untrained = train_circuit_policy(tiny_train, steps=64, bc_epochs=0, learning_rate=0.0, **small)
    agent = CircuitPPOAgent(policy_dir=tmp_path, train_steps=128, train_kwargs={"bc_epochs": 150, **small})
    with caplog.at_level(logging.WARNING, logger="agents.circuit.ppo"):
        agent.fit(tiny_train)
    assert agent.source == "trained" and "training one in-process" in caplog.text
    trained = agent.meta
    assert trained["warm_start"]["bc/accuracy"] > 0.8
    # measured 0.94 vs 0.82 (the IG ranking: 0.92)
    assert trained["train_efficiency"] > untrained.meta["train_efficiency"] + 0.05, (trained, untrained.meta)
    assert any("losses/value_loss" in r for r in agent.training_log())


def test_training_script_writes_a_loadable_policy(tiny_train, tmp_path, monkeypatch, train_tables):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "train_circuit_ppo", Path(__file__).resolve().parents[1] / "scripts" / "train_circuit_ppo.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "load_train", lambda model, tasks, tables_dir: tiny_train)
    args = ["--tasks", "counting", "--steps", "64", "--n-envs", "2", "--n-steps", "32", "--batch-size", "32",
            "--bc-epochs", "2", "--val-fraction", "0.25", "--eval-every", "64", "--out", str(tmp_path)]  # fmt: skip
    (path,) = script.main(args)
    assert path == tmp_path / f"circuit-{MODEL}-counting.zip"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["key"]["track"] == "circuit" and meta["n_val_prompts"] == 2 and "val" in meta
    agent = CircuitPPOAgent(policy=path)
    assert agent.meta["name"] == path.stem
