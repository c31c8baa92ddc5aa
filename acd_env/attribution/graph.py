"""Attribution graph → candidate features, ranked by circuit-tracer's own node influence.

`compute_node_influence` is the ranking `prune_graph` uses: a feature's share of its targets' inputs,
propagated to the logits. Ranking by raw edge-weight sums instead picks mostly dead features.
Adjacency convention: rows are targets, columns are sources; node order is
[selected features, error nodes, token nodes, logit nodes].
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

ATTRIBUTION_KWARGS = {"max_n_logits": 5, "desired_logit_prob": 0.95, "batch_size": 256}


class GraphView(NamedTuple):
    """The parts of a circuit-tracer `Graph` the environment uses, as CPU tensors."""

    adjacency: torch.Tensor  # (N, N), rows = targets
    features: torch.Tensor  # (n_features, 3) [layer, pos, feature index] of the feature nodes
    activations: torch.Tensor  # (n_features,) clean activation of each feature node
    logit_ids: torch.Tensor  # (n_logits,) vocabulary ids of the logit nodes
    logit_probs: torch.Tensor  # (n_logits,) their clean probabilities
    n_pos: int


def attribute_graph(model: Any, tokens: torch.Tensor) -> Any:
    """circuit-tracer's `attribute` with the benchmark's settings (top logits up to 95 % of the mass, ≤ 5)."""
    import warnings

    from circuit_tracer import attribute

    with warnings.catch_warnings():
        # torch warns that circuit-tracer's full backward hook fires on outputs only; that is by design
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        return attribute(tokens, model, **ATTRIBUTION_KWARGS)


def view(graph: Any) -> GraphView:
    selected = graph.selected_features
    return GraphView(
        adjacency=graph.adjacency_matrix.detach().float().cpu(),
        features=graph.active_features[selected].long().cpu(),
        activations=graph.activation_values[selected].detach().float().cpu(),
        logit_ids=torch.tensor([t.vocab_idx for t in graph.logit_targets], dtype=torch.long),
        logit_probs=graph.logit_probabilities.detach().float().cpu(),
        n_pos=int(graph.n_pos),
    )


def node_influence(g: GraphView) -> torch.Tensor:
    """Influence of every feature node on the logits (n_features,), as `prune_graph` computes it."""
    from circuit_tracer.graph import compute_node_influence

    weights = torch.zeros(g.adjacency.shape[0])
    weights[-len(g.logit_ids) :] = g.logit_probs
    return compute_node_influence(g.adjacency, weights)[: len(g.features)]


def top_candidates(influence: torch.Tensor, k: int) -> np.ndarray:
    """Indices of the (at most) k most influential feature nodes, most influential first (stable ties)."""
    order = np.argsort(-influence.numpy(), kind="stable")
    return order[:k]


def linearised_logit_effects(g: GraphView, n_layers: int) -> torch.Tensor:
    """(n_logits, n_features): change of each logit node per unit change of each feature's activation,
    through every path of the linear attribution graph (direct edges plus paths through other features).

    Edge A[t, s] is s's contribution at its clean value, so a change Δv_s passes on A[t, s]/v_s · Δv_s;
    the graph is a DAG by layer, so the path sum ends after n_layers hops.
    """
    nf = len(g.features)
    nl = len(g.logit_ids)
    per_unit = g.adjacency[:, :nf] / g.activations.clamp(min=1e-12)[None, :]
    ff = per_unit[:nf]  # feature -> feature
    hop = per_unit[-nl:]  # feature -> logit
    total = hop.clone()
    for _ in range(n_layers):
        hop = hop @ ff
        total += hop
    return total


def linearised_kl(g: GraphView, logit_change: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ shifted) over the graph's logit nodes, for logit changes (n_logits, n)."""
    p = g.logit_probs / g.logit_probs.sum()
    log_p = p.clamp(min=1e-12).log()
    log_q = (log_p[:, None] + logit_change).log_softmax(0)
    return (p[:, None] * (log_p[:, None] - log_q)).sum(0).clamp(min=0.0)
