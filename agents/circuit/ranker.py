"""`ranker` on the circuit track: a learned zero-query ranking, fitted on the train tables' reference circuits.

`fit(tables)` trains a scikit-learn `HistGradientBoostingRegressor` on every valid candidate of every prompt of
the given circuit tables (train split, with circuit data). Inputs (`circuit_features`): every static descriptor
column the env shows, the zero-query circuit scores `ig` and `atp_joint_rank` (as the env computes them from
the table), IG's share of the prompt's behaviour `ig / KL(clean ‖ keep ∅)`, and per-prompt rank scores
(1 − position / n, descending) of the strongest single scores (`RANK_COLUMNS`): trees split on a global
threshold, and a per-prompt rank puts prompts of different scale on one axis. The target is derived from the
stored beam-search reference (`ref_order`): by default `1 / (1 + r)` with r the candidate's position in the
reference (`TARGETS` lists the others). In an episode it predicts every candidate once at reset and declares
them best first; it never queries (`uses_queries = False`).

Hyper-parameters (target and tree settings) were chosen by 5-fold cross-validation over the train prompts of
toy-4l (folds by prompt, scored by the held-out prompts' circuit efficiency): `scripts/tune_circuit_agents.py`
prints the table and the choice. On 120 ioi + induction train prompts: targets inv_rank / exp5 / top5 / gain →
0.904 / 0.898 / 0.871 / 0.883 (trees 200 × 0.05, 15 leaves, min 20); trees at inv_rank: (200, 0.05, 15, 20)
0.904, (100, 0.1, 7, 50) 0.896, (200, 0.1, 31, 20) 0.901, (400, 0.03, 15, 40) 0.907 → the default (beside the
same folds' atp 0.707 and ig 0.817). `reset_memory()` keeps the fit; `fit` again to replace it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from acd_env.errors import ACDError
from acd_env.observation import CIRCUIT_DESCRIPTORS, CIRCUIT_DYNAMIC_COLUMNS, OBS_BOUND
from agents.base import load_tables
from agents.circuit.base import CircuitAgent
from agents.ranker import openmp_threads

CIRCUIT_COLUMNS = CIRCUIT_DESCRIPTORS
DYNAMIC = CIRCUIT_DYNAMIC_COLUMNS
RANK_COLUMNS = ("ig", "atp_kl_ablation", "atp_kl_patching", "lin_kl_ablation", "direct_logit")
TARGETS = ("inv_rank", "exp5", "top5", "gain")
DEFAULTS: dict[str, Any] = dict(  # 5-fold CV on toy-4l ioi+induction train (scripts/tune_circuit_agents.py)
    target="inv_rank", max_iter=400, learning_rate=0.03, max_leaf_nodes=15, min_samples_leaf=40
)


def rank_score(values: np.ndarray) -> np.ndarray:
    """1 − position / n of each entry in descending order (ties: lower index first); the top entry gets 1."""
    n = len(values)
    out = np.zeros(n)
    out[np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")] = 1.0 - np.arange(n) / max(n, 1)
    return out


def joint_rank_score(atp_joint: np.ndarray, n: int, k: int) -> np.ndarray:
    """The env's `atp_joint_rank` column from a table's stored atp-joint order (1 − position / n)."""
    rank = np.zeros(k)
    rank[np.asarray(atp_joint[:n], dtype=np.int64)] = 1.0 - np.arange(n) / max(n, 1)
    return rank


def circuit_features(
    static: np.ndarray, names: Sequence[str], ig: np.ndarray, joint_rank: np.ndarray, kl_empty: float
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(n, F) features of one prompt's n valid candidates and their names.

    `static` (n, len(names)) are the static descriptor columns, `ig` and `joint_rank` the env's circuit columns.
    """
    static = np.asarray(static, dtype=np.float64)
    ig = np.clip(np.asarray(ig, dtype=np.float64), -OBS_BOUND, OBS_BOUND)
    cols = [static, ig[:, None], np.asarray(joint_rank, dtype=np.float64)[:, None]]
    out_names = [*names, *CIRCUIT_COLUMNS, "ig_share"]
    cols.append((ig / max(float(kl_empty), 1e-9))[:, None])
    for c in RANK_COLUMNS:
        if c == "ig":
            cols.append(rank_score(ig)[:, None])
        elif c in names:
            cols.append(rank_score(static[:, list(names).index(c)])[:, None])
        else:
            continue
        out_names.append(f"rank_{c}")
    return np.concatenate(cols, axis=1), tuple(out_names)


