"""`acd bench` end to end on small synthetic circuit tables (offline, seconds), resumption after SIGKILL, the CLI's
error handling, and (slow) `acd tables build` / `acd graph` / the default run on the shipped toy-4l.

The synthetic tables have the real format and descriptor columns (ablation KL grows with log10_magnitude and
falls with layer, so learning agents have something to learn); the model name `synthetic` is only a label, as
replay with `--tables DIR` needs no model.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from acd_env.case import CaseSettings, PromptCase
from acd_env.discretise import BIN_EDGES
from acd_env.tables import CircuitTable, make_meta, save_table
from acd_env.tasks.prompt import Prompt
from agents.greedy import GreedyAgent
from agents.random_agent import RandomAgent
from agents.ucb import LinUCBAgent
from benchmarks.cli import main
from benchmarks.leaderboard import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
K, BUDGET = 16, 5
STEP_FIELDS = (
    "agent",
    "protocol",
    "task",
    "prompt_id",
    "seed",
    "step",
    "action",
    "candidate",
    "feature",
    "intervention",
    "reward",
    "kl",
    "logit_diff",
    "downstream",
    "n_affected",
    "top1_changed",
    "wall_time_s",
)


# ---------------------------------------------------------------------------------------------- test agents
class DiagGreedy(GreedyAgent):
    """Greedy, plus what the harness reads from richer agents: diagnostics, an importance ranking, a training log."""

    def diagnostics(self) -> dict:
        return {"aif/belief_entropy": 1.0 / (1 + len(self._picked)), "aif/efe": -float(len(self._picked))}

    def reset(self, obs, info):
        super().reset(obs, info)
        self._picked: list[int] = []
        self._influence = np.array(self.column(obs, "influence"))

    def observe(self, action, reward, obs, info):
        self._picked.append(action)

    def importance_ranking(self):
        return np.argsort(-self._influence, kind="stable")

    def training_log(self):
        return [{"step": s, "losses/value_loss": 1.0 / s, "losses/entropy": 0.1} for s in (1, 2, 3)]


class FittedRandom(RandomAgent):
    """A random agent with a (no-op) fit: its copies must still draw with their own seeds."""

    def fit(self, tables):
        self.n_tables = len(tables)
        return self


class SlowUCB(LinUCBAgent):
    """LinUCB that sleeps ACD_TEST_SLEEP seconds per action (so that a test can kill a run mid-way)."""

    def act(self, obs, info):
        time.sleep(float(os.environ.get("ACD_TEST_SLEEP", "0")))
        return super().act(obs, info)


# ---------------------------------------------------------------------------------------------- synthetic tables
def synthetic_table(task: str, split: str, n_prompts: int, seed: int) -> CircuitTable:
    settings = CaseSettings(n_candidates=K)
    names = settings.descriptor_names
    col = {n: i for i, n in enumerate(names)}
    n_types = len(settings.interventions)
    rng = np.random.default_rng(seed)
    cases, measured = [], {n: [] for n in ("kl", "logit_diff", "downstream", "n_affected", "top1_changed")}
    for p in range(n_prompts):
        n_valid = K if p % 3 else K - 3  # some prompts have padding rows
        desc = np.zeros((K, len(names)), np.float32)
        influence = np.sort(rng.random(n_valid))[::-1]
        magnitude = rng.normal(-1, 0.7, n_valid)
        layer = rng.integers(0, 4, n_valid) / 3
        desc[:n_valid, col["influence"]] = influence
        desc[:n_valid, col["log10_magnitude"]] = magnitude
        desc[:n_valid, col["log10_activation"]] = magnitude + rng.normal(0, 0.2, n_valid)
        desc[:n_valid, col["layer_frac"]] = layer
        kl = np.zeros((K, n_types), np.float32)
        kl[:n_valid, 0] = 10 ** (1.2 * magnitude - layer + 0.3 * influence + rng.normal(0, 0.4, n_valid) - 1)
        kl[:n_valid, 1] = kl[:n_valid, 0] * rng.random(n_valid)
        kl[:n_valid, 2] = kl[:n_valid, 0] * (1 + 3 * rng.random(n_valid))
        real = kl > 0
        measured["kl"].append(kl)
        measured["logit_diff"].append((rng.normal(0, 1, (K, n_types)) * real).astype(np.float32))
        measured["downstream"].append((rng.random((K, n_types)) * real).astype(np.float32))
        measured["n_affected"].append((rng.integers(0, 9, (K, n_types)) * real).astype(np.int32))
        measured["top1_changed"].append(kl > 0.3)
        features = np.full((K, 3), -1, np.int64)
        features[:n_valid] = np.stack(
            [rng.integers(0, 4, n_valid), rng.integers(1, 8, n_valid), rng.permutation(1000)[:n_valid]],
            axis=1,
        )
        prompt = Prompt(f"{task}/{split}/{p:03d}", task, f"w{p} x y", "y", f"w{p} x z", "z")
        cases.append(
            PromptCase(
                prompt=prompt,
                tokens=np.arange(4),
                features=features,
                n_valid=n_valid,
                clean_act=np.ones(K, np.float32),
                values=np.zeros((K, n_types), np.float32),
                descriptors=desc,
                patch_source="counterfactual",
                answer_id=3,
                cf_answer_id=2,
                top_ids=np.arange(10),
                top_probs=np.full(10, 0.1, np.float32),
            )
        )
    meta = make_meta(
        "synthetic", "synthetic0", task, split, settings, {k: list(v) for k, v in BIN_EDGES.items()}
    )
    return CircuitTable(meta, cases, {n: np.stack(v) for n, v in measured.items()})


@pytest.fixture(scope="session")
def tables_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic-tables")
    for i, task in enumerate(("ioi", "agreement")):
        save_table(synthetic_table(task, "train", 6, seed=10 * i), out / f"{task}-train.npz")
        save_table(synthetic_table(task, "test", 4, seed=10 * i + 1), out / f"{task}-test.npz")
    return out


def bench_args(tables: Path, out: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "--model",
        "synthetic",
        "--tables",
        str(tables),
        "--k",
        str(K),
        "--budget",
        str(BUDGET),
        "--seeds",
        "2",
        "--reps",
        "300",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(csv_text: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


AGENTS = "greedy,random,oracle,ranker,test_bench:DiagGreedy"


@pytest.fixture(scope="session")
def bench_run(tables_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    assert (
        main(
            bench_args(
                tables_dir,
                out,
                "--agents",
                AGENTS,
                "--protocol",
                "zero-shot,train-test",
                "--protocol",
                "stream",
            )
        )
        == 0
    )
    return out


# ---------------------------------------------------------------------------------------------- end to end
def test_results_jsonl_has_every_step_and_episode(bench_run):
    rows = read_jsonl(bench_run / "results.jsonl")
    episodes = [r for r in rows if r["kind"] == "episode"]
    # 4 agents × 3 protocols + ranker in train-test only; 2 seeds × 8 prompts each
    assert len(episodes) == (4 * 3 + 1) * 2 * 8
    steps = {}
    for r in rows:
        if r["kind"] == "step":
            assert all(f in r for f in STEP_FIELDS), sorted(set(STEP_FIELDS) - set(r))
            steps.setdefault((r["agent"], r["protocol"], r["prompt_id"], r["seed"]), []).append(r["step"])
    for e in episodes:
        assert steps[(e["agent"], e["protocol"], e["prompt_id"], e["seed"])] == list(
            range(1, e["n_steps"] + 1)
        )
        assert e["n_steps"] == BUDGET and set(e["metrics"]) >= {
            "efficiency",
            "recall",
            "auc",
            "steps80",
            "curve",
        }
    na = [r for r in rows if r["kind"] == "na"]
    assert {(r["agent"], r["protocol"]) for r in na} == {("ranker", "zero-shot"), ("ranker", "stream")}
    assert any(r["kind"] == "fit" and r["agent"] == "ranker" for r in rows)


def test_leaderboard_files_agree_and_make_sense(bench_run):
    md = (bench_run / "leaderboard.md").read_text()
    table = list(csv.DictReader(io.StringIO((bench_run / "leaderboard.csv").read_text())))
    doc = json.loads((bench_run / "leaderboard.json").read_text())
    assert len(table) == len(doc["rows"]) == 5 * 3
    assert list(table[0]) == doc["columns"]
    rows = {(r["protocol"], r["agent"]): r for r in doc["rows"]}
    for protocol in ("zero-shot", "stream", "train-test"):
        assert rows[(protocol, "oracle")]["efficiency"] == 1.0
        assert rows[(protocol, "greedy")]["p_gt_greedy"] is None
        assert 0 <= rows[(protocol, "random")]["p_gt_greedy"] <= 1
        lo, mid, hi = (
            rows[(protocol, "random")][k] for k in ("efficiency_lo", "efficiency", "efficiency_hi")
        )
        assert lo <= mid <= hi
    # agents that cannot learn run identically in every protocol
    for key in ("efficiency", "efficiency_lo", "efficiency_hi", "iqm", "recall", "auc"):
        assert (
            rows[("zero-shot", "greedy")][key]
            == rows[("train-test", "greedy")][key]
            == rows[("stream", "greedy")][key]
        )
    assert (
        rows[("zero-shot", "ranker")]["status"].startswith("n/a")
        and "fit" in rows[("zero-shot", "ranker")]["status"]
    )
    ranker = rows[("train-test", "ranker")]
    assert ranker["status"] == "ok" and ranker["efficiency"] > rows[("train-test", "greedy")]["efficiency"]
    assert (
        rows[("train-test", "greedy")]["p_gt_ranker"] is not None
        and rows[("zero-shot", "greedy")]["p_gt_ranker"] is None
    )
    assert ranker["fit_s"] is not None and "step_ms" in doc["timing_columns"]
    assert "## train-test" in md and "`ranker`: n/a: needs fit(tables)" in md and "P(>greedy)" in md


def test_tensorboard_runs_hold_the_expected_tags(bench_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tags(run: Path) -> set[str]:
        acc = EventAccumulator(str(run))
        acc.Reload()
        return set(acc.Tags()["scalars"])

    base = {
        "discovery/reward",
        "discovery/cumulative_efficiency",
        "discovery/efficiency",
        "discovery/auc",
        "discovery/mean_curve",
    }
    tb = bench_run / "tb"
    for protocol in ("zero-shot", "train-test", "stream"):
        for agent in ("greedy", "random", "oracle", "test_bench_DiagGreedy"):
            found = tags(tb / protocol / agent)
            assert base <= found, (protocol, agent, found)
            assert ("stream/efficiency" in found) == (protocol != "zero-shot")
    assert {"aif/belief_entropy", "aif/efe"} <= tags(tb / "zero-shot" / "test_bench_DiagGreedy")
    assert "aif/efe" not in tags(tb / "zero-shot" / "greedy")
    assert tags(tb / "train" / "test_bench_DiagGreedy") == {"losses/value_loss", "losses/entropy"}
    acc = EventAccumulator(str(tb / "zero-shot" / "oracle"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("discovery/efficiency")] == pytest.approx([1.0] * 16)


def test_report_is_self_contained_with_the_plots_data(bench_run):
    html = (bench_run / "report.html").read_text()
    assert len(html) > 1_000_000  # plotly.js is inline: the report opens offline
    assert "<script src=" not in html and "plotly.js v" in html
    for text in ("Discovery curves", "Leaderboard", "belief entropy", "importance ranking", "Learning curve"):
        assert text in html, text
    for agent in ("greedy", "random", "oracle", "ranker"):
        assert f'"name":"{agent}"' in html
    doc = json.loads((bench_run / "leaderboard.json").read_text())
    oracle = next(r for r in doc["rows"] if r["agent"] == "oracle")
    assert f"{oracle['efficiency']:.3f}" in html


def test_same_seeds_give_identical_leaderboards_and_resume_skips(bench_run, tables_dir, tmp_path, capsys):
    again = tmp_path / "again"
    assert (
        main(bench_args(tables_dir, again, "--agents", AGENTS, "--protocol", "zero-shot,train-test,stream"))
        == 0
    )
    for name in ("leaderboard.csv",):
        assert without_timing((again / name).read_text()) == without_timing((bench_run / name).read_text())
    md_a = [line.rsplit("|", 2)[0] for line in (again / "leaderboard.md").read_text().splitlines()]
    md_b = [line.rsplit("|", 2)[0] for line in (bench_run / "leaderboard.md").read_text().splitlines()]
    assert md_a == md_b  # identical apart from the last (timing) column
    capsys.readouterr()
    before = (again / "results.jsonl").read_bytes()
    assert (
        main(bench_args(tables_dir, again, "--agents", AGENTS, "--protocol", "zero-shot,train-test,stream"))
        == 0
    )
    assert "0 episodes run" in capsys.readouterr().out
    assert (again / "results.jsonl").read_bytes() == before
    assert without_timing((again / "leaderboard.csv").read_text()) == without_timing(
        (bench_run / "leaderboard.csv").read_text()
    )


def test_a_torn_tail_is_cut_and_the_episode_rerun(tables_dir, tmp_path, capsys):
    out = tmp_path / "torn"
    args = bench_args(tables_dir, out, "--agents", "greedy,ucb", "--protocol", "stream", "--seeds", "1")
    assert main(args) == 0
    complete = (out / "leaderboard.csv").read_text()
    rows = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    last_episode = max(i for i, line in enumerate(rows) if b'"kind":"episode"' in line)
    # drop the last episode row, keep two of its steps and half of the third: a write killed mid-way
    torn = b"".join(rows[: last_episode - 3]) + rows[last_episode - 3][:20]
    (out / "results.jsonl").write_bytes(torn)
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "dropped a torn tail" in printed and "1 episodes run" in printed
    assert without_timing((out / "leaderboard.csv").read_text()) == without_timing(complete)
    assert len(read_jsonl(out / "results.jsonl")) == len(rows)


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tables_dir, tmp_path):
    args = bench_args(
        tables_dir, tmp_path / "x", "--agents", "oracle,test_bench:SlowUCB", "--protocol", "zero-shot,stream"
    )[:-2]
    assert main([*args, "--out", str(tmp_path / "uninterrupted")]) == 0

    env = dict(os.environ, ACD_TEST_SLEEP="0.04", PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]))
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "benchmarks.cli", *args, "--out", str(killed)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = killed / "results.jsonl"
    deadline = time.time() + 120
    # 2 seeds × 8 prompts: oracle's 32 episodes first, then SlowUCB zero-shot (16), then its stream (16)
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b'"kind":"episode"') >= 32 + 16 + 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = results.read_bytes().count(b'"kind":"episode"')
    assert 32 + 16 < n_before < 64  # killed inside SlowUCB's stream (memory kept across prompts)

    assert main([*args, "--out", str(killed)]) == 0
    assert without_timing((killed / "leaderboard.csv").read_text()) == without_timing(
        (tmp_path / "uninterrupted" / "leaderboard.csv").read_text()
    )
    episodes = [r for r in read_jsonl(results) if r["kind"] == "episode"]
    assert (
        len(episodes) == 64
        and len({(e["agent"], e["protocol"], e["prompt_id"], e["seed"]) for e in episodes}) == 64
    )


def test_one_shared_fit_equals_fitting_every_seed(tables_dir, tmp_path):
    args = [
        "--agents",
        "ranker,test_bench:FittedRandom",
        "--protocol",
        "train-test,held-out-task",
        "--seeds",
        "3",
    ]
    assert main(bench_args(tables_dir, tmp_path / "shared", *args)) == 0
    assert main(bench_args(tables_dir, tmp_path / "each", *args, "--fit-per-seed")) == 0
    shared = read_jsonl(tmp_path / "shared" / "results.jsonl")
    each = read_jsonl(tmp_path / "each" / "results.jsonl")
    assert sum(r["kind"] == "fit" for r in shared) == 2 * (1 + 2)  # one per (agent, protocol, fold)
    assert sum(r["kind"] == "fit" for r in each) == 2 * 3 * (1 + 2)
    assert without_timing((tmp_path / "shared" / "leaderboard.csv").read_text()) == without_timing(
        (tmp_path / "each" / "leaderboard.csv").read_text()
    )
    # the copies are re-seeded: the random agent's episodes still differ between seeds
    random_eps = {
        (r["prompt_id"], r["seed"]): r["metrics"]["efficiency"]
        for r in shared
        if r["kind"] == "episode"
        and r["agent"] == "test_bench:FittedRandom"
        and r["protocol"] == "train-test"
    }
    assert len(random_eps) == 3 * 8
    assert any(random_eps[(p, 0)] != random_eps[(p, 1)] for p, s in random_eps if s == 0)


# ---------------------------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--agents", "greedy,nosuch"], ["'nosuch'", "valid agents", "greedy"]),
        (["--protocol", "zero-shot,nonsense"], ["'nonsense'", "valid protocols", "held-out-task"]),
        (["--tasks", "ioi,bogus"], ["'bogus'", "valid tasks", "induction"]),
        (["--budget", "0"], ["--budget", "0"]),
        (["--k", "-3"], ["--k", "-3"]),
        (["--seeds", "two"], ["'two'"]),
        (["--backend", "cloud"], ["'cloud'", "live", "replay"]),
        (["--prompts", "p.jsonl"], ["--backend live"]),
    ],
)
def test_bad_bench_input_is_one_clear_line_and_exit_2(tables_dir, tmp_path, capsys, extra, expected):
    with pytest.raises(SystemExit) as info:
        code = main(bench_args(tables_dir, tmp_path / "o", *extra))
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("acd bench: error:"), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_held_out_model_needs_a_second_model(tables_dir, tmp_path, capsys, monkeypatch):
    import acd_env.models.toy

    monkeypatch.setattr(acd_env.models.toy, "toy_names", lambda: [])  # no other zoo model
    assert main(bench_args(tables_dir, tmp_path / "o", "--protocol", "zero-shot,held-out-model")) == 2
    err = capsys.readouterr().err
    assert "held-out-model" in err and "second zoo model" in err and "--fit-model" in err
    assert not (tmp_path / "o").exists()


def test_bad_model_and_subcommand_input(capsys):
    assert main(["bench", "--model", "gpt-17", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert ("'gpt-17'" in err and "toy-4l" in err) or "valid models" in err
    assert main(["graph", "--model", "nope", "--prompt", "x"]) == 2
    assert "'nope'" in capsys.readouterr().err
    assert main(["tables", "build", "--model", "toy-4l", "--task", "zzz", "--split", "test"]) == 2
    assert "'zzz'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_errors_have_no_traceback_in_a_real_process(tables_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.cli",
            *bench_args(tables_dir, tmp_path / "o", "--agents", "nosuch"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert "unknown agent 'nosuch'" in proc.stderr


def test_resuming_with_other_settings_is_refused(bench_run, tables_dir, capsys):
    assert main(bench_args(tables_dir, bench_run, "--agents", "greedy", "--budget", "3")) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "budget" in err


# ---------------------------------------------------------------------------------------------- protocols
def test_protocol_plans():
    from acd_env.errors import ACDError
    from benchmarks.protocols import PROTOCOLS, applicability, get_protocol, plan_folds

    by_task = {"ioi": [0, 1, 2], "agreement": [3, 4]}
    loads = []

    def loader(model, task):
        loads.append((model, task))
        return f"{model}/{task}"

    common = dict(
        test_tasks=["ioi", "agreement"],
        test_by_task=by_task,
        train_tables=loader,
        model="m",
        fit_tasks=["ioi", "agreement", "counting"],
    )
    (zs,) = plan_folds(PROTOCOLS["zero-shot"], **common)
    assert zs.test == [0, 1, 2, 3, 4] and not zs.fits and zs.order(PROTOCOLS["zero-shot"], 7) == zs.test
    (stream,) = plan_folds(PROTOCOLS["stream"], **common)
    order = stream.order(PROTOCOLS["stream"], 1)
    assert sorted(order) == stream.test and order == stream.order(PROTOCOLS["stream"], 1)
    assert order != stream.order(PROTOCOLS["stream"], 2)  # seeded: another seed, another order
    folds = plan_folds(PROTOCOLS["held-out-task"], **common)
    assert [f.name for f in folds] == ["held-out:ioi", "held-out:agreement"]
    assert folds[0].tables() == ["m/agreement", "m/counting"] and folds[1].tables() == ["m/ioi", "m/counting"]
    n_loaded = len(loads)
    (tt,) = plan_folds(PROTOCOLS["train-test"], **common)
    assert len(loads) == n_loaded  # planning loads nothing; tables load when a fit needs them
    assert tt.tables() == ["m/ioi", "m/agreement"] and len(loads) == n_loaded + 2
    (hm,) = plan_folds(PROTOCOLS["held-out-model"], **common, fit_models=["m2"])
    assert hm.name == "from:m2" and hm.tables() == ["m2/ioi", "m2/agreement"] and hm.test == zs.test
    with pytest.raises(ACDError, match="second zoo model"):
        plan_folds(PROTOCOLS["held-out-model"], **common)
    with pytest.raises(
        ACDError, match="valid protocols: held-out-model, held-out-task, stream, train-test, zero-shot"
    ):
        get_protocol("few-shot")

    class Learner:
        learns_offline = True

    assert "nothing to fit" in applicability(Learner(), PROTOCOLS["stream"])
    assert applicability(Learner(), PROTOCOLS["train-test"]) is None
    assert applicability(object(), PROTOCOLS["zero-shot"]) is None


# ---------------------------------------------------------------------------------------------- real model (slow)
needs_toy = pytest.mark.skipif(
    not (ROOT / "acd_env/models/zoo/toy-4l/config.json").is_file(), reason="toy-4l is not in the zoo yet"
)


@pytest.mark.slow
@needs_toy
def test_tables_build_and_graph_export_on_toy_4l(tmp_path, capsys):
    from acd_env.tables import load_table
    from acd_env.tasks import load_task

    out = tmp_path / "ioi-test.npz"
    assert (
        main(
            [
                "tables",
                "build",
                "--model",
                "toy-4l",
                "--task",
                "ioi",
                "--split",
                "test",
                "--n",
                "2",
                "--k",
                "8",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    table = load_table(out)
    assert len(table) == 2 and table.meta["n_candidates"] == 8 and table.meta["model"] == "toy-4l"

    prompt = load_task("ioi", split="test", n=1)[0].clean
    capsys.readouterr()
    assert (
        main(
            [
                "graph",
                "--model",
                "toy-4l",
                "--prompt",
                prompt,
                "--agent",
                "greedy",
                "--budget",
                "3",
                "--k",
                "16",
                "--out",
                str(tmp_path / "g"),
                "--slug",
                "demo",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "circuit-tracer start-server --graph_file_dir" in printed and "slug=demo" in printed
    graph = json.loads((tmp_path / "g" / "demo.json").read_text())
    annotated = [n for n in graph["nodes"] if "acd" in n]
    assert annotated and all("KL" in n["clerp"] for n in annotated)
    assert sum(n["acd"]["agent_step"] is not None for n in annotated) <= 3
    assert graph["metadata"]["acd"]["agent"] == "greedy"
    effects = json.loads((tmp_path / "g" / "demo.effects.json").read_text())
    assert len(effects["steps"]) == 3 and len(effects["candidates"]) <= 16
    assert json.loads((tmp_path / "g" / "graph-metadata.json").read_text())["graphs"][0]["slug"] == "demo"


@pytest.mark.slow
@needs_toy
def test_default_bench_on_the_shipped_tables(tmp_path, capsys):
    """`acd bench` with its defaults (only --out) on toy-4l's shipped tables; prints its wall time."""
    tables = ROOT / "acd_env/models/zoo/toy-4l/tables"
    if not all(
        (tables / f"{t}-{s}.npz").is_file()
        for t in ("ioi", "agreement", "counting", "induction")
        for s in ("train", "test")
    ):
        pytest.skip("toy-4l's circuit tables are not built yet")
    from agents import available_agents

    args = ["bench", "--out", str(tmp_path / "default"), "--no-progress"]
    try:
        from agents.ppo import shipped_policies

        has_policy = bool(shipped_policies())
    except ImportError:
        has_policy = True  # no ppo module: the default list reports it as not available
    if not has_policy:  # without a shipped policy, ppo's fit trains one in-process (minutes): leave it out
        args += ["--agents", ",".join(a for a in available_agents() if a != "ppo")]
    start = time.time()
    assert main(args) == 0
    print(f"default acd bench: {time.time() - start:.1f} s")
    doc = json.loads((tmp_path / "default" / "leaderboard.json").read_text())
    rows = {(r["protocol"], r["agent"]): r for r in doc["rows"]}
    assert rows[("zero-shot", "oracle")]["efficiency"] == 1.0
    assert rows[("train-test", "ranker")]["status"] == "ok"
    assert len(doc["config"]["seeds"]) >= 5


