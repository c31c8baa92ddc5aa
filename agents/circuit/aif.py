"""`aif` on sets: active inference (inferactively-pymdp 1.0, JAX) choosing which set to query next.

Generative model (one, shared by all candidates and prompts)
------------------------------------------------------------
Every candidate c has its own belief over three hidden-state factors (mean field: nothing joint between
candidates; the pooled query enters through the context factor below):
- ``membership`` L (3 levels: 0 out, 1 minor member, 2 core member). Static (B = identity).
- ``query`` in force (none, keep, ablate): the only controllable factor; action kind u sets it to u + 1 (B).
  pymdp's A has no action axis, so this factor is what lets the kind of a query change its predicted outcome.
- ``context`` S (3 levels): how saturated the set c is added to already is — the measured score of the working
  circuit W for that kind (f(W) for keep, n(W) for ablate) in bins < 0.5, < 0.85, >= 0.85. Known when the
  query is chosen (it is W's measured score), so its belief is one-hot; it makes the likelihood *saturating*:
  near f = 1 even a core member adds little, and a small rise there says little about membership.
Two observation modalities:
- ``prior`` (the descriptor modality): the rank bin of the candidate's zero-query score within the prompt
  (`ig` by default; ranks 0-1, 2-3, 4-7, 8-15, 16-31, 32+), read while no query is in force ("n/a" under a
  query). Its likelihood P(bin | L) is a Dirichlet learned across prompts; as on the feature track it is taken
  from its rows P(L | bin) (a candidate is measured *because* of its bin, which biases the columns, not the
  rows) with the known marginal of the rank bins, and D (the membership prior) is the marginal those rows imply.
- ``delta``: the query's outcome for the toggled candidate, Δ = score(W ∪ {c}) − score(W) of that kind (keep:
  KL-faithfulness f; ablate: necessity n), in bins (< −0.03, < 0.03, < 0.1, < 0.25, >= 0.25), labelled by kind
  (0 = none yet). P(Δ | L, kind, S) is a Dirichlet over (kind, L, S): a core member raises f in an unsaturated
  context, a non-member does nothing or *lowers* it (cancellation: adding it undoes part of what W restores).
  Its prior is hand-set and weak (``delta_concentration`` counts per column); `fit` adds labelled counts, and
  with online learning on every measurement adds to it.
C (preferences): only keep readings carry preference, ``pref`` × (−1, 0, 1, 2, 3) / 3 nats over the Δ bins (the
circuit is scored by keep-only faithfulness); ablate readings are worth only what they teach.

Inference, planning, learning (pymdp 1.0's own functions, jitted once per shape)
--------------------------------------------------------------------------------
- Beliefs: `pymdp.inference.update_posterior_states` from D on the candidate's prior-bin reading, then, for a
  measured candidate, on each of its Δ readings in turn (the previous posterior as the prior).
- EFE per (candidate, kind): `pymdp.control.compute_expected_state` / `compute_expected_obs` /
  `compute_info_gain` / `compute_expected_utility` / `calc_negative_pA_info_gain`, `jax.vmap` over candidates
  (padded to a fixed K bucket, 64 here) and over the two kinds (each with its own context S).
  neg-EFE = utility + ``info_weight`` × state info gain + ``novelty_weight`` × budget left × pA info gain.
- Choice: argmax neg-EFE over the candidates outside W (an ablate query only where n(W) is known, i.e. W
  was measured by ablation, which is always true for W = ∅). The chosen candidate enters W with that query;
  after a keep query it *stays* in W when its posterior P(L >= 1) exceeds ``accept`` and Δ > 0, otherwise the
  next step takes it back out (a repeat of W's own measured query: free). After an ablate query it always
  steps back out. So W is a chain of accepted keep queries, and its measured f is the curve of its prefix.
- Learning: after each measurement, `pymdp.learning.update_obs_likelihood_dirichlet` adds the Δ reading (and,
  on a candidate's first measurement, its prior-bin reading) weighted by its posterior to the shared pA, scaled
  by ``learning_rate``; A is `pymdp.maths.dirichlet_expected_value` of pA (the prior modality from its rows, as
  above). This persists across episodes until `reset_memory()` (which keeps what `fit` learned).
  **Online learning is off by default** (``learning_rate=0``): membership is never observed, so every count it
  adds is labelled by the agent's own posterior, and on the train split that self-labelling made it worse —
  streams over two folds of 120 toy-4l train prompts scored 0.937 / 0.937 / 0.942 / **0.950** for learning rates
  1 / 0.3 / 0.1 / 0, and 0.946 / 0.947 / 0.948 / 0.948 after fitting on the other fold
  (`scripts/tune_circuit_agents.py`). The counts drift toward "small Δ is what members show", so the Δ readings
  stop moving beliefs away from the prior. The beliefs about candidates are still inferred online from every
  reading; the likelihood is learned offline only, from labelled data (`fit`). With no learning, the novelty
  term (the value of learning pA) is dropped from the EFE.
- `fit(tables)`: counts from the train tables' stored references: membership labels from the reference
  ranking (positions < 5 core, < 13 minor, else out) against the prior bins (capped at ``fit_strength`` per
  bin), and keep Δs along the reference's own path (its f curve) for core and minor members.
- `circuit_ranking()`: ``rank="posterior"`` (default): every candidate by posterior expected membership E[L]
  (ties: the prior score); ``rank="entry"``: W's accepted members in the order they entered (the prefix curve
  the agent measured), then the rest by E[L]. On 20 toy-4l train prompts (5 per task, zero-shot) "posterior"
  gave 0.957 of the reference against 0.938 for "entry"; ``info_weight`` 3 or ``pref`` 0.3 (more weight on
  information) fell to 0.79-0.81 — measured exploration did not pay there.

`aif-argmax` (`CircuitAIFArgmaxAgent`, ``planning="argmax"``) is the planning ablation: the same model, beliefs
and learning, but each choice is the plain argmax of its own score E[L] over the candidates outside W (keep
queries only; ties by the prior score) — no EFE. The feature track's `aif-argmax` is the same ablation there.

Outputs: `diagnostics()` gives `aif/belief_entropy` (mean entropy of the real candidates' membership beliefs)
and `aif/efe` (the chosen action's EFE); `posterior_top(n)` the n likeliest members with P(L >= 1) (the
harness's step rows and TensorBoard carry it after every step); `belief_entropy_history`, `efe_history`,
`last_neg_efe` (K, 2).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from acd_env.errors import ACDError
from agents.circuit.base import CircuitAgent

N_L = 3  # membership levels
N_S = 3  # context (saturation) levels
KINDS = ("keep", "ablate")
RANK_EDGES = (2, 4, 8, 16, 32)  # rank bins of the prior score: 0-1, 2-3, 4-7, 8-15, 16-31, 32+
N_BINS = len(RANK_EDGES) + 1
DELTA_EDGES = (-0.03, 0.03, 0.1, 0.25)
N_D = len(DELTA_EDGES) + 1
CONTEXT_EDGES = (0.5, 0.85)
CORE, MINOR = 5, 13  # reference positions defining core / minor members (fit)
# prior P(L | rank bin): the top of a zero-query ranking is mostly in the circuit, its tail mostly not
P_L_GIVEN_BIN = np.array(
    [
        [0.1, 0.3, 0.6],
        [0.2, 0.35, 0.45],
        [0.35, 0.35, 0.3],
        [0.6, 0.25, 0.15],
        [0.85, 0.1, 0.05],
        [0.95, 0.04, 0.01],
    ]
)
# prior P(delta bin | L, S) for keep queries; rows: S (low, mid, high), then L (out, minor, core)
P_DELTA_KEEP = np.array(
    [
        [[0.20, 0.62, 0.10, 0.05, 0.03], [0.05, 0.23, 0.35, 0.25, 0.12], [0.02, 0.08, 0.17, 0.31, 0.42]],
        [[0.20, 0.66, 0.09, 0.04, 0.01], [0.05, 0.33, 0.40, 0.16, 0.06], [0.03, 0.15, 0.31, 0.36, 0.15]],
        [[0.15, 0.76, 0.07, 0.02, 0.00], [0.06, 0.53, 0.31, 0.08, 0.02], [0.05, 0.38, 0.36, 0.16, 0.05]],
    ]
)
A_DEPENDENCIES = [[0, 1], [0, 1, 2]]
B_DEPENDENCIES = [[0], [1], [2]]
NUM_STATES = [N_L, 1 + len(KINDS), N_S]
NUM_OBS = [1 + N_BINS, 1 + len(KINDS) * N_D]


def bin_of(x: float, edges: tuple[float, ...]) -> int:
    return int(np.searchsorted(np.asarray(edges), x, side="right"))


def rank_bins(scores: np.ndarray) -> np.ndarray:
    """1-based rank bin of every candidate by descending score (ties: lower index first)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(len(order))
    return 1 + np.searchsorted(np.asarray(RANK_EDGES), ranks, side="right")


