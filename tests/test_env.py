"""CircuitDiscovery-v0: spaces, checkers, vector envs, determinism, invalid actions, live == replay."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import acd_env
from acd_env.case import CaseSettings
from acd_env.env import CircuitDiscoveryEnv
from acd_env.errors import ACDError
from acd_env.table_build import build_task_table
from acd_env.tasks import load_task

N_PROMPTS = 3


@pytest.fixture(scope="module")
def model():
    return acd_env.load_model("toy-4l")


@pytest.fixture(scope="module")
def table(model):
    return build_task_table(model, "ioi", "test", CaseSettings(), n=N_PROMPTS)


def live_env(model, **kw):
    return CircuitDiscoveryEnv(model=model, prompts=load_task("ioi", split="test", n=N_PROMPTS), **kw)


def replay_env(model, table, **kw):
    return CircuitDiscoveryEnv(model=model, backend="replay", tables=table, **kw)


def rollout(env, seed, n_steps=None, policy_seed=0):
    rng = np.random.default_rng(policy_seed)
    obs, info = env.reset(seed=seed)
    trace = [(info["prompt_id"], obs)]
    done = False
    while not done:
        action = int(rng.choice(np.flatnonzero(info["action_mask"])))
        obs, reward, done, _, info = env.step(action)
        trace.append((action, reward, obs, info.get("feature")))
        if n_steps is not None and len(trace) > n_steps:
            break
    return trace


def test_registered_and_default_make_runs_on_the_toy_model():
    env = gym.make("CircuitDiscovery-v0")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["prompt_id"].split("/")[1] == "train"
    assert env.unwrapped.action_masks().sum() == 64 * 3
    obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
    assert reward >= 0.0 and not truncated and not terminated
    env.close()


@pytest.mark.parametrize("backend", ["live", "replay"])
def test_checkers_pass(model, table, backend):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = live_env(model) if backend == "live" else replay_env(model, table)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


def test_replay_equals_live(model, table):
    live, replay = live_env(model), replay_env(model, table)
    for seed in range(3):
        a, b = rollout(live, seed, policy_seed=seed), rollout(replay, seed, policy_seed=seed)
        assert a[0][0] == b[0][0]
        np.testing.assert_array_equal(a[0][1]["candidates"], b[0][1]["candidates"])  # identical descriptors
        assert len(a) == len(b)
        for (act_a, r_a, obs_a, f_a), (act_b, r_b, obs_b, f_b) in zip(a[1:], b[1:], strict=True):
            assert act_a == act_b and f_a == f_b
            assert r_a == pytest.approx(r_b, abs=1e-6, rel=1e-4)
            np.testing.assert_array_equal(obs_a["outcome"], obs_b["outcome"])
            # measured columns: the table's batched engine and live feature_intervention agree to float32
            # rounding (≤ 1e-5 in logits), which measured_log_kl = log10(KL + 1e-6) amplifies for a KL of
            # ~1e-5 nats (up to ~1e-4 here, i.e. 0.03 % of that KL)
            np.testing.assert_allclose(obs_a["candidates"], obs_b["candidates"], atol=1e-3)


@pytest.mark.parametrize("backend", ["live", "replay"])
def test_same_seed_same_episode(model, table, backend):
    make = (lambda: live_env(model)) if backend == "live" else (lambda: replay_env(model, table))
    a, b = rollout(make(), 7), rollout(make(), 7)
    assert a[0][0] == b[0][0]
    for x, y in zip(a[1:], b[1:], strict=True):
        assert x[0] == y[0] and x[1] == y[1]
        np.testing.assert_array_equal(x[2]["candidates"], y[2]["candidates"])


def test_invalid_actions_are_documented_no_ops(model, table):
    env = replay_env(model, table, budget=5)
    obs, info = env.reset(seed=0)
    first = int(np.flatnonzero(info["action_mask"])[0])
    obs, reward, terminated, _, info = env.step(first)
    assert not info["invalid_action"] and reward > 0
    before = obs["candidates"].copy()
    for bad in (
        first,
        first + 1,
        -1,
        env.action_space.n,
        10**9,
    ):  # visited candidate, other type, out of range
        obs, reward, terminated, _, info = env.step(bad)
        assert info["invalid_action"] and reward == 0.0
        np.testing.assert_array_equal(obs["candidates"], before)
        if terminated:
            break
    assert terminated  # invalid actions still spend budget, so every episode ends
    with pytest.raises(ACDError, match="call reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ACDError, match="action must be an integer"):
        env.step("ablate")


def test_mask_and_padding(model, table):
    env = replay_env(model, table, n_candidates=8, budget=8)
    _, info = env.reset(seed=1)
    assert info["action_mask"].dtype == np.int8 and info["action_mask"].shape == (24,)
    done = False
    while not done:
        valid = np.flatnonzero(info["action_mask"])
        _, _, done, _, info = env.step(int(valid[-1]))
    assert not info["action_mask"].any()  # every candidate visited once: no valid action remains


def test_patching_differs_from_ablation(model, table):
    env = replay_env(model, table)
    env.reset(seed=0, options={"prompt_index": 0})
    case = env.case
    assert case.patch_source == "counterfactual"
    values = case.values[: case.n_valid]
    changed = np.abs(values[:, 1] - case.clean_act[: case.n_valid]) > 1e-3
    assert changed.any() and (values[:, 1] != 0).any()  # patching is never silently zero
    eff = env.oracle_effects()
    rows = np.flatnonzero(changed & (values[:, 1] > 0))
    assert not np.allclose(eff.kl[rows, 0], eff.kl[rows, 1])


def test_patching_fallback_without_counterfactual(model):
    prompt = {"clean": "when alice and bob went to the park , alice gave a ball to", "answer": "bob"}
    env = CircuitDiscoveryEnv(model=model, prompts=[prompt], budget=3)
    env.reset(seed=0)
    assert env.case.patch_source == "mean_activation"
    a = 0 * 3 + 1  # candidate 0, patching
    _, _, _, _, info = env.step(a)
    assert info["patch_source"] == "mean_activation"


def test_vector_envs(model, table):
    """Vector envs step the same envs: gymnasium's sync vector env and SB3's DummyVecEnv give, per sub-env, exactly
    the observations and rewards of a single env reset with that sub-env's seed and given the same actions."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    def single(seed, actions):
        env = replay_env(model, table)
        obs, info = env.reset(seed=seed)
        out = [(obs, 0.0, info["prompt_id"])]
        for a in actions:
            obs, reward, _, _, info = env.step(int(a))
            out.append((obs, reward, info["prompt_id"]))
        return out

    actions = np.array([[0, 3, 6, 9], [4, 7, 0, 3]])  # two steps of four envs
    vec = gym.make_vec(
        "CircuitDiscovery-v0",
        num_envs=4,
        vectorization_mode="sync",
        model=model,
        backend="replay",
        tables=table,
    )
    obs, _ = vec.reset(seed=0)  # sub-env i is reset with seed i
    assert obs["candidates"].shape == (4, 64, 21)
    trace = [(obs, np.zeros(4))]
    for step_actions in actions:
        obs, rewards, *_ = vec.step(step_actions)
        trace.append((obs, rewards))
    vec.close()
    dummy = DummyVecEnv([lambda: replay_env(model, table) for _ in range(2)])
    dummy.seed(7)  # sub-env i is reset with seed 7 + i
    d_trace = [(dummy.reset(), np.zeros(2))]
    for step_actions in actions[:, :2]:
        d_obs, d_rewards, _, _ = dummy.step(step_actions)
        d_trace.append((d_obs, d_rewards))
    rewards_seen = []
    for i in range(4):
        for j, (s_obs, s_reward, _) in enumerate(single(i, actions[:, i])):
            v_obs, v_rewards = trace[j]
            for key in s_obs:
                np.testing.assert_array_equal(v_obs[key][i], s_obs[key])
            assert v_rewards[i] == s_reward
            rewards_seen.append(s_reward)
    for i in range(2):
        for j, (s_obs, s_reward, _) in enumerate(single(7 + i, actions[:, i])):
            d_obs, d_rewards = d_trace[j]
            for key in s_obs:
                np.testing.assert_array_equal(d_obs[key][i], s_obs[key])
            assert d_rewards[i] == pytest.approx(s_reward)  # SB3 stores rewards as float32
    assert max(rewards_seen) > 0  # the compared steps measured something
    prompts = {single(i, [])[0][2] for i in range(4)}
    assert len(prompts) > 1  # the seeds pick different prompts, so the sub-envs are not copies of one episode


