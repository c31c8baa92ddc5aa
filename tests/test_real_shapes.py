"""The real-model code path offline: tiny random-weight Gemma-2- and Llama-3.2-shaped models with JumpReLU
transcoders (tests/tiny_real.py), loaded through the public `HF_MODEL::TRANSCODER_SET` spec with local
directories, then attribution, the batched engine against `feature_intervention`, AtP, a live episode, a
circuit table built and replayed, and `acd bench --backend live` in a fresh interpreter with the network
blocked."""

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
