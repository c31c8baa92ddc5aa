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
- ``score`` (descriptor modality): the rank bin (1..16 within the prompt) of a *learned score*, a prediction
  of log10 ablation KL from the candidate's descriptors (`agents/aif_score.py`). It is read while nothing
  is in force (at the start of the episode); under any intervention it reads "n/a", so descriptors never
  mix with measurements. Its likelihood P(score bin | importance) is a Dirichlet the agent learns: this is
  where it learns how far attribution-derived signals can be trusted on the model at hand.
- ``kl``: the measured KL of the intervention, discretised with `acd_env.discretise` bins and labelled with
  the type that produced it (0 = none yet, 6 levels per type).
- ``downstream`` and ``n_affected``: the env's other outcome levels (0 = none yet, 1..6).
A prior (`build_pA`): the score is moderately informative (Gaussian copula, rho 0.6, 16 pseudo-counts per
importance level); an ablation reading is the importance level itself (near identity; it defines it);
patching reads about half a decade lower and steering half a decade higher, both broad and weakly held;
downstream and affected counts grow with importance, broad and weak. Structural entries are exact.
C (preferences): ``pref`` nats per decade of *ablation* KL reading (discovery is scored by the ablation
effect of the chosen features); patching and steering readings are neutral, so they are worth only what they
teach. D: a broad prior over importance decades (`fit` sets it to the train tables' frequencies) and "none".

Inference, planning and learning (`agents/aif_kernels.py`, all with pymdp's functions, jitted)
------------------------------------------------------------------------------------------------
- Beliefs: `pymdp.inference.update_posterior_states` from D on the score reading; a measured candidate's
  posterior adds its readings under the intervention in force.
- EFE for every (candidate, type): `pymdp.control` building blocks, `jax.vmap` over candidate beliefs,
  candidates padded to 64/256/512 (no recompiles within a bucket). neg-EFE = utility + ``info_weight`` ×
  state info gain + ``novelty_weight`` × budget left × (pA info gain of the measurement readings + pA info
  gain of the candidate's score reading). The last term is the value of learning how far that score bin can
  be trusted; it is scaled by the budget fraction left because what is learned early is used for longer.
- Choice: argmax neg-EFE (= argmin EFE) over valid actions, ties broken by the higher score; with
  ``gamma`` set, a seeded draw from softmax(gamma × neg-EFE) instead.
- Learning: after each measurement, `pymdp.learning.update_obs_likelihood_dirichlet` adds the candidate's two
  readings (score bin with nothing in force, measurement with its type in force), weighted by its posterior,
  to the one shared pA. Only measured candidates teach the score likelihood: an unmeasured one would only
  teach the model its own prior. The score predictor's residual regression is updated from every ablation
  measurement. Both persist across episodes until `reset_memory()`.
- `fit(tables)`: fits the score's base predictor (boosted trees, descriptors → log10 ablation KL), and
  warm-starts pA from the tables' measurements with *out-of-fold* scores (3 folds by prompt, so the
  likelihood is not over-confident), at most ``fit_strength`` counts per likelihood column, and D.
  Without tables the score starts as log10(activation × decoder norm) and, in a stream, is refitted on the
  agent's own ablation measurements once it has 200 of them.

What it does in practice: it ablates (ablation is the only type whose reading is preferred, and the most
informative about ablation importance); which candidate is chosen is driven by the expected ablation effect
under the learned score likelihood, with early exploration of rarely-measured score bins.

Outputs: `belief_entropy_history` (per decision of the current episode: mean entropy of the candidates'
importance beliefs), `efe_history` (the chosen action's EFE), `importance_ranking()` (all real candidates by
posterior expected importance, ties by measured or predicted log effect), `is_converged` (the top
``converge_top`` of that ranking are all measured and unchanged over the last ``converge_patience``
observations), and `diagnostics()` for the harness's TensorBoard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from acd_env.discretise import discretise
from acd_env.errors import ACDError
from agents.aif_model import (
    DEFAULT_D,
    N_IMPORTANCE,
    ModelSpec,
    build_D,
    build_pA,
    expected_A,
    level_of,
)
from agents.aif_score import ScoreModel, log_effect
from agents.base import BaseAgent, as_sequence


class AIFAgent(BaseAgent):
    """Active inference over per-candidate importance beliefs with a learned, shared likelihood."""

    name = "aif"

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
        intervention: str = "ablation",
    ) -> None:
        super().__init__(seed=seed, intervention=intervention)
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

        if self.compile_cache:
            enable_compile_cache(self.compile_cache)
        self.spec = spec
        self._kernels = get_kernels(spec, self.pref)
        self._restore_prior()

    def prior_pA(self) -> list[np.ndarray]:
        """The Dirichlet parameters `reset_memory()` returns to: the built-in prior plus what `fit` added."""
        assert self.spec is not None
        pA = build_pA(
            self.spec, self._d, score_rho=self.score_rho, score_concentration=self.score_concentration
        )
        if self._fit_counts is not None:
            add_fit_counts(pA, self.spec, self._fit_counts, self.fit_strength)
        return pA

    def _restore_prior(self) -> None:
        k = self._kernels
        pA = self.prior_pA()
        self._pA = k.to_device(pA)
        self._A = k.to_device(expected_A(pA))
        self._D = k.to_device([build_D(self._d, self.spec)[0]])[0]

    @property
    def pA(self) -> list[np.ndarray]:
        """The current (learned) Dirichlet parameters of the shared likelihood, as numpy arrays."""
        return [np.asarray(p) for p in self._pA]

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
        self._valid = mask.any(1)
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
        if self.gamma is None:
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

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        if info.get("invalid_action") or "candidate" not in info:
            return
        k = int(info["candidate"])
        t = self.interventions.index(info["intervention"])
        if self._q is None:  # observe without act (e.g. a replayed action): read the current scores first
            self._decide(1.0)
        levels = np.asarray(obs["outcome"], dtype=np.int64).reshape(-1)
        if levels.size < 3 or levels[0] <= 0:  # no outcome in the observation: discretise the info fields
            levels = np.array([discretise(n, info[n]) for n in ("kl", "downstream", "n_affected")], np.int64)
        meas = np.array([self.spec.kl_index(t, int(levels[0])), int(levels[1]), int(levels[2])], np.int32)
        pA, A, q = self._kernels.run_observe(
            self._A, self._pA, self._D, int(self._score_obs[k]), meas, t, self.learning_rate
        )
        self._pA, self._A = pA, A
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


# ---------------------------------------------------------------------- fitting helpers
def load_tables(tables: Any) -> list[Any]:
    """CircuitTables or .npz paths -> CircuitTables (all with the same descriptor columns)."""
    from acd_env.tables import CircuitTable, load_table

    out = [load_table(t) if isinstance(t, str | Path) else t for t in as_sequence(tables)]
    if not out or not all(isinstance(t, CircuitTable) for t in out):
        raise ACDError("aif.fit() needs circuit tables (CircuitTable objects or .npz paths)")
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
    """Add fitted counts to a prior pA in place, each likelihood column capped at `strength` added counts."""

    def capped(c: np.ndarray) -> np.ndarray:
        total = c.sum(0, keepdims=True)
        return c * np.minimum(1.0, strength / np.maximum(total, 1e-9))

    score = counts["score"]
    if score.shape[0] == spec.n_score_bins:
        pA[0][1:, :, 0] += capped(score)
    for t, kind in enumerate(spec.interventions):
        if kind not in counts["meas"]:
            continue
        c = counts["meas"][kind]
        kl = capped(c[0, 1:])  # env levels 1..6
        pA[1][1 + t * 6 : 1 + (t + 1) * 6, :, 1 + t] += kl
        pA[2][1:, :, 1 + t] += capped(c[1, 1:])
        pA[3][1:, :, 1 + t] += capped(c[2, 1:])
