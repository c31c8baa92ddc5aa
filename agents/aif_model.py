"""The `aif` agent's generative model as plain numpy arrays (no JAX): factors, modalities, A/pA, B, C, D.

One model is shared by every candidate of every episode; each candidate only has its own belief over the
hidden states. The layout follows pymdp 1.0's sparse-dependency convention: ``A[m]`` has shape
``(num_obs[m], *num_states[A_DEPENDENCIES[m]])`` and ``B[f]`` has shape ``(ns_f, ns_f, n_controls_f)``.

Hidden-state factors
  0 ``importance`` (6 levels): the decade of the candidate's ablation KL, i.e. the level an ablation reading
    falls in with ``acd_env.discretise`` bins (<1e-4, 1e-4..1e-3, ..., 0.1..1, >=1 nats). Static.
  1 ``intervention`` (1 + n_types levels): the intervention in force: ``none`` (the candidate is only
    looked at) or one of the env's types. The only controllable factor: action ``u`` sets it to ``u + 1``.
    pymdp's A has no action axis, so this factor is what makes actions change predicted observations.

Observation modalities (all depend on [importance, intervention])
  0 ``score``: the learned score's bin (1..n_score_bins; 0 = "not read now"). Read while nothing is in
    force; under an intervention it deterministically reads 0, so it is never mixed with measurements.
  1 ``kl``: the measured KL of the intervention in force, discretised with the env's bins and labelled by
    the type that produced it: 0 = none yet, then 6 levels per type (``1 + t * 6 + level - 1``). The label
    lets the preferences single out ablation readings.
  2 ``downstream`` and 3 ``n_affected``: the env's other outcome levels (0 = none yet, 1..6).

C: ``pref`` nats per decade on ablation-KL readings (0 for dead, 5 * pref for >= 1 nat); 0 elsewhere.
D: a prior over importance decades (broad by default; ``fit`` sets it to the train tables' frequencies)
and "none" for the intervention factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from acd_env.discretise import BIN_EDGES

N_IMPORTANCE = len(BIN_EDGES["kl"]) + 1  # 6: one level per KL bin an ablation can read
N_LEVELS = N_IMPORTANCE  # measured levels per outcome dimension (the env's 1..6)
FACTORS = ("importance", "intervention")
MODALITIES = ("score", "kl", "downstream", "n_affected")
A_DEPENDENCIES = [[0, 1], [0, 1], [0, 1], [0, 1]]
B_DEPENDENCIES = [[0], [1]]
FIXED_COUNT = 1000.0  # concentration of structural (deterministic) likelihood entries
DEFAULT_D = np.array([0.30, 0.20, 0.20, 0.15, 0.10, 0.05])

# Prior shape of an intervention type's KL reading given importance: (shift in decades, spread in decades,
# concentration per column). Ablation defines importance, so its reading is near the identity.
KL_PRIOR = {"ablation": (0.0, 0.35, 20.0), "patching": (-0.5, 1.0, 4.0), "steering": (0.5, 1.0, 4.0)}
OTHER_PRIOR = (0.0, 1.0, 4.0)
DOWNSTREAM_PRIOR = (0.8, 0.3, 1.5, 4.0)  # level ≈ slope * importance + offset, spread, concentration


@dataclass(frozen=True)
class ModelSpec:
    """Sizes that fix the model's shapes (and therefore the compiled JAX functions)."""

    interventions: tuple[str, ...]
    n_score_bins: int = 16

    @property
    def n_types(self) -> int:
        return len(self.interventions)

    @property
    def num_states(self) -> list[int]:
        return [N_IMPORTANCE, 1 + self.n_types]

    @property
    def num_obs(self) -> list[int]:
        return [1 + self.n_score_bins, 1 + self.n_types * N_LEVELS, 1 + N_LEVELS, 1 + N_LEVELS]

    @property
    def preferred_types(self) -> tuple[int, ...]:
        """Types whose KL readings carry preference: ablation (what discovery is scored on) when present."""
        if "ablation" in self.interventions:
            return (self.interventions.index("ablation"),)
        return tuple(range(self.n_types))

    def kl_index(self, t: int, level: int) -> int:
        """Observation index of modality `kl` for type t and env level 1..6 (0 stays "none yet")."""
        return 0 if level <= 0 else 1 + t * N_LEVELS + (int(level) - 1)


def disc_gauss(mu: float, sd: float, n: int) -> np.ndarray:
    """A Gaussian over levels 0..n-1 integrated over unit-wide cells (tails folded into the end cells)."""
    edges = np.arange(1, n) - 0.5
    cdf = np.array([NormalDist(mu, sd).cdf(e) for e in edges])
    p = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    p = np.maximum(p, 1e-4)
    return p / p.sum()


