"""`ranker`: the supervised learning baseline. Gradient-boosted trees from static descriptors to log KL.

`fit(tables)` trains a scikit-learn `HistGradientBoostingRegressor` on every valid candidate of every prompt of
the given circuit tables: inputs are all static descriptor columns of the tables (the columns the env shows
before any intervention; never the dynamic `visited` / `measured_*` columns), the target is
log10(KL + 1e-6) of the agent's intervention type (ablation by default, the quantity discovery efficiency
scores). In an episode it predicts every candidate once and takes them best first.

Its leaderboard figures, and how its default tree settings were chosen, are in BENCHMARKS.md (Agents; Agent
defaults).

It remembers the descriptor columns it was fitted with and refuses an env that shows another set (e.g. fitted
with the `atp` columns, run without them), since trees fitted on one column layout silently mis-predict on
another. `columns=[...]` fits on a chosen subset instead; the env must then provide those columns.
`reset_memory()` keeps the fit (it is learned offline, not from episodes); `fit` again to replace it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from acd_env.errors import ACDError
from agents.base import BaseAgent, load_tables

EPS = 1e-6


def static_names(descriptor_names: Sequence[str]) -> tuple[str, ...]:
    """The columns an agent may know before intervening (everything but the env's dynamic columns)."""
    from acd_env.observation import static_columns

    return static_columns(descriptor_names)


def openmp_threads(n_threads: int | None) -> Any:
    """A context that limits OpenMP (scikit-learn's trees) to `n_threads`; None leaves the library default."""
    from contextlib import nullcontext

    if n_threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n_threads, user_api="openmp")


class RankerAgent(BaseAgent):
    """Greedy on a boosted-tree prediction of log10(KL + 1e-6), fitted offline by `fit(tables)`.

    Args:
        seed: the trees' `random_state` (and the agent's seed).
        intervention: the type it acts with and whose KL it learns (default `"ablation"`).
        columns: descriptor columns to learn from (default: every static column of the tables).
        max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization: passed to
            `HistGradientBoostingRegressor` (defaults measured on the toy zoo; no early stopping, so the fit is
            deterministic for a seed).
        n_threads: OpenMP threads for fitting and predicting (default 1: on a busy 2-core machine OpenMP's
            spinning threads made a fit ~13x slower than one thread; `None` leaves scikit-learn's default).
    """

    name = "ranker"
    learns_offline = True

    def __init__(
        self,
        *,
        seed: int = 0,
        intervention: str = "ablation",
        columns: Sequence[str] | None = None,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        n_threads: int | None = 1,
    ) -> None:
        super().__init__(seed=seed, intervention=intervention)
        self.requested_columns = tuple(columns) if columns is not None else None
        self.params: dict[str, Any] = dict(
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            l2_regularization=l2_regularization,
        )
        self.n_threads = n_threads
        self.model: Any = None
        self.feature_names: tuple[str, ...] = ()
        self.n_train = 0
        self._scores: np.ndarray | None = None

    # -- offline learning -----------------------------------------------------------------------
    def training_data(self, tables: Any) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """(X, y, column names) over every valid candidate of every prompt of the tables."""
        loaded = load_tables(tables)
        names = list(loaded[0].meta["descriptor_names"])
        for t in loaded[1:]:
            if list(t.meta["descriptor_names"]) != names:
                raise ACDError(
                    "fit() got tables with different descriptor columns: "
                    f"{names} vs {list(t.meta['descriptor_names'])}; build them with the same descriptors"
                )
        use = self.requested_columns or static_names(names)
        missing = [c for c in use if c not in names]
        if missing:
            raise ACDError(f"ranker columns {missing} are not in the tables' descriptor columns {names}")
        cols = [names.index(c) for c in use]
        xs, ys = [], []
        for t in loaded:
            types = list(t.meta["interventions"])
            if self.intervention not in types:
                raise ACDError(
                    f"ranker learns the KL of {self.intervention!r}, but table {t.meta.get('task')!r} only measured {types}"
                )
            ti = types.index(self.intervention)
            kl = t.measurements["kl"]
            for p, case in enumerate(t.cases):
                n = int(case.n_valid)
                xs.append(np.asarray(case.descriptors[:n][:, cols], dtype=np.float64))
                ys.append(np.log10(np.asarray(kl[p, :n, ti], dtype=np.float64) + EPS))
        x, y = np.concatenate(xs), np.concatenate(ys)
        if len(y) == 0:
            raise ACDError("fit() found no valid candidates in the tables")
        return x, y, tuple(use)

    def fit(self, tables: Any) -> RankerAgent:
        """Fit on every valid candidate of every prompt of `tables` (CircuitTables or .npz paths)."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        x, y, names = self.training_data(tables)
        # sklearn's stubs type early_stopping as str ("auto"); it takes a bool as documented
        model = HistGradientBoostingRegressor(**self.params, early_stopping=False, random_state=self.seed)  # pyright: ignore[reportArgumentType]
        with openmp_threads(self.n_threads):
            model.fit(x, y)
        self.model, self.feature_names, self.n_train = model, names, len(y)
        return self

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def predict(self, descriptors: np.ndarray) -> np.ndarray:
        """Predicted log10(KL + 1e-6) for rows of the env's candidate matrix (columns as in the env)."""
        if not self.is_fitted:
            raise ACDError(
                "the ranker is not fitted: call agent.fit(tables) (train-split circuit tables) first"
            )
        idx = [self.columns[c] for c in self.feature_names]
        with openmp_threads(self.n_threads):
            return self.model.predict(np.asarray(descriptors, dtype=np.float64)[:, idx])

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        if not self.is_fitted:
            raise ACDError(
                "the ranker is not fitted: call agent.fit(tables) (train-split circuit tables) first"
            )
        env_static = static_names(info["descriptor_names"])
        if self.requested_columns is None:
            ok = env_static == self.feature_names
        else:
            ok = all(c in self.columns for c in self.feature_names)
        if not ok:
            extra = [c for c in self.feature_names if c not in env_static]
            lacking = [c for c in env_static if c not in self.feature_names]
            raise ACDError(
                "the ranker was fitted with other descriptor columns than this environment shows "
                f"(fitted with but absent here: {extra}; here but not fitted with: {lacking}). Fit it on tables built "
                "with the env's descriptors, build the env with the descriptors it was fitted with, or pass "
                "columns=[...] to fit on a subset the env provides"
            )
        self._scores = self.predict(obs["candidates"])

    def act(self, obs: dict, info: dict) -> int:
        if not self.is_fitted:
            raise ACDError(
                "the ranker is not fitted: call agent.fit(tables) (train-split circuit tables) first"
            )
        if self._scores is None:
            raise ACDError("call agent.reset(obs, info) at the start of each episode before act()")
        return self.pick(self._scores, info)
