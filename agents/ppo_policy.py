"""A permutation-equivariant actor-critic for `MaskablePPO` on `CircuitDiscovery-v0` (CleanRL spirit: one file).

The candidates are a *set*: K rows of the same descriptors, and action `a = candidate * n_types + type`. A plain
`MultiInputPolicy` flattens the (K, F) matrix into one vector, so it must learn the same "what makes a feature
matter" function separately for every row position. This policy shares it across rows instead:

    x_k   = the k-th candidate row, each column standardised with the train tables' mean and std
    h_k   = φ(x_k)                                   shared per-candidate encoder (2-layer MLP)
    c     = mean of h_k over the real candidates     pooled context (what this prompt's candidates look like)
    g     = [one-hot last outcome, budget left]      global state
    logit(k, t) = ψ([h_k, c, g])[t]                  shared per-candidate head: one logit per intervention type
    V     = ρ([mean_k h'_k, max_k h'_k, g])          critic on a pooled encoding (its own encoder φ')

Permuting the candidates permutes the logits the same way (equivariance) and leaves V unchanged (invariance).
The context `c` lets a candidate's score depend on the rest of its prompt (e.g. "large for this prompt");
the visited flag and measured outcome columns let it depend on what the episode has measured so far. The
action mask (already-used candidates, padding) is applied by sb3-contrib on top of these logits.

Plumbing: `CandidateInputs` (the features extractor) standardises and flattens the observation;
`SetActorCritic` (the "mlp_extractor") un-flattens it and returns the K × n_types logits as the actor latent;
`SetPolicy` drops SB3's dense `action_net` (the latent already is the logits). Normalisation statistics are
constructor arguments, so they are saved inside the policy zip and restored on load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

CLIP = 10.0  # standardised descriptors are clipped to ±CLIP


class CandidateInputs(BaseFeaturesExtractor):
    """Observation → (B, K·(F+1) + G): standardised candidate rows, each with a "real candidate" flag appended,
    flattened, then the global features (one-hot outcome from SB3's preprocessing, budget left).

    A row is real when any of its raw static descriptors is non-zero (padding rows are all zeros).
    """

    mean: th.Tensor  # buffers (register_buffer)
    std: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Dict,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        n_static: int | None = None,
    ) -> None:
        k, f = cast(spaces.Box, observation_space["candidates"]).shape
        n_global = int(np.sum(cast(spaces.MultiDiscrete, observation_space["outcome"]).nvec)) + 1
        super().__init__(observation_space, features_dim=k * (f + 1) + n_global)
        self.n_candidates, self.n_columns, self.n_global = k, f, n_global
        self.n_static = f if n_static is None else int(n_static)
        mean_t = th.zeros(f) if mean is None else th.as_tensor(np.asarray(mean, dtype=np.float32))
        std_t = th.ones(f) if std is None else th.as_tensor(np.asarray(std, dtype=np.float32))
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t.clamp_min(1e-6))

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        cand = obs["candidates"]
        real = (cand[..., : self.n_static] != 0).any(-1, keepdim=True).float()
        x = ((cand - self.mean) / self.std).clamp(-CLIP, CLIP) * real  # padding rows stay exactly zero
        rows = th.cat([x, real], -1).flatten(1)
        return th.cat([rows, obs["outcome"].float(), obs["budget"].float()], -1)


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out), nn.ReLU())


class SetActorCritic(nn.Module):
    """The equivariant actor and invariant critic on `CandidateInputs` features (see the module docstring)."""

    def __init__(self, n_candidates: int, n_columns: int, n_global: int, n_types: int, hidden: int) -> None:
        super().__init__()
        self.k, self.f, self.g, self.n_types = n_candidates, n_columns + 1, n_global, n_types
        self.latent_dim_pi = n_candidates * n_types  # the actor's latent *is* the action logits
        self.latent_dim_vf = hidden
        # actor
        self.phi = mlp(self.f, hidden, hidden)
        self.psi = nn.Sequential(
            nn.Linear(2 * hidden + n_global, hidden), nn.ReLU(), nn.Linear(hidden, n_types)
        )
        # critic
        self.phi_v = mlp(self.f, hidden, hidden)
        self.rho = nn.Sequential(nn.Linear(2 * hidden + n_global, hidden), nn.ReLU())

    def _split(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        rows = features[:, : self.k * self.f].reshape(-1, self.k, self.f)
        return rows, rows[..., -1:], features[:, self.k * self.f :]  # rows, real flag (B, K, 1), globals

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        rows, real, g = self._split(features)
        h = self.phi(rows)  # (B, K, H)
        c = (h * real).sum(1) / real.sum(1).clamp_min(1.0)  # (B, H) mean over real candidates
        ctx = th.cat([c, g], -1).unsqueeze(1).expand(-1, self.k, -1)
        return self.psi(th.cat([h, ctx], -1)).flatten(1)  # (B, K * n_types), a = k * n_types + t

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        rows, real, g = self._split(features)
        h = self.phi_v(rows)
        mean = (h * real).sum(1) / real.sum(1).clamp_min(1.0)
        peak = h.masked_fill(real == 0, 0.0).amax(1)  # ReLU outputs are ≥ 0, so 0 is a neutral fill
        return self.rho(th.cat([mean, peak, g], -1))

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)


class SetPolicy(MaskableActorCriticPolicy):
    """`MaskableActorCriticPolicy` with `CandidateInputs` + `SetActorCritic`; `hidden` sets every layer's width.

    Pass the train tables' column statistics as `features_extractor_kwargs={"mean": ..., "std": ...,
    "n_static": ...}` (`agents.ppo.column_stats` computes them).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Any,
        hidden: int = 64,
        **kwargs: Any,
    ) -> None:
        self.hidden = hidden
        kwargs.setdefault("features_extractor_class", CandidateInputs)
        kwargs.setdefault("share_features_extractor", True)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "hidden": self.hidden}

    def _build_mlp_extractor(self) -> None:
        fx = cast(CandidateInputs, self.features_extractor)
        n_types = int(cast(spaces.Discrete, self.action_space).n) // fx.n_candidates
        self.mlp_extractor = SetActorCritic(fx.n_candidates, fx.n_columns, fx.n_global, n_types, self.hidden)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()  # SetActorCritic already returns one logit per action
        if (
            self.ortho_init
        ):  # small last layer: a near-uniform policy at the start, as SB3 does for action_net
            last = cast(nn.Linear, cast(SetActorCritic, self.mlp_extractor).psi[-1])
            nn.init.orthogonal_(last.weight, gain=0.01)
            nn.init.zeros_(last.bias)
        # SB3 types optimizer_class as type[Optimizer], whose __init__ has no lr; every torch optimizer takes it
        self.optimizer = self.optimizer_class(
            self.parameters(),
            lr=lr_schedule(1),  # pyright: ignore[reportCallIssue]
            **self.optimizer_kwargs,
        )  # rebuilt without the dropped action_net's parameters
