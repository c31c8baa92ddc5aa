"""The newcomer's path (issue 19): what a first-time user types, as the README writes it.

- `acd graph` with a relative `--out` (or none) writes its files, and a failed run leaves nothing behind;
  its cheap checks (agent, prompt, vocabulary, seed) come before torch and the model load;
- an output path that cannot be written (`/proc/x`) is one line and exit 2 for `bench`, `tables build`, `graph`;
- the hint `acd tables build` prints works as printed;
- `acd bench`'s summary accounts for every planned episode (n/a ones too), as its progress bar does;
- every TensorBoard tag carries a description, and a text panel lists them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench import K, bench_args, synthetic_table

from acd_env.errors import ACDError, output_error
from acd_env.tables import save_table
from benchmarks.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "when alice and bob went to the park , alice gave a ball to"  # the README's
needs_toy = pytest.mark.skipif(
    not (ROOT / "acd_env/models/zoo/toy-4l/config.json").is_file(), reason="toy-4l is not in the zoo yet"
)
# /proc exists on Linux and refuses new entries even to root (os.access says it is writable)
FEATURES = ("--track", "features")  # the synthetic tables hold no circuit data (the circuit track needs it)
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- acd graph
def test_graph_checks_its_arguments_before_torch_loads():
    """Defect 4: unknown agent, empty prompt, unknown words, bad seed fail in a fraction of a second: before
    torch, transformers or the model are imported."""
    code = """
import sys
from benchmarks.cli import main
rc = main(sys.argv[1:])
heavy = [m for m in ("torch", "transformers", "circuit_tracer") if m in sys.modules]
print("RC", rc, "HEAVY", heavy)
"""
    cases = {
        "unknown agent": (["--agent", "nosuch"], "unknown agent 'nosuch'"),
        "empty prompt": (["--prompt", "   "], "non-empty"),
        "unknown words": (["--prompt", "zebra went to the park"], "['zebra']"),
        "special token": (["--prompt", "<pad> alice"], "'<pad>'"),
        "bad seed": (["--seed", "-1"], "non-negative integer"),
    }
    for name, (extra, expected) in cases.items():
        argv = ["graph", "--prompt", PROMPT, "--out", "never", *extra]
        proc = subprocess.run(
            [sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert "RC 2 HEAVY []" in proc.stdout, (name, proc.stdout, proc.stderr)
        assert expected in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert not (ROOT / "never").exists()


@pytest.fixture(scope="module")
def measured():
    """One real measurement of the README's prompt (K = 8, B = 2), kept to feed the failure cases."""
    from benchmarks import graph_export

    return graph_export._measure("toy-4l", PROMPT, "greedy", 2, 8, 0, None)


def graph_argv(*extra: str) -> list[str]:
    return ["graph", "--prompt", PROMPT, "--agent", "greedy", "--k", "8", "--budget", "2", *extra]


@pytest.mark.slow
@needs_toy
def test_graph_with_relative_out_as_the_readme_writes_it(tmp_path, monkeypatch, capsys):
    """Defect 1: no --out (default graphs/), `--out graphs/` and a nested relative folder all work."""
    monkeypatch.chdir(tmp_path)
    assert main(graph_argv()) == 0
    printed = capsys.readouterr().out
    slugs = [p.name[: -len(".effects.json")] for p in (tmp_path / "graphs").glob("*.effects.json")]
    assert len(slugs) == 1 and f"slug={slugs[0]}" in printed and "--graph_file_dir graphs" in printed
    graph = json.loads((tmp_path / "graphs" / f"{slugs[0]}.json").read_text())
    assert any("acd" in n for n in graph["nodes"])
    meta = json.loads((tmp_path / "graphs" / "graph-metadata.json").read_text())
    assert [g["slug"] for g in meta["graphs"]] == slugs
    assert not [p for p in (tmp_path / "graphs").iterdir() if p.name.startswith(".")]  # no staging left

    assert main(graph_argv("--out", "graphs/", "--slug", "second")) == 0
    meta = json.loads((tmp_path / "graphs" / "graph-metadata.json").read_text())
    assert sorted(g["slug"] for g in meta["graphs"]) == sorted([*slugs, "second"])
    assert main(graph_argv("--out", "deep/er/g", "--slug", "third")) == 0
    assert (tmp_path / "deep/er/g/third.effects.json").is_file()


