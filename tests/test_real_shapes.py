"""The real-model code path offline: tiny random-weight Gemma-2- and Llama-3.2-shaped models with JumpReLU
transcoders (tests/tiny_real.py), loaded through the public `HF_MODEL::TRANSCODER_SET` spec with local
directories, then attribution, the batched engine against `feature_intervention`, AtP, a live episode, a
circuit table built and replayed, and `acd bench --backend live` in a fresh interpreter with the network
blocked; then the circuit track on the same models, single-layer and cross-layer transcoders: set rows
against `feature_intervention`, the gradient path, a live `CircuitSearch-v0` episode, a circuit table replayed
against live, and `acd bench --track circuit`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_real import build

KINDS = ("gemma2", "llama")
PROMPT = "when alice and bob went to the park , alice gave a ball to"


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_real")
    return {kind: build(kind, root) for kind in KINDS}


def spec(dirs: dict, transcoders: str = "transcoders") -> str:
    return f"{dirs['model']}::{dirs[transcoders]}"


@pytest.fixture(scope="session")
def tiny_models(tiny_dirs):
    from acd_env.models import load_model

    return {kind: load_model(spec(tiny_dirs[kind])) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_loads_through_the_model_spec_with_the_real_flags(tiny_dirs, tiny_models, kind):
    from transformers import AutoModelForCausalLM

    model = tiny_models[kind]
    cfg = model.cfg
    assert cfg.n_layers == 2 and cfg.d_model == 64 and cfg.n_key_value_heads == 2  # grouped-query attention
    assert cfg.normalization_type == "RMS" and cfg.gated_mlp and cfg.positional_embedding_type == "rotary"
    if kind == "gemma2":
        assert cfg.use_normalization_before_and_after and cfg.output_logits_soft_cap > 0
        assert cfg.attn_scores_soft_cap > 0 and cfg.use_local_attn and cfg.act_fn == "gelu_pytorch_tanh"
        assert model.feature_input_hook == "ln2.hook_normalized"
    else:
        assert cfg.use_NTK_by_parts_rope and cfg.rotary_base == 500000.0 and cfg.act_fn == "silu"
        assert model.skip_transcoder and model.feature_input_hook == "mlp.hook_in"
    hf = AutoModelForCausalLM.from_pretrained(
        str(tiny_dirs[kind]["model"]), dtype=torch.float32, attn_implementation="eager"
    )
    tokens = model.ensure_tokenized(PROMPT)
    assert (
        int(tokens[0]) == model.tokenizer.bos_token_id != 0 and model.tokenizer.decode(tokens[1:]) == PROMPT
    )
    with torch.no_grad():
        torch.testing.assert_close(model(tokens[None]), hf(tokens[None]).logits, rtol=0, atol=1e-4)
        _, acts = model.get_activations(tokens)
    active = float((acts[:, 1:] > 0).float().mean())
    assert 0.01 < active < 0.2, active  # JumpReLU thresholds: a realistic share of features fires


def _case(model, settings=None):
    from acd_env.case import CaseSettings, build_case
    from acd_env.tasks import load_task

    prompt = load_task("ioi", split="test", n=1)[0]
    settings = settings or CaseSettings(n_candidates=16, descriptors=("graph", "atp"))
    case, clean, _ = build_case(model, prompt, settings)
    return case, clean


@pytest.mark.parametrize("kind", KINDS)
def test_attribution_candidates_and_atp_descriptors(tiny_models, kind):
    model = tiny_models[kind]
    case, _ = _case(model)
    assert case.n_valid > 0
    feats = case.features[: case.n_valid]
    assert (feats[:, 0] < model.cfg.n_layers).all() and (feats[:, 1] >= 1).all()
    assert np.isfinite(case.descriptors).all() and np.isfinite(case.values).all()
    assert case.descriptors[: case.n_valid, -3:].std() > 0  # AtP columns carry information


def _engine_vs_feature_intervention(model, case, clean, freeze_attention):
    from acd_env.interventions import Intervention, downstream_stats, run_batch

    rows = [
        Intervention(*(int(x) for x in case.features[k]), float(case.values[k, t]))
        for k in range(case.n_valid)
        for t in range(case.values.shape[1])
    ]
    rows.append(rows[0]._replace(value=5.0))
    batch = run_batch(
        model, clean.tokens, rows, clean.activations, freeze_attention=freeze_attention, chunk=8
    )
    for i, row in enumerate(rows):
        logits, acts = model.feature_intervention(
            clean.tokens, [tuple(row)], freeze_attention=freeze_attention
        )
        torch.testing.assert_close(batch.logits[i], logits[0, -1], rtol=0, atol=1e-5, msg=f"row {i} {row}")
        diff_sq, ref_sq, n_affected = downstream_stats(acts, clean.activations, row.layer)
        assert float(batch.downstream_sq[i]) == pytest.approx(diff_sq, rel=1e-4, abs=1e-5), (i, row)
        assert float(batch.downstream_ref_sq[i]) == pytest.approx(ref_sq, rel=1e-5, abs=1e-5), (i, row)
        assert int(batch.n_affected[i]) == n_affected, (i, row)
    return batch


@pytest.mark.parametrize("freeze_attention", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_batched_engine_equals_feature_intervention(tiny_models, kind, freeze_attention):
    model = tiny_models[kind]
    case, clean = _case(model)
    batch = _engine_vs_feature_intervention(model, case, clean, freeze_attention)
    if kind == "gemma2":  # the last position's logits are soft-capped (|logit| < cap) and the rows differ
        assert float(batch.logits.abs().max()) < model.cfg.output_logits_soft_cap
    assert float((batch.logits - clean.logits).abs().max()) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_cross_layer_transcoder(tiny_dirs, kind):
    """circuit-tracer 0.5.0 supports CLTs on the TransformerLens backend: load, attribute, engine."""
    from acd_env.case import CaseSettings
    from acd_env.models import load_model

    model = load_model(spec(tiny_dirs[kind], "clt"), cache=False)
    assert type(model.transcoders).__name__ == "CrossLayerTranscoder"
    case, clean = _case(model, CaseSettings(n_candidates=12, descriptors=("graph", "atp")))
    assert case.n_valid > 0 and np.isfinite(case.descriptors).all()
    assert (case.features[: case.n_valid, 0] == 0).any()  # a layer-0 feature writes to both layers
    _engine_vs_feature_intervention(model, case, clean, freeze_attention=False)


@pytest.mark.parametrize("kind", KINDS)
def test_live_episode_all_intervention_types(tiny_dirs, tiny_models, kind):
    import gymnasium as gym

    env = gym.make(
        "CircuitDiscovery-v0", model=tiny_models[kind], task="ioi", split="test", n_candidates=8, budget=6
    )
    env.reset(seed=0)
    base = env.unwrapped
    for t in range(base.n_types):  # candidate 0 under every type
        _, reward, *_ = env.step(t)
        assert np.isfinite(reward)
    assert base.n_types == 3
    env.close()


def test_circuit_table_built_and_replayed(tiny_models, tmp_path):
    from acd_env.case import CaseSettings
    from acd_env.env import CircuitDiscoveryEnv
    from acd_env.table_build import build_task_table
    from acd_env.tables import save_table

    model = tiny_models["gemma2"]
    settings = CaseSettings(n_candidates=8)
    table = build_task_table(model, "ioi", "test", settings, n=2)
    path = save_table(table, tmp_path / "ioi-test.npz")
    replay = CircuitDiscoveryEnv(model=model, backend="replay", tables=path, n_candidates=8)
    replay.reset(seed=0)
    live = CircuitDiscoveryEnv(model=model, prompts=[replay.case.prompt], backend="live", n_candidates=8)
    live.reset(seed=0)
    np.testing.assert_allclose(live.case.descriptors, replay.case.descriptors, rtol=1e-5, atol=1e-6)
    for action in (0, 4, 5):  # the live step (feature_intervention) equals the table (batched engine)
        (_, r_live, *_), (_, r_replay, *_) = live.step(action), replay.step(action)
        assert r_live == pytest.approx(r_replay, rel=1e-4, abs=1e-5)


@pytest.mark.slow  # a fresh interpreter with the network blocked (imports torch, transformers): ~30-60 s
def test_acd_bench_live_on_a_local_model_spec(tiny_dirs, tmp_path):
    from test_offline import _blocked_env

    from acd_env.tasks import load_task

    prompts = tmp_path / "prompts.jsonl"
    items = [{"id": p.id, "clean": p.clean, "counterfactual": p.counterfactual, "answer": p.answer,
              "counterfactual_answer": p.counterfactual_answer} for p in load_task("ioi", split="test", n=2)]  # fmt: skip
    prompts.write_text("".join(json.dumps(x) + "\n" for x in items))
    env, log = _blocked_env(tmp_path, "bench")
    env["HF_HUB_OFFLINE"] = "1"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "benchmarks.cli", "bench", "--model", spec(tiny_dirs["llama"]), "--backend",
           "live", "--prompts", str(prompts), "--agents", "random,greedy", "--seeds", "1", "--no-progress",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(log.read_text())["attempts"] == []
    board = json.loads((out / "leaderboard.json").read_text())
    assert {r["agent"] for r in board["rows"] if r["status"] == "ok"} >= {"random", "greedy"}


# ---------------------------------------------------------------------------------------------- circuit track
TRANSCODER_SETS = ("transcoders", "clt")  # single-layer transcoders with JumpReLU, cross-layer transcoder
CIRCUIT_K = 16


@pytest.fixture(scope="session")
def ready(tiny_dirs, tiny_models):
    """(kind, transcoders, float64) -> a ready ReplacementModel, loaded once per session."""
    from tiny_real import load_float64

    from acd_env.models import load_model

    models: dict[tuple, object] = {}

    def get(kind: str, transcoders: str = "transcoders", float64: bool = False):
        key = (kind, transcoders, float64)
        if key not in models:
            name = spec(tiny_dirs[kind], transcoders)
            if float64:
                models[key] = load_float64(name)
            elif transcoders == "transcoders":
                models[key] = tiny_models[kind]
            else:
                models[key] = load_model(name, cache=False)
        return models[key]

    return get


def _fi_logits(model, tokens, feats, values, intervene, freeze):
    iv = [
        (int(a), int(p), int(f), float(v))
        for (a, p, f), v, on in zip(feats, values, intervene, strict=True)
        if on
    ]
    logits, _ = model.feature_intervention(tokens, iv, freeze_attention=freeze, return_activations=False)
    return logits[0, -1]


@pytest.mark.parametrize("transcoders", TRANSCODER_SETS)
@pytest.mark.parametrize("kind", KINDS)
def test_set_rows_equal_feature_intervention(ready, kind, transcoders):
    """keep(C) and ablate(C) rows of several sizes, ablation and counterfactual values, attention free and
    frozen: in float64 equal to `feature_intervention` with the same features (≤ 1e-5; a cross-layer
    transcoder's features write to every later layer); in float32 within rounding."""
    from acd_env.case import CaseSettings
    from acd_env.set_engine import run_sets

    model, model64 = ready(kind, transcoders), ready(kind, transcoders, float64=True)
    settings = CaseSettings(n_candidates=CIRCUIT_K)
    case, clean = _case(model, settings)
    n = case.n_valid
    feats, tokens = case.features[:n], clean.tokens
    if transcoders == "clt":
        assert (feats[:, 0] < model.cfg.n_layers - 1).any()  # some candidate writes to a later layer too
    members = np.random.default_rng(0).random((4, n)) < np.array([[0.1], [0.3], [0.6], [0.9]])
    intervene = np.concatenate([~members, members])  # keep(C) rows, then ablate(C) rows
    patch = case.values[:n, settings.interventions.index("patching")].astype(np.float64)
    with torch.no_grad():
        clean64 = model64(tokens[None])[0, -1]
    for freeze in (False, True):
        for values in (np.zeros(n), patch):
            logits = run_sets(model64, tokens, feats, values, intervene, freeze_attention=freeze, chunk=3)
            for b in range(len(intervene)):
                ref = _fi_logits(model64, tokens, feats, values, intervene[b], freeze)
                assert float((logits[b] - ref).abs().max()) <= 1e-5, (freeze, b)
            moved = (logits - clean64).abs().max(-1).values > 1e-3
            assert moved.tolist() == intervene.any(1).tolist()  # every row that intervenes moves the logits
            logits32 = run_sets(
                model, tokens, feats, values.astype(np.float32), intervene, freeze_attention=freeze
            )
            torch.testing.assert_close(logits32.double(), logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("transcoders", TRANSCODER_SETS)
@pytest.mark.parametrize("kind", KINDS)
def test_set_rows_gradient_path(ready, kind, transcoders):
    """run_sets(grad=True) (the integrated-gradients path: the model's own output hook, stop-gradients set
    aside) gives the same logits, and d KL / d value equals central finite differences (float64)."""
    from acd_env.case import CaseSettings
    from acd_env.set_engine import kl_from_logits, run_sets

    model64 = ready(kind, transcoders, float64=True)
    case, clean = _case(ready(kind, transcoders), CaseSettings(n_candidates=CIRCUIT_K))
    n = case.n_valid
    feats, tokens = case.features[:n], clean.tokens
    with torch.no_grad():
        clean64 = model64(tokens[None])[0, -1]
    base = torch.as_tensor(0.5 * case.clean_act[:n], dtype=torch.float64)
    masks = np.ones((1, n), dtype=bool)
    values = base[None].clone().requires_grad_(True)
    logits = run_sets(model64, tokens, feats, values, masks, grad=True)
    torch.testing.assert_close(
        logits.detach(), run_sets(model64, tokens, feats, base[None], masks), rtol=0, atol=1e-9
    )
    kl_from_logits(clean64, logits).sum().backward()
    grad = values.grad[0]
    assert grad.abs().max() > 1e-4

    def kl_at(v: torch.Tensor) -> float:
        return float(kl_from_logits(clean64, run_sets(model64, tokens, feats, v[None], masks))[0])

    eps = 1e-5
    for j in np.argsort(-grad.abs().numpy())[:4]:
        step = torch.zeros(n, dtype=torch.float64)
        step[j] = eps
        fd = (kl_at(base + step) - kl_at(base - step)) / (2 * eps)
        assert fd == pytest.approx(float(grad[j]), rel=1e-4, abs=1e-7), j


@pytest.mark.parametrize("transcoders", TRANSCODER_SETS)
def test_lazy_decoder_vectors_equal_eager(tiny_dirs, transcoders):
    """Hub transcoders load with lazy decoders (read from safetensors slices on demand); the engines index
    them with unsorted, repeated feature ids, which must read what the eager weights hold."""
    from circuit_tracer.utils.caching import load_transcoders_from_cache

    path = Path(tiny_dirs["llama"][transcoders])
    eager, lazy = (
        load_transcoders_from_cache(
            path.name, cache_dir=path.parent, device=torch.device("cpu"), dtype=torch.float32,
            lazy_encoder=flag, lazy_decoder=flag,
        )[0]
        for flag in (False, True)
    )  # fmt: skip
    ids = torch.tensor([7, 2, 7, 200])
    for layer in range(2):
        assert torch.equal(eager._get_decoder_vectors(layer, ids), lazy._get_decoder_vectors(layer, ids))


def _circuit_env(model, prompts, **kwargs):
    from acd_env.circuit_env import CircuitSearchEnv

    return CircuitSearchEnv(
        model=model,
        prompts=prompts,
        backend="live",
        n_candidates=CIRCUIT_K,
        descriptors=("graph", "atp"),
        **kwargs,
    )


@pytest.mark.parametrize("transcoders", TRANSCODER_SETS)
@pytest.mark.parametrize("kind", KINDS)
def test_live_circuit_search_episode(ready, kind, transcoders):
    """CircuitSearch-v0 live on a ready model: the circuit data (`measure_circuit`: keep(∅), beam-search
    reference, atp-joint, integrated gradients) is finite and well formed, f(all) = 1 and f(∅) = 0 through
    `CircuitBackend.query`, keep(∅) equals `feature_intervention` ablating every candidate, keep and ablate
    queries step, and `score_circuit` scores the reference."""
    from acd_env.circuit import faithfulness
    from acd_env.set_engine import kl_from_logits
    from acd_env.tasks import load_task

    model = ready(kind, transcoders)
    env = _circuit_env(model, load_task("ioi", split="test", n=1), budget=6)
    obs, info = env.reset(seed=0)
    n = info["n_valid"]
    assert n > 2 and env.observation_space.contains(obs)
    ref = env.reference()
    assert np.isfinite([ref.kl_empty, ref.m_clean, ref.m_empty]).all() and ref.kl_empty > 0
    assert sorted(ref.ref_order[:n].tolist()) == list(range(n)) and (ref.ref_order[n:] == -1).all()
    assert sorted(ref.atp_joint[:n].tolist()) == list(range(n))
    assert (
        np.isfinite(ref.ref_curve).all() and np.isfinite(ref.ref_lcurve).all() and np.isfinite(ref.ig).all()
    )
    # IG is not complete here (Σ ig ≠ KL(clean ‖ keep ∅)): JumpReLU's jumps along the path carry no gradient
    assert np.abs(ref.ig[:n]).sum() > 0
    assert np.isfinite(obs["candidates"]).all()

    backend = env.unwrapped.backend
    every, none = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    kl, m = backend.query(0, ["keep", "keep", "ablate", "ablate"], np.stack([every, none, every, none]))
    assert faithfulness(kl[:2], ref.kl_empty).tolist() == [1.0, 0.0]
    assert kl[2] == ref.kl_empty and kl[3] == 0.0  # ablate(all) = keep(∅); ablate(∅) = the clean run
    assert m[0] == m[3] == pytest.approx(ref.m_clean) and m[1] == m[2] == ref.m_empty
    case = env.case
    fi = _fi_logits(model, torch.as_tensor(case.tokens), case.features[:n], np.zeros(n), every, False)
    with torch.no_grad():
        clean = model(torch.as_tensor(case.tokens)[None])[0, -1]
    assert float(kl_from_logits(clean, fi[None])[0]) == pytest.approx(ref.kl_empty, rel=1e-4, abs=1e-5)

    total = 0.0
    for a in (
        0,
        2 * 3,
        2 * 3 + 1,
        2 * 5 + 1,
        2 * 3,
    ):  # keep {0}, keep {0,3}, ablate {0}, ablate {0,5}, keep {0,5}
        obs, reward, _, _, step_info = env.step(a)
        assert (
            np.isfinite(reward)
            and reward >= 0
            and np.isfinite(step_info["kl"])
            and np.isfinite(step_info["score"])
        )
        assert obs["outcome"][0] == 1 + a % 2 and env.observation_space.contains(obs)
        total += reward
    assert total == pytest.approx(max(0.0, env.unwrapped._best_f))
    score = env.score_circuit(ref.ref_order[:n].tolist())
    assert score.f[-1] == 1.0 and score.necessity[-1] == 1.0 and np.isfinite(score.logit_f).all()
    assert score.f[0] == pytest.approx(
        float(ref.ref_curve[0]), abs=1e-5
    )  # the stored curve is what is scored


@pytest.mark.parametrize(
    ("kind", "transcoders"), [("gemma2", "transcoders"), ("llama", "transcoders"), ("llama", "clt")]
)
def test_circuit_table_replay_equals_live(ready, tiny_dirs, kind, transcoders, tmp_path, monkeypatch):
    """A circuit table built with `acd_env.table_build` (circuit data on) and replayed with the ready model
    gives what the live env computes: observations, rewards, measured KL, reference and scores. Each env has
    its own empty query store, so the replayed set queries really run."""
    from acd_env.case import CaseSettings
    from acd_env.circuit_env import CircuitSearchEnv
    from acd_env.table_build import build_task_table
    from acd_env.tables import save_table

    model, model_spec = ready(kind, transcoders), spec(tiny_dirs[kind], transcoders)
    settings = CaseSettings(n_candidates=CIRCUIT_K, descriptors=("graph", "atp"))
    table = build_task_table(model, "ioi", "test", settings, n=2)
    assert table.has_circuit
    path = save_table(table, tmp_path / "ioi-test.npz")

    def episode(env, cache: str) -> list:
        monkeypatch.setenv("ACD_CACHE_DIR", str(tmp_path / cache))
        out = []
        for i in range(2):
            obs, info = env.reset(seed=0, options={"prompt_index": i})
            ref = env.reference()
            out.append(
                (obs, info["kl_empty"], ref.ref_order.tolist(), ref.ref_curve, ref.atp_joint.tolist(), ref.ig)
            )
            for a in (0, 2 * 2, 2 * 2 + 1, 2 * 4, 0, 2 * 4 + 1):
                obs, reward, terminated, _, step = env.step(a)
                out.append((obs, reward, step["kl"], step["m"], step["repeat"], terminated))
            out.append(tuple(env.score_circuit(env.reference().ref_order[: info["n_valid"]].tolist())))
        return out

    replay = CircuitSearchEnv(
        model=model,
        backend="replay",
        tables=path,
        n_candidates=CIRCUIT_K,
        descriptors=("graph", "atp"),
        budget=8,
    )
    got_replay = episode(replay, "replay")
    store = replay.unwrapped.backend.store()
    assert store.misses > 0 and len(store) > 0  # the replayed queries ran on the model
    got_live = episode(_circuit_env(model, replay.prompts, budget=8), "live")
    # replay naming the model by its spec (no ready model): a missing query loads it, and the hash matches
    monkeypatch.setenv("ACD_CACHE_DIR", str(tmp_path / "by-name"))
    named = CircuitSearchEnv(model=model_spec, backend="replay", tables=path, n_candidates=CIRCUIT_K)
    named.reset(seed=0, options={"prompt_index": 0})
    assert named.step(0)[4]["kl"] == pytest.approx(got_replay[1][2], rel=1e-5, abs=1e-6)
    assert len(got_live) == len(got_replay)
    for a, b in zip(got_live, got_replay, strict=True):
        for x, y in zip(a, b, strict=True):
            if isinstance(x, dict):
                for key in x:
                    np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-5, err_msg=key)
            else:
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # a fresh interpreter with the network blocked: ~30-60 s
def test_acd_bench_circuit_track_live_on_a_local_model_spec(tiny_dirs, tmp_path):
    """`acd bench --track circuit --backend live` on a local Llama-shaped model with a cross-layer transcoder."""
    from test_offline import _blocked_env

    from acd_env.tasks import load_task

    prompts = tmp_path / "prompts.jsonl"
    items = [{"id": p.id, "clean": p.clean, "counterfactual": p.counterfactual, "answer": p.answer,
              "counterfactual_answer": p.counterfactual_answer} for p in load_task("ioi", split="test", n=2)]  # fmt: skip
    prompts.write_text("".join(json.dumps(x) + "\n" for x in items))
    env, log = _blocked_env(tmp_path, "bench")
    env["HF_HUB_OFFLINE"] = "1"
    env["ACD_CACHE_DIR"] = str(tmp_path / "cache")
    out = tmp_path / "run"
    agents = "random,atp,atp-joint,ig,reference"
    cmd = [sys.executable, "-m", "benchmarks.cli", "bench", "--model", spec(tiny_dirs["llama"], "clt"), "--backend",
           "live", "--track", "circuit", "--prompts", str(prompts), "--agents", agents, "--seeds", "1",
           "--k", str(CIRCUIT_K), "--no-progress", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(log.read_text())["attempts"] == []
    board = json.loads((out / "circuit_leaderboard.json").read_text())
    assert {r["agent"] for r in board["rows"] if r["status"] == "ok"} >= set(agents.split(","))
    assert all(np.isfinite(r["auc"]) for r in board["rows"] if r["status"] == "ok")
