"""The model zoo: registry, loading, offline failure of pretrained names, quality bars of the shipped toy
model, graph-vs-measurement parity, and the batched intervention engine against `feature_intervention`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from acd_env.errors import ACDError
from acd_env.models import available_models, load_model, model_info
from acd_env.models import toy as toy_models
from acd_env.tasks import TOY_TASKS, load_task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOY = "toy-4l"


def _answer(model, word: str) -> int:
    (idx,) = model.tokenizer.encode(word, add_special_tokens=False)
    return idx


def _graph(model, text: str):
    from acd_env.attribution.graph import attribute_graph

    return attribute_graph(model, model.ensure_tokenized(text))


def test_available_models():
    names = available_models()
    assert {DEFAULT_TOY, "gemma-2-2b", "llama-3.2-1b"} <= set(names)
    assert names.index(DEFAULT_TOY) < names.index("gemma-2-2b")  # embedded models first


def test_unknown_model_lists_valid_names():
    with pytest.raises(ACDError) as info:
        load_model("toy-99l")
    msg = str(info.value)
    assert "toy-99l" in msg
    for name in (DEFAULT_TOY, "gemma-2-2b", "llama-3.2-1b"):
        assert name in msg


def test_bad_model_type():
    with pytest.raises(ACDError, match="ReplacementModel"):
        load_model(42)


def test_load_toy_model_in_seconds(toy_model):
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,  # what circuit-tracer's ReplacementModel factory builds
    )

    start = time.perf_counter()
    fresh = load_model(DEFAULT_TOY, cache=False)
    elapsed = time.perf_counter() - start
    assert isinstance(fresh, TransformerLensReplacementModel)
    assert elapsed < 10, f"loading {DEFAULT_TOY} took {elapsed:.1f} s"
    assert load_model(DEFAULT_TOY) is toy_model  # cached per (name, device)
    tokens = fresh.ensure_tokenized("up one two")
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens.unsqueeze(0)), toy_model(tokens.unsqueeze(0)), rtol=0, atol=0)
    arch = toy_models.toy_config(DEFAULT_TOY)
    assert fresh.cfg.n_layers == arch["n_layers"] and fresh.transcoders.d_transcoder == arch["d_transcoder"]


def test_replacement_model_passes_through(toy_model):
    assert load_model(toy_model) is toy_model


def test_weights_hash_is_stable(toy_model):
    path = toy_models.toy_dir(DEFAULT_TOY)
    first = toy_models.weights_hash(path)
    assert first == toy_models.weights_hash(path)
    assert len(first) == 16 and int(first, 16) >= 0
    info = model_info(toy_model)
    assert info.weights_hash == first and info.name == DEFAULT_TOY
    assert model_info(load_model(DEFAULT_TOY, cache=False)).weights_hash == first


def test_pretrained_offline_fails_fast_with_advice(tmp_path):
    code = (
        "import json, time\n"
        "from acd_env.errors import ACDError\n"
        "from acd_env.models import load_model\n"
        "out = {}\n"
        "for name in ('gemma-2-2b', 'llama-3.2-1b'):\n"
        "    start = time.perf_counter()\n"
        "    try:\n"
        "        load_model(name)\n"
        "        out[name] = ['loaded', 0.0]\n"
        "    except ACDError as e:\n"
        "        out[name] = [str(e), time.perf_counter() - start]\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (msg, seconds) in out.items():
        assert msg != "loaded", name
        assert "Hugging Face hub" in msg and name in msg
        assert seconds < 10, f"{name} took {seconds:.1f} s to fail"


ZOO = toy_models.toy_names()


def test_the_zoo_has_a_held_out_model_partner():
    """held-out-model needs a second discriminative zoo model with train tables (docs/design.md: Models, Protocols)."""
    from acd_env.table_store import shipped_table_path

    assert DEFAULT_TOY in ZOO and len(ZOO) >= 2, ZOO
    for name in ZOO:
        for task in TOY_TASKS:
            assert shipped_table_path(name, task, "train").is_file(), (name, task)
    size = sum(f.stat().st_size for f in toy_models.ZOO_DIR.rglob("*") if f.is_file())
    assert size < 24e6, f"the shipped zoo is {size / 1e6:.1f} MB"


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("task", TOY_TASKS)
def test_toy_model_answers_the_test_split(name, task):
    """Quality bar (docs/design.md, Models): every task answered correctly on ≥ 95 % of its test prompts."""
    model = load_model(name)
    prompts = load_task(task, model=model, split="test")
    wrong = []
    with torch.no_grad():
        for p in prompts:
            logits = model(model.ensure_tokenized(p.clean).unsqueeze(0))[0, -1]
            if int(logits.argmax()) != _answer(model, p.answer):
                wrong.append(p.clean)
    accuracy = 1 - len(wrong) / len(prompts)
    assert accuracy >= 0.95, f"{name} {task}: {accuracy:.3f} on {len(prompts)} prompts; wrong: {wrong[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_graph_scores_quality_bar(name):
    """Quality bar: mean replacement ≥ 0.7 and completeness ≥ 0.85 (5 test prompts per task)."""
    from circuit_tracer.graph import compute_graph_scores

    toy_model = load_model(name)
    scores = {}
    for task in TOY_TASKS:
        for p in load_task(task, split="test", n=5):
            scores[p.id] = compute_graph_scores(_graph(toy_model, p.clean))
    replacement = sum(r for r, _ in scores.values()) / len(scores)
    completeness = sum(c for _, c in scores.values()) / len(scores)
    assert replacement >= 0.7, scores
    assert completeness >= 0.85, scores


@pytest.mark.parametrize("task", TOY_TASKS)
def test_direct_edges_match_measured_direct_effects(toy_model, task):
    """A feature's edge to the top logit node equals what ablating it does to that logit with everything
    else frozen (constrained_layers = all layers): edge ≈ clean − ablated of logit[target] − mean(logits),
    because the logit node uses the demeaned unembedding."""
    model = toy_model
    prompt = load_task(task, split="test", n=1)[0]
    tokens = model.ensure_tokenized(prompt.clean)
    graph = _graph(model, prompt.clean)
    adjacency = graph.adjacency_matrix
    n_features = len(graph.selected_features)
    logit_row = adjacency.shape[0] - len(graph.logit_targets)  # the top logit node comes first
    target = int(graph.logit_targets[0].vocab_idx)
    with torch.no_grad():
        clean = model(tokens.unsqueeze(0))[0, -1]
    clean_d = float(clean[target] - clean.mean())
    top = torch.argsort(adjacency[logit_row, :n_features].abs(), descending=True)[:5].tolist()
    assert float(adjacency[logit_row, top[0]].abs()) > 1e-3, "no feature has a direct edge to the top logit"
    for j in top:
        layer, pos, feat = graph.active_features[graph.selected_features[j]].tolist()
        logits, _ = model.feature_intervention(
            tokens,
            [(layer, pos, feat, 0.0)],
            constrained_layers=range(model.cfg.n_layers),
            freeze_attention=True,
            return_activations=False,
        )
        measured = clean_d - float(logits[0, -1, target] - logits[0, -1].mean())
        edge = float(adjacency[logit_row, j])
        assert abs(edge - measured) <= 1e-4, (layer, pos, feat, edge, measured)


def _rows(model, prompt, n_features: int = 10):
    """~30 single-feature interventions mixing ablation, patching and steering over several layers."""
    from acd_env.attribution.graph import node_influence, top_candidates, view
    from acd_env.interventions import INTERVENTION_TYPES, Intervention, clean_run, intervention_value

    tokens = model.ensure_tokenized(prompt.clean)
    g = view(_graph(model, prompt.clean))
    order = top_candidates(node_influence(g), 64).tolist()
    by_layer: dict[int, list[int]] = {}
    for j in order:
        by_layer.setdefault(int(g.features[j, 0]), []).append(j)
    picked = [j for js in by_layer.values() for j in js[:3]]
    picked = (picked + [j for j in order if j not in picked])[:n_features]
    _, clean_acts = clean_run(model, tokens)
    _, cf_acts = clean_run(model, model.ensure_tokenized(prompt.counterfactual))
    rows = []
    for kind in INTERVENTION_TYPES:
        for j in picked:
            layer, pos, feat = (int(x) for x in g.features[j])
            value = intervention_value(
                kind, float(clean_acts[layer, pos, feat]), float(cf_acts[layer, pos, feat]), 4.0
            )
            rows.append(Intervention(layer, pos, feat, value))
    rows.append(Intervention(rows[0].layer, rows[0].pos, rows[0].feature, 7.5))  # an arbitrary value
    return tokens, clean_acts, rows


@pytest.mark.parametrize("freeze_attention", [True, False])
def test_batched_engine_equals_feature_intervention(toy_model, freeze_attention):
    from acd_env.interventions import downstream_stats, run_batch

    model = toy_model
    prompt = load_task("ioi", split="test", n=2)[1]
    tokens, clean_acts, rows = _rows(model, prompt)
    assert len(rows) >= 30 and len({r.layer for r in rows}) >= 2
    batch = run_batch(model, tokens, rows, clean_acts, freeze_attention=freeze_attention, chunk=16)
    assert batch.logits.shape == (len(rows), model.cfg.d_vocab)
    for i, row in enumerate(rows):
        logits, acts = model.feature_intervention(tokens, [tuple(row)], freeze_attention=freeze_attention)
        torch.testing.assert_close(batch.logits[i], logits[0, -1], rtol=0, atol=1e-5, msg=f"row {i} {row}")
        diff_sq, ref_sq, n_affected = downstream_stats(acts, clean_acts, row.layer)
        assert float(batch.downstream_sq[i]) == pytest.approx(diff_sq, rel=1e-5, abs=1e-5), (i, row)
        assert float(batch.downstream_ref_sq[i]) == pytest.approx(ref_sq, rel=1e-5, abs=1e-5), (i, row)
        assert int(batch.n_affected[i]) == n_affected, (i, row)