@pytest.mark.slow
@needs_toy
@pytest.mark.parametrize("where", ["create_graph_files", "merge"])
def test_a_failed_graph_export_leaves_nothing_behind(tmp_path, monkeypatch, measured, where):
    """Defect 1: a failure while writing (circuit-tracer's writer, or the last step) leaves no partial graph, no
    folder it created, and an existing folder exactly as it was."""
    import importlib

    from benchmarks import graph_export

    ctgf = importlib.import_module(
        "circuit_tracer.utils.create_graph_files"
    )  # (the package re-exports the name)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(graph_export, "_measure", lambda *a, **k: measured)
    assert main(graph_argv("--out", "graphs", "--slug", "kept")) == 0
    before = tree(tmp_path / "graphs")

    if where == "create_graph_files":
        real = ctgf.create_graph_files

        def broken(
            graph, slug, output_path, **kw
        ):  # writes its graph file, then fails (as on a relative path)
            real(graph, slug, output_path, **kw)
            raise AssertionError("Could not find")

        monkeypatch.setattr(ctgf, "create_graph_files", broken)
    else:

        def broken_merge(path, entry):
            raise OSError(28, "No space left on device")  # no filename: not an --out error, shown as is

        monkeypatch.setattr(graph_export, "_merge_metadata", broken_merge)
    error = AssertionError if where == "create_graph_files" else OSError
    with pytest.raises(error):
        main(graph_argv("--out", "graphs", "--slug", "broken"))
    assert tree(tmp_path / "graphs") == before
    assert sorted(p.name for p in (tmp_path / "graphs").iterdir()) == sorted(before)
    with pytest.raises(error):
        main(graph_argv("--out", "fresh/sub", "--slug", "broken"))
    assert not (tmp_path / "fresh").exists()


