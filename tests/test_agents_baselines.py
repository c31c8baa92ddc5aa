"""The baseline agents (random, greedy, magnitude, atp, ucb, oracle, ranker) and `make_agent`.

Most tests run on synthetic circuit tables built here (replay backend, no model, milliseconds per episode), in
which the measured KL is a known function of some descriptor columns. So the tests always run and can check
what each agent does, not just that it runs. The shipped `toy-4l` tables and model are used where they exist
(skipped with the reason otherwise): the ranker must beat greedy there, and a couple of agents run live.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from acd_env.attribution.descriptors import ATP_DESCRIPTORS, GRAPH_DESCRIPTORS
from acd_env.case import CaseSettings, PromptCase
from acd_env.discretise import BIN_EDGES
from acd_env.env import CircuitDiscoveryEnv
from acd_env.errors import ACDError
from acd_env.tables import CircuitTable, make_meta
from acd_env.tasks import TOY_TASKS, Prompt
from agents import REGISTRY, available_agents, make_agent

ROOT = Path(__file__).resolve().parents[1]
K, B = 64, 20
TYPES = ("ablation", "patching", "steering")
NON_ORACLE = ("random", "greedy", "magnitude", "atp", "ucb", "ranker")

# --------------------------------------------------------------------------------------------- synthetic data


def default_log_kl(d: np.ndarray, col: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """Measured log10 KL: magnitude and (early) layer matter, the linearised estimate a little; noise 0.3."""
    return (
        -3.0
        + 1.0 * d[:, col["log10_magnitude"]]
        - 1.5 * d[:, col["layer_frac"]]
        + 0.5 * np.tanh(d[:, col["lin_kl_ablation"]])
        + 0.3 * rng.normal(size=len(d))
    )


def synthetic_table(
    n_prompts: int,
    seed: int,
    *,
    split: str = "train",
    atp: bool = False,
    n_valid: Callable[[int], int] = lambda p: K,
    log_kl: Callable[..., np.ndarray] = default_log_kl,
) -> CircuitTable:
    """A circuit table whose ablation KL is `log_kl(descriptors)`; influence is only weakly related to it."""
    names = GRAPH_DESCRIPTORS + (ATP_DESCRIPTORS if atp else ())
    col = {n: i for i, n in enumerate(names)}
    rng = np.random.default_rng(seed)
    shape = (n_prompts, K, len(TYPES))
    m = {
        "kl": np.zeros(shape, np.float32),
        "logit_diff": np.zeros(shape, np.float32),
        "downstream": np.zeros(shape, np.float32),
        "n_affected": np.zeros(shape, np.int32),
        "top1_changed": np.zeros(shape, bool),
    }
    cases = []
    for p in range(n_prompts):
        nv = n_valid(p)
        d = rng.normal(size=(K, len(names)))
        d[:, col["layer_frac"]] = rng.integers(0, 4, K) / 3
        y = log_kl(d, col, rng)
        d[:, col["influence"]] = 0.25 * (y - y.mean()) + rng.normal(
            size=K
        )  # weakly informative, like the real one
        if atp:
            for i, t in enumerate(TYPES):  # a noisy but decent estimate
                d[:, col[f"atp_kl_{t}"]] = y + np.log10([1.0, 0.3, 5.0][i]) + 0.5 * rng.normal(size=K)
        d[nv:] = 0.0
        kl = np.zeros(K)
        kl[:nv] = 10.0 ** y[:nv]
        m["kl"][p] = np.stack([kl, 0.3 * kl, 5.0 * kl], 1)
        m["logit_diff"][p] = -np.sqrt(m["kl"][p])
        m["downstream"][p] = np.sqrt(m["kl"][p])
        m["n_affected"][p] = (m["kl"][p] > 1e-3).astype(np.int32) * 3
        m["top1_changed"][p] = m["kl"][p] > 0.5
        features = np.full((K, 3), -1, np.int64)
        features[:nv] = np.stack([rng.integers(0, 4, nv), rng.integers(0, 8, nv), np.arange(nv)], 1)
        cases.append(
            PromptCase(
                prompt=Prompt(
                    id=f"syn/{split}/{seed}/{p:03d}",
                    task="syn",
                    clean=f"synthetic prompt {seed} {p}",
                    answer=None,
                ),
                tokens=np.arange(8),
                features=features,
                n_valid=nv,
                clean_act=np.where(np.arange(K) < nv, 1.0, 0.0).astype(np.float32),
                values=np.tile(np.array([0.0, 0.5, 4.0], np.float32), (K, 1)),
                descriptors=d.astype(np.float32),
                patch_source="counterfactual",
                answer_id=0,
                cf_answer_id=-1,
                top_ids=np.arange(10),
                top_probs=np.full(10, 0.1, np.float32),
            )
        )
    settings = CaseSettings(
        n_candidates=K, interventions=TYPES, descriptors=("graph", "atp") if atp else ("graph",)
    )
    assert settings.descriptor_names == names
    meta = make_meta(
        "synthetic", "synthetic", "syn", split, settings, {k: list(v) for k, v in BIN_EDGES.items()}
    )
    return CircuitTable(meta, cases, m)


def replay_env(table: CircuitTable, **kw) -> CircuitDiscoveryEnv:
    kw.setdefault("descriptors", tuple(table.meta["descriptors"]))
    return CircuitDiscoveryEnv(model="synthetic", backend="replay", tables=table, budget=B, **kw)


@pytest.fixture(scope="module")
def train_table() -> CircuitTable:
    return synthetic_table(40, seed=1, atp=True)


@pytest.fixture(scope="module")
def test_table() -> CircuitTable:
    # prompt 1 has only 50 real candidates: padding rows must never be chosen
    return synthetic_table(12, seed=2, split="test", atp=True, n_valid=lambda p: 50 if p == 1 else K)


@pytest.fixture(scope="module")
def fitted_ranker(train_table):
    return make_agent("ranker", seed=0).fit(train_table)


def run_episode(env, agent, prompt_index: int | None = None, seed: int | None = None) -> list[int]:
    """One episode; asserts every action is valid. Returns the chosen candidates in order."""
    options = None if prompt_index is None else {"prompt_index": prompt_index}
    obs, info = env.reset(seed=seed, options=options)
    agent.reset(obs, info)
    chosen, done = [], False
    while not done:
        mask = np.asarray(info["action_mask"], dtype=bool)
        a = agent.act(obs, info)
        assert isinstance(a, int | np.integer) and 0 <= a < len(mask) and mask[a], f"invalid action {a}"
        obs, reward, done, truncated, info = env.step(a)
        assert not info["invalid_action"] and not truncated
        agent.observe(a, reward, obs, info)
        chosen.append(int(info["candidate"]))
    return chosen


def efficiency(env, chosen: list[int]) -> float:
    """Σ ablation KL of the chosen candidates ÷ Σ of the top-B ablation KLs (the benchmark's metric)."""
    kl = env.unwrapped.oracle_effects().kl[:, 0].astype(np.float64)
    top = np.sort(kl)[::-1][: len(chosen)]
    return float(kl[sorted(set(chosen))].sum() / top.sum())


def mean_efficiency(env, agent, n_prompts: int) -> float:
    scores = []
    for i in range(n_prompts):
        chosen = run_episode(env, agent, prompt_index=i)
        scores.append(efficiency(env, chosen))
    return float(np.mean(scores))


def build(name: str, env=None, fitted_ranker=None, **kw):
    if name == "ranker" and fitted_ranker is not None:
        return fitted_ranker
    agent = make_agent(name, **kw)
    if name == "oracle":
        agent.attach_oracle(env.unwrapped.oracle_effects)
    return agent


# --------------------------------------------------------------------------------------------- make_agent


def test_registry_names():
    names = available_agents()
    for name in ("random", "greedy", "magnitude", "atp", "ucb", "oracle", "ranker", "aif", "ppo"):
        assert name in names
    assert REGISTRY["aif"] == "agents.aif:AIFAgent" and REGISTRY["ppo"] == "agents.ppo:PPOAgent"


def test_make_agent_unknown_name_lists_valid_names():
    with pytest.raises(ACDError) as e:
        make_agent("grredy")
    for name in ("greedy", "ranker", "oracle", "module:Class"):
        assert name in str(e.value)
    with pytest.raises(ACDError, match="cannot be imported"):
        make_agent("no_such_package.mod:Agent")
    with pytest.raises(ACDError, match="has no attribute 'Nope'"):
        make_agent("agents.greedy:Nope")


def test_make_agent_refuses_class_missing_act(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    with pytest.raises(ACDError, match=r"missing method\(s\) \['act'\]"):
        make_agent("tests.helpers_user_agent:NoActAgent")


def test_make_agent_refuses_unknown_kwargs_and_interventions():
    with pytest.raises(ACDError, match="colour"):
        make_agent("greedy", colour="red")
    with pytest.raises(ACDError, match="valid interventions: ablation, patching, steering"):
        make_agent("oracle", intervention="steerin")


def test_user_class_runs_through_make_agent(monkeypatch, test_table):
    monkeypatch.syspath_prepend(str(ROOT))
    agent = make_agent("tests.helpers_user_agent:MyAgent", seed=3, greeting="hi")
    assert type(agent).__name__ == "MyAgent" and agent.greeting == "hi"
    env = replay_env(test_table)
    chosen = run_episode(env, agent, prompt_index=0)
    assert chosen == list(range(K - 1, K - 1 - B, -1)) and agent.n_observed == B


def test_privileged_flags():
    for name in NON_ORACLE:
        assert make_agent(name).privileged is False
    assert make_agent("oracle").privileged is True
    assert make_agent("ranker").learns_offline is True
    assert make_agent("greedy").learns_offline is False


# --------------------------------------------------------------------------------------------- every agent


@pytest.mark.parametrize("name", [*NON_ORACLE, "oracle"])
def test_agent_completes_episodes_with_valid_actions(name, test_table, fitted_ranker):
    env = replay_env(test_table)
    agent = build(name, env, fitted_ranker)
    for i in range(3):  # prompt 1 has padding rows
        chosen = run_episode(env, agent, prompt_index=i)
        assert len(chosen) == B and len(set(chosen)) == B
        assert max(chosen) < env.unwrapped.case.n_valid
    agent.reset_memory()
    assert len(run_episode(env, agent, prompt_index=1)) == B


def test_no_agent_but_the_oracle_touches_oracle_effects(test_table, fitted_ranker):
    env = replay_env(test_table)

    def forbidden():
        raise AssertionError("a non-privileged agent used oracle_effects()")

    env.unwrapped.oracle_effects = forbidden
    for name in NON_ORACLE:
        agent = build(name, env, fitted_ranker)
        assert not agent.privileged
        run_episode(env, agent, prompt_index=0)
        run_episode(env, agent, prompt_index=1)


def test_agents_reject_an_env_without_their_column(test_table):
    env = replay_env(test_table, descriptors=("graph",))
    obs, info = env.reset(options={"prompt_index": 0})
    with pytest.raises(ACDError, match=r"descriptors=\('graph', 'atp'\)"):
        make_agent("atp").reset(obs, info)


# --------------------------------------------------------------------------------------------- baselines


def test_random_is_seeded(test_table):
    env = replay_env(test_table)

    def actions(seed):
        agent = make_agent("random", seed=seed)
        return [run_episode(env, agent, prompt_index=i) for i in range(3)]

    assert actions(0) == actions(0)
    assert actions(0) != actions(1)
    # an episode's actions depend on (seed, prompt), not on which episodes ran before it
    agent = make_agent("random", seed=0)
    assert run_episode(env, agent, prompt_index=2) == actions(0)[2]
    assert sorted(run_episode(env, agent, prompt_index=0)) != list(range(B))


def test_random_with_a_type_uses_only_that_type(test_table):
    env = replay_env(test_table)
    agent = make_agent("random", seed=0, intervention="steering")
    obs, info = env.reset(options={"prompt_index": 0})
    agent.reset(obs, info)
    for _ in range(5):
        a = agent.act(obs, info)
        assert a % 3 == 2
        obs, _, _, _, info = env.step(a)


@pytest.mark.parametrize(("name", "column"), [("greedy", "influence"), ("magnitude", "log10_magnitude")])
def test_greedy_follows_its_column(name, column, test_table):
    env = replay_env(test_table)
    agent = make_agent(name)
    for i in range(3):
        chosen = run_episode(env, agent, prompt_index=i)
        case = env.unwrapped.case
        values = case.descriptors[: case.n_valid, list(env.unwrapped.descriptor_names).index(column)]
        assert chosen == list(np.argsort(-values, kind="stable")[:B])


def test_atp_follows_the_atp_column_of_its_type(test_table):
    env = replay_env(test_table)
    names = list(env.unwrapped.descriptor_names)
    for kind in ("ablation", "steering"):
        agent = make_agent("atp", intervention=kind)
        obs, info = env.reset(options={"prompt_index": 0})
        agent.reset(obs, info)
        a = agent.act(obs, info)
        values = obs["candidates"][:, names.index(f"atp_kl_{kind}")]
        assert a == int(np.argmax(values)) * 3 + TYPES.index(kind)


def test_oracle_chooses_the_top_b_ablation_kls(test_table):
    env = replay_env(test_table)
    agent = build("oracle", env)
    for i in range(3):
        chosen = run_episode(env, agent, prompt_index=i)
        kl = env.unwrapped.oracle_effects().kl[:, 0]
        assert chosen == list(np.argsort(-kl, kind="stable")[:B])
        assert efficiency(env, chosen) == pytest.approx(1.0)


def test_oracle_without_attach_oracle_errors(test_table):
    env = replay_env(test_table)
    obs, info = env.reset(options={"prompt_index": 0})
    agent = make_agent("oracle")
    agent.reset(obs, info)
    with pytest.raises(ACDError, match="attach_oracle"):
        agent.act(obs, info)


def test_synthetic_baseline_order(test_table, fitted_ranker):
    """On data where KL follows magnitude and layer, the baselines line up as on the toy zoo."""
    env = replay_env(test_table)
    n = len(test_table)
    score = {
        name: mean_efficiency(env, build(name, env, fitted_ranker), n) for name in [*NON_ORACLE, "oracle"]
    }
    assert score["oracle"] == pytest.approx(1.0)
    assert score["random"] < score["greedy"] < score["magnitude"] < score["ranker"] <= 1.0
    assert score["ranker"] > 0.95 and score["ranker"] > score["greedy"] + 0.1
    assert score["ucb"] > score["random"] + 0.1  # it learns within a short stream, from nothing


# --------------------------------------------------------------------------------------------- ucb


def test_ucb_statistics_update_persist_and_reset(test_table):
    env = replay_env(test_table)
    agent = make_agent("ucb", seed=0)
    run_episode(env, agent, prompt_index=0)
    d = len(agent.feature_names) + 1
    assert agent.n_updates == B
    a1, b1 = agent.A.copy(), agent.b.copy()
    assert not np.allclose(a1, agent.lam * np.eye(d)) and np.abs(b1).sum() > 0
    np.testing.assert_allclose(agent.A_inv @ agent.A, np.eye(d), atol=1e-8)  # Sherman-Morrison stays exact
    obs, info = env.reset(options={"prompt_index": 2})
    agent.reset(obs, info)  # a new episode keeps what was learned
    np.testing.assert_array_equal(agent.A, a1)
    np.testing.assert_array_equal(agent.b, b1)
    run_episode(env, agent, prompt_index=2)
    assert agent.n_updates == 2 * B and not np.allclose(agent.A, a1)
    agent.reset_memory()
    assert agent.A is None and agent.n_updates == 0
    obs, info = env.reset(options={"prompt_index": 0})
    agent.reset(obs, info)
    np.testing.assert_array_equal(agent.A, agent.lam * np.eye(d))
    np.testing.assert_array_equal(agent.b, np.zeros(d))


def test_ucb_learns_from_the_kl_it_observes(test_table):
    """The target is log10(KL + 1e-6) of the chosen candidate: b accumulates exactly that times its context."""
    env = replay_env(test_table)
    agent = make_agent("ucb")
    obs, info = env.reset(options={"prompt_index": 0})
    agent.reset(obs, info)
    a = agent.act(obs, info)
    x = agent._x[a // 3].copy()
    obs, r, _, _, info = env.step(a)
    agent.observe(a, r, obs, info)
    np.testing.assert_allclose(agent.b, np.log10(info["kl"] + 1e-6) * x)


def test_ucb_choice_changes_when_observations_contradict_the_descriptors():
    """Taught on two prompts that large magnitude means a large effect, it starts a new stream by picking the
    largest-magnitude candidates; when the measurements there say the opposite, it learns that and turns to
    small-magnitude candidates within a few prompts."""

    def follows(sign):
        def log_kl(d, col, rng):
            return -3.0 + sign * 1.5 * d[:, col["log10_magnitude"]] + 0.2 * rng.normal(size=len(d))

        return log_kl

    agreeing = replay_env(synthetic_table(2, seed=5, log_kl=follows(+1)))
    contradicting = replay_env(synthetic_table(8, seed=6, log_kl=follows(-1)))
    agent = make_agent("ucb")
    mag = list(agreeing.unwrapped.descriptor_names).index("log10_magnitude")
    theta_mag = lambda: agent.theta[1 + agent.feature_names.index("log10_magnitude")]  # noqa: E731

    def magnitude_rank(env, chosen):  # 0 = the candidate with the largest magnitude
        m = env.unwrapped.case.descriptors[:, mag]
        return [int((m > m[k]).sum()) for k in chosen]

    for i in range(2):
        run_episode(agreeing, agent, prompt_index=i)
    assert theta_mag() > 0.5
    first = run_episode(contradicting, agent, prompt_index=0)
    assert magnitude_rank(contradicting, first)[0] == 0  # at first it trusts what it learned
    first_efficiency = efficiency(contradicting, first)
    for i in range(1, 8):
        last = run_episode(contradicting, agent, prompt_index=i)
    assert theta_mag() < 0
    assert np.mean(np.array(magnitude_rank(contradicting, last)) >= K // 2) >= 0.9  # now: small magnitudes
    assert first_efficiency < 0.5 < 0.9 < efficiency(contradicting, last)


def test_ucb_refuses_other_columns_until_reset_memory(test_table):
    agent = make_agent("ucb")
    run_episode(replay_env(test_table), agent, prompt_index=0)
    env = replay_env(test_table, descriptors=("graph",))
    obs, info = env.reset(options={"prompt_index": 0})
    with pytest.raises(ACDError, match="reset_memory"):
        agent.reset(obs, info)
    agent.reset_memory()
    run_episode(env, agent, prompt_index=0)


def test_ucb_rejects_bad_parameters():
    with pytest.raises(ACDError, match="alpha"):
        make_agent("ucb", alpha=-1.0)
    with pytest.raises(ACDError, match="lam"):
        make_agent("ucb", lam=0.0)


# --------------------------------------------------------------------------------------------- ranker


def test_ranker_before_fit_errors(test_table):
    env = replay_env(test_table)
    obs, info = env.reset(options={"prompt_index": 0})
    agent = make_agent("ranker")
    with pytest.raises(ACDError, match=r"fit\(tables\)"):
        agent.reset(obs, info)
    with pytest.raises(ACDError, match=r"fit\(tables\)"):
        agent.act(obs, info)


def test_ranker_records_columns_and_refuses_a_mismatched_env(fitted_ranker, test_table):
    assert "atp_kl_ablation" in fitted_ranker.feature_names and "visited" not in fitted_ranker.feature_names
    assert fitted_ranker.n_train == 40 * K
    env = replay_env(test_table, descriptors=("graph",))  # fitted with the atp columns, used without
    obs, info = env.reset(options={"prompt_index": 0})
    with pytest.raises(ACDError, match="atp_kl_ablation"):
        fitted_ranker.reset(obs, info)
    graph_only = make_agent("ranker", columns=GRAPH_DESCRIPTORS).fit(synthetic_table(5, seed=1, atp=True))
    assert run_episode(env, graph_only, prompt_index=0)  # a subset the env provides is fine


def test_ranker_is_seeded_and_keeps_its_fit(train_table, test_table):
    env = replay_env(test_table)
    obs, _ = env.reset(options={"prompt_index": 0})
    a, b = (make_agent("ranker", seed=3, max_iter=30).fit(train_table) for _ in range(2))
    for agent in (a, b):
        agent.columns = {n: i for i, n in enumerate(env.unwrapped.descriptor_names)}
    np.testing.assert_array_equal(a.predict(obs["candidates"]), b.predict(obs["candidates"]))
    a.reset_memory()
    assert a.is_fitted  # forgetting episodes does not forget the offline fit


def test_ranker_fit_accepts_paths_and_lists(tmp_path, train_table):
    from acd_env.tables import save_table

    path = save_table(synthetic_table(4, seed=9), tmp_path / "syn-train.npz")
    agent = make_agent("ranker", max_iter=10).fit([path, synthetic_table(2, seed=8)])
    assert agent.n_train == 6 * K and "atp_kl_ablation" not in agent.feature_names
    with pytest.raises(ACDError, match="different descriptor columns"):
        make_agent("ranker").fit([path, train_table])
    with pytest.raises(ACDError, match="circuit tables"):
        make_agent("ranker").fit([42])


# --------------------------------------------------------------------------------------------- toy-4l (real)


def _shipped_tables_or_skip(split: str):
    from acd_env.table_store import resolve_tables, shipped_table_path

    absent = [str(shipped_table_path("toy-4l", t, split)) for t in TOY_TASKS]
    absent = [p for p in absent if not Path(p).is_file()]
    if absent:
        pytest.skip(f"toy-4l circuit tables are not built yet ({absent[0]} is missing; `acd tables build`)")
    return resolve_tables("toy-4l", None, split, None)


def test_ranker_beats_greedy_on_toy_4l_tables():
    """Fitted on the train tables of every task, the ranker beats influence-greedy on the test tables."""
    train = _shipped_tables_or_skip("train")
    test = _shipped_tables_or_skip("test")
    env = CircuitDiscoveryEnv(
        model="toy-4l", backend="replay", tables=test, budget=B, descriptors=("graph", "atp")
    )
    ranker = make_agent("ranker", seed=0).fit(train)
    n = len(test)
    score = {
        name: mean_efficiency(env, build(name, env, ranker), n) for name in ("greedy", "magnitude", "ranker")
    }
    print(f"toy-4l test, {n} prompts, K={K}, B={B}: " + ", ".join(f"{k} {v:.3f}" for k, v in score.items()))
    assert score["ranker"] > score["greedy"] + 0.02
    assert score["ranker"] > score["magnitude"]


# --------------------------------------------------------------------------------------------- live backend


@pytest.fixture(scope="module")
def live_env():
    """A live env on toy-4l (or a toy model directory named by ACD_TEST_TOY_DIR), shared so that the prompt is
    attributed once; skipped when there is no model."""
    from acd_env.models import available_models, load_model

    if "toy-4l" in available_models():
        model = load_model("toy-4l")
    elif (root := os.environ.get("ACD_TEST_TOY_DIR")) and (Path(root) / "config.json").is_file():
        import json

        from acd_env.models.toy import load_toy

        model = load_toy(json.loads((Path(root) / "config.json").read_text())["name"], root=Path(root))
    else:
        pytest.skip("no toy model to run live: toy-4l is not in the zoo (and ACD_TEST_TOY_DIR is not set)")
    return CircuitDiscoveryEnv(model=model, task="ioi", split="test", backend="live", budget=4)


@pytest.mark.slow  # attribution of one prompt on CPU: seconds to tens of seconds on a busy machine
@pytest.mark.parametrize("name", ["greedy", "ucb", "random"])
def test_live_episode(name, live_env):
    agent = make_agent(name, seed=0)
    chosen = run_episode(live_env, agent, prompt_index=0)
    assert len(set(chosen)) == 4
    if name == "greedy":  # live candidates come in descending influence
        assert chosen == [0, 1, 2, 3]