def test_results_log_refuses_corruption_that_is_not_a_torn_tail(tmp_path):
    """A bad line followed by complete rows is corruption (refused, nothing truncated); a row missing its keys
    is refused too; only a bad *last* line is a torn write and is cut."""
    from acd_env.errors import ACDError
    from benchmarks.runner import ResultsLog

    fit = {"kind": "fit", "agent": "ranker", "protocol": "train-test", "fold": "all", "seed": 0, "fit_s": 0.1}
    good = (json.dumps(fit) + "\n").encode()
    path = tmp_path / "results.jsonl"
    path.write_bytes(good + b"{not json\n" + good)
    with pytest.raises(ACDError, match=r"line 2 is not a results row.*corrupt"):
        ResultsLog(path)
    assert path.read_bytes() == good + b"{not json\n" + good
    path.write_bytes(good + b'{"kind": "episode"}\n')
    with pytest.raises(ACDError, match="line 2: a 'episode' row without a valid 'agent' field"):
        ResultsLog(path)
    path.write_bytes(good + good + b'{"kind": "fi')
    log = ResultsLog(path)
    assert log.truncated_bytes == len(b'{"kind": "fi') and path.read_bytes() == good + good


@pytest.mark.skipif(
    len(__import__("acd_env.models.toy", fromlist=["x"]).toy_names()) < 2, reason="one zoo model"
)
def test_held_out_model_on_the_shipped_zoo(tmp_path):
    """held-out-model end to end on the real zoo: agents fitted on the second model's train tables, tested on
    toy-4l; the fit rows name the other model, the leaderboard has a row per agent."""
    from acd_env.models.toy import toy_names

    other = next(m for m in toy_names() if m != "toy-4l")
    out = tmp_path / "hm"
    args = ["bench", "--protocol", "held-out-model", "--agents", "greedy,ranker,aif", "--seeds", "1",
            "--prompts-per-task", "1", "--reps", "100", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    fits = [r for r in rows if r["kind"] == "fit"]
    assert {r["agent"] for r in fits} == {"ranker", "aif"}
    assert all(r["source"].startswith(f"{other} train") for r in fits)
    board = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert {(r["protocol"], r["agent"], r["status"]) for r in board} == {
        ("held-out-model", a, "ok") for a in ("greedy", "ranker", "aif")
    }