def reference_target(ref_order: np.ndarray, ref_curve: np.ndarray, n: int, target: str) -> np.ndarray:
    """(n,) regression target of one prompt's candidates from its stored reference ranking and curve."""
    if target not in TARGETS:
        raise ACDError(f"unknown ranker target {target!r}; choose one of {list(TARGETS)}")
    position = np.empty(n, dtype=np.int64)
    position[np.asarray(ref_order[:n], dtype=np.int64)] = np.arange(n)
    if target == "inv_rank":
        return 1.0 / (1.0 + position)
    if target == "exp5":
        return np.exp(-position / 5.0)
    if target == "top5":
        return (position < 5).astype(np.float64)
    # "gain": the reference's marginal faithfulness gain when the candidate entered (0 beyond its curve)
    curve = np.asarray(ref_curve, dtype=np.float64)
    gains = np.diff(np.concatenate([[0.0], curve]))
    return np.where(position < len(curve), gains[np.minimum(position, len(curve) - 1)], 0.0)


def table_training_data(
    tables: Any, target: str
) -> tuple[list[np.ndarray], list[np.ndarray], tuple[str, ...], tuple[str, ...]]:
    """Per prompt (X, y) of circuit tables, the feature names and the static column names. ACDError when a
    table has no circuit data or the tables' columns differ."""
    loaded = load_tables(tables)
    names = tuple(n for n in loaded[0].meta["descriptor_names"] if n not in DYNAMIC)
    xs, ys = [], []
    features: tuple[str, ...] = ()
    for t in loaded:
        label = f"{t.meta.get('model')!r} {t.meta.get('task')!r} {t.meta.get('split')!r}"
        if not t.has_circuit:
            raise ACDError(
                f"circuit ranker: table {label} has no circuit data (reference rankings); rebuild it with "
                "circuit data (acd_env.tables add_circuit_data / `acd tables build`) or fit on other tables"
            )
        if tuple(n for n in t.meta["descriptor_names"] if n not in DYNAMIC) != names:
            raise ACDError(
                f"circuit ranker: table {label} has descriptor columns {list(t.meta['descriptor_names'])}, "
                f"the first table {list(names)}; build them with the same descriptors"
            )
        c = t.circuit
        assert c is not None
        k = int(t.meta["n_candidates"])
        for p, case in enumerate(t.cases):
            n = int(case.n_valid)
            if n == 0:
                continue
            x, features = circuit_features(
                np.asarray(case.descriptors)[:n],
                names,
                np.asarray(c["ig"][p, :n]),
                joint_rank_score(c["atp_joint"][p], n, k)[:n],
                float(c["kl_empty"][p]),
            )
            xs.append(x)
            ys.append(reference_target(c["ref_order"][p], c["ref_curve"][p], n, target))
    if not xs:
        raise ACDError("circuit ranker: fit() found no valid candidates in the tables")
    return xs, ys, features, names


