"""`acd perf --quick` runs end to end and writes the documented JSON schema (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_perf_quick_json_schema(tmp_path):
    out = tmp_path / "perf.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.cli",
            "perf",
            "--quick",
            "--skip-bench",
            "--skip-ray",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["schema_version"] == 1 and report["quick"] is True
    assert set(report["machine"]) >= {"platform", "python", "cpus", "torch_threads"}
    figures = report["figures"]
    for key in (
        "live_step_over_feature_intervention",
        "batched_speedup",
        "batched_max_abs_diff",
        "replay_steps_per_s",
        "replay_vec4_steps_per_s",
        "aif_decision_ms_k512",
        "aif_compile_s_k64",
        "table_prompt_attribution_s",
        "table_prompt_sweep_s",
        "peak_rss_mb",
    ):
        assert isinstance(figures[key], float) and figures[key] >= 0, key
    assert figures["batched_max_abs_diff"] <= 1e-5  # equality is a correctness check, not a timing
    assert figures["scaling"] and {
        "n_tokens",
        "n_active_features",
        "attribution_s",
        "intervention_ms",
    } <= set(figures["scaling"][0])
    for verdict in report["targets"].values():
        assert set(verdict) == {"target", "met"}
    assert "| live_step_over_feature_intervention |" in proc.stdout


def test_perf_bad_argument_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "perf", "--threads", "many"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "invalid int value" in proc.stderr
