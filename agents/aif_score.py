"""The `aif` agent's learned score: a running prediction of each candidate's log10 ablation KL from its descriptors.

score(x) = base(x) + b_episode + phi(x) · w

- ``base``, with `fit(tables)` (train-test, held-out protocols): a `HistGradientBoostingRegressor` from the
  static descriptors to log10(ablation KL + 1e-6), fitted on every candidate of the tables.
  Without tables: the *prior score*, the mean within-prompt z-score of the env's a-priori effect estimates
  (influence, log10 activation × decoder norm, the graph's linearised ablation KL, and the AtP ablation
  estimate when the env shows it), plus, once the agent has made ``refit_min`` ablation measurements of its
  own (a stream), a boosted-tree *correction* fitted on them (target: measured minus prior score), refitted
  whenever they have grown by a quarter (the trees' target is the prior's error, so the prior still carries
  what the agent's own, score-selected measurements cannot teach).
- ``w``: Bayesian linear regression (Gaussian prior of sd ``prior_sd``, noise ``noise_sd``) of what ``base``
  gets wrong, on ``phi`` = the candidate's descriptors z-scored within its prompt plus layer-quarter
  indicators, updated after every ablation measurement and kept across episodes; ``b_episode`` is a
  per-prompt offset, re-drawn from its prior every episode.

The agent uses only the score's *rank within the prompt* (binned), so offsets and scale do not matter; how
far the bins can be trusted is learned by the generative model's Dirichlet likelihood, not here.
Boosted trees run on one OpenMP thread: on a busy 2-core machine that is much faster and it is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acd_env.observation import FEATURE_DYNAMIC_COLUMNS, LOG_KL_FLOOR

LOG_FLOOR = LOG_KL_FLOOR  # log10(KL + 1e-6), as the env's measured_log_kl column
PRIOR_COLUMNS = ("influence", "log10_magnitude", "lin_kl_ablation", "atp_kl_ablation")
EXCLUDED = FEATURE_DYNAMIC_COLUMNS  # the env's dynamic columns


def log_effect(kl: np.ndarray | float) -> np.ndarray:
    return np.log10(np.asarray(kl, dtype=np.float64) + LOG_FLOOR)


def zscore(X: np.ndarray) -> np.ndarray:
    """Column z-scores within one prompt (constant columns give 0)."""
    sd = X.std(0)
    return np.where(sd > 1e-9, (X - X.mean(0)) / np.where(sd > 1e-9, sd, 1.0), 0.0)


def one_thread() -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")


def regressor(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        max_iter=200,
        learning_rate=0.1,
        max_leaf_nodes=31,
        # sklearn's stubs type early_stopping as str ("auto"); it takes a bool as documented
        early_stopping=False,  # pyright: ignore[reportArgumentType]
        random_state=seed,
    )


@dataclass
class ScoreModel:
    """Base predictor + online Bayesian linear residual; see the module docstring."""

    prior_sd: float = 0.1
    noise_sd: float = 0.8
    offset_sd: float = 1.0
    refit_min: int = 100
    refit_growth: float = 1.25
    seed: int = 0
    table_model: Any = None  # fitted on tables
    table_names: tuple[str, ...] = ()
    own_model: Any = None  # correction fitted on the agent's own measurements (no tables)
    own_names: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    _prec: np.ndarray | None = field(default=None, repr=False)
    _lin: np.ndarray | None = field(default=None, repr=False)
    _data: list = field(default_factory=list, repr=False)  # (descriptors, prior score, measured log10 KL)
    _n_refit: int = 0

    # ------------------------------------------------------------------ offline fit
    def fit(self, X: np.ndarray, y: np.ndarray, names: tuple[str, ...]) -> None:
        """Fit the base predictor on table rows (static descriptors -> log10 ablation KL)."""
        with one_thread():
            self.table_model = regressor(self.seed).fit(X, y)
        self.table_names = tuple(names)
        self._table_data = (X, y)
        self.reset_online()

    def _refit_on(self, names: tuple[str, ...]) -> None:
        """The env shows fewer columns than the tables had (e.g. tables with AtP columns, env without):
        refit the table predictor on the columns both have."""
        keep = [n for n in self.table_names if n in names]
        if not keep:
            from acd_env.errors import ACDError

            raise ACDError(f"aif was fitted on columns {self.table_names}, none of which this env shows")
        X, y = self._table_data
        cols = [self.table_names.index(n) for n in keep]
        with one_thread():
            self.table_model = regressor(self.seed).fit(X[:, cols], y)
        self.table_names = tuple(keep)
        self._table_data = (X[:, cols], y)

    def cross_fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int = 3) -> np.ndarray:
        """Out-of-fold predictions (folds by prompt), to warm-start the score likelihood without optimism."""
        out = np.zeros(len(y))
        fold = np.unique(groups, return_inverse=True)[1] % n_folds
        for f in range(n_folds):
            test = fold == f
            if test.all() or not test.any():
                continue
            with one_thread():
                out[test] = regressor(self.seed).fit(X[~test], y[~test]).predict(X[test])
        return out

    # ------------------------------------------------------------------ memory
    def reset_online(self) -> None:
        """Forget what episodes taught (residual, own data, own correction); a table fit stays."""
        self._prec = self._lin = None
        self._data = []
        self._n_refit = 0
        self.own_model, self.own_names = None, ()

    # ------------------------------------------------------------------ an episode
    def begin_episode(self, descriptors: np.ndarray, names: tuple[str, ...]) -> None:
        """descriptors: (n_valid, F) env columns of the prompt's real candidates."""
        static = [i for i, n in enumerate(names) if n not in EXCLUDED]
        self.names = tuple(names[i] for i in static)
        X = np.asarray(descriptors, np.float64)[:, static]
        self._x = X
        self._prior = self._prior_score(X)
        self._base = self._base_prediction(X)
        self._phi = self._features(X)
        d = self._phi.shape[1] + 1
        if self._prec is None or self._prec.shape[0] != d:
            self._prec = np.diag(1 / np.r_[self.offset_sd, np.full(d - 1, self.prior_sd)] ** 2)
            self._lin = np.zeros(d)
        else:
            self._new_offset()

    def _columns(self, fitted: tuple[str, ...]) -> list[int]:
        missing = [n for n in fitted if n not in self.names]
        if missing:
            from acd_env.errors import ACDError

            raise ACDError(
                f"aif's score was fitted with descriptor columns {missing} that this environment does not show; "
                "fit it on tables built with the env's descriptors"
            )
        return [self.names.index(n) for n in fitted]

    def _prior_score(self, X: np.ndarray) -> np.ndarray:
        cols = [self.names.index(n) for n in PRIOR_COLUMNS if n in self.names]
        return zscore(X[:, cols]).mean(1) if cols else np.zeros(len(X))

    def _base_prediction(self, X: np.ndarray) -> np.ndarray:
        if self.table_model is not None:
            if any(n not in self.names for n in self.table_names):
                self._refit_on(self.names)
            with one_thread():
                return np.asarray(self.table_model.predict(X[:, self._columns(self.table_names)]), np.float64)
        base = self._prior.copy()
        if self.own_model is not None:
            with one_thread():
                base += self.own_model.predict(X[:, self._columns(self.own_names)])
        return base

    def _features(self, X: np.ndarray) -> np.ndarray:
        z = zscore(X)
        if "layer_frac" in self.names:
            quarter = np.minimum((X[:, self.names.index("layer_frac")] * 4).astype(int), 3)
            z = np.concatenate([z, np.eye(4)[quarter]], axis=1)
        return z

    def _new_offset(self) -> None:
        """Marginalise the last prompt's offset out of the posterior and give the new prompt a fresh one."""
        assert self._prec is not None and self._lin is not None, "begin_episode() first"
        cov = np.linalg.inv(self._prec)
        mean = cov @ self._lin
        prec = np.zeros_like(self._prec)
        prec[0, 0] = 1 / self.offset_sd**2
        prec[1:, 1:] = np.linalg.inv(cov[1:, 1:])
        self._prec = prec
        self._lin = prec @ np.r_[0.0, mean[1:]]

    # ------------------------------------------------------------------ predict and learn
    def predict(self) -> np.ndarray:
        """Current score of every real candidate of the episode (log10 ablation KL units up to an offset)."""
        assert self._prec is not None and self._lin is not None, "begin_episode() first"
        w = np.linalg.solve(self._prec, self._lin)
        return self._base + w[0] + self._phi @ w[1:]

    def update(self, k: int, kl: float) -> None:
        """A measured ablation KL of the episode's k-th real candidate: rank-one update of the residual."""
        y = float(log_effect(kl))
        phi = np.r_[1.0, self._phi[k]]
        assert self._prec is not None and self._lin is not None, "begin_episode() first"
        self._prec = self._prec + np.outer(phi, phi) / self.noise_sd**2
        self._lin = self._lin + phi * (y - self._base[k]) / self.noise_sd**2
        self._data.append((self._x[k], self._prior[k], y))

    @property
    def n_data(self) -> int:
        return len(self._data)

    def maybe_refit(self) -> bool:
        """Without tables: once there are ``refit_min`` own ablation measurements, and again whenever they
        have grown by ``refit_growth``, refit the prior's correction and restart the residual."""
        n = len(self._data)
        if self.table_model is not None or n < self.refit_min or n < self.refit_growth * self._n_refit:
            return False
        X = np.stack([d[0] for d in self._data])
        target = np.array([d[2] - d[1] for d in self._data])
        with one_thread():
            self.own_model = regressor(self.seed).fit(X, target)
        self.own_names = self.names
        self._n_refit = n
        self._prec = None
        return True