class CircuitRankerAgent(CircuitAgent):
    """Gradient-boosted trees from descriptors to a reference-derived target; ranks by prediction, zero queries.

    Args:
        seed: the trees' `random_state` (and the agent's seed).
        target: what it learns (`TARGETS`): `inv_rank` 1 / (1 + reference position), `exp5` exp(−position/5),
            `top5` in the reference's first 5, `gain` the reference's marginal f gain at that position.
        max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization: passed to
            `HistGradientBoostingRegressor` (no early stopping: deterministic for a seed).
        n_threads: OpenMP threads for fitting and predicting (default 1; None: scikit-learn's default).
    """

    name = "ranker"
    uses_queries = False
    needs_atp = True
    learns_offline = True

    def __init__(
        self,
        *,
        seed: int = 0,
        target: str = DEFAULTS["target"],
        max_iter: int = DEFAULTS["max_iter"],
        learning_rate: float = DEFAULTS["learning_rate"],
        max_leaf_nodes: int = DEFAULTS["max_leaf_nodes"],
        min_samples_leaf: int = DEFAULTS["min_samples_leaf"],
        l2_regularization: float = 0.0,
        n_threads: int | None = 1,
    ) -> None:
        super().__init__(seed=seed)
        if target not in TARGETS:
            raise ACDError(f"unknown ranker target {target!r}; choose one of {list(TARGETS)}")
        self.target = target
        self.params: dict[str, Any] = dict(
            max_iter=int(max_iter),
            learning_rate=float(learning_rate),
            max_leaf_nodes=int(max_leaf_nodes),
            min_samples_leaf=int(min_samples_leaf),
            l2_regularization=float(l2_regularization),
        )
        self.n_threads = n_threads
        self.model: Any = None
        self.feature_names: tuple[str, ...] = ()
        self.static_names: tuple[str, ...] = ()
        self.n_train = 0
        self._ranking: list[int] = []

    # -- offline learning -----------------------------------------------------------------------
    def fit(self, tables: Any) -> CircuitRankerAgent:
        """Fit on every valid candidate of every prompt of `tables` (CircuitTables or .npz paths with circuit data)."""
        xs, ys, features, names = table_training_data(tables, self.target)
        return self.fit_arrays(np.concatenate(xs), np.concatenate(ys), features, names)

    def fit_arrays(
        self, x: np.ndarray, y: np.ndarray, features: tuple[str, ...], static: tuple[str, ...]
    ) -> CircuitRankerAgent:
        """Fit on prepared (X, y) (`table_training_data`; the tuning script's folds use this)."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        # sklearn's stubs type early_stopping as str ("auto"); it takes a bool as documented
        model = HistGradientBoostingRegressor(**self.params, early_stopping=False, random_state=self.seed)  # pyright: ignore[reportArgumentType]
        with openmp_threads(self.n_threads):
            model.fit(x, y)
        self.model, self.feature_names, self.static_names, self.n_train = model, features, static, len(y)
        return self

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        if not self.is_fitted:
            raise ACDError(
                "the circuit ranker is not fitted: call agent.fit(tables) (train-split circuit tables with "
                "circuit data) first; it has nothing to rank by in zero-shot"
            )
        with openmp_threads(self.n_threads):
            return np.asarray(self.model.predict(x), dtype=np.float64)

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        if not self.is_fitted:
            self.predict_features(np.zeros((0, 0)))  # raises the "not fitted" error
        needed = [*self.static_names, *CIRCUIT_COLUMNS]
        missing = [c for c in needed if c not in self.columns]
        if missing:
            raise ACDError(
                f"the circuit ranker was fitted on columns {needed}, this env lacks {missing}; run it with "
                "descriptors=('graph', 'atp') and the columns of the tables it was fitted on"
            )
        n = self.n_valid
        static = np.stack([self.column(obs, c) for c in self.static_names], axis=1)
        x, _ = circuit_features(
            static,
            self.static_names,
            self.column(obs, "ig"),
            self.column(obs, "atp_joint_rank"),
            float(info["kl_empty"]),
        )
        self._ranking = self.order_by(self.predict_features(x)) if n else []

    def circuit_ranking(self) -> list[int]:
        return list(self._ranking)
