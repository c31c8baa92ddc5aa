"""The `aif` agent's JAX computations, all with pymdp 1.0's own functions and jitted once per shape.

- beliefs: per candidate, `pymdp.inference.update_posterior_states` (fixed-point iteration) on its score
  reading (nothing in force), then on its measurement if it has one (its intervention in force);
- EFE: per (candidate, type) from `pymdp.control` (`compute_expected_state`, `compute_expected_obs`,
  `compute_info_gain`, `compute_expected_utility`, `calc_negative_pA_info_gain`), `jax.vmap` over
  candidates and over policies (one policy per intervention type, policy_len 1), plus the pA info gain of
  the candidate's own score reading;
- learning: `pymdp.learning.update_obs_likelihood_dirichlet` on a measured candidate's two readings, and A, D
  from pA (`pymdp.maths.dirichlet_expected_value`; the score rows as in `agents.aif_model.expected_model`).

Candidate arrays are padded to fixed buckets (64 / 256 / 512, then multiples of 512) so a new K compiles
nothing new within a bucket; kernels are shared by every agent of a process with the same shapes
(`get_kernels`). Nothing here imports JAX at module import: `Kernels(...)` does, with JAX_PLATFORMS=cpu by
default (these kernels are tiny; an accelerator would only add transfers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from agents.aif_model import A_DEPENDENCIES, B_DEPENDENCIES, ModelSpec, build_B, build_C

K_BUCKETS = (64, 256, 512)
SCORE, MEASURED = (0,), (1, 2, 3)  # modality indices (see agents.aif_model.MODALITIES)


def bucket(k: int) -> int:
    """The padded candidate count for K candidates."""
    for b in K_BUCKETS:
        if k <= b:
            return b
    return -(-k // K_BUCKETS[-1]) * K_BUCKETS[-1]


def _import_jax() -> Any:
    if "jax" not in __import__("sys").modules:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no accelerator probing for these tiny kernels
    import jax

    return jax


def enable_compile_cache(path: str | Path | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (optional; saves ~0.5 s per kernel in a new process)."""
    jax = _import_jax()
    path = Path(path or Path.home() / ".cache" / "acd" / "jax")
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


_CACHE: dict[tuple, Kernels] = {}


def get_kernels(spec: ModelSpec, pref: float, num_iter: int = 2) -> Kernels:
    """Kernels shared by every agent with the same model shape and preferences (compiled once per process)."""
    key = (spec, float(pref), int(num_iter))
    if key not in _CACHE:
        _CACHE[key] = Kernels(spec, pref, num_iter=num_iter)
    return _CACHE[key]


