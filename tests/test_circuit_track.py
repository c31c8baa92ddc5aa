"""The circuit track: set queries, definitions, reference, query store, CircuitSearch-v0 and its evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from acd_env.circuit import (
    K_GRID,
    check_ranking,
    circuit_auc,
    cmd,
    complete_ranking,
    cpr,
    faithfulness,
    grid_sizes,
    prefix_masks,
)
from acd_env.circuit_reference import beam_search, greedy_on
from acd_env.errors import ACDError
from acd_env.query_store import QueryStore, query_key
from acd_env.set_engine import kl_from_logits, run_sets
from acd_env.table_store import shipped_table_path
from acd_env.tables import load_table

TASK = "counting"


@pytest.fixture(scope="module")
def table():
    return load_table(shipped_table_path("toy-4l", TASK, "test"))


@pytest.fixture(scope="module")
def circuit_env():
    from acd_env.circuit_env import CircuitSearchEnv

    return CircuitSearchEnv(task=TASK, split="test", descriptors=("graph", "atp"))


def _fi_logits(model, tokens, feats, values, intervene, freeze):
    iv = [
        (int(a), int(p), int(f), float(v))
        for (a, p, f), v, on in zip(feats, values, intervene, strict=True)
        if on
    ]
    if not iv:
        with torch.no_grad():
            return model(tokens.unsqueeze(0))[0, -1]
    logits, _ = model.feature_intervention(tokens, iv, freeze_attention=freeze, return_activations=False)
    return logits[0, -1]


# ---------------------------------------------------------------------------------------------- engine
@pytest.fixture(scope="module")
def model64(toy_model):
    """toy-4l in float64: the engine and feature_intervention then agree to ~1e-14, so the test checks semantics
    (in float32 they differ by up to ~2e-5 because the model's own kernels round differently per batch size).
    A fresh load, not a deep copy: a copy's permanent hooks still point at the original's hook points, and every
    intervention on it silently does nothing."""
    from acd_env.models import load_model

    model = load_model("toy-4l", cache=False).to(torch.float64)
    model.cfg.dtype = torch.float64
    return model


@pytest.mark.parametrize("freeze", [False, True])
def test_set_rows_equal_feature_intervention(model64, table, freeze):
    """Keep-only and ablate rows, ablation and counterfactual (patching) values, several sets: ≤ 1e-5."""
    rng = np.random.default_rng(0)
    for p in range(2):
        case = table.cases[p]
        n = case.n_valid
        tokens = torch.as_tensor(case.tokens, dtype=torch.long)
        feats = case.features[:n]
        patch = case.values[:n, list(table.meta["interventions"]).index("patching")]
        members = rng.random((4, n)) < np.array([[0.1], [0.3], [0.6], [0.9]])
        intervene = np.concatenate([~members, members])  # keep(C) rows, then ablate(C) rows
        for values in (np.zeros(n), patch.astype(np.float64)):
            logits = run_sets(model64, tokens, feats, values, intervene, freeze_attention=freeze)
            with torch.no_grad():
                clean = model64(tokens.unsqueeze(0))[0, -1]
            for b in range(len(intervene)):
                ref = _fi_logits(model64, tokens, feats, values, intervene[b], freeze)
                assert float((logits[b] - ref).abs().max()) <= 1e-5
                assert float((ref - clean).abs().max()) > 1e-3  # the row really intervenes


def test_set_rows_float32_within_rounding(toy_model, table):
    """In the shipped float32 the batched rows stay within float32 rounding of feature_intervention."""
    case = table.cases[0]
    n = case.n_valid
    tokens = torch.as_tensor(case.tokens, dtype=torch.long)
    intervene = np.random.default_rng(1).random((6, n)) < 0.5
    logits = run_sets(toy_model, tokens, case.features[:n], np.zeros(n, np.float32), intervene)
    for b in range(len(intervene)):
        ref = _fi_logits(toy_model, tokens, case.features[:n], np.zeros(n), intervene[b], False)
        assert float((logits[b] - ref).abs().max()) <= 1e-4


def test_set_rows_differ_from_sum_of_singles(toy_model, table):
    """Sets are not additive on this model: the joint KL of the two largest single effects is not their sum."""
    case = table.cases[0]
    n = case.n_valid
    tokens = torch.as_tensor(case.tokens, dtype=torch.long)
    single = table.measurements["kl"][0, :n, list(table.meta["interventions"]).index("ablation")]
    top = np.argsort(-single)[:2]
    rows = np.zeros((1, n), dtype=bool)
    rows[0, top] = True
    with torch.no_grad():
        clean = toy_model(tokens.unsqueeze(0))[0, -1]
    joint = float(kl_from_logits(clean, run_sets(toy_model, tokens, case.features[:n], np.zeros(n), rows))[0])
    assert abs(joint - single[top].sum()) > 0.01 * single[top].sum()


def test_set_engine_rejects_bad_shapes(toy_model, table):
    case = table.cases[0]
    tokens = torch.as_tensor(case.tokens, dtype=torch.long)
    with pytest.raises(ValueError, match="masks must be"):
        run_sets(toy_model, tokens, case.features[:3], np.zeros(3), np.ones((2, 4), bool))


# ---------------------------------------------------------------------------------------------- definitions
def test_scores_on_known_values():
    assert faithfulness([2.0, 0.0, 4.0], 2.0).tolist() == [0.0, 1.0, -1.0]
    f = np.array([0.5, 1.0])
    assert circuit_auc(f) == 0.75 and cpr(f) == 0.75 and cmd(f) == 0.25
    assert grid_sizes(5).tolist() == [1, 2, 3, 5, 5, 5, 5]
    assert prefix_masks([2, 0, 1], 3, [1, 2]).tolist() == [[False, False, True], [True, False, True]]
    assert complete_ranking([3], [1, 0], 4) == [3, 1, 0, 2]


@pytest.mark.parametrize(
    ("ranking", "message"),
    [
        ([0, 0], "twice"),
        ([0, 7], "outside \\[0, 5\\)"),
        ([-1], "outside"),
        (["a"], "candidate indices"),
        ([0.5], "candidate indices"),
        ([True], "candidate indices"),
    ],
)
def test_bad_rankings_are_refused(ranking, message):
    with pytest.raises(ACDError, match=message):
        check_ranking(ranking, 5)


def test_beam_search_finds_what_greedy_misses():
    """Two features that only work together (an AND): greedy's first pick is the decoy, the beam keeps both."""

    def f(masks: np.ndarray) -> np.ndarray:
        a, b, decoy = masks[:, 0], masks[:, 1], masks[:, 2]
        return np.where(a & b, 1.0, 0.0) + np.where(decoy, 0.3, 0.0) * ~(a & b)

    greedy = greedy_on(f, 4)
    assert greedy[0] == 2
    path, curve = beam_search(f, 4, beam=4, k_max=2)
    assert sorted(path) == [0, 1] and curve[-1] == 1.0


# ---------------------------------------------------------------------------------------------- tables
def test_integrated_gradients_are_complete(toy_model, table):
    """Σ_j ig_j ≈ KL(clean ‖ keep ∅) − KL(clean ‖ clean) (the midpoint rule with IG_STEPS points)."""
    from acd_env.case import clean_run
    from acd_env.circuit_reference import CircuitMeasurer

    for p in (0, 12):
        case = table.cases[p]
        n = case.n_valid
        tokens = torch.as_tensor(case.tokens, dtype=torch.long)
        logits, _ = clean_run(toy_model, tokens)
        cm = CircuitMeasurer(
            toy_model, tokens, case.features[:n], np.zeros(n, np.float32), logits[-1], case.answer_id,
            case.cf_answer_id,
        )  # fmt: skip
        assert cm.integrated_gradients(case.clean_act[:n]).sum() == pytest.approx(cm.kl_empty, rel=0.05)


def test_circuit_arrays_are_consistent(table):
    c = table.circuit
    n = table.cases[0].n_valid
    assert (c["kl_empty"] > 0).all()
    assert sorted(c["ref_order"][0, :n].tolist()) == list(range(n))
    assert (np.diff(c["ref_curve"][:, :5], axis=1) > -0.2).all()  # the search's curve mostly rises


def test_old_format_is_refused_with_rebuild_hint(tmp_path, table):
    from acd_env.tables import save_table

    path = save_table(table, tmp_path / "t.npz")
    with np.load(path) as data:
        raw = {k: data[k] for k in data.files}
    raw["meta"] = np.array(json.dumps({**json.loads(str(raw["meta"])), "format_version": 1}))
    np.savez(tmp_path / "old.npz", **raw)
    with pytest.raises(ACDError, match=r"format version 1.*acd tables build"):
        load_table(tmp_path / "old.npz")


def test_circuit_arrays_round_trip_and_are_validated(tmp_path, table):
    from acd_env.tables import save_table

    path = save_table(table, tmp_path / "t.npz")
    back = load_table(path)
    for name, values in table.circuit.items():
        np.testing.assert_array_equal(back.circuit[name], values)
    with np.load(path) as data:
        raw = {k: data[k] for k in data.files}
    raw["c_ref_order"] = raw["c_ref_order"].copy()
    raw["c_ref_order"][0, 0] = raw["c_ref_order"][0, 1]  # a repeated candidate
    np.savez(tmp_path / "bad.npz", **raw)
    with pytest.raises(ACDError, match="ref_order of prompt 0 is not a ranking"):
        load_table(tmp_path / "bad.npz")


# ---------------------------------------------------------------------------------------------- query store
def test_query_key_is_canonical():
    feats = np.array([[1, 2, 3], [0, 5, 9]])
    assert query_key("p", False, feats, [0.0, 1.0]) == query_key("p", False, feats[::-1], [1.0, 0.0])
    assert query_key("p", False, feats, [0.0, 1.0]) != query_key("p", True, feats, [0.0, 1.0])
    assert query_key("p", False, feats, [0.0, 1.0]) != query_key("q", False, feats, [0.0, 1.0])


def test_query_store_appends_and_resumes(tmp_path):
    path = tmp_path / "s.jsonl"
    store = QueryStore("m", "h" * 16, write=path)
    store.put(["a", "b"], [1.0, 2.0], [0.5, 0.25])
    store.put(["a"], [9.0], [9.0])  # already known: kept as first measured, not appended again
    again = QueryStore("m", "h" * 16, write=path)
    assert again.get(["a", "b", "c"]) == [(1.0, 0.5), (2.0, 0.25), None]
    assert len(path.read_text().splitlines()) == 3  # header + two queries
    with open(path, "ab") as f:
        f.write(b'{"q":"torn","kl":1.')  # a killed writer's partial line
    torn = QueryStore("m", "h" * 16, write=path)
    assert len(torn) == 2 and path.read_bytes().endswith(b"\n")
    with pytest.raises(ACDError, match="belongs to model 'm'"):
        QueryStore("other", "x" * 16, write=path)
    path.write_text(path.read_text().replace('"kl":1.0', "garbage", 1))
    with pytest.raises(ACDError, match="corrupt"):
        QueryStore("m", "h" * 16, write=path)


def test_query_store_survives_sigkill(tmp_path):
    """A writer killed at any moment leaves every complete line readable."""
    path = tmp_path / "s.jsonl"
    code = textwrap.dedent(f"""
        from acd_env.query_store import QueryStore
        store = QueryStore("m", "h" * 16, write={str(path)!r})
        i = 0
        while True:
            store.put([f"k{{i}}", f"k{{i + 1}}"], [float(i), 1.0], [0.0, 0.0])
            i += 2
            if i == 200:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = QueryStore("m", "h" * 16, write=path)
    assert len(store) >= 200
    assert store.get(["k0", "k198"]) == [(0.0, 0.0), (198.0, 0.0)]


# ---------------------------------------------------------------------------------------------- environment
def test_endpoints_and_reference_consistency(circuit_env):
    env = circuit_env
    _obs, info = env.reset(seed=0, options={"prompt_index": 1})
    n = info["n_valid"]
    backend = env.backend
    kl, _ = backend.query(
        1, ["keep", "keep", "ablate"], np.array([np.ones(n), np.zeros(n), np.zeros(n)], bool)
    )
    data = env.reference()
    np.testing.assert_allclose(faithfulness(kl[:2], data.kl_empty), [1.0, 0.0], atol=1e-6)
    assert kl[2] == 0.0
    score = env.score_circuit(data.ref_order[:n])
    np.testing.assert_allclose(score.f, data.ref_curve[np.array(K_GRID) - 1], atol=1e-5)


def test_env_step_semantics(circuit_env):
    env = circuit_env
    obs, info = env.reset(seed=0, options={"prompt_index": 0})
    assert obs["circuit"].sum() == 0 and obs["outcome"].tolist() == [0, 0, 0]
    obs, r1, *_, info = env.step(0)  # keep {0}
    assert info["kind"] == "keep" and info["toggle"] == "in" and obs["circuit"][0] == 1
    assert info["queries_left"] == 19 and not info["repeat"] and r1 == pytest.approx(max(info["f"], 0.0))
    obs, _r2, *_, info = env.step(0)  # keep ∅: known without a query
    assert info["repeat"] and info["queries_left"] == 19 and info["f"] == pytest.approx(0.0, abs=1e-9)
    obs, _, *_, info = env.step(1)  # ablate {0}
    assert info["kind"] == "ablate" and info["queries_left"] == 18 and "necessity" in info
    obs, reward, _terminated, _truncated, info = env.step(10_000)
    assert info["invalid_action"] and reward == 0.0 and info["queries_left"] == 17


def test_env_truncates_free_steps():
    from acd_env.circuit_env import MAX_STEPS_PER_QUERY, CircuitSearchEnv

    env = CircuitSearchEnv(task=TASK, split="test", budget=2)
    env.reset(seed=0, options={"prompt_index": 0})
    env.step(0)
    steps, done = 1, False
    while not done:
        *_, terminated, truncated, _info = env.step(0)  # back and forth between ∅ and {0}: all repeats
        steps += 1
        done = terminated or truncated
    assert truncated and steps == MAX_STEPS_PER_QUERY * 2


def test_env_checkers_and_vector_env():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    import acd_env
    from acd_env.circuit_env import CircuitSearchEnv

    check_env(CircuitSearchEnv(task=TASK, split="test"), skip_render_check=True)
    sb3_check_env(CircuitSearchEnv(task=TASK, split="test"))
    vec = gym.make_vec(acd_env.CIRCUIT_ENV_ID, num_envs=2, vectorization_mode="sync", task=TASK, split="test")
    obs, _ = vec.reset(seed=3)
    assert obs["candidates"].shape[0] == 2
    obs, reward, *_ = vec.step(np.array([0, 2]))
    assert reward.shape == (2,)


def test_env_bad_input():
    from acd_env.circuit_env import CircuitSearchEnv

    with pytest.raises(ACDError, match="needs K = the table's n_candidates \\(64\\)"):
        CircuitSearchEnv(task=TASK, split="test", n_candidates=32)
    with pytest.raises(ACDError, match="unknown complement 'zero'"):
        CircuitSearchEnv(task=TASK, split="test", complement="zero")
    env = CircuitSearchEnv(task=TASK, split="test")
    env.reset(seed=0)
    with pytest.raises(ACDError, match="twice"):
        env.score_circuit([0, 0, 1])
    with pytest.raises(ACDError, match="needs a ranking of all"):
        env.score_circuit([0, 1])


def test_missing_query_without_a_model_is_a_clear_error(monkeypatch, tmp_path):
    import acd_env.models as models
    from acd_env.circuit_env import CircuitSearchEnv

    monkeypatch.setenv("ACD_CACHE_DIR", str(tmp_path))
    env = CircuitSearchEnv(task=TASK, split="test")
    env.reset(seed=0, options={"prompt_index": 2})

    def no_model(*args, **kwargs):
        raise OSError("weights not available")

    monkeypatch.setattr(models, "load_model", no_model)
    with pytest.raises(ACDError, match=r"not in the query store, and model 'toy-4l'.*cannot be loaded"):
        env.step(2 * 7 + 1)  # a set nobody has measured: ablate {7}


@pytest.mark.slow
def test_live_equals_replay(toy_model):
    """The live backend (attribution, reference search on the model) gives what the replay tables hold."""
    from acd_env.circuit_env import CircuitSearchEnv
    from acd_env.tasks import load_task

    prompt = load_task(TASK, split="test")[0]
    live = CircuitSearchEnv(model=toy_model, prompts=[prompt], backend="live", descriptors=("graph", "atp"))
    replay = CircuitSearchEnv(task=TASK, split="test", descriptors=("graph", "atp"))
    o1, _i1 = live.reset(seed=0, options={"prompt_index": 0})
    o2, _i2 = replay.reset(seed=0, options={"prompt": prompt.clean})
    np.testing.assert_allclose(o1["candidates"], o2["candidates"], atol=1e-5)
    r1, r2 = live.reference(), replay.reference()
    assert r1.ref_order.tolist() == r2.ref_order.tolist()
    assert abs(r1.kl_empty - r2.kl_empty) < 1e-5
    for a in (0, 4, 9, 4, 3):
        s1, s2 = live.step(a), replay.step(a)
        np.testing.assert_array_equal(s1[0]["outcome"], s2[0]["outcome"])
        assert s1[1] == pytest.approx(s2[1], abs=1e-5)
        assert s1[4]["kl"] == pytest.approx(s2[4]["kl"], abs=1e-5)


@pytest.mark.slow
def test_maskable_ppo_learns_on_circuit_search(tmp_path, table):
    """MaskablePPO on four prompts: after 1,536 seeded steps its mean return (the best f it measured) clearly
    exceeds its untrained self's and random actions'."""
    from dataclasses import replace

    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.evaluation import evaluate_policy

    from acd_env.circuit_env import CircuitSearchEnv
    from acd_env.tables import save_table

    small = replace(
        table,
        cases=table.cases[:4],
        measurements={k: v[:4] for k, v in table.measurements.items()},
        circuit={k: v[:4] for k, v in table.circuit.items()},
    )
    path = save_table(small, tmp_path / "counting-test.npz")
    env = CircuitSearchEnv(task=TASK, split="test", tables=path, budget=4)
    model = MaskablePPO("MultiInputPolicy", env, n_steps=256, batch_size=64, learning_rate=1e-3, seed=0)
    before, _ = evaluate_policy(model, env, n_eval_episodes=20, warn=False)
    rng = np.random.default_rng(0)
    random_returns = []
    for e in range(20):
        env.reset(seed=e)
        done, total = False, 0.0
        while not done:
            _, r, terminated, truncated, _ = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
            total += r
            done = terminated or truncated
        random_returns.append(total)
    model.learn(1536)
    after, _ = evaluate_policy(model, env, n_eval_episodes=20, warn=False)
    floor = max(before, float(np.mean(random_returns)))
    assert after >= 1.5 * floor and after - floor >= 0.15, (before, np.mean(random_returns), after)


# ---------------------------------------------------------------------------------------------- harness
def _bench(out, *extra):
    cmd = [sys.executable, "-m", "benchmarks.cli", "bench", "--track", "circuit", "--tasks", TASK, "--seeds", "2",
           "--prompts-per-task", "3", "--protocol", "zero-shot,stream", "--out", str(out), "--no-progress", "--reps",
           "200", *extra]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": str(len(out.name))}
    )


def _timing_free(path):
    doc = json.loads(path.read_text())
    return [{k: v for k, v in row.items() if k not in doc["timing_columns"]} for row in doc["rows"]]


@pytest.mark.slow
def test_bench_circuit_track_deterministic_and_resumable(tmp_path):
    """Two fresh processes give the same circuit leaderboard (timing aside); a run cut short and resumed gives
    it too; every default circuit agent has a row and `reference` is the ceiling."""
    first, second = _bench(tmp_path / "a"), _bench(tmp_path / "bb")
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    board = _timing_free(tmp_path / "a" / "circuit_leaderboard.json")
    assert board == _timing_free(tmp_path / "bb" / "circuit_leaderboard.json")
    from agents import agent_class, available_agents

    learning_free = {a for a in available_agents("circuit") if not agent_class(a, "circuit").learns_offline}
    assert {
        r["agent"] for r in board if r["status"] == "ok"
    } == learning_free  # `ranker` needs a fit: n/a here
    reference = next(r for r in board if r["agent"] == "reference")
    assert reference["efficiency"] == pytest.approx(1.0, abs=1e-4)
    results = (tmp_path / "a" / "results.jsonl").read_text().splitlines(keepends=True)
    cut = len(results) // 2
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.jsonl").write_text(
        "".join(results[:cut]) + results[cut][: len(results[cut]) // 2]
    )
    (tmp_path / "c" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    resumed = _bench(tmp_path / "c")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _timing_free(tmp_path / "c" / "circuit_leaderboard.json") == board
    md = (tmp_path / "a" / "leaderboard.md").read_text()
    assert "# Circuit track" in md and "## circuit · stream" in md
    assert (tmp_path / "a" / "tb" / "circuit").is_dir()
    report = (tmp_path / "a" / "report.html").read_text()
    assert "faithfulness f(C_k) against circuit size" in report and "query sequence" in report
    steps = [json.loads(line) for line in results if '"kind":"step"' in line]
    assert steps and all(
        s["track"] == "circuit" and s["query"] in ("keep", "ablate") for s in steps if not s["invalid"]
    )


def test_bench_bad_track_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "bench", "--track", "sets", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "unknown track 'sets'" in lines[0]
        and "circuit" in lines[0]
        and "features" in lines[0]
    )
    assert not (tmp_path / "x").exists()


def test_tables_without_circuit_data(tmp_path, capsys):
    """`acd tables build --no-circuit` writes a feature-track table; acd bench then runs the feature track only,
    and asking for the circuit track on it is one clear error."""
    from benchmarks.cli import main

    out = tmp_path / "tables" / "counting-test.npz"
    argv = ["tables", "build", "--task", TASK, "--n", "2", "--k", "8", "--no-circuit", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    assert not load_table(out).has_circuit
    bench = ["bench", "--tables", str(out.parent), "--tasks", TASK, "--k", "8", "--agents", "random",
             "--seeds", "1", "--protocol", "zero-shot", "--reps", "50", "--no-progress"]  # fmt: skip
    assert main([*bench, "--out", str(tmp_path / "run")]) == 0
    assert not (tmp_path / "run" / "circuit_leaderboard.json").exists()
    assert main([*bench, "--track", "circuit", "--out", str(tmp_path / "run2")]) == 2
    assert "has no circuit data" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()  # nothing written
