"""Scale-out on a real local Ray cluster (issue 9) and resumable table builds (local and Ray).

One Ray instance (`ray.init(num_cpus=2)`) serves the module: in-process builds and benches reuse it, and
subprocesses join it with `--ray-address`. Table parity, a worker killed mid-prompt, a driver killed
mid-build (SIGKILL, then re-run), bench parity, and the clear errors of `--executor ray`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_timing import assert_same_leaderboards, results_without_timing

from acd_env.case import CaseSettings
from acd_env.table_build import TableJob, build_table_file, shard_dir
from acd_env.tables import load_table
from benchmarks.cli import main as acd
from benchmarks.executors import ExecutorOptions

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

TASK, N, K = "counting", 4, 16
SETTINGS = CaseSettings(n_candidates=K)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The table built locally, in this process."""
    out = tmp_path_factory.mktemp("ref") / "ref.npz"
    return load_table(build_table_file("toy-4l", TASK, "test", out, SETTINGS, n=N))


def assert_same_table(path: Path, reference) -> None:
    table = load_table(path)
    assert [c.prompt.id for c in table.cases] == [c.prompt.id for c in reference.cases]
    for name, values in reference.measurements.items():
        np.testing.assert_allclose(table.measurements[name], values, rtol=0, atol=1e-6, err_msg=name)
    for a, b in zip(table.cases, reference.cases, strict=True):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-6)
    timing = ("build_seconds",)
    assert {k: v for k, v in table.meta.items() if k not in timing} == {
        k: v for k, v in reference.meta.items() if k not in timing
    }
    assert not shard_dir(path).exists()


def test_ray_table_equals_local(cluster, reference, tmp_path):
    from benchmarks.ray_tables import build_table_on_ray

    out = build_table_on_ray(
        TableJob("toy-4l", TASK, "test", SETTINGS, N), tmp_path / "t.npz", ExecutorOptions("ray", workers=2)
    )
    assert_same_table(out, reference)


def test_worker_killed_mid_prompt_is_retried(cluster, reference, tmp_path):
    """SIGKILL a worker while it measures a prompt: the prompt is retried on a fresh worker, none is lost or
    duplicated (prompts are written one per shard, so a duplicate would show as an extra shard row)."""
    from benchmarks.ray_tables import build_table_on_ray

    messages, killed = [], []

    def kill_when_measuring(pid: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return
            if b"measure" in title:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.005)

    def echo(message: str) -> None:
        messages.append(message)
        if message.startswith("Ray: 2 workers"):
            pid = int(message.split("pids ")[1].split(",")[0])
            threading.Thread(target=kill_when_measuring, args=(pid,), daemon=True).start()

    out = build_table_on_ray(
        TableJob("toy-4l", TASK, "test", SETTINGS, N),
        tmp_path / "t.npz",
        ExecutorOptions("ray", workers=2),
        shard_size=1,
        echo=echo,
    )
    assert killed, "the worker was not caught measuring"
    assert any("retried on a fresh worker" in m for m in messages), messages
    assert_same_table(out, reference)


def _build_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.cli", "tables", "build", "--task", TASK, "--n", str(N), "--k",
            str(K), "--out", str(out), "--shard-size", "1", "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_driver_killed_resumes_from_shards(cluster, reference, tmp_path, executor):
    """SIGKILL `acd tables build` once a shard is on disk; the re-run resumes from the shards (does not measure
    them again) and writes the same table."""
    out = tmp_path / "t.npz"
    extra = ("--executor", "ray", "--ray-address", cluster, "--workers", "2") if executor == "ray" else ()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        _build_cmd(out, *extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    shards = shard_dir(out)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not list(shards.glob("shard-*.npz")):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    before = {p.name for p in shards.glob("shard-*.npz")}
    assert 1 <= len(before) < N
    done = subprocess.run(_build_cmd(out, *extra), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_table(out, reference)


def test_resume_refuses_shards_of_other_settings(tmp_path):
    from acd_env.errors import TableError

    out = tmp_path / "t.npz"
    shard_dir(out).mkdir()
    table = build_table_file("toy-4l", TASK, "test", tmp_path / "one.npz", SETTINGS, n=1)
    other = load_table(table)
    other.meta["steering_scale"] = 2.0
    other.meta["prompt_indices"] = [0]
    from acd_env.tables import save_table

    save_table(other, shard_dir(out) / "shard-00000.npz")
    with pytest.raises(TableError, match=r"other settings.*steering_scale.*--restart"):
        build_table_file("toy-4l", TASK, "test", out, SETTINGS, n=N)
    assert not out.exists()
    build_table_file("toy-4l", TASK, "test", out, SETTINGS, n=1, restart=True)
    assert len(load_table(out)) == 1


def test_bench_on_ray_equals_local(cluster, tmp_path):
    from benchmarks.bench import BenchConfig, run_bench

    common = dict(
        agents=["random", "greedy", "ucb", "ranker", "aif"],
        protocols=["zero-shot", "train-test"],
        seeds=[0, 1],
        prompts_per_task=2,
        tasks=["counting", "ioi"],
        reps=200,
        progress=False,
    )
    local = run_bench(BenchConfig(out=str(tmp_path / "local"), **common), echo=lambda s: None)
    remote = run_bench(
        BenchConfig(out=str(tmp_path / "ray"), executor="ray", workers=2, **common), echo=lambda s: None
    )
    assert remote["counts"] == local["counts"]
    assert_same_leaderboards(remote["out"], local["out"])

    def rows(out: Path) -> list[str]:  # the same rows, in another order (sequences finish in any order)
        return sorted(json.dumps(r, sort_keys=True) for r in results_without_timing(out / "results.jsonl"))

    assert rows(remote["out"]) == rows(local["out"])


def test_executor_errors():
    with pytest.raises(ValueError, match=r"unknown executor 'dask'.*local, ray"):
        ExecutorOptions("dask")
    with pytest.raises(ValueError, match="--workers needs --executor ray"):
        ExecutorOptions("local", workers=2)
    with pytest.raises(ValueError, match="--workers must be a positive integer, got 0"):
        ExecutorOptions("ray", workers=0)


def test_unreachable_address_fails_fast(capsys):
    start = time.monotonic()
    code = acd(
        ["tables", "build", "--task", TASK, "--n", "1", "--executor", "ray", "--ray-address", "127.0.0.1:1"]
    )
    assert code == 2
    assert time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert "no Ray cluster answers at --ray-address '127.0.0.1:1'" in err


def test_missing_ray_fails_fast(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from benchmarks.cli import main\n"
        f"sys.exit(main(['bench', '--executor', 'ray', '--out', {str(tmp_path / 'x')!r}]))"
    )
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--executor ray needs Ray, which is not installed" in done.stderr
    assert time.monotonic() - start < 60