class Kernels:
    """Jitted belief / EFE / learning functions for one `ModelSpec` and preference strength."""

    def __init__(self, spec: ModelSpec, pref: float, *, num_iter: int = 2) -> None:
        jax = _import_jax()
        import jax.numpy as jnp
        from pymdp import control, inference, learning
        from pymdp.maths import dirichlet_expected_value, stable_entropy

        self.spec = spec
        f32 = jnp.float32
        n_obs = spec.num_obs
        n_v = 1 + spec.n_types
        B = [jnp.asarray(b, f32) for b in build_B(spec)]
        C = [jnp.asarray(c, f32) for c in build_C(spec, pref)]
        policies = control.construct_policies(spec.num_states, [1, spec.n_types], 1, [1])  # (T, 1, 2)
        self.policies = policies
        self.B, self.C = B, C
        none = jax.nn.one_hot(0, n_v, dtype=f32)

        def infer(A, obs_idx, prior, modalities):
            """q(importance) from readings of `modalities` (the others read a constant "none yet"/"n/a" that
            carries no evidence, so leaving them out is exact and cheaper)."""
            obs = [jax.nn.one_hot(obs_idx[i], n_obs[m], dtype=f32) for i, m in enumerate(modalities)]
            qs = inference.update_posterior_states(
                [A[m] for m in modalities], B, obs, None, prior,
                A_dependencies=[A_DEPENDENCIES[m] for m in modalities], B_dependencies=B_DEPENDENCIES,
                num_iter=num_iter, method="fpi",
            )  # fmt: skip
            return qs[0][0]  # importance marginal, drop the time axis

        def prior_belief(A, D, score_obs):
            """q(importance) of a candidate from its score reading (nothing in force)."""
            return infer(A, [score_obs], [D, none], SCORE)

        def posterior_belief(A, D, score_obs, meas_obs, meas_type):
            """q(importance) after its score reading and then its measurement under type `meas_type`."""
            q0 = prior_belief(A, D, score_obs)
            v = jax.nn.one_hot(meas_type + 1, n_v, dtype=f32)
            return infer(A, meas_obs, [q0, v], MEASURED)

        def efe_terms(A, pA, q, score_obs):
            """(utility, state info gain, pA novelty) per policy, and the score-likelihood novelty.

            Under any intervention the score modality reads "n/a" with certainty (no info gain, no utility,
            structural counts), so the per-policy terms use the measurement modalities; what measuring this
            candidate would teach the score likelihood is the separate score-novelty term."""
            qs = [q, none]
            A_m, pA_m = [A[m] for m in MEASURED], [pA[m] for m in MEASURED]
            C_m, deps = [C[m] for m in MEASURED], [A_DEPENDENCIES[m] for m in MEASURED]

            def per_policy(policy):
                qs_next = control.compute_expected_state(qs, B, policy[0], B_DEPENDENCIES)
                qo = control.compute_expected_obs(qs_next, A_m, deps)
                ig = control.compute_info_gain(qs_next, qo, A_m, deps)
                ut = control.compute_expected_utility(qo, C_m)
                nov = -control.calc_negative_pA_info_gain(pA_m, qo, qs_next, deps)
                return jnp.stack([ut, ig, nov])

            terms = jax.vmap(per_policy)(policies)  # (T, 3)
            # What this candidate's known score reading would teach the score likelihood once its
            # importance is measured: pymdp's pA info gain with the reading the update will use.
            score_nov = -control.calc_negative_pA_info_gain(
                [pA[0]], [jax.nn.one_hot(score_obs, n_obs[0], dtype=f32)], qs, [A_DEPENDENCIES[0]]
            )
            return terms, score_nov

        def decide(A, pA, D, score_obs, q_measured, measured, weights):
            """neg-EFE (Kp, T), its terms (Kp, T, 4), beliefs (Kp, N_I) and their entropies (Kp,).

            A measured candidate's belief is its posterior from `observe` (q_measured); every other
            candidate's belief is inferred from its score reading under the current likelihood."""
            q0 = jax.vmap(prior_belief, in_axes=(None, None, 0))(A, D, score_obs)
            q = jnp.where(measured[:, None], q_measured, q0)
            terms, score_nov = jax.vmap(efe_terms, in_axes=(None, None, 0, 0))(A, pA, q, score_obs)
            terms = jnp.concatenate(
                [terms, jnp.broadcast_to(score_nov[:, None, None], (*terms.shape[:2], 1))], -1
            )
            w = jnp.concatenate([jnp.ones(1, f32), weights[0:1], weights[1:2], weights[1:2]])
            neg_efe = (terms * w).sum(-1)  # utility + w_info * info gain + w_nov * (novelty + score novelty)
            kp = q.shape[0]
            # one packed (Kp, T + 4T + N_I + 1) array: a single device-to-host transfer per decision
            return jnp.concatenate(
                [neg_efe, terms.reshape(kp, -1), q, jax.vmap(stable_entropy)(q)[:, None]], axis=1
            )

        def expected_model(pA):
            """A and D implied by the counts (see `agents.aif_model.expected_model`, the numpy twin)."""
            A = [dirichlet_expected_value(p) for p in pA]
            rows = pA[0][1:, :, 0]
            R = rows / rows.sum(1, keepdims=True)
            # pymdp annotates dirichlet_expected_value as returning a numpy array; it is a jax array
            A[0] = A[0].at[1:, :, 0].set(R / R.sum(0, keepdims=True))  # pyright: ignore[reportAttributeAccessIssue]
            return A, R.mean(0)

        def observe(A, pA, D, score_obs, meas_obs, meas_type, lr):
            """The measured candidate's posterior, and pymdp's pooled Dirichlet update from its two readings:
            its score reading (nothing in force) and its measurement (its type in force). Returns the new
            pA and, packed, the posterior and what the update added to the score counts (for the host)."""
            q = posterior_belief(A, D, score_obs, meas_obs, meas_type)
            v = jax.nn.one_hot(meas_type + 1, n_v, dtype=f32)
            qs = [jnp.stack([q, q]), jnp.stack([none, v])]
            obs = [jnp.stack([score_obs, 0])] + [jnp.stack([0, meas_obs[m]]) for m in range(3)]
            pA_new, _ = learning.update_obs_likelihood_dirichlet(
                pA, A, obs, qs, A_dependencies=A_DEPENDENCIES, categorical_obs=False, num_obs=n_obs, lr=lr
            )
            score_counts = pA_new[0]
            assert score_counts is not None  # pymdp returns None only for modalities without counts
            added = score_counts[1:, :, 0] - pA[0][1:, :, 0]
            return pA_new, jnp.concatenate([q, added.ravel()])

        def set_score_pA(pA, score_pA):
            """Replace the score modality's counts (nothing in force) and recompute A and D from pA."""
            pA = [pA[0].at[1:, :, 0].set(score_pA), *pA[1:]]
            A, D = expected_model(pA)
            return pA, A, D

        self._jax, self._jnp = jax, jnp
        self.decide = jax.jit(decide)
        self.observe = jax.jit(observe)
        self.set_score_pA = jax.jit(set_score_pA)
        self.set_model = jax.jit(lambda pA: (pA, *expected_model(pA)))
        self.prior_belief = prior_belief
        self.posterior_belief = posterior_belief
        self.efe_terms = efe_terms

    def __deepcopy__(self, memo: dict) -> Kernels:
        return self  # stateless compiled functions: every copy of an agent shares them

    # ------------------------------------------------------------------ host-side helpers
    def to_device(self, arrays: list[np.ndarray]) -> list[Any]:
        return [self._jax.device_put(np.asarray(a, np.float32)) for a in arrays]

    def run_decide(
        self,
        A: list[Any],
        pA: list[Any],
        D: Any,
        score_obs: np.ndarray,
        q_measured: np.ndarray,
        measured: np.ndarray,
        weights: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """neg-EFE (Kp, T), its terms (Kp, T, 4: utility, state info gain, novelty, score novelty), beliefs
        (Kp, 6) and their entropies (Kp,), from one jitted call and one device-to-host transfer."""
        packed = np.asarray(self.decide(A, pA, D, score_obs, q_measured, measured, weights))
        t = self.spec.n_types
        neg_efe = packed[:, :t]
        terms = packed[:, t : 5 * t].reshape(-1, t, 4)
        q = packed[:, 5 * t : 5 * t + q_measured.shape[1]]
        return neg_efe, terms, q, packed[:, -1]

    def run_observe(
        self,
        A: list[Any],
        pA: list[Any],
        D: Any,
        score_obs: int,
        meas_obs: np.ndarray,
        meas_type: int,
        lr: float,
    ) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """Learn from one measurement: new pA (on device), the candidate's posterior, the score counts added."""
        pA_new, packed = self.observe(
            A, pA, D, np.int32(score_obs), np.asarray(meas_obs, np.int32), np.int32(meas_type), np.float32(lr)
        )
        packed = np.asarray(packed)
        n_i = self.spec.num_states[0]
        return list(pA_new), packed[:n_i], packed[n_i:].reshape(-1, n_i)
