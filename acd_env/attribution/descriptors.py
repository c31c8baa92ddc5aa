"""Static per-candidate descriptors: what an agent may know of a candidate before intervening on it.

Heavy-tailed quantities are given as log10 (ranking-preserving, well-scaled for linear models and PPO).
On the toy zoo the ones that matter most are magnitude (activation × decoder norm, the size of what an
ablation removes) and layer; influence alone is weak.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from acd_env.attribution.graph import GraphView, linearised_kl, linearised_logit_effects

EPS = 1e-6
GRAPH_DESCRIPTORS = (
    "influence",  # circuit-tracer node influence (the ranking prune_graph uses)
    "log10_activation",  # clean activation
    "decoder_norm",  # ‖W_dec[feature]‖
    "log10_magnitude",  # activation × decoder norm
    "lin_kl_ablation",  # log10 KL of the graph's linearised ablation over the logit nodes
    "lin_kl_patching",  # ... patching
    "lin_kl_steering",  # ... steering
    "direct_logit",  # direct edge to the top logit node (its contribution, in logit units)
    "layer_frac",  # layer / (n_layers - 1)
    "pos_frac",  # position / (n_pos - 1)
    "pos_from_end",  # tokens from the last position (0 = last)
    "log10_in_abs",  # Σ |incoming edges|
    "log10_out_abs",  # Σ |outgoing edges|
    "in_degree_frac",  # share of nodes with a non-zero edge into the feature
    "out_degree_frac",  # share of nodes the feature has a non-zero edge to
    "cf_ratio",  # patching value ÷ clean activation (counterfactual activation, or the fallback), clipped to [0, 10]
)
ATP_DESCRIPTORS = ("atp_kl_ablation", "atp_kl_patching", "atp_kl_steering")
DESCRIPTOR_FAMILIES = {"graph": GRAPH_DESCRIPTORS, "atp": ATP_DESCRIPTORS}


def descriptor_names(families: Sequence[str]) -> tuple[str, ...]:
    return tuple(name for family in families for name in DESCRIPTOR_FAMILIES[family])


def _log10(x: torch.Tensor) -> torch.Tensor:
    return torch.log10(x.clamp(min=0.0) + EPS)


def graph_descriptors(
    g: GraphView,
    idx: np.ndarray,
    influence: torch.Tensor,
    decoder_norms: torch.Tensor,
    patch_values: torch.Tensor,
    steering_scale: float,
    n_layers: int,
) -> np.ndarray:
    """(len(idx), len(GRAPH_DESCRIPTORS)) float32 for the candidate feature nodes `idx`."""
    ix = torch.as_tensor(idx, dtype=torch.long)
    act = g.activations[ix]
    layer = g.features[ix, 0].float()
    pos = g.features[ix, 1].float()
    effects = linearised_logit_effects(g, n_layers)[:, ix]  # (n_logits, k) per unit of activation
    lin = {
        "ablation": linearised_kl(g, effects * (-act)[None]),
        "patching": linearised_kl(g, effects * (patch_values - act)[None]),
        "steering": linearised_kl(g, effects * ((steering_scale - 1.0) * act)[None]),
    }
    adjacency = g.adjacency
    n_nodes = adjacency.shape[0]
    incoming = adjacency[ix].abs()
    outgoing = adjacency[:, ix].abs()
    top_logit_row = n_nodes - len(g.logit_ids)
    columns = [
        influence[ix],
        _log10(act),
        decoder_norms,
        _log10(act * decoder_norms),
        _log10(lin["ablation"]),
        _log10(lin["patching"]),
        _log10(lin["steering"]),
        adjacency[top_logit_row, ix],
        layer / max(n_layers - 1, 1),
        pos / max(g.n_pos - 1, 1),
        (g.n_pos - 1) - pos,
        _log10(incoming.sum(1)),
        _log10(outgoing.sum(0)),
        (incoming > 0).float().sum(1) / n_nodes,
        (outgoing > 0).float().sum(0) / n_nodes,
        (patch_values / act.clamp(min=1e-12)).clamp(0.0, 10.0),
    ]
    out = torch.stack([c.float() for c in columns], dim=1).numpy().astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
