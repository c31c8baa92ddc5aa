"""`aif`: an active-inference agent (inferactively-pymdp 1.0, JAX) that picks (candidate, intervention) pairs.

Generative model (one, shared by all candidates and episodes; `agents/aif_model.py` builds it)
---------------------------------------------------------------------------------------------
Every candidate has its own belief over two hidden-state factors; nothing is carried between candidates:
- ``importance`` (6 levels): the decade its ablation KL falls in, with the env's KL bins
  (<1e-4, 1e-4..1e-3, ..., 0.1..1, >=1 nats). Static (B = identity).
- ``intervention`` in force (none, then one level per env type): the only controllable factor; action type
  u sets it to u + 1 (B). pymdp's A has no action axis, so this factor is what lets an action change the
  predicted observations; without it every EFE would be equal.
Four observation modalities, each depending on [importance, intervention]:
- ``score`` (the descriptor modality): the rank bin (1..16 within the prompt) of a *learned score*, a running
  prediction of log10 ablation KL from the candidate's descriptors (`agents/aif_score.py`). It is read while
  nothing is in force (the start of the episode); under any intervention it reads "n/a", so descriptors never
  mix with measurements. Its likelihood P(score bin | importance) is a learned Dirichlet: this is where the
  agent learns how far the attribution-derived score can be trusted on the model at hand (see below).
- ``kl``: the measured KL of the intervention, discretised with `acd_env.discretise` bins and labelled with
  the type that produced it (0 = none yet, 6 levels per type).
- ``downstream`` and ``n_affected``: the env's other outcome levels (0 = none yet, 1..6).
A (the prior pA, `build_pA`): an ablation reading is the importance level itself (near identity, 20
pseudo-counts per column: it defines importance); patching reads about half a decade lower and steering half a
decade higher, both broad and weakly held (4); downstream and affected counts grow with importance, broad and
weak (4); structural entries ("none yet", "n/a") are exact. The score likelihood: ``score_concentration``
pseudo-counts per score bin centred on a Gaussian copula between score and log effect (rho 0.6 a priori).
C (preferences): ``pref`` nats per decade of *ablation* KL reading (discovery is scored by the ablation effect
of the chosen features); patching and steering readings are neutral, worth only what they teach.
D: over importance, the marginal the score counts imply (see learning); "none" for the intervention factor.

Inference, planning and learning (`agents/aif_kernels.py`: pymdp's own functions, jitted)
------------------------------------------------------------------------------------------
- Beliefs: `pymdp.inference.update_posterior_states` from D on the score reading; a measured candidate's
  posterior adds its readings with its intervention in force.
- EFE for every (candidate, type): `pymdp.control` building blocks (expected state, expected observations,
  state info gain, expected utility, pA info gain), `jax.vmap` over candidate beliefs and policies, candidates
  padded to 64/256/512 (no recompiles within a bucket). neg-EFE = utility + ``info_weight`` × state info gain +
  ``novelty_weight`` × budget left × (pA info gain of the measurement readings + pA info gain of the candidate's
  own score reading, i.e. what measuring it would teach the score likelihood). Novelty is scaled by the budget
  fraction left because what is learned early is used for longer.
- Choice: argmax neg-EFE (= argmin EFE) over valid actions, ties broken by the higher score; with ``gamma``
  set, a seeded draw from softmax(gamma × neg-EFE) instead. With ``planning="argmax"`` (the agent
  `aif-argmax`, `AIFArgmaxAgent`: the planning ablation) the choice is the plain argmax of its own score, the
  posterior expected importance, over valid actions (i.e. unmeasured candidates; ties by the higher learned
  score, as `aif` breaks them) with an ablation (the preferred reading): the same model, beliefs, pymdp updates
  and learning, no EFE (`argmax_choice`). The circuit track's `aif-argmax` is the same ablation there.
- Learning: after each measurement, `pymdp.learning.update_obs_likelihood_dirichlet` adds the candidate's two
  readings (its score bin with nothing in force, its measurement with its type in force), weighted by its
  posterior, to the one shared pA (a pooled update). Only measured candidates teach the score likelihood (an
  unmeasured one would only teach the model its own prior). Because candidates are measured *because* of their
  score, the score counts' columns P(score | importance) are biased by that selection while their rows
  P(importance | score bin) are not; rank bins have a known uniform marginal, so the likelihood is taken from
  the rows by Bayes' rule (`expected_model`), and D is the importance marginal they imply. The Dirichlet prior
  of the rows is re-centred after every measurement on the copula averaged over the posterior of its trust
  parameters (rho: how far the score can be trusted, possibly negative; shift: where importance levels sit),
  given all score counts (empirical Bayes, `trusted_score_rows`): bins never measured are then calibrated by
  the ones that were, and if the top-scored candidates keep disappointing, rho falls and the agent turns to
  other bins. The score predictor is updated from every ablation measurement. All of it persists across
  episodes until `reset_memory()` (which keeps what `fit` learned).
- `fit(tables)`: fits the score's base predictor (boosted trees, descriptors → log10 ablation KL) and
  warm-starts the score counts with *out-of-fold* predictions (3 folds by prompt, so the likelihood is not
  over-confident), the measurement likelihoods from every (candidate, type) of the tables (at most
  ``fit_strength`` counts per distribution, so later measurements still move them) and the importance prior.

What it does in practice (toy-4l): it always ablates (the only preferred reading, and the most informative
about ablation importance). Its likelihood stays monotone in the score bin, so the EFE ranks candidates mostly
by their score's bin; the epistemic terms (state info gain about a candidate, novelty about the likelihood)
reorder choices only where the expected effects are close or the score's trust is in doubt. At the default
weights they rarely do on toy-4l, where measured exploration did not pay (larger novelty weights lowered the
stream efficiency slightly: the learned score does as well from the chosen candidates as from all of them).
Its leaderboard figures are in BENCHMARKS.md.

Outputs: `belief_entropy_history` (per decision of the current episode: mean entropy of the candidates'
importance beliefs), `efe_history` (the chosen action's EFE), `importance_ranking()` (all real candidates by
posterior expected importance, ties by measured or predicted log effect), `is_converged` (the top
``converge_top`` of that ranking are all measured and unchanged over the last ``converge_patience``
observations), `score_trust` (posterior mean rho, shift), and `diagnostics()` for the harness's TensorBoard.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from acd_env.discretise import discretise
from acd_env.errors import ACDError
from agents.aif_model import (
    DEFAULT_D,
    N_IMPORTANCE,
    N_LEVELS,
    ModelSpec,
    build_pA,
    level_of,
    score_rows,
    trusted_score_rows,
)
from agents.aif_score import ScoreModel, log_effect
from agents.base import BaseAgent
from agents.base import load_tables as base_load_tables


class AIFAgent(BaseAgent):
    """Active inference over per-candidate importance beliefs with a learned, shared likelihood.

    Args:
        seed: seeds the softmax choice (with `gamma`) and the score's boosted trees.
        n_score_bins: rank bins of the learned score within a prompt (the score modality's levels).
        pref: nats of preference per decade of ablation KL reading (C).
        info_weight: weight of the state information gain in the EFE.
        novelty_weight: weight of the pA information gain (novelty), scaled by the budget fraction left.
        gamma: None for argmax neg-EFE; a precision for a seeded softmax choice instead.
        score_rho: the a-priori correlation of the score with the log effect (the trust prior's centre).
        score_concentration: pseudo-counts per score bin of the score likelihood's prior.
        fit_strength: at most this many counts per distribution added by `fit`.
        learning_rate: the Dirichlet learning rate of every update.
        converge_top, converge_patience: the `is_converged` criterion (see the module docstring).
        compile_cache: a directory for JAX's persistent compilation cache (default: $ACD_JAX_CACHE if set);
            it cuts the ~1-4 s compile of each kernel to ~0.5 s in later processes.
        planning: "efe" (argmax of neg-EFE, or the softmax with `gamma`) or "argmax" (the plain argmax of its own
            posterior expected importance: the planning ablation `aif-argmax`); None: the class's default.
        intervention: unused (the agent chooses its type by EFE); kept for the common agent signature.
    """

    name = "aif"
    planning = "efe"

    def __init__(
        self,
        *,
        seed: int = 0,
        n_score_bins: int = 16,
        pref: float = 1.0,
        info_weight: float = 1.0,
        novelty_weight: float = 0.3,
        gamma: float | None = None,
        score_rho: float = 0.6,
        score_concentration: float = 16.0,
        fit_strength: float = 200.0,
        learning_rate: float = 1.0,
        converge_top: int = 10,
        converge_patience: int = 3,
        compile_cache: str | None = None,
        planning: str | None = None,
        intervention: str = "ablation",
    ) -> None:
        super().__init__(seed=seed, intervention=intervention)
        self.planning = check_planning(type(self).planning if planning is None else planning)
        if self.planning == "argmax" and gamma is not None:
            raise ACDError(
                f"gamma={gamma!r} sets a softmax over neg-EFE, which planning='argmax' does not use; "
                "leave gamma None"
            )
        self.n_score_bins = int(n_score_bins)
        self.pref = float(pref)
        self.info_weight = float(info_weight)
        self.novelty_weight = float(novelty_weight)
        self.gamma = gamma
        self.score_rho = float(score_rho)
        self.score_concentration = float(score_concentration)
        self.fit_strength = float(fit_strength)
        self.learning_rate = float(learning_rate)
        self.converge_top = int(converge_top)
        self.converge_patience = int(converge_patience)
        self.compile_cache = compile_cache
        self.score = ScoreModel(seed=seed)
        self.spec: ModelSpec | None = None
        self._kernels: Any = None
        self._d = DEFAULT_D.copy()
        self._fit_counts: dict[str, Any] | None = None
        self.belief_entropy_history: list[float] = []
        self.efe_history: list[float] = []
        self.n_observations = 0  # measurements learned from since the last reset_memory()

    # ------------------------------------------------------------------ model state
    def _ensure_model(self, interventions: tuple[str, ...]) -> None:
        spec = ModelSpec(tuple(interventions), self.n_score_bins)
        if self.spec == spec and self._kernels is not None:
            return
        from agents.aif_kernels import enable_compile_cache, get_kernels

        cache = self.compile_cache or os.environ.get("ACD_JAX_CACHE")
        if cache:
            enable_compile_cache(cache)
        self.spec = spec
        self._kernels = get_kernels(spec, self.pref)
        self._restore_prior()

    def _initial_score_counts(self) -> np.ndarray:
        """Score-reading counts before any episode: none, or what `fit` found (capped per score bin)."""
        if self._fit_counts is None or self._fit_counts["score"].shape[0] != self.n_score_bins:
            return np.zeros((self.n_score_bins, N_IMPORTANCE))
        score = self._fit_counts["score"]
        return score * np.minimum(1.0, self.fit_strength / np.maximum(score.sum(1, keepdims=True), 1e-9))

    def _score_pA(self, counts: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The score likelihood's Dirichlet parameters: counts plus a prior centred on the copula whose trust
        (rho, shift) is inferred from the counts (empirical Bayes; `trusted_score_rows`)."""
        if counts.sum() > 0:
            rows, trust = trusted_score_rows(counts, self._d)
        else:
            rows, trust = score_rows(self.n_score_bins, self._d, self.score_rho), (self.score_rho, 0.0)
        return self.score_concentration * rows + counts, trust

    def prior_pA(self) -> list[np.ndarray]:
        """The Dirichlet parameters `reset_memory()` returns to: the built-in prior plus what `fit` added."""
        assert self.spec is not None
        pA = build_pA(
            self.spec, self._d, score_rho=self.score_rho, score_concentration=self.score_concentration
        )
        pA[0][1:, :, 0], _ = self._score_pA(self._initial_score_counts())
        if self._fit_counts is not None:
            add_fit_counts(pA, self.spec, self._fit_counts, self.fit_strength)
        return pA

    def _restore_prior(self) -> None:
        self._score_counts = self._initial_score_counts()
        self.score_trust = self._score_pA(self._score_counts)[1]
        pA, A, D = self._kernels.set_model(self._kernels.to_device(self.prior_pA()))
        self._pA, self._A, self._D = list(pA), list(A), D

    def _learn(self, pA_new: list[Any], added: np.ndarray) -> None:
        """Take pymdp's Dirichlet update; re-estimate the score's trust from all score-reading counts and
        re-centre the score likelihood's prior on it."""
        self._score_counts = self._score_counts + added
        score_pA, self.score_trust = self._score_pA(self._score_counts)
        pA, A, D = self._kernels.set_score_pA(pA_new, np.asarray(score_pA, np.float32))
        self._pA, self._A, self._D = list(pA), list(A), D

    @property
    def pA(self) -> list[np.ndarray]:
        """The current (learned) Dirichlet parameters of the shared likelihood, as numpy arrays."""
        return [np.asarray(p, np.float64) for p in self._pA]

    @property
    def score_counts(self) -> np.ndarray:
        """(n_score_bins, 6) what measured candidates' score readings added (plus `fit`'s counts)."""
        return self._score_counts.copy()

    @property
    def A(self) -> list[np.ndarray]:
        return [np.asarray(a) for a in self._A]

    # ------------------------------------------------------------------ protocol
    def reset_memory(self) -> None:
        """Forget everything learned from episodes (pA, the online score residual, own data); keep `fit`."""
        super().reset_memory()
        self.score.reset_online()
        self.n_observations = 0
        if self._kernels is not None:
            self._restore_prior()

    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        self._ensure_model(self.interventions)
        mask = np.asarray(info["action_mask"], dtype=bool).reshape(-1, self.n_types)
        k = mask.shape[0]
        self._valid = np.asarray(mask.any(axis=1))
        self._valid_idx = np.flatnonzero(self._valid)
        from agents.aif_kernels import bucket

        self._kp = bucket(k)
        self.score.maybe_refit()  # in a stream without tables: refit the score on own measurements
        names = tuple(info["descriptor_names"])
        self.score.begin_episode(np.asarray(obs["candidates"])[self._valid_idx], names)
        self._measured = np.zeros(self._kp, bool)
        self._q_measured = np.full((self._kp, N_IMPORTANCE), 1.0 / N_IMPORTANCE, np.float32)
        self._measured_log = np.full(k, np.nan)
        self._q = None
        self._pred = np.full(k, -np.inf)
        self._score_obs = np.zeros(self._kp, np.int32)
        self.belief_entropy_history = []
        self.efe_history = []
        self._top_history: list[tuple[int, ...]] = []
        self.is_converged = False

    def act(self, obs: dict, info: dict) -> int:
        mask = np.asarray(info["action_mask"], dtype=bool).reshape(-1, self.n_types)
        if not mask.any():
            return 0
        budget_left = float(np.asarray(obs.get("budget", [1.0])).reshape(-1)[0])
        neg_efe, terms, _q, entropy = self._decide(budget_left)
        k = mask.shape[0]
        g = np.where(mask, neg_efe[:k], -np.inf)
        if self.planning == "argmax":
            c, t = self.argmax_choice(mask)
        elif self.gamma is None:
            best = g.max()
            cand, types = np.nonzero(g == best)
            pick = np.lexsort((types, -self._pred[cand]))[0]  # ties: the higher score, then type order
            c, t = int(cand[pick]), int(types[pick])
        else:
            flat = g.ravel()
            p = np.exp(self.gamma * (flat - flat.max()))
            p /= p.sum()
            a = int(self.rng.choice(flat.size, p=p))
            c, t = divmod(a, self.n_types)
        self.last_neg_efe, self.last_terms = neg_efe[:k], terms[:k]  # (K, T) and (K, T, 4), for inspection
        self.efe_history.append(float(-neg_efe[c, t]))
        self.belief_entropy_history.append(float(entropy[self._valid_idx].mean()))
        return c * self.n_types + t

    def argmax_choice(self, mask: np.ndarray) -> tuple[int, int]:
        """(candidate, type) of the planning ablation (`aif-argmax`) under the current beliefs (those of the
        last `act`): the valid candidate with the highest posterior expected importance, ties by the higher
        learned score, then the lower index; with an ablation when the env offers it (else its first valid type)."""
        if self._q is None:
            self._decide(1.0)
        assert self._q is not None
        mask = np.asarray(mask, dtype=bool).reshape(-1, self.n_types)
        k = mask.shape[0]
        idx = np.flatnonzero(mask.any(axis=1))
        if idx.size == 0:
            return 0, 0
        e = self._q[:k] @ np.arange(N_IMPORTANCE)
        c = int(idx[np.lexsort((idx, -self._pred[idx], -e[idx]))[0]])
        a = self.interventions.index("ablation") if "ablation" in self.interventions else -1
        t = a if a >= 0 and mask[c, a] else int(np.flatnonzero(mask[c])[0])
        return c, t

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        if info.get("invalid_action") or "candidate" not in info:
            return
        k = int(info["candidate"])
        t = self.interventions.index(info["intervention"])
        if self._q is None:  # observe without act (e.g. a replayed action): read the current scores first
            self._decide(1.0)
        assert self._q is not None and self.spec is not None  # set by _decide and reset
        levels = np.asarray(obs["outcome"], dtype=np.int64).reshape(-1)
        if levels.size < 3 or levels[0] <= 0:  # no outcome in the observation: discretise the info fields
            levels = np.array([discretise(n, info[n]) for n in ("kl", "downstream", "n_affected")], np.int64)
        meas = np.array([self.spec.kl_index(t, int(levels[0])), int(levels[1]), int(levels[2])], np.int32)
        pA, q, added = self._kernels.run_observe(
            self._A, self._pA, self._D, int(self._score_obs[k]), meas, t, self.learning_rate
        )
        self._learn(pA, added)
        self._measured[k] = True
        self._q_measured[k] = q
        self._q[k] = q
        self.n_observations += 1
        if self.interventions[t] == "ablation":
            self._measured_log[k] = float(log_effect(info["kl"]))
            self.score.update(int(np.searchsorted(self._valid_idx, k)), float(info["kl"]))
        self._update_convergence()

    def fit(self, tables: Any) -> AIFAgent:
        """Warm-start from circuit tables: the score's base predictor, pA (out-of-fold scores) and D."""
        tables = load_tables(tables)
        rows = collect_rows(tables)
        if rows is None:
            raise ACDError(
                "aif.fit() needs tables that measured 'ablation' (the effect it learns to predict)"
            )
        X, y, level, groups, names, per_type = rows
        self.score.fit(X, y, names)
        oof = self.score.cross_fit(X, y, groups)
        counts = np.bincount(level, minlength=N_IMPORTANCE).astype(float)
        self._d = (counts + 1.0) / (counts.sum() + N_IMPORTANCE)
        self._fit_counts = fit_counts(oof, groups, level, per_type, self.n_score_bins)
        if self._kernels is not None:
            self._restore_prior()
        return self

    # ------------------------------------------------------------------ decisions
    def _decide(self, budget_left: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        pred = self.score.predict()
        self._pred = np.full(len(self._valid), -np.inf)
        self._pred[self._valid_idx] = pred
        n = len(pred)
        order = np.argsort(pred, kind="stable")
        ranks = np.empty(n, np.int64)
        ranks[order] = np.arange(n)
        self._score_obs[:] = 0
        self._score_obs[self._valid_idx] = 1 + (ranks * self.n_score_bins) // max(n, 1)
        weights = np.array([self.info_weight, self.novelty_weight * budget_left], np.float32)
        neg_efe, terms, q, entropy = self._kernels.run_decide(
            self._A, self._pA, self._D, self._score_obs, self._q_measured, self._measured, weights
        )
        self._q = np.array(q)
        return neg_efe, terms, q, entropy

    # ------------------------------------------------------------------ outputs
    def expected_importance(self) -> np.ndarray:
        """(K,) posterior expected importance level (0..5) of every candidate; NaN for padding."""
        if self._q is None:
            self._decide(1.0)
        assert self._q is not None  # set by _decide
        k = len(self._valid)
        e = self._q[:k] @ np.arange(N_IMPORTANCE)
        return np.where(self._valid, e, np.nan)

    def importance_ranking(self) -> np.ndarray:
        """Every real candidate of the episode, most important first (posterior expected importance; ties by
        the measured log effect, else the score's prediction)."""
        e = self.expected_importance()
        tie = np.where(np.isnan(self._measured_log), self._pred, self._measured_log)
        idx = self._valid_idx
        order = np.lexsort((idx, -tie[idx], -e[idx]))
        return idx[order]

    def _update_convergence(self) -> None:
        top = tuple(int(i) for i in self.importance_ranking()[: self.converge_top])
        self._top_history.append(top)
        recent = self._top_history[-self.converge_patience :]
        self.is_converged = (
            len(recent) == self.converge_patience
            and all(r == top for r in recent)
            and bool(self._measured[list(top)].all())
        )

    def diagnostics(self) -> dict[str, float]:
        """Latest mean belief entropy and chosen action's EFE (for TensorBoard `aif/*`)."""
        return {
            "aif/belief_entropy": self.belief_entropy_history[-1]
            if self.belief_entropy_history
            else float("nan"),
            "aif/efe": self.efe_history[-1] if self.efe_history else float("nan"),
        }


class AIFArgmaxAgent(AIFAgent):
    """`aif-argmax`: the same model, beliefs, pymdp updates and learning as `aif`; each choice is the plain argmax
    of its own posterior expected importance over valid actions (no EFE): the planning ablation."""

    name = "aif-argmax"
    planning = "argmax"


PLANNING = ("efe", "argmax")


def check_planning(planning: object) -> str:
    """`planning` of an `aif` agent (either track), checked: "efe" or "argmax"."""
    if not isinstance(planning, str) or planning not in PLANNING:
        raise ACDError(
            f"planning must be 'efe' (choices by expected free energy) or 'argmax' (the plain argmax of the "
            f"agent's own posterior expected score, no EFE: `aif-argmax`), got {planning!r}"
        )
    return str(planning)


# ---------------------------------------------------------------------- fitting helpers
def load_tables(tables: Any) -> list[Any]:
    """CircuitTables or .npz paths -> CircuitTables (all with the same descriptor columns)."""
    out = base_load_tables(tables)
    names = [tuple(t.meta["descriptor_names"]) for t in out]
    if len(set(names)) > 1:
        raise ACDError(f"aif.fit() got tables with different descriptor columns: {sorted(set(names))}")
    return out


def collect_rows(tables: list[Any]) -> tuple | None:
    """Valid candidates of every table: static descriptors, log10 ablation KL, its importance level, prompt
    group, and per type the env's (kl, downstream, n_affected) levels."""
    X, y, level, groups, per_type = [], [], [], [], {}
    names = None
    g = 0
    for table in tables:
        meta = table.meta
        kinds = list(meta["interventions"])
        if "ablation" not in kinds:
            continue
        names = tuple(meta["descriptor_names"])
        a = kinds.index("ablation")
        for i, case in enumerate(table.cases):
            n = int(case.n_valid)
            X.append(np.asarray(case.descriptors[:n], np.float64))
            kl = table.measurements["kl"][i, :n, a]
            y.append(log_effect(kl))
            level.append(level_of(kl))
            groups.append(np.full(n, g))
            g += 1
            for t, kind in enumerate(kinds):
                lv = [
                    discretise(m, table.measurements[m][i, :n, t]) for m in ("kl", "downstream", "n_affected")
                ]
                per_type.setdefault(kind, []).append(np.stack(lv, 1))
    if not X:
        return None
    per_type = {kind: np.concatenate(v) for kind, v in per_type.items()}
    cat = np.concatenate
    return cat(X), cat(y), cat(level), cat(groups), names, per_type


def fit_counts(
    oof: np.ndarray, groups: np.ndarray, level: np.ndarray, per_type: dict, n_score_bins: int
) -> dict[str, Any]:
    """Count tables (what a Dirichlet update with the true importance would add) from fitted tables."""
    score = np.zeros((n_score_bins, N_IMPORTANCE))
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        ranks = np.empty(len(rows), np.int64)
        ranks[np.argsort(oof[rows], kind="stable")] = np.arange(len(rows))
        bins = (ranks * n_score_bins) // len(rows)
        np.add.at(score, (bins, level[rows]), 1.0)
    meas = {}
    for kind, lv in per_type.items():
        c = np.zeros((3, N_IMPORTANCE + 1, N_IMPORTANCE))  # (kl | downstream | n_affected, env level 0..6, I)
        for m in range(3):
            np.add.at(c[m], (lv[:, m], level), 1.0)
        meas[kind] = c
    return {"score": score, "meas": meas}


def add_fit_counts(pA: list[np.ndarray], spec: ModelSpec, counts: dict[str, Any], strength: float) -> None:
    """Add the fitted measurement counts to a prior pA in place, at most `strength` counts per likelihood
    column, so that what the agent measures later can still move them (the score counts are handled by
    `AIFAgent._initial_score_counts`, capped per score bin)."""

    def capped(c: np.ndarray) -> np.ndarray:
        return c * np.minimum(1.0, strength / np.maximum(c.sum(0, keepdims=True), 1e-9))

    for t, kind in enumerate(spec.interventions):
        if kind not in counts["meas"]:
            continue
        c = counts["meas"][kind]  # (kl | downstream | n_affected, env level 0..6, importance)
        pA[1][1 + t * N_LEVELS : 1 + (t + 1) * N_LEVELS, :, 1 + t] += capped(c[0, 1:])
        pA[2][1:, :, 1 + t] += capped(c[1, 1:])
        pA[3][1:, :, 1 + t] += capped(c[2, 1:])


def decision_benchmark(k: int, *, n_types: int = 3, reps: int = 200, seed: int = 0) -> tuple[float, float]:
    """(compile seconds, median decision seconds) of `act` for k candidates x n_types types, after JIT.

    Used by `acd perf`. Synthetic descriptors; the first `act` of a fresh shape compiles the EFE kernel (kernels
    are shared per process, so a bucket compiled before reports ~0)."""
    import time

    from acd_env.attribution.descriptors import GRAPH_DESCRIPTORS
    from acd_env.observation import FEATURE_DYNAMIC_COLUMNS

    types = ("ablation", "patching", "steering")[:n_types]
    rng = np.random.default_rng(seed)
    names = (*GRAPH_DESCRIPTORS, *FEATURE_DYNAMIC_COLUMNS)
    candidates = np.zeros((k, len(names)), np.float32)
    candidates[:, : len(GRAPH_DESCRIPTORS)] = rng.normal(size=(k, len(GRAPH_DESCRIPTORS)))
    candidates[:, names.index("layer_frac")] = rng.integers(0, 4, k) / 3
    obs = {"outcome": np.zeros(3, np.int64), "candidates": candidates, "budget": np.ones(1, np.float32)}
    info = {"prompt_id": "benchmark", "action_mask": np.ones(k * n_types, np.int8), "descriptor_names": names,
            "interventions": types, "n_candidates": k}  # fmt: skip
    agent = AIFAgent(seed=seed)
    agent.reset(obs, info)
    start = time.perf_counter()
    agent.act(obs, info)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(max(int(reps), 1)):
        start = time.perf_counter()
        agent.act(obs, info)
        times.append(time.perf_counter() - start)
    return compile_s, float(np.median(times))