@lru_cache(maxsize=32)
def _score_prior(n_score_bins: int, d: tuple[float, ...], rho: float) -> np.ndarray:
    """Monte Carlo (fixed seed) of P(score bin | importance): a latent log effect z ~ N(0, 1) is cut into
    importance levels at the quantiles of `d`; the score u = rho z + noise is cut into equal-mass bins
    (the agent bins scores by rank within a prompt)."""
    rng = np.random.default_rng(12345)
    n = 200_000
    z = rng.standard_normal(n)
    u = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    std = NormalDist()
    cuts = [std.inv_cdf(c) for c in np.cumsum(d)[:-1].clip(1e-9, 1 - 1e-9)]
    level = np.searchsorted(cuts, z)
    s = np.searchsorted([std.inv_cdf(j / n_score_bins) for j in range(1, n_score_bins)], u)
    counts = np.zeros((n_score_bins, len(d)))
    np.add.at(counts, (s, level), 1.0)
    counts += 1e-3
    return counts / counts.sum(0, keepdims=True)


def score_prior(n_score_bins: int, d: np.ndarray, rho: float) -> np.ndarray:
    """P(score bin | importance) if the score and the latent log effect have a Gaussian copula with
    correlation `rho` (see `_score_prior`). Returns (n_score_bins, N_IMPORTANCE)."""
    return _score_prior(
        int(n_score_bins), tuple(float(x) for x in np.asarray(d) / np.sum(d)), float(rho)
    ).copy()


def build_pA(
    spec: ModelSpec,
    d: np.ndarray = DEFAULT_D,
    *,
    score_rho: float = 0.6,
    score_concentration: float = 16.0,
) -> list[np.ndarray]:
    """Dirichlet prior over the likelihoods; structural zeros stay exactly 0 (pymdp masks them out)."""
    n_s, n_v = spec.n_score_bins, 1 + spec.n_types
    pa_score = np.zeros((1 + n_s, N_IMPORTANCE, n_v))
    pa_score[1:, :, 0] = score_concentration * score_prior(n_s, d, score_rho)
    pa_score[0, :, 1:] = FIXED_COUNT

    pa_kl = np.zeros((1 + spec.n_types * N_LEVELS, N_IMPORTANCE, n_v))
    pa_kl[0, :, 0] = FIXED_COUNT
    for t, kind in enumerate(spec.interventions):
        shift, sd, conc = KL_PRIOR.get(kind, OTHER_PRIOR)
        rows = slice(1 + t * N_LEVELS, 1 + (t + 1) * N_LEVELS)
        for i in range(N_IMPORTANCE):
            pa_kl[rows, i, 1 + t] = conc * disc_gauss(i + shift, sd, N_LEVELS)

    slope, offset, sd, conc = DOWNSTREAM_PRIOR
    pa_other = np.zeros((1 + N_LEVELS, N_IMPORTANCE, n_v))
    pa_other[0, :, 0] = FIXED_COUNT
    for t in range(spec.n_types):
        for i in range(N_IMPORTANCE):
            pa_other[1:, i, 1 + t] = conc * disc_gauss(slope * i + offset, sd, N_LEVELS)
    return [pa_score, pa_kl, pa_other, pa_other.copy()]


def expected_A(pA: list[np.ndarray]) -> list[np.ndarray]:
    """E[Dir(pA)] column-normalised over the observation axis (as pymdp's dirichlet_expected_value)."""
    return [p / np.maximum(p.sum(0, keepdims=True), 1e-16) for p in pA]


def build_B(spec: ModelSpec) -> list[np.ndarray]:
    """Importance is static (one identity control); action u puts intervention u + 1 in force."""
    n_v = 1 + spec.n_types
    b_imp = np.eye(N_IMPORTANCE)[:, :, None]
    b_int = np.zeros((n_v, n_v, spec.n_types))
    for u in range(spec.n_types):
        b_int[u + 1, :, u] = 1.0
    return [b_imp, b_int]


def build_C(spec: ModelSpec, pref: float) -> list[np.ndarray]:
    """Log-preferences: `pref` nats per decade of ablation KL; readings of other types are neutral."""
    c_kl = np.zeros(spec.num_obs[1])
    for t in spec.preferred_types:
        c_kl[1 + t * N_LEVELS : 1 + (t + 1) * N_LEVELS] = pref * np.arange(N_LEVELS)
    return [np.zeros(spec.num_obs[0]), c_kl, np.zeros(spec.num_obs[2]), np.zeros(spec.num_obs[3])]


def build_D(d: np.ndarray, spec: ModelSpec) -> list[np.ndarray]:
    none = np.zeros(1 + spec.n_types)
    none[0] = 1.0
    return [np.asarray(d, float) / np.sum(d), none]


def level_of(kl: np.ndarray | float) -> np.ndarray:
    """Importance level 0..5 of a measured ablation KL (the env's KL level minus one)."""
    return np.searchsorted(np.asarray(BIN_EDGES["kl"]), np.asarray(kl, dtype=np.float64), side="right")
