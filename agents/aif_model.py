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

pA (`build_pA`): near-identity ablation readings, broad weak priors for the other readings, exact structural
entries; the score likelihood is held as counts per score bin around a Gaussian copula between the score and
the latent log effect (`score_rows`), whose trust parameters (rho, shift) have a posterior given the counts
(`score_trust_posterior`, `trusted_score_rows`: empirical Bayes for the rows' Dirichlet prior).
A and D (`expected_model`): measurement likelihoods are E[Dir(pA)]; the score likelihood comes from the rows.
C: ``pref`` nats per decade on ablation-KL readings (0 for dead, 5 * pref for >= 1 nat); 0 elsewhere.
D: over importance, the marginal the score counts imply (`expected_model`); "none" for the intervention.
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
FIXED_COUNT = 1e5  # concentration of structural (deterministic) likelihood entries
DEFAULT_D = np.array([0.30, 0.20, 0.20, 0.15, 0.10, 0.05])  # importance marginal before fit (shift adapts it)

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


RHO_GRID = np.round(np.arange(-0.9, 0.951, 0.05), 2)  # how far the score can be trusted
SHIFT_GRID = np.round(np.arange(-1.5, 1.51, 0.25), 2)  # where importance levels sit on the latent scale (sd)
TRUST_PRIOR = (0.6, 0.3, 0.25)  # (rho, sd of rho, sd of shift): the Gaussian prior on the trust parameters


def _ncdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, |error| < 1.5e-7), vectorised, no scipy."""
    a = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-a * a)
    return 0.5 * (1.0 + np.sign(x) * erf)


@lru_cache(maxsize=8)
def _copula_table(n_score_bins: int, d: tuple[float, ...]) -> np.ndarray:
    """P(importance | score bin) for every (rho, shift) of the grids: (n_rho, n_shift, n_score_bins, N_I).

    A latent log effect z ~ N(0, 1) is cut into importance levels at the quantiles of `d` moved by `shift`;
    the score u = rho z + sqrt(1 - rho^2) e is cut into equal-mass bins (the agent bins by rank). Integrated
    over z on a fine grid."""
    std = NormalDist()
    z = np.linspace(-6.5, 6.5, 1301)
    w = np.exp(-0.5 * z**2)
    w /= w.sum()
    base = np.array([std.inv_cdf(c) for c in np.cumsum(d)[:-1].clip(1e-9, 1 - 1e-9)])
    q = np.array([-np.inf] + [std.inv_cdf(j / n_score_bins) for j in range(1, n_score_bins)] + [np.inf])
    out = np.zeros((len(RHO_GRID), len(SHIFT_GRID), n_score_bins, len(d)))
    for r, rho in enumerate(RHO_GRID):
        sig = np.sqrt(1.0 - rho**2)
        cdf = _ncdf((q[None, :] - rho * z[:, None]) / sig)  # (nz, n_s + 1)
        bins = np.diff(cdf, axis=1) * w[:, None]  # (nz, n_s)
        for m, shift in enumerate(SHIFT_GRID):
            onehot = np.eye(len(d))[np.searchsorted(base + shift, z)]  # (nz, N_I)
            joint = bins.T @ onehot + 1e-6  # (n_s, N_I)
            out[r, m] = joint / joint.sum(1, keepdims=True)
    return out


def _key(d: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in np.asarray(d) / np.sum(d))


@lru_cache(maxsize=8)
def _log_copula_table(n_score_bins: int, d: tuple[float, ...]) -> np.ndarray:
    return np.log(_copula_table(n_score_bins, d))


def score_rows(n_score_bins: int, d: np.ndarray, rho: float, shift: float = 0.0) -> np.ndarray:
    """P(importance | score bin), (n_score_bins, N_IMPORTANCE): the Gaussian copula of the score and the
    latent log effect with correlation `rho` (nearest grid value), importance marginal `d` moved by `shift`."""
    table = _copula_table(int(n_score_bins), _key(d))
    r = int(np.argmin(np.abs(RHO_GRID - rho)))
    m = int(np.argmin(np.abs(SHIFT_GRID - shift)))
    return table[r, m].copy()


def score_trust_posterior(counts: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Posterior over the (rho, shift) grid given counts[score bin, importance] of measured candidates and the
    Gaussian prior `TRUST_PRIOR`. Rows are conditionals P(importance | score bin), which stay unbiased
    although candidates are measured *because* of their score."""
    rho0, sd_rho, sd_shift = TRUST_PRIOR
    loglik = np.einsum("rmsi,si->rm", _log_copula_table(counts.shape[0], _key(d)), counts)
    logprior = -0.5 * ((RHO_GRID[:, None] - rho0) / sd_rho) ** 2 - 0.5 * (SHIFT_GRID[None, :] / sd_shift) ** 2
    logpost = loglik + logprior
    post = np.exp(logpost - logpost.max())
    return post / post.sum()


def trusted_score_rows(counts: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """P(importance | score bin) averaged over the trust posterior (empirical Bayes centre of the score
    likelihood's Dirichlet prior), and the posterior mean (rho, shift)."""
    post = score_trust_posterior(counts, d)
    table = _copula_table(counts.shape[0], _key(d))
    rows = np.einsum("rm,rmsi->si", post, table)
    return rows, (float(post.sum(1) @ RHO_GRID), float(post.sum(0) @ SHIFT_GRID))


def build_pA(
    spec: ModelSpec,
    d: np.ndarray = DEFAULT_D,
    *,
    score_rho: float = 0.6,
    score_shift: float = 0.0,
    score_concentration: float = 16.0,
) -> list[np.ndarray]:
    """Dirichlet prior over the likelihoods; structural zeros stay exactly 0 (pymdp masks them out).
    The score modality gets `score_concentration` pseudo-counts per score bin (see `expected_model`)."""
    n_s, n_v = spec.n_score_bins, 1 + spec.n_types
    pa_score = np.zeros((1 + n_s, N_IMPORTANCE, n_v))
    pa_score[1:, :, 0] = score_concentration * score_rows(n_s, d, score_rho, score_shift)
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


def expected_model(pA: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The likelihood A and importance prior D that the counts pA imply (numpy twin of the JAX version).

    Measurement modalities: E[Dir(pA)], column-normalised (pymdp's `dirichlet_expected_value`).
    Score modality: the agent measures candidates *because* of their score, so the counts' columns
    (P(score | importance)) are biased by that selection while their rows (P(importance | score bin)) are
    not. Rank bins have a known uniform marginal, so Bayes' rule gives the likelihood from the rows:
    A[s, i] = R[s, i] / sum_s' R[s', i] with R the row-normalised counts, and D(i) = mean_s R[s, i]; then
    a candidate's posterior from its score reading is exactly R[s]."""
    A = [p / np.maximum(p.sum(0, keepdims=True), 1e-16) for p in pA]
    rows = pA[0][1:, :, 0]
    R = rows / rows.sum(1, keepdims=True)
    A[0] = A[0].copy()
    A[0][1:, :, 0] = R / R.sum(0, keepdims=True)
    return A, R.mean(0)


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


def level_of(kl: np.ndarray | float) -> np.ndarray:
    """Importance level 0..5 of a measured ablation KL (the env's KL level minus one)."""
    return np.searchsorted(np.asarray(BIN_EDGES["kl"]), np.asarray(kl, dtype=np.float64), side="right")
