"""Property-based tests (hypothesis): outcome discretisation, metrics, action encoding, argument checks, tables."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
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


@settings(max_examples=200)
@given(
    kl=st.lists(st.floats(min_value=0.0, max_value=10.0, allow_nan=False), min_size=1, max_size=40),
    data=st.data(),
)
def test_episode_metrics_stay_in_range_for_any_choices(kl, data):
    """Any sequence of choices (repeats, invalid steps as -1, out-of-range indices, padding rows, a short
    episode) gives metrics in range, a non-decreasing curve that ends at the efficiency, and steps80 ≤ B + 1."""
    from benchmarks.metrics import episode_metrics

    k = len(kl)
    valid = np.array(data.draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    effects = np.stack([np.asarray(kl) * valid, np.asarray(kl)[::-1] * valid], axis=1)
    budget = data.draw(st.integers(min_value=1, max_value=k + 5))
    chosen = data.draw(st.lists(st.integers(-1, k + 2), min_size=0, max_size=budget))
    m = episode_metrics(chosen, effects, valid, budget, ("ablation", "steering"))
    for name in ("efficiency", "recall", "auc", "efficiency_ablation", "efficiency_steering"):
        assert -1e-9 <= m[name] <= 1 + 1e-9, (name, m[name])
    assert 1 <= m["steps80"] <= budget + 1 and m["reached80"] == (m["steps80"] <= budget)
    curve = np.asarray(m["curve"])
    assert len(curve) == budget and (np.diff(curve) >= -1e-12).all()
    assert np.isclose(curve[-1], m["efficiency"])
    assert m["efficiency"] == m["efficiency_ablation"]


scalars = st.one_of(
    st.integers(-5, 5),
    st.integers(2**40, 2**41),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
    st.integers(-3, 3).map(np.int64),
    st.floats(-3, 3).map(np.float32),
)


@given(value=scalars)
def test_integer_arguments_are_checked_exactly(value):
    """K, budget, n and seeds: integers (Python or NumPy) are accepted, everything else is one clear error."""
    from acd_env.errors import ACDError, check_positive_int, check_seed

    integral = isinstance(value, int | np.integer) and not isinstance(value, bool)
    for check, low in ((check_positive_int, 1), (check_seed, 0)):
        if integral and value >= low:
            out = check("budget", value) if check is check_positive_int else check(value)
            assert out == value and type(out) is int
        else:
            with pytest.raises(ACDError) as info:
                check("budget", value) if check is check_positive_int else check(value)
            assert repr(value) in str(info.value)


_TABLE = {}


def small_table():
    """The first two prompts of toy-4l's shipped counting test table."""
    from acd_env.table_store import shipped_table_path
    from acd_env.tables import CircuitTable, load_table

    if "t" not in _TABLE:
        t = load_table(shipped_table_path("toy-4l", "counting", "test"))
        _TABLE["t"] = CircuitTable(
            dict(t.meta), t.cases[:2], {n: v[:2].copy() for n, v in t.measurements.items()}
        )
    return _TABLE["t"]


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["kl", "logit_diff", "downstream"]),
    index=st.tuples(st.integers(0, 1), st.integers(0, 63), st.integers(0, 2)),
    finite_value=st.floats(min_value=0.0, max_value=1e6),
    bad_value=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_tables_round_trip_finite_values_and_refuse_non_finite_ones(name, index, finite_value, bad_value):
    """A finite measurement written anywhere survives save → load exactly; NaN or ±inf anywhere is refused by
    name, and neither write leaves a temporary file behind."""
    from acd_env.errors import TableError
    from acd_env.tables import CircuitTable, load_table, save_table

    base = small_table()
    with tempfile.TemporaryDirectory() as tmp:
        good = {n: v.copy() for n, v in base.measurements.items()}
        good[name][index] = finite_value
        path = save_table(CircuitTable(base.meta, base.cases, good), Path(tmp) / "good.npz")
        loaded = load_table(path)
        for n in good:
            np.testing.assert_array_equal(loaded.measurements[n], good[n])
        bad = {n: v.copy() for n, v in base.measurements.items()}
        bad[name][index] = bad_value
        path = save_table(CircuitTable(base.meta, base.cases, bad), Path(tmp) / "bad.npz")
        with pytest.raises(TableError, match=f"NaN or inf in measurement '{name}'"):
            load_table(path)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["bad.npz", "good.npz"]