def bin_marginal() -> np.ndarray:
    """P(rank bin) for K = 64 (bin sizes 2, 2, 4, 8, 16, 32)."""
    sizes = np.diff(np.r_[0, RANK_EDGES, 64]).astype(float)
    return sizes / sizes.sum()


def build_pA(prior_concentration: float, delta_concentration: float) -> list[np.ndarray]:
    """The Dirichlet prior of both modalities (structural entries exact and heavy)."""
    big = 1e4
    pA0 = np.full((NUM_OBS[0], N_L, NUM_STATES[1]), 1e-3)
    pA0[1:, :, 0] = prior_concentration * P_L_GIVEN_BIN  # rows P(L | bin), see expected_model
    pA0[0, :, 1:] = big  # "n/a" under a query
    pA1 = np.full((NUM_OBS[1], N_L, NUM_STATES[1], N_S), 1e-3)
    pA1[0, :, 0, :] = big  # "none yet" when no query is in force
    blur = 0.3
    for u in range(len(KINDS)):
        for s in range(N_S):
            for level in range(N_L):
                p = P_DELTA_KEEP[s, level]
                if u == 1:  # ablate: the same shape, less specific
                    p = (1 - blur) * p + blur / N_D
                pA1[1 + u * N_D : 1 + (u + 1) * N_D, level, 1 + u, s] = delta_concentration * p
    return [pA0, pA1]


