"""benchmarks.metrics on hand-computed cases, and benchmarks.aggregate (rliable) on small known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import aggregate
from benchmarks.metrics import (
    anytime_auc,
    cumulative_curve,
    discovery_efficiency,
    efficiency_by_type,
    episode_metrics,
    oracle_curve,
    recall_at_k,
    steps_to_fraction,
    top_k,
)

EFFECT = np.array([4.0, 3.0, 2.0, 1.0])
VALID = np.ones(4, dtype=bool)


# ------------------------------------------------------------------------------------------- efficiency
def test_efficiency_hand_computed():
    assert discovery_efficiency([1, 2], EFFECT, VALID, 2) == pytest.approx(5 / 7)
    assert discovery_efficiency([0, 1], EFFECT, VALID, 2) == 1.0  # the oracle's choice
    assert discovery_efficiency([3, 2], EFFECT, VALID, 2) == pytest.approx(3 / 7)


def test_efficiency_counts_a_candidate_once_and_ignores_invalid_steps():
    assert discovery_efficiency([0, 0], EFFECT, VALID, 2) == pytest.approx(4 / 7)
    assert discovery_efficiency([-1, 1], EFFECT, VALID, 2) == pytest.approx(3 / 7)  # -1: an invalid action
    padded = np.array([True, True, False, True])  # candidate 2 is padding: never counts, never in the oracle
    assert discovery_efficiency([2, 3], EFFECT, padded, 2) == pytest.approx(1 / 7)


def test_efficiency_with_fewer_candidates_than_budget_and_zero_effect():
    # B = 10 > 4 valid candidates: the oracle takes all four (total 10)
    assert discovery_efficiency([0, 1, 2], EFFECT, VALID, 10) == pytest.approx(9 / 10)
    # nothing has any effect: every choice is optimal
    assert discovery_efficiency([3], np.zeros(4), VALID, 2) == 1.0


def test_efficiency_by_type_uses_each_types_own_oracle():
    effects = np.stack([EFFECT, EFFECT[::-1]], axis=1)  # type 1 ranks the candidates the other way round
    by_type = efficiency_by_type([0, 1], effects, VALID, 2)
    assert by_type == pytest.approx([1.0, (1 + 2) / (4 + 3)])


# ------------------------------------------------------------------------------------------- recall
def test_recall_at_k():
    assert recall_at_k([1, 2], EFFECT, VALID, 2) == 0.5  # top-2 = {0, 1}
    assert recall_at_k([1, 0], EFFECT, VALID, 2) == 1.0
    assert recall_at_k([3], EFFECT, VALID, 1) == 0.0
    assert list(top_k(EFFECT, VALID, 3)) == [0, 1, 2]
    ties = np.array([1.0, 2.0, 2.0, 0.0])
    assert list(top_k(ties, VALID, 2)) == [1, 2]  # ties: lower index first


# ------------------------------------------------------------------------------------------- curve, AUC
def test_curves_and_auc_hand_computed():
    # agent gains 3 then 4 (curve 3/7, 7/7); oracle 4 then 3 (4/7, 7/7); AUC = (3 + 7) / (4 + 7)
    assert cumulative_curve([1, 0], EFFECT, VALID, 2) == pytest.approx([3 / 7, 1.0])
    assert oracle_curve(EFFECT, VALID, 2) == pytest.approx([4 / 7, 1.0])
    assert anytime_auc([1, 0], EFFECT, VALID, 2) == pytest.approx(10 / 11)
    assert anytime_auc([0, 1], EFFECT, VALID, 2) == 1.0


def test_curve_of_a_short_episode_keeps_its_last_value():
    # the episode stopped after one step (no valid candidate left); B = 3 -> curve (4, 4, 4) / 9
    assert cumulative_curve([0], EFFECT, VALID, 3) == pytest.approx([4 / 9, 4 / 9, 4 / 9])


# ------------------------------------------------------------------------------------------- steps to 80 %
def test_steps_to_80_percent():
    # B = 3: oracle total 4 + 3 + 2 = 9; 80 % = 7.2; agent reaches 4, 7, 9 -> step 3
    assert steps_to_fraction([0, 1, 2], EFFECT, VALID, 3) == 3.0
    # the oracle's own order reaches 80 % of 7 (5.6) at step 2 with B = 2
    assert steps_to_fraction([0, 1], EFFECT, VALID, 2) == 2.0
    # never reached: B + 1 by default, NaN on request
    assert steps_to_fraction([3, 2], EFFECT, VALID, 2) == 3.0
    assert math.isnan(steps_to_fraction([3, 2], EFFECT, VALID, 2, never=np.nan))


def test_episode_metrics_bundle():
    effects = np.stack([EFFECT, EFFECT * 2, EFFECT[::-1]], axis=1)
    m = episode_metrics([1, 2], effects, VALID, 2, ("ablation", "patching", "steering"))
    assert m["efficiency"] == pytest.approx(5 / 7) == m["efficiency_ablation"]
    assert m["efficiency_patching"] == pytest.approx(5 / 7)
    assert m["efficiency_steering"] == pytest.approx((2 + 3) / (4 + 3))
    assert m["recall"] == 0.5 and m["steps80"] == 3.0 and m["reached80"] is False
    assert m["curve"] == pytest.approx([3 / 7, 5 / 7])
    # without an ablation column the headline uses the first type
    m2 = episode_metrics([1, 2], effects[:, 2:], VALID, 2, ("steering",))
    assert m2["efficiency"] == pytest.approx(5 / 7)


# ------------------------------------------------------------------------------------------- aggregation
def test_fast_iqm_equals_rliable():
    _, metrics = aggregate._rliable()
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 5, 7, 8, 33, 100):
        x = rng.random(n)
        assert aggregate.fast_iqm(x) == pytest.approx(metrics.aggregate_iqm(x[:, None]), abs=1e-12)


def test_interval_estimates_are_seeded_and_sensible():
    rng = np.random.default_rng(1)
    per_task = {"a": rng.random(30), "b": rng.random(12) + 0.5}  # unequal strata
    state = np.random.get_state()
    first = aggregate.interval_estimates(per_task, reps=300, seed=3)
    assert aggregate.interval_estimates(per_task, reps=300, seed=3) == first  # deterministic
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # the global generator is restored
    assert first["mean"] == pytest.approx((per_task["a"].mean() + per_task["b"].mean()) / 2)
    assert first["mean_lo"] < first["mean"] < first["mean_hi"]
    assert first["iqm_lo"] <= first["iqm"] <= first["iqm_hi"]
    single = aggregate.interval_estimates({"a": [0.5]}, reps=50)
    assert single["mean"] == single["mean_lo"] == single["mean_hi"] == 0.5


def test_summarize_curves_share_the_bootstrap():
    curves = {"a": np.array([[0.5, 0.2, 0.5], [1.0, 0.6, 1.0], [0.7, 0.3, 0.7]])}
    out = aggregate.summarize(curves, reps=200)
    assert out["mean"] == pytest.approx(2.2 / 3)
    assert out["columns"] == pytest.approx([2.2 / 3, 1.1 / 3, 2.2 / 3])
    assert np.all(out["columns_lo"] <= out["columns"]) and np.all(out["columns"] <= out["columns_hi"])


def test_probability_of_improvement():
    x = {"a": [0.9, 0.8, 0.95], "b": [0.7, 0.75]}
    y = {"a": [0.1, 0.2, 0.3], "b": [0.1, 0.2], "c": [1.0]}  # task c is not shared: ignored
    assert aggregate.probability_of_improvement(x, y) == 1.0
    assert aggregate.probability_of_improvement(y, x) == 0.0
    assert aggregate.probability_of_improvement(x, x) == 0.5
    assert aggregate.probability_of_improvement({"a": [1.0, 0.0]}, {"a": [0.5, 0.5]}) == 0.5
    assert math.isnan(aggregate.probability_of_improvement({"a": [1.0]}, {"b": [1.0]}))


# ------------------------------------------------------------------------------------------- leaderboard: stream halves
def _episode(protocol: str, fold: str, seed: int, order: int, eff: float, task: str = "ioi") -> dict:
    metrics = {"efficiency": eff, "recall": eff, "auc": eff, "steps80": 1.0, "reached80": True,
               "efficiency_ablation": eff, "curve": [eff, eff]}  # fmt: skip
    return {"kind": "episode", "protocol": protocol, "agent": "ucb", "fold": fold, "seed": seed, "task": task,
            "prompt_id": f"{task}/test/{order:03d}", "order": order, "metrics": metrics,
            "interventions": {"ablation": 2}, "step_ms": 0.1}  # fmt: skip


def test_leaderboard_stream_halves_by_prompt_order():
    """eff_first_half / eff_second_half: plain means over the first and second half of every (fold, seed) stream
    by `order`; only for protocols that keep memory; in the .csv/.json and in those protocols' markdown tables."""
    import csv
    import io
    import json

    from benchmarks.leaderboard import build_leaderboard, stream_halves, to_csv, to_json, to_markdown

    stream = [_episode("stream", "all", 0, i, e) for i, e in enumerate([0.5, 0.6, 0.8, 0.9])]
    stream += [_episode("stream", "all", 1, i, e) for i, e in enumerate([0.4, 0.5, 0.7, 1.0])]
    # held-out-task: folds of 3 and 2 prompts; the middle prompt of the odd fold counts in the first half
    held = [_episode("held-out-task", "held-out:ioi", 0, i, e) for i, e in enumerate([0.2, 0.4, 0.9])]
    held += [
        _episode("held-out-task", "held-out:agreement", 0, i, e, "agreement")
        for i, e in enumerate([0.3, 0.7])
    ]
    zero = [_episode("zero-shot", "all", 0, i, e) for i, e in enumerate([0.5, 0.6, 0.8, 0.9])]
    assert stream_halves(stream) == pytest.approx((0.5, 0.85))
    assert stream_halves(held) == pytest.approx(((0.2 + 0.4 + 0.3) / 3, (0.9 + 0.7) / 2))
    assert stream_halves(list(reversed(stream))) == pytest.approx((0.5, 0.85))  # row order does not matter
    assert all(math.isnan(v) for v in stream_halves([{**stream[0], "order": None}]))

    protocols = ["zero-shot", "stream", "held-out-task"]
    board = build_leaderboard(stream + held + zero, protocols=protocols, agents=["ucb"],
                              interventions=["ablation"], budget=2, reps=20)  # fmt: skip
    rows = {r["protocol"]: r for r in board}
    assert (rows["stream"]["eff_first_half"], rows["stream"]["eff_second_half"]) == pytest.approx((0.5, 0.85))
    assert rows["held-out-task"]["eff_second_half"] == pytest.approx(0.8)
    assert math.isnan(rows["zero-shot"]["eff_first_half"])  # memory reset every prompt: no stream
    table = {r["protocol"]: r for r in csv.DictReader(io.StringIO(to_csv(board, ["ablation"])))}
    assert list(next(iter(table.values())))[-2:] == ["eff_first_half", "eff_second_half"]
    assert (table["stream"]["eff_first_half"], table["stream"]["eff_second_half"]) == ("0.5000", "0.8500")
    assert table["zero-shot"]["eff_first_half"] == ""
    doc = {r["protocol"]: r for r in json.loads(to_json(board, ["ablation"], {}))["rows"]}
    assert doc["stream"]["eff_second_half"] == 0.85 and doc["zero-shot"]["eff_second_half"] is None
    md = to_markdown(board, ["ablation"], {}).split("## ")
    section = {s.splitlines()[0]: s for s in md[1:]}
    assert "1st half | 2nd half" not in section["zero-shot"]
    assert "| P(>ranker) | 1st half | 2nd half | interventions | n | step_ms |" in section["stream"]
    assert "| 0.500 | 0.850 | ablation:16 |" in section["stream"]
