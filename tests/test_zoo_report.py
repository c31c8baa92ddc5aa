"""scripts/zoo_report.py: the budget arithmetic, one prompt's measurement, the CLI, and (slow) the default
model's discrimination bars (docs/design.md, Models: greedy below 95 % of the oracle, top feature under half)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from acd_env.tasks import TOY_TASKS, load_task


@pytest.fixture(scope="module")
def report(script):
    return script("zoo_report")


def test_budget_ratios_exact(report):
    kl = np.array([0.0, 5.0, 1.0, 4.0, 0.0, 2.0])
    influence = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])  # greedy takes indices 0 and 1 with budget 2
    r = report.budget_ratios(kl, influence, 2)
    assert r["oracle"] == 9.0
    assert r["greedy"] == pytest.approx(5.0 / 9.0)
    assert r["random"] == pytest.approx(2 * kl.mean() / 9.0)
    # Spearman with average ranks for the tied zeros, by hand: Σ d_i d_j = -0.5 over √(17.5 × 17)
    assert r["spearman"] == pytest.approx(-0.5 / math.sqrt(17.5 * 17))
    assert r["spearman"] == pytest.approx(spearmanr(influence, kl).statistic)
    assert report.budget_ratios(kl, kl + 1, 2)["spearman"] == pytest.approx(1.0)  # influence ranks KL exactly
    assert report.budget_ratios(kl, -kl, 2)["spearman"] == pytest.approx(-1.0)
    assert math.isnan(report.budget_ratios(kl, np.ones(6), 2)["spearman"])  # a constant ranking has none
    assert report.budget_ratios(kl, influence, 10)["greedy"] == 1.0  # budget above K: everything is taken
    assert math.isnan(report.budget_ratios(np.zeros(4), np.arange(4.0), 2)["greedy"])


def test_check_bars_flags_a_saturated_task(report):
    good = {
        "accuracy": 1.0,
        "greedy_ablation": 0.9,
        "greedy_patching": 0.97,
        "greedy_steering": 0.96,
    }
    saturated = dict(good, greedy_ablation=0.99)
    total = {"replacement": 0.8, "completeness": 0.9, "top_share": 0.3}
    bars = report.check_bars({"a": good, "b": good}, total)
    assert [b["passed"] for b in bars] == [True] * 5
    bars = report.check_bars({"a": good, "b": dict(saturated, accuracy=0.9)}, dict(total, top_share=0.6))
    assert [b["passed"] for b in bars] == [False, True, True, False, False]
    assert "b" in bars[0]["detail"] and "b" in bars[3]["detail"]


@pytest.mark.parametrize("task", TOY_TASKS)
def test_measure_prompt(toy_model, report, task):
    prompt = load_task(task, split="test", n=1)[0]
    rec = report.measure_prompt(toy_model, prompt, k=32, budget=8)
    assert rec["id"] == prompt.id and rec["n_candidates"] == min(32, rec["n_features"])
    assert 0 < rec["replacement"] <= 1 and 0 < rec["completeness"] <= 1
    assert rec["attribution_s"] > 0
    for kind in ("ablation", "patching", "steering"):
        assert rec[f"oracle_{kind}"] > 0
        assert 0 <= rec[f"greedy_{kind}"] <= 1 + 1e-9
        assert 0 <= rec[f"random_{kind}"] <= 1 + 1e-9
        assert -1 <= rec[f"spearman_{kind}"] <= 1  # also: not NaN
    # influence ranks measured ablation KL positively on every task's first test prompt (measured 0.50-0.66),
    # and spending the budget in influence order beats spending it at random (measured 0.51-0.99 vs 0.27-0.32)
    assert rec["spearman_ablation"] > 0.3, rec["spearman_ablation"]
    assert rec["greedy_ablation"] > rec["random_ablation"] + 0.1, rec
    assert 0 < rec["top_share"] <= 1


def test_cli_writes_strict_json(report, tmp_path, capsys):
    out = tmp_path / "report.json"
    rc = report.main(["--n", "2", "--tasks", "counting", "--k", "16", "--budget", "4", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| | counting | all |" in printed and "greedy ÷ oracle, ablation" in printed
    assert printed.count("PASS") + printed.count("FAIL") == 5
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data["model"] == "toy-4l" and len(data["weights_hash"]) == 16
    assert data["settings"]["k"] == 16 and data["settings"]["budget"] == 4
    assert set(data["tasks"]) == {"counting"} and data["tasks"]["counting"]["n_prompts"] == 2
    assert len(data["prompts"]) == 2 and len(data["bars"]) == 5


def test_cli_rejects_bad_arguments(report):
    with pytest.raises(SystemExit):
        report.main(["--tasks", "nope"])
    with pytest.raises(SystemExit):
        report.main(["--n", "0"])


@pytest.mark.slow
def test_default_model_meets_the_zoo_bars(toy_model, report):
    """The shipped default model tells agents apart (6 test prompts per task, K = 64, B = 20)."""
    result = report.build_report(toy_model, TOY_TASKS, 6, log=lambda s: None)
    failed = [b for b in result["bars"] if not b["passed"]]
    assert not failed, failed