def build_B() -> list[np.ndarray]:
    b_l = np.eye(N_L)[:, :, None]
    b_v = np.zeros((NUM_STATES[1], NUM_STATES[1], len(KINDS)))
    for u in range(len(KINDS)):
        b_v[u + 1, :, u] = 1.0
    b_s = np.eye(N_S)[:, :, None]
    return [b_l, b_v, b_s]


def build_C(pref: float) -> list[np.ndarray]:
    c1 = np.zeros(NUM_OBS[1])
    c1[1 : 1 + N_D] = pref * np.array([-1.0, 0.0, 1.0, 2.0, 3.0]) / 3.0
    return [np.zeros(NUM_OBS[0]), c1]


class Kernels:
    """Jitted belief / EFE / learning functions (pymdp 1.0 building blocks), shared per process."""

    _cache: ClassVar[dict[tuple, Kernels]] = {}

    @classmethod
    def get(cls, pref: float) -> Kernels:
        key = (float(pref),)
        if key not in cls._cache:
            cls._cache[key] = cls(pref)
        return cls._cache[key]

    def __deepcopy__(self, memo: dict) -> Kernels:
        return self

    def __init__(self, pref: float) -> None:
        from agents.aif_kernels import _import_jax

        jax = _import_jax()
        import jax.numpy as jnp
        from pymdp import control, inference, learning
        from pymdp.maths import dirichlet_expected_value, stable_entropy

        f32 = jnp.float32
        B = [jnp.asarray(b, f32) for b in build_B()]
        C = [jnp.asarray(c, f32) for c in build_C(pref)]
        policies = control.construct_policies(NUM_STATES, [1, len(KINDS), 1], 1, [1])  # (2, 1, 3)
        marginal = jnp.asarray(bin_marginal(), f32)
        none_v = jax.nn.one_hot(0, NUM_STATES[1], dtype=f32)
        flat_s = jnp.full(N_S, 1.0 / N_S, f32)

        def expected_model(pA):
            A = [dirichlet_expected_value(p) for p in pA]
            rows = pA[0][1:, :, 0]
            R = rows / rows.sum(1, keepdims=True)  # P(L | bin)
            joint = marginal[:, None] * R
            D = joint.sum(0)
            A[0] = A[0].at[1:, :, 0].set(joint / D[None, :])  # pyright: ignore[reportAttributeAccessIssue]
            return A, D

        def infer(A_m, dep, obs_idx, n_obs, prior):
            qs = inference.update_posterior_states(
                [A_m], B, [jax.nn.one_hot(obs_idx, n_obs, dtype=f32)], None, prior,
                A_dependencies=[dep], B_dependencies=B_DEPENDENCIES, num_iter=2, method="fpi",
            )  # fmt: skip
            return qs[0][0]

        def prior_belief(A, D, bin_obs):
            return infer(A[0], A_DEPENDENCIES[0], bin_obs, NUM_OBS[0], [D, none_v, flat_s])

        def measured_belief(A, q, delta_obs, kind, ctx):
            v = jax.nn.one_hot(kind + 1, NUM_STATES[1], dtype=f32)
            s = jax.nn.one_hot(ctx, N_S, dtype=f32)
            return infer(A[1], A_DEPENDENCIES[1], delta_obs, NUM_OBS[1], [q, v, s])

        def efe_terms(A, pA, q, ctx):
            """(kinds, 3): utility, state info gain, pA novelty of a keep / ablate query of this candidate."""

            def per_policy(policy, s):
                qs = [q, none_v, jax.nn.one_hot(s, N_S, dtype=f32)]
                qs_next = control.compute_expected_state(qs, B, policy[0], B_DEPENDENCIES)
                deps = [A_DEPENDENCIES[1]]
                qo = control.compute_expected_obs(qs_next, [A[1]], deps)
                ig = control.compute_info_gain(qs_next, qo, [A[1]], deps)
                ut = control.compute_expected_utility(qo, [C[1]])
                nov = -control.calc_negative_pA_info_gain([pA[1]], qo, qs_next, deps)
                return jnp.stack([ut, ig, nov])

            return jax.vmap(per_policy)(policies, ctx)

        def decide(A, pA, D, bin_obs, q_measured, measured, ctx, weights):
            """neg-EFE (Kp, 2), terms (Kp, 2, 3), beliefs (Kp, N_L), entropies (Kp,)."""
            q0 = jax.vmap(prior_belief, in_axes=(None, None, 0))(A, D, bin_obs)
            q = jnp.where(measured[:, None], q_measured, q0)
            terms = jax.vmap(efe_terms, in_axes=(None, None, 0, None))(A, pA, q, ctx)
            neg_efe = terms[..., 0] + weights[0] * terms[..., 1] + weights[1] * terms[..., 2]
            ent = jax.vmap(stable_entropy)(q)
            return neg_efe, terms, q, ent

        def observe(A, pA, q_prev, bin_obs, delta_obs, kind, ctx, first, lr):
            """Posterior of the measured candidate and pymdp's Dirichlet update from its readings."""
            q = measured_belief(A, q_prev, delta_obs, kind, ctx)
            v = jax.nn.one_hot(kind + 1, NUM_STATES[1], dtype=f32)
            s = jax.nn.one_hot(ctx, N_S, dtype=f32)
            obs = [jnp.stack([bin_obs]), jnp.stack([delta_obs])]
            pA1, _ = learning.update_obs_likelihood_dirichlet(
                [pA[1]], [A[1]], [obs[1]], [q[None], v[None], s[None]],
                A_dependencies=[A_DEPENDENCIES[1]], categorical_obs=False, num_obs=[NUM_OBS[1]], lr=lr,
            )  # fmt: skip
            pA0, _ = learning.update_obs_likelihood_dirichlet(
                [pA[0]], [A[0]], [obs[0]], [q[None], none_v[None]],
                A_dependencies=[A_DEPENDENCIES[0]], categorical_obs=False, num_obs=[NUM_OBS[0]], lr=lr * first,
            )  # fmt: skip
            new = [pA0[0], pA1[0]]
            A_new, D_new = expected_model(new)
            return new, A_new, D_new, q

        self.decide = jax.jit(decide)
        self.observe = jax.jit(observe)
        self.set_model = jax.jit(lambda pA: (pA, *expected_model(pA)))
        self._jax = jax

    def to_device(self, arrays: list[np.ndarray]) -> list[Any]:
        return [self._jax.device_put(np.asarray(a, np.float32)) for a in arrays]


