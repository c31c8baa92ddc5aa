"""The `aif` agent's learned score: a predictor of a candidate's log10 ablation KL from its static descriptors.

score(x) = base(x) + b_episode + phi(x) · w

- ``base``: a `HistGradientBoostingRegressor` fitted by `fit` on circuit tables (train-test and held-out
  protocols), or, with nothing fitted, a physical prior: log10 of activation × decoder norm (the size of
  what an ablation removes). In a stream without tables, `refit` replaces the prior by a boosted-tree fit
  on the agent's own ablation measurements once it has enough of them.
- ``w``: Bayesian linear regression (Gaussian prior, known noise) of the residual on ``phi`` = the
  candidate's descriptors z-scored within its prompt plus layer-quarter indicators, updated after every
  ablation measurement; ``b_episode`` is a per-prompt offset, re-drawn from its prior every episode.

The agent only uses the score's *rank within the prompt* (binned), so offsets do not matter; how far
the bins can be trusted is learned by the generative model's Dirichlet likelihood, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LOG_FLOOR = 1e-6  # log10(KL + 1e-6), as the env's measured_log_kl column
PRIOR_COLUMNS = ("log10_magnitude", "log10_activation", "influence")
EXCLUDED = ("visited", "measured_type", "measured_log_kl", "measured_downstream", "measured_log_affected")


def log_effect(kl: np.ndarray | float) -> np.ndarray:
    return np.log10(np.asarray(kl, dtype=np.float64) + LOG_FLOOR)


@dataclass
class ScoreModel:
    """Base predictor + online Bayesian linear residual; see the module docstring."""

    prior_sd: float = 0.3  # prior sd of each residual weight (log10 KL per within-prompt sd)
    noise_sd: float = 0.8  # residual noise (log10 units)
    offset_sd: float = 1.0  # prior sd of the per-prompt offset
    refit_min: int = 200  # own measurements before a stream refit of the base predictor
    seed: int = 0
    names: tuple[str, ...] = ()
    base_model: object | None = None
    base_names: tuple[str, ...] = ()
    fitted_on_tables: bool = False
    _prec: np.ndarray | None = field(default=None, repr=False)
    _lin: np.ndarray | None = field(default=None, repr=False)
    _data_x: list = field(default_factory=list, repr=False)
    _data_y: list = field(default_factory=list, repr=False)
    _n_refit: int = 0

    # ------------------------------------------------------------------ offline fit
    def fit(self, X: np.ndarray, y: np.ndarray, names: tuple[str, ...]) -> None:
        """Fit the base predictor on table rows (static descriptors -> log10 ablation KL)."""
        with one_thread():
            self.base_model = self._regressor().fit(X, y)
        self.base_names = tuple(n for n in names if n not in EXCLUDED)
        self.fitted_on_tables = True
        self.reset_online()

    def cross_fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int = 3) -> np.ndarray:
        """Out-of-fold predictions (folds by prompt) for warm-starting the score likelihood honestly."""
        out = np.zeros(len(y))
        fold = np.unique(groups, return_inverse=True)[1] % n_folds
        for f in range(n_folds):
            test = fold == f
            if test.all() or not test.any():
                continue
            with one_thread():
                out[test] = self._regressor().fit(X[~test], y[~test]).predict(X[test])
        return out

    def _regressor(self):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(
            max_iter=200, learning_rate=0.1, max_leaf_nodes=31, early_stopping=False, random_state=self.seed
        )

    # ------------------------------------------------------------------ memory
    def reset_online(self) -> None:
        """Forget the online residual and own data (the tables' base predictor stays)."""
        self._prec = None
        self._lin = None
        self._data_x, self._data_y = [], []
        self._n_refit = 0

    def forget_all(self) -> None:
        self.base_model, self.base_names, self.fitted_on_tables = None, (), False
        self.reset_online()

    # ------------------------------------------------------------------ an episode
    def begin_episode(self, descriptors: np.ndarray, names: tuple[str, ...]) -> None:
        """descriptors: (n_valid, F) static columns of the prompt's real candidates."""
        static = [i for i, n in enumerate(names) if n not in EXCLUDED]
        self.names = tuple(names[i] for i in static)
        X = np.asarray(descriptors, np.float64)[:, static]
        self._x = X
        self._base = self._base_prediction(X)
        self._phi = self._features(X)
        d = self._phi.shape[1] + 1
        if self._prec is None or self._prec.shape[0] != d:
            self._prec = np.diag(np.r_[1 / self.offset_sd**2, np.full(d - 1, 1 / self.prior_sd**2)])
            self._lin = np.zeros(d)
        else:
            self._new_offset()

    def _base_prediction(self, X: np.ndarray) -> np.ndarray:
        if self.base_model is not None:
            missing = [n for n in self.base_names if n not in self.names]
            if missing:
                from acd_env.errors import ACDError

                raise ACDError(
                    f"aif's score was fitted with descriptor columns {missing} that this environment does not "
                    "show; fit it on tables built with the env's descriptors"
                )
            cols = [self.names.index(n) for n in self.base_names]
            with one_thread():
                return np.asarray(self.base_model.predict(X[:, cols]), np.float64)
        for name in PRIOR_COLUMNS:
            if name in self.names:
                return X[:, self.names.index(name)].copy()
        return np.zeros(len(X))

    def _features(self, X: np.ndarray) -> np.ndarray:
        sd = X.std(0)
        z = np.where(sd > 1e-9, (X - X.mean(0)) / np.where(sd > 1e-9, sd, 1.0), 0.0)
        if "layer_frac" in self.names:
            layer = X[:, self.names.index("layer_frac")]
            quarter = np.minimum((layer * 4).astype(int), 3)
            z = np.concatenate([z, np.eye(4)[quarter]], axis=1)
        return z

    def _new_offset(self) -> None:
        """Marginalise the last prompt's offset out of the posterior and draw a fresh one from its prior."""
        cov = np.linalg.inv(self._prec)
        mean = cov @ self._lin
        cov_w = cov[1:, 1:]
        prec = np.zeros_like(self._prec)
        prec[0, 0] = 1 / self.offset_sd**2
        prec[1:, 1:] = np.linalg.inv(cov_w)
        self._prec = prec
        self._lin = prec @ np.r_[0.0, mean[1:]]

    def predict(self) -> np.ndarray:
        """Current score of every real candidate of the episode (log10 ablation KL units)."""
        w = np.linalg.solve(self._prec, self._lin)
        return self._base + w[0] + self._phi @ w[1:]

    def update(self, k: int, kl: float) -> None:
        """A measured ablation KL of candidate k: rank-one update of the residual posterior."""
        y = float(log_effect(kl))
        phi = np.r_[1.0, self._phi[k]]
        r = y - self._base[k]
        self._prec = self._prec + np.outer(phi, phi) / self.noise_sd**2
        self._lin = self._lin + phi * r / self.noise_sd**2
        self._data_x.append(self._x[k])
        self._data_y.append(y)

    def maybe_refit(self) -> bool:
        """Stream without tables: once enough own ablation measurements exist (and grew by half since the
        last refit), fit the base predictor on them and restart the residual. Returns True if refitted."""
        n = len(self._data_y)
        if self.fitted_on_tables or n < self.refit_min or n < 1.5 * self._n_refit:
            return False
        X, y = np.asarray(self._data_x), np.asarray(self._data_y)
        with one_thread():
            self.base_model = self._regressor().fit(X, y)
        self.base_names = self.names
        self._n_refit = n
        self._prec = None
        return True


def one_thread():
    """Small boosted-tree fits and predictions run fastest (and reproducibly) on one OpenMP thread."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")
