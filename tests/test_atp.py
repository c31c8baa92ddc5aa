"""Attribution patching: the estimate is the real model's derivative (finite differences agree)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acd_env.attribution.atp import atp_descriptors, atp_jacobian
from acd_env.attribution.graph import attribute_graph, node_influence, top_candidates, view
from acd_env.models.toy import load_toy


@pytest.fixture(scope="module")
def model64():
    model = load_toy("toy-4l").to(torch.float64)
    model.cfg.dtype = torch.float64
    return model


@pytest.fixture(scope="module")
def prompt_graph(model64):
    tokens = model64.ensure_tokenized("the big cats run and the small dog near the birds")
    g = view(attribute_graph(model64, tokens))
    idx = top_candidates(node_influence(g), 12)
    return tokens, g, torch.as_tensor(idx)


def test_atp_matches_finite_differences(model64, prompt_graph):
    tokens, g, idx = prompt_graph
    features, acts = g.features[idx], g.activations[idx]
    jac, top, _ = atp_jacobian(model64, tokens, features)
    eps = 1e-4
    for k in range(len(idx)):
        layer, pos, feat = (int(x) for x in features[k])
        a = float(acts[k])
        up, _ = model64.feature_intervention(
            tokens, [(layer, pos, feat, a * (1 + eps))], freeze_attention=False
        )
        down, _ = model64.feature_intervention(
            tokens, [(layer, pos, feat, a * (1 - eps))], freeze_attention=False
        )
        fd = (up[0, -1, top] - down[0, -1, top]) / (2 * eps)
        scale = max(float(fd.abs().max()), 1e-8)
        assert float((fd - jac[:, k]).abs().max()) / scale < 1e-3, k


def test_atp_leaves_the_model_unchanged(model64, prompt_graph):
    tokens, g, idx = prompt_graph
    atp_descriptors(model64, tokens, g.features[idx], g.activations[idx], g.activations[idx] * 0.5, 4.0)
    again = view(attribute_graph(model64, tokens))
    torch.testing.assert_close(again.adjacency, g.adjacency)  # attribution still sees its own gradient hooks


def test_atp_descriptor_ranks_like_measured_ablation(model64, prompt_graph):
    from scipy.stats import spearmanr

    from acd_env.interventions import Intervention, clean_run, run_batch
    from acd_env.measurements import measure

    tokens, g, idx = prompt_graph
    features, acts = g.features[idx], g.activations[idx]
    desc = atp_descriptors(model64, tokens, features, acts, acts, 4.0)
    logits, clean = clean_run(model64, tokens)
    rows = [Intervention(*(int(x) for x in f), 0.0) for f in features]
    r = run_batch(model64, tokens, rows, clean)
    kl = measure(logits[-1], r.logits, r.downstream_sq, r.downstream_ref_sq, r.n_affected, 0, None).kl
    assert spearmanr(desc[:, 0], kl).statistic > 0.5
    assert np.isfinite(desc).all()