def test_maskable_ppo_learns_on_replay(model, table):
    """MaskablePPO (seeded) on the 3-prompt replay env: 1,024 training steps at least double the mean episode
    return of its own untrained policy and of random valid actions (measured: 0.39 / 0.29 → 2.1 nats)."""
    from sb3_contrib import MaskablePPO

    env = replay_env(model, table, budget=10)

    def mean_return(act):
        returns = []
        for i in range(N_PROMPTS):
            obs, info = env.reset(seed=0, options={"prompt_index": i})
            done, total = False, 0.0
            while not done:
                obs, reward, done, _, info = env.step(act(obs, info))
                total += reward
            returns.append(total)
        return float(np.mean(returns))

    rng = np.random.default_rng(0)
    random_return = float(
        np.mean(
            [
                mean_return(lambda o, info: int(rng.choice(np.flatnonzero(info["action_mask"]))))
                for _ in range(5)
            ]
        )
    )
    agent = MaskablePPO("MultiInputPolicy", replay_env(model, table, budget=10), n_steps=256, batch_size=64,
                        n_epochs=2, seed=0, verbose=0)  # fmt: skip

    def policy(obs, info):
        return int(agent.predict(obs, action_masks=env.action_masks(), deterministic=True)[0])

    untrained = mean_return(policy)
    agent.learn(total_timesteps=1024)
    trained = mean_return(policy)
    assert trained > 2 * max(untrained, random_return), (trained, untrained, random_return)