# ---------------------------------------------------------------------------------------------- unwritable --out
@needs_proc
def test_graph_and_bench_out_under_proc_is_one_line(tmp_path, capsys):
    """Defect 2: `--out /proc/x` (and /sys/x) ends in one line and exit 2, not a traceback."""
    tables = tmp_path / "tables"
    save_table(synthetic_table("ioi", "test", 2, seed=1), tables / "ioi-test.npz")
    for out in ("/proc/acd-x", "/sys/acd-x"):
        if not Path(out).parent.is_dir():
            continue
        capsys.readouterr()
        assert (
            main(bench_args(tables, Path(out), "--agents", "greedy", "--protocol", "zero-shot", *FEATURES))
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert err.startswith("acd bench: error: --out") and "\n" not in err
        assert "cannot be written" in err or "not writable" in err  # (not root: refused before any work)
    assert main(graph_argv("--out", "/proc/acd-x")) == 2  # fails before the model loads
    err = capsys.readouterr().err.strip()
    assert err.startswith("acd graph: error: --out '/proc/acd-x'") and "\n" not in err
    assert "cannot be written" in err or "not writable" in err


@pytest.mark.slow
@needs_toy
@needs_proc
def test_tables_build_out_under_proc_is_one_line(capsys):
    argv = ["tables", "build", "--task", "counting", "--n", "1", "--k", "4", "--no-progress"]
    assert main([*argv, "--out", "/proc/acd-x.npz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("acd tables: error: --out '/proc/acd-x.npz'") and "\n" not in err
    assert "cannot be written" in err or "not writable" in err


def test_output_error_names_only_errors_on_the_output_path(tmp_path):
    out = tmp_path / "run"
    on = [
        OSError(2, "No such file or directory", str(out)),
        OSError(13, "Permission denied", str(out / "results.jsonl")),
        OSError(2, "No such file or directory", str(tmp_path)),  # a folder above it
        OSError(28, "No space left on device", str(tmp_path / ".run.shards" / "s.npz")),  # a helper beside it
    ]
    for e in on:
        error = output_error(e, out)
        assert isinstance(error, ACDError) and f"--out {str(out)!r} cannot be written" in str(error), e
    assert output_error(OSError(2, "No such file", str(tmp_path / "other")), out) is None
    assert output_error(OSError(28, "No space left on device"), out) is None  # no path: not ours to judge
    rel = output_error(OSError(2, "x", os.path.abspath("rel/dir/f")), "rel/dir")
    assert rel is not None and "'rel/dir'" in str(rel)


# ---------------------------------------------------------------------------------------------- tables hint
def follow(hint: str, tmp_path: Path, capsys, extra: tuple[str, ...] = FEATURES) -> None:
    """Run every command of a printed hint as printed (mv, then acd bench, with a few quick options added)."""
    assert "acd bench" in hint, hint
    for command in hint.split(": ", 1)[1].split("; or ")[0].split(" && "):
        words = shlex.split(command.split(" (")[0])
        if words[0] == "mv":
            shutil.move(words[1], words[2])
            continue
        assert words[:2] == ["acd", "bench"], command
        quick = ["--agents", "greedy,ranker", "--seeds", "1", "--reps", "50", "--no-progress", *extra]
        assert main([*words[1:], *quick, "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err


def test_tables_build_hint_works_as_printed(tmp_path, monkeypatch, capsys):
    """Defect 3: the hint after `acd tables build` runs as printed, whatever the file is called."""
    from benchmarks.tables_cli import usage_hint

    monkeypatch.chdir(tmp_path)
    out = Path("out")
    save_table(synthetic_table("ioi", "test", 3, seed=1), out / "t.npz")  # the issue's --out out/t.npz
    hint = usage_hint(out / "t.npz", "synthetic", "ioi", "test", K)
    assert "mv out/t.npz out/ioi-test.npz" in hint and 'tables="out/t.npz"' in hint
    shutil.move("out/t.npz", "out/ioi-test.npz")  # what the hint says to do
    hint = usage_hint(out / "ioi-test.npz", "synthetic", "ioi", "test", K)
    assert hint.startswith("use it with: acd bench --tables out --tasks ioi --model synthetic --k 16")
    follow(hint, tmp_path, capsys)  # a test table alone: the protocols that need no train table

    save_table(synthetic_table("ioi", "train", 4, seed=2), out / "ioi-train.npz")
    hint = usage_hint(out / "ioi-train.npz", "synthetic", "ioi", "train", K)
    assert "--protocol" not in hint  # train and test tables: the default protocols (train-test fits) run
    shutil.rmtree(tmp_path / "run")
    follow(hint, tmp_path, capsys)

    only_train = Path("other")
    save_table(synthetic_table("ioi", "train", 4, seed=2), only_train / "ioi-train.npz")
    hint = usage_hint(only_train / "ioi-train.npz", "synthetic", "ioi", "train", K)
    assert "build ioi-test.npz beside it" in hint and "--split test" in hint


@pytest.mark.slow
@needs_toy
def test_the_issues_tables_build_then_its_hint(tmp_path, monkeypatch, capsys):
    """Defect 3 as the issue ran it: `acd tables build ... --out out/t.npz`, then the printed commands."""
    monkeypatch.chdir(tmp_path)
    argv = ["tables", "build", "--model", "toy-4l", "--task", "ioi", "--split", "test", "--out", "out/t.npz"]
    assert main([*argv, "--n", "2", "--k", "8", "--no-progress"]) == 0
    hint = capsys.readouterr().out.strip().splitlines()[-1]
    assert "mv out/t.npz out/ioi-test.npz" in hint
    shutil.move("out/t.npz", "out/ioi-test.npz")
    from benchmarks.tables_cli import usage_hint

    follow(usage_hint(Path("out/ioi-test.npz"), "toy-4l", "ioi", "test", 8), tmp_path, capsys, extra=())


# ---------------------------------------------------------------------------------------------- bench summary
def test_bench_summary_counts_every_planned_episode(tmp_path, capsys):
    """Defect 5: n/a episodes are counted (and said) so that the summary adds up to the progress bar's total."""
    tables = tmp_path / "tables"
    save_table(synthetic_table("ioi", "test", 3, seed=1), tables / "ioi-test.npz")
    argv = bench_args(
        tables, tmp_path / "r", "--agents", "greedy,ranker", "--protocol", "zero-shot", *FEATURES
    )
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    # 2 agents × 2 seeds × 3 prompts planned: greedy runs 6, ranker (needs a fit) is n/a for its 6
    assert last.startswith("6 episodes run, 0 already done, 6 not applicable (n/a);"), last
    assert main(argv) == 0  # resumed: the n/a agent is still accounted for
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("0 episodes run, 6 already done, 6 not applicable (n/a);"), last


def test_runner_counts_add_up_to_the_progress_total(tmp_path, monkeypatch):
    from benchmarks import runner as runner_mod
    from benchmarks.bench import BenchConfig, run_bench

    totals = []
    real = runner_mod.Runner.run

    def spy(self, sequences, executor=None):
        totals.append(sum(len(s.order) for s in sequences))
        return real(self, sequences, executor)

    monkeypatch.setattr(runner_mod.Runner, "run", spy)
    tables = tmp_path / "tables"
    save_table(synthetic_table("ioi", "test", 3, seed=1), tables / "ioi-test.npz")
    cfg = BenchConfig(
        model="synthetic",
        tables=str(tables),
        k=K,
        budget=4,
        seeds=[0, 1],
        agents=["greedy", "ranker", "random"],
        protocols=["zero-shot", "stream"],
        reps=50,
        progress=False,
        out=str(tmp_path / "r"),
        tracks=["features"],
    )
    result = run_bench(cfg, echo=lambda s: None)
    assert sum(result["counts"].values()) == totals[0] == 3 * 2 * 2 * 3
    assert result["counts"]["na"] == 2 * 2 * 3  # ranker, both protocols


# ---------------------------------------------------------------------------------------------- TensorBoard
def test_every_tensorboard_tag_has_a_description(tmp_path):
    """Item 11: TensorBoard shows a description with every tag (summary metadata), and a text panel."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    from benchmarks.tb import TAG_DESCRIPTIONS, write_tensorboard

    episode = {
        "kind": "episode",
        "protocol": "stream",
        "agent": "a",
        "seed": 0,
        "prompt_id": "p",
        "n_steps": 2,
    }
    episode["metrics"] = {"curve": [0.5, 1.0], "efficiency": 1.0, "auc": 0.7, "recall": 1.0, "steps80": 2}
    steps = [
        {
            "kind": "step",
            "agent": "a",
            "protocol": "stream",
            "prompt_id": "p",
            "seed": 0,
            "step": t,
            "reward": 0.1,
        }
        for t in (1, 2)
    ]
    steps[0]["diag"] = {"aif/efe": -1.0, "aif/belief_entropy": 0.5, "aif/custom_thing": 2.0}
    log = {"kind": "log", "agent": "a", "records": [{"step": 1, "losses/value_loss": 0.3}]}
    write_tensorboard([episode, *steps, log], tmp_path / "tb", keep_memory=("stream",))
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path / "tb"))
    mux.Reload()
    seen = set()
    for run, tags in mux.Runs().items():
        for tag in tags.get("tensors", []):
            meta = mux.SummaryMetadata(run, tag)
            if meta.plugin_data.plugin_name != "scalars":
                continue
            seen.add(tag)
            assert len(meta.summary_description) > 30, (run, tag, meta.summary_description)
            if tag in TAG_DESCRIPTIONS:
                assert meta.summary_description == TAG_DESCRIPTIONS[tag]
    assert {"discovery/auc", "stream/efficiency", "aif/efe", "aif/custom_thing", "losses/value_loss"} <= seen
    assert (
        "about" in mux.Runs()
        and "discovery/auc"
        in mux.Tensors("about", "about/tags/text_summary")[0].tensor_proto.string_val[0].decode()
    )
