"""scripts/train_zoo.py: a quick build runs, loads, is bit-reproducible, and never leaves a partial model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = [
    "config.json",
    "model.safetensors",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "transcoders/layer_0.safetensors",
    "transcoders/layer_1.safetensors",
]
TIMING_KEYS = ("model_train_s", "transcoder_train_s")  # wall-clock times recorded in config.json


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def quick_build(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "scripts/train_zoo.py", "--quick", "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "quick"
    proc = quick_build(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout
    return out


@pytest.mark.slow  # a subprocess build: 10-30 s on 2 busy cores
def test_quick_build_writes_a_complete_model(built):
    assert files(built) == EXPECTED
    config = json.loads((built / "config.json").read_text())
    assert config["arch"]["n_layers"] == 2
    assert set(config["build"]["transcoders"]) == {"0", "1"}
    assert [p.name for p in built.parent.iterdir()] == ["quick"]  # no temporary directory left behind


@pytest.mark.slow  # a subprocess build: 10-30 s on 2 busy cores
def test_quick_build_loads_as_a_replacement_model(built):
    import torch

    from acd_env.models.toy import load_toy

    model = load_toy("quick", root=built)
    tokens = model.ensure_tokenized("up one two")
    assert tokens.tolist()[0] == model.tokenizer.bos_token_id and len(tokens) == 4
    logits, acts = model.feature_intervention(tokens, [(0, 1, 0, 0.0)], freeze_attention=False)
    assert logits.shape == (1, 4, model.cfg.d_vocab) and torch.isfinite(logits).all()
    assert acts.shape == (2, 4, 64)


@pytest.mark.slow
def test_two_quick_builds_are_identical(built, tmp_path):
    """With one thread the build is bit-reproducible: every weight and tokenizer file byte-identical; the
    config differs only in the wall-clock timings it records."""
    again = tmp_path / "again"
    proc = quick_build(again)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert files(again) == files(built)
    for name in files(built):
        if name != "config.json":
            assert (again / name).read_bytes() == (built / name).read_bytes(), name
    first, second = (json.loads((d / "config.json").read_text()) for d in (built, again))
    for config in (first, second):
        for key in TIMING_KEYS:
            config["build"].pop(key)
    assert first == second


def _start_and_stop(out: Path, sig: int) -> subprocess.Popen:
    """Start a quick build, wait until it is training (its temporary directory exists), then signal it."""
    cmd = [sys.executable, "-u", "scripts/train_zoo.py", "--quick", "--out", str(out)]
    proc = subprocess.Popen(  # SIGINT back to default: a runner that started us in the background ignores it
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # "model step 0 ..." is printed after the first training step
            if line.startswith("model step"):
                break
        else:
            pytest.fail(f"the build ended before training (rc {proc.wait()})")
        assert any(p.name.startswith(".") for p in out.parent.iterdir()), "no temporary build directory"
        proc.send_signal(sig)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc


@pytest.mark.slow  # a subprocess build: 10-30 s on 2 busy cores
def test_killed_build_leaves_no_output(tmp_path):
    out = tmp_path / "killed"
    proc = _start_and_stop(out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()


@pytest.mark.slow  # a subprocess build: 10-30 s on 2 busy cores
def test_interrupted_build_leaves_nothing(tmp_path):
    out = tmp_path / "interrupted"
    proc = _start_and_stop(out, signal.SIGINT)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary directory


def test_failed_build_keeps_the_previous_model(tmp_path, script):
    """A build that fails part-way leaves an existing model untouched and removes its temporary files."""
    train_zoo = script("train_zoo")
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text('{"previous": true}\n')

    def log(message: str) -> None:
        if message.startswith("model step"):
            raise RuntimeError("simulated failure during training")

    hp = dict(train_zoo.RECIPES["toy-4l"], **train_zoo.QUICK)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="simulated failure"):
        train_zoo.build("toy-4l", hp, out, log=log)
    assert time.perf_counter() - start < 60
    assert files(out) == ["config.json"]
    assert (out / "config.json").read_text() == '{"previous": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