def test_oracle_effects_match_steps(model):
    env = live_env(model)
    env.reset(seed=0)
    eff = env.oracle_effects()
    for a in (0, 4, 8):
        _, reward, _, _, info = env.step(a)
        k, t = divmod(a, 3)
        assert reward == pytest.approx(float(eff.kl[k, t]), rel=1e-4, abs=1e-7)
        assert info["n_affected"] == int(eff.n_affected[k, t])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "gpu"}, "unknown backend"),
        ({"reward": "acc"}, "unknown reward"),
        ({"n_candidates": 0}, "n_candidates must be a positive integer"),
        ({"budget": -1}, "budget must be a positive integer"),
        ({"budget": 2.5}, "budget must be a positive integer"),
        ({"interventions": ("ablation", "zap")}, "unknown intervention 'zap'"),
        ({"descriptors": ("atp",)}, "descriptors must be"),
        ({"task": "sorting"}, "unknown task 'sorting'"),
        ({"model": "gpt-9"}, "unknown model 'gpt-9'"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    with pytest.raises(ACDError, match=match):
        CircuitDiscoveryEnv(**kwargs)


def test_replay_refuses_mismatched_settings(model, table):
    with pytest.raises(ACDError, match="steering_scale"):
        replay_env(model, table, steering_scale=2.0)
    with pytest.raises(ACDError, match="n_candidates"):
        replay_env(model, table, n_candidates=128)
    env = replay_env(model, table, n_candidates=16, interventions=("steering", "ablation"))
    env.reset(seed=0)
    eff = env.oracle_effects()
    assert eff.kl.shape == (16, 2)
    np.testing.assert_array_equal(eff.kl[:, 1], table.measurements["kl"][env._prompt_index, :16, 0])
