"""Property-based tests (hypothesis) for the outcome discretisation and the metrics."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from acd_env.discretise import BIN_EDGES, NONE_YET, discretise, level, n_levels

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(name=st.sampled_from(sorted(BIN_EDGES)), a=finite, b=finite)
def test_levels_are_monotone_and_never_none_yet(name, a, b):
    la, lb = level(name, a), level(name, b)
    assert NONE_YET < la < n_levels(name) and NONE_YET < lb < n_levels(name)
    if a <= b:
        assert la <= lb
    assert la == int(discretise(name, a))  # scalar and vector paths agree


@given(name=st.sampled_from(sorted(BIN_EDGES)), values=st.lists(finite, min_size=1, max_size=50))
def test_vector_discretise_matches_scalar(name, values):
    np.testing.assert_array_equal(discretise(name, np.array(values)), [level(name, v) for v in values])


@settings(max_examples=200)
@given(
    kl=st.lists(st.floats(min_value=0.0, max_value=10.0, allow_nan=False), min_size=3, max_size=64),
    data=st.data(),
)
def test_efficiency_is_in_unit_interval_and_oracle_scores_one(kl, data):
    from benchmarks.metrics import discovery_efficiency

    effect = np.asarray(kl)
    valid = np.ones(len(effect), dtype=bool)
    budget = data.draw(st.integers(min_value=1, max_value=len(effect)))
    chosen = data.draw(st.lists(st.integers(0, len(effect) - 1), min_size=1, max_size=budget, unique=True))
    eff = discovery_efficiency(np.asarray(chosen), effect, valid, budget)
    if np.sort(effect)[::-1][:budget].sum() > 0:
        assert -1e-9 <= eff <= 1 + 1e-9
        best = np.argsort(-effect, kind="stable")[:budget]
        assert np.isclose(discovery_efficiency(best, effect, valid, budget), 1.0)


_ENV = {}


def replay_env(types: tuple[str, ...]):
    from acd_env.env import CircuitDiscoveryEnv

    if types not in _ENV:
        _ENV[types] = CircuitDiscoveryEnv(
            backend="replay", task="counting", split="test", interventions=types
        )
    return _ENV[types]


@settings(max_examples=60, deadline=None)
@given(
    types=st.sampled_from([("ablation",), ("steering", "ablation"), ("ablation", "patching", "steering")]),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_action_encoding_matches_the_env(types, seed, data):
    env = replay_env(types)
    _, info = env.reset(seed=seed)
    n_types = len(types)
    candidate = data.draw(st.integers(0, info["n_valid"] - 1))
    kind = data.draw(st.integers(0, n_types - 1))
    _, reward, _, _, info = env.step(candidate * n_types + kind)
    assert info["candidate"] == candidate and info["intervention"] == types[kind]
    assert reward == float(env.oracle_effects().kl[candidate, kind])