class CircuitAIFAgent(CircuitAgent):
    """Active inference over per-candidate membership beliefs for pooled set queries (see the module docstring).

    Args:
        seed: the agent's seed (its choices are deterministic; kept for the common signature).
        prior_column: the zero-query descriptor whose rank bins are the prior reading (`ig`; falls back to
            `atp_kl_ablation`, then influence order, when the env does not show it).
        pref: nats of preference of the best keep Δ bin (C).
        info_weight, novelty_weight: weights of the state info gain and of the pA info gain (× budget left).
        accept: a keep-tested candidate stays in W when P(L >= 1) exceeds this and its Δ is positive.
        rank: "posterior" or "entry" (see the module docstring).
        prior_concentration, delta_concentration: pseudo-counts of the Dirichlet priors (per bin / column).
        fit_strength: at most this many counts per prior bin (and per Δ column) added by `fit`.
        learning_rate: the Dirichlet learning rate of online (self-labelled) learning; 0 (default) turns it off
            (see the module docstring for why).
        planning: "efe" (argmax of neg-EFE) or "argmax" (the plain argmax of E[L]: the planning ablation
            `aif-argmax`); None: the class's default.
    """

    name = "aif"
    needs_atp = True
    planning = "efe"

    def __init__(
        self,
        *,
        seed: int = 0,
        prior_column: str = "ig",
        pref: float = 1.0,
        info_weight: float = 1.0,
        novelty_weight: float = 0.1,
        accept: float = 0.5,
        rank: str = "posterior",
        prior_concentration: float = 20.0,
        delta_concentration: float = 8.0,
        fit_strength: float = 200.0,
        learning_rate: float = 0.0,
        planning: str | None = None,
    ) -> None:
        super().__init__(seed=seed)
        from agents.aif import check_planning

        self.planning = check_planning(type(self).planning if planning is None else planning)
        if rank not in ("entry", "posterior"):
            raise ACDError(f"rank must be 'entry' or 'posterior', got {rank!r}")
        for label, v in (
            ("prior_concentration", prior_concentration),
            ("delta_concentration", delta_concentration),
        ):
            if not float(v) > 0:
                raise ACDError(f"{label} must be positive, got {v!r}")
        self.prior_column = prior_column
        self.pref = float(pref)
        self.info_weight = float(info_weight)
        self.novelty_weight = float(novelty_weight)
        self.accept = float(accept)
        self.rank = rank
        self.prior_concentration = float(prior_concentration)
        self.delta_concentration = float(delta_concentration)
        self.fit_strength = float(fit_strength)
        self.learning_rate = float(learning_rate)
        self._fit_counts: list[np.ndarray] | None = None
        self._kernels: Kernels | None = None
        self.belief_entropy_history: list[float] = []
        self.efe_history: list[float] = []
        self._q: np.ndarray | None = None

    # ------------------------------------------------------------------ model state
    def prior_pA(self) -> list[np.ndarray]:
        pA = build_pA(self.prior_concentration, self.delta_concentration)
        if self._fit_counts is not None:
            pA[0] = pA[0].copy()
            pA[1] = pA[1].copy()
            pA[0][1:, :, 0] += self._fit_counts[0]
            pA[1][1:, :, 1:, :] += self._fit_counts[1]
        return pA

    def _ensure_model(self) -> None:
        if self._kernels is None:
            self._kernels = Kernels.get(self.pref)
            self._restore_prior()

    def _restore_prior(self) -> None:
        assert self._kernels is not None
        pA, A, D = self._kernels.set_model(self._kernels.to_device(self.prior_pA()))
        self._pA, self._A, self._D = list(pA), list(A), D

    @property
    def pA(self) -> list[np.ndarray]:
        self._ensure_model()
        return [np.asarray(p, np.float64) for p in self._pA]

    def reset_memory(self) -> None:
        super().reset_memory()
        if self._kernels is not None:
            self._restore_prior()

    # ------------------------------------------------------------------ protocol
    def reset(self, obs: dict, info: dict) -> None:
        super().reset(obs, info)
        self._ensure_model()
        from agents.aif_kernels import bucket

        k = len(np.asarray(info["action_mask"]).reshape(-1)) // 2
        self._k = k
        self._kp = bucket(k)
        n = self.n_valid
        if self.prior_column in self.columns:
            score = self.column(obs, self.prior_column)
        elif "atp_kl_ablation" in self.columns:
            score = self.column(obs, "atp_kl_ablation")
        else:
            score = -np.arange(n, dtype=np.float64)
        self._prior_score = np.asarray(score, np.float64)
        self._bin_obs = np.zeros(self._kp, np.int32)
        self._bin_obs[:n] = rank_bins(self._prior_score)
        self._measured = np.zeros(self._kp, bool)
        self._q_measured = np.full((self._kp, N_L), 1.0 / N_L, np.float32)
        self._first_seen = np.zeros(self._kp, bool)
        self.W: list[int] = []
        self._seen: dict[tuple[str, frozenset], float] = {
            ("keep", frozenset()): 0.0,
            ("ablate", frozenset()): 0.0,
        }
        self._pending: tuple[int, str, frozenset] | None = (
            None  # (candidate, kind, W before) of the last query
        )
        self._undo: int | None = None
        self._q = None
        self.belief_entropy_history = []
        self.efe_history = []
        self.last_neg_efe: np.ndarray | None = None

    def _ctx(self) -> np.ndarray:
        """Context bin per kind for queries on the current W (−1 where W's score of that kind is unknown)."""
        w = frozenset(self.W)
        out = np.full(len(KINDS), -1, np.int32)
        for u, kind in enumerate(KINDS):
            if (kind, w) in self._seen:
                out[u] = bin_of(self._seen[(kind, w)], CONTEXT_EDGES)
        return out

    def _decide(self, budget_left: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        assert self._kernels is not None
        ctx = self._ctx()
        novelty = self.novelty_weight * budget_left if self.learning_rate > 0 else 0.0
        weights = np.array([self.info_weight, novelty], np.float32)
        neg_efe, terms, q, ent = self._kernels.decide(
            self._A, self._pA, self._D, self._bin_obs, self._q_measured, self._measured,
            np.maximum(ctx, 0).astype(np.int32), weights,
        )  # fmt: skip
        neg_efe, terms, q, ent = (np.asarray(x, np.float64) for x in (neg_efe, terms, q, ent))
        self._q = q
        return neg_efe, terms, q, ent

    def _allowed(self, mask: np.ndarray) -> np.ndarray:
        """(K, 2) queries worth a new measurement: candidates outside W, W's score of that kind known, and the
        new (kind, W ∪ {c}) not measured yet."""
        ctx = self._ctx()
        allowed = mask.reshape(-1, 2)[: self._k].astype(bool).copy()
        w = frozenset(self.W)
        for c in range(self.n_valid):
            for u, kind in enumerate(KINDS):
                if c in w or ctx[u] < 0 or (kind, w | {c}) in self._seen:
                    allowed[c, u] = False
        allowed[self.n_valid :] = False
        return allowed

    def act(self, obs: dict, info: dict) -> int:
        mask = np.asarray(info["action_mask"], dtype=bool).reshape(-1)
        if self._undo is not None:
            c = self._undo
            back = frozenset(self.W) - {c}
            kind = next((k for k in KINDS if (k, back) in self._seen), "keep")
            return self.action(c, kind)
        budget_left = float(np.asarray(obs.get("budget", [1.0])).reshape(-1)[0])
        neg_efe, _terms, q, ent = self._decide(budget_left)
        allowed = self._allowed(mask)
        if not allowed.any():  # nothing new to learn: toggle anything valid
            valid = np.flatnonzero(mask)
            return int(valid[0]) if valid.size else 0
        if self.planning == "efe":
            g = np.where(allowed, neg_efe[: self._k], -np.inf)
            best = g.max()
            cand, kinds = np.nonzero(g == best)
            pick = np.lexsort((kinds, -self._prior_score[cand]))[0]
            c, u = int(cand[pick]), int(kinds[pick])
        else:  # aif-argmax: the plain argmax of its own score E[L] (keep queries only; ties by the prior score)
            e = q[: self._k] @ np.arange(N_L)
            ok = allowed[:, 0]
            if not ok.any():
                ok, u = allowed[:, 1], 1
            else:
                u = 0
            idx = np.flatnonzero(ok)
            c = int(idx[np.lexsort((-self._prior_score[idx], -e[idx]))[0]])
        self.last_neg_efe = neg_efe[: self._k]
        self.efe_history.append(float(-neg_efe[c, u]))
        self.belief_entropy_history.append(float(ent[: self.n_valid].mean()))
        return self.action(c, KINDS[u])

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        if info.get("invalid_action") or "candidate" not in info:
            return
        c, kind = int(info["candidate"]), str(info["kind"])
        before = frozenset(self.W)
        if info["toggle"] == "in":
            self.W.append(c)
        elif c in self.W:
            self.W.remove(c)
        after = frozenset(self.W)
        self._seen[(kind, after)] = float(info["score"])
        if self._undo is not None and c == self._undo and info["toggle"] == "out":
            self._undo = None
            return
        if info["toggle"] != "in" or (kind, before) not in self._seen:
            return  # not a measurement of c in a known context: nothing to learn
        base = self._seen[(kind, before)]
        delta = float(info["score"]) - base
        ctx = bin_of(base, CONTEXT_EDGES)
        u = KINDS.index(kind)
        if self._q is None:
            self._decide(1.0)
        assert self._q is not None and self._kernels is not None
        obs_idx = 1 + u * N_D + bin_of(delta, DELTA_EDGES)
        first = 0.0 if self._first_seen[c] else 1.0
        pA, A, D, q = self._kernels.observe(
            self._A, self._pA, np.asarray(self._q[c], np.float32), np.int32(self._bin_obs[c]),
            np.int32(obs_idx), np.int32(u), np.int32(ctx), np.float32(first), np.float32(self.learning_rate),
        )  # fmt: skip
        self._pA, self._A, self._D = list(pA), list(A), D
        q = np.asarray(q, np.float64)
        self._first_seen[c] = True
        self._measured[c] = True
        self._q_measured[c] = q
        self._q[c] = q
        keep_it = kind == "keep" and delta > 0 and q[1:].sum() > self.accept
        if not keep_it:
            self._undo = c

    # ------------------------------------------------------------------ outputs
    def expected_membership(self) -> np.ndarray:
        """(n_valid,) posterior expected membership level E[L] in 0..2."""
        if self._q is None:
            self._decide(1.0)
        assert self._q is not None
        return self._q[: self.n_valid] @ np.arange(N_L)

    def circuit_ranking(self) -> list[int]:
        e = self.expected_membership()
        idx = np.arange(self.n_valid)
        members = [c for c in self.W if c != self._undo] if self.rank == "entry" else []
        rest = idx[np.lexsort((idx, -self._prior_score, -e))]
        return [*members, *(int(c) for c in rest if int(c) not in members)]

    def posterior_top(self, n: int = 5) -> list[tuple[int, float]]:
        """The n candidates most likely in the circuit, as (candidate, P(member)) with P(member) = P(L >= 1) under
        the beliefs `circuit_ranking()` would use now; highest first (ties: E[L], then the prior score, then the
        index). The harness writes it into every circuit step row (`posterior_top`) and TensorBoard's
        `circuit/aif_posterior_top`."""
        if self._q is None:
            self._decide(1.0)
        assert self._q is not None
        q = self._q[: self.n_valid]
        p, e, idx = q[:, 1:].sum(1), q @ np.arange(N_L), np.arange(self.n_valid)
        top = idx[np.lexsort((idx, -self._prior_score, -e, -p))][: max(int(n), 0)]
        return [(int(c), float(p[c])) for c in top]

    def diagnostics(self) -> dict[str, float]:
        return {
            "aif/belief_entropy": self.belief_entropy_history[-1]
            if self.belief_entropy_history
            else float("nan"),
            "aif/efe": self.efe_history[-1] if self.efe_history else float("nan"),
        }

    # ------------------------------------------------------------------ offline fit
    def fit(self, tables: Any) -> CircuitAIFAgent:
        """Counts from train tables' references: P(L | prior bin) and keep Δs along the reference path."""
        from agents.base import load_tables

        tables = load_tables(tables)
        bins = np.zeros((N_BINS, N_L))
        delta = np.zeros((len(KINDS) * N_D, N_L, len(KINDS), N_S))
        found = False
        for table in tables:
            circ = getattr(table, "circuit", None)
            if not circ:
                continue
            names = list(table.meta["descriptor_names"])
            for i, case in enumerate(table.cases):
                n = int(case.n_valid)
                if self.prior_column == "ig":
                    score = np.asarray(circ["ig"][i, :n], np.float64)
                elif self.prior_column in names:
                    score = np.asarray(case.descriptors[:n, names.index(self.prior_column)], np.float64)
                else:
                    continue
                found = True
                order = [int(x) for x in circ["ref_order"][i, :n]]
                level = np.zeros(n, np.int64)
                for pos, c in enumerate(order[:MINOR]):
                    level[c] = 2 if pos < CORE else 1
                b = rank_bins(score) - 1
                np.add.at(bins, (b, level), 1.0)
                curve = np.r_[0.0, np.asarray(circ["ref_curve"][i], np.float64)]
                for pos, c in enumerate(order[:MINOR]):
                    d = bin_of(curve[pos + 1] - curve[pos], DELTA_EDGES)
                    delta[d, level[c], 0, bin_of(curve[pos], CONTEXT_EDGES)] += 1.0
        if not found:
            raise ACDError("aif.fit() needs circuit tables (with circuit data: reference rankings and `ig`)")
        bins *= np.minimum(1.0, self.fit_strength / np.maximum(bins.sum(1, keepdims=True), 1e-9))
        col = delta.sum(0, keepdims=True)
        delta *= np.minimum(1.0, self.fit_strength / np.maximum(col, 1e-9))
        self._fit_counts = [bins, delta]
        if self._kernels is not None:
            self._restore_prior()
        return self


class CircuitAIFArgmaxAgent(CircuitAIFAgent):
    """`aif-argmax`: the same model and learning as `aif`, choices by the plain argmax of E[L] (no EFE)."""

    name = "aif-argmax"
    planning = "argmax"
