"""Offline by default (docs/design.md, Reliability rules): the embedded path never touches the network.

Fresh interpreters, with no Hugging Face environment variables set, block every socket connection and name
lookup before importing anything (a sitecustomize.py on PYTHONPATH, which logs any attempt): one loads the
default toy model, attributes a prompt and runs an intervention; one runs the `make demo` job. Both must
succeed with zero connection attempts; a control shows the block refuses a connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys

import torch
torch.set_num_threads(1)
from acd_env.models import load_model
from acd_env.attribution.graph import attribute_graph, node_influence, top_candidates, view

model = load_model("toy-4l")
tokens = model.ensure_tokenized("when alice and bob went to the park , alice gave a ball to")
graph = attribute_graph(model, tokens)
g = view(graph)
layer, pos, feat = (int(x) for x in g.features[top_candidates(node_influence(g), 1)[0]])
logits, acts = model.feature_intervention(tokens, [(layer, pos, feat, 0.0)], freeze_attention=False)
print(json.dumps({
    "n_features": len(g.features),
    "logits_finite": bool(torch.isfinite(logits).all()),
    "shape": list(logits.shape),
}))
sys.stdout.flush()
"""


@pytest.mark.slow  # a fresh interpreter imports torch and circuit-tracer: ~10-25 s on 2 busy cores
def test_embedded_path_makes_no_network_connection(tmp_path):
    env, log = _blocked_env(tmp_path, "embedded")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(log.read_text())["attempts"] == []
    assert result["n_features"] > 0 and result["logits_finite"]
    assert result["shape"][0] == 1


SITECUSTOMIZE = r'''
"""Loaded at start-up from PYTHONPATH: refuse every network connection and name lookup, and log the attempts."""
import atexit, json, os, socket

_attempts = []
_log = os.environ["ACD_NET_LOG"]


def _blocked(what):
    def refuse(*args, **kwargs):
        _attempts.append([what, repr(args[:2])[:200]])
        raise OSError(f"network blocked by test_offline: {what}")
    return refuse


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def connect(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect(self, address)
    return _blocked("socket.connect")(self, address)


def connect_ex(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect_ex(self, address)
    return _blocked("socket.connect_ex")(self, address)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.create_connection = _blocked("socket.create_connection")
socket.getaddrinfo = _blocked("socket.getaddrinfo")
socket.gethostbyname = _blocked("socket.gethostbyname")


@atexit.register
def _write():
    with open(_log, "w") as f:
        json.dump({"pid": os.getpid(), "attempts": _attempts}, f)
'''


def _blocked_env(tmp_path: Path, name: str) -> tuple[dict, Path]:
    site = tmp_path / "netblock"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_")) and k not in {"TOKENIZERS_PARALLELISM"}
    }
    log = tmp_path / f"{name}.net.json"
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), ACD_NET_LOG=str(log), OMP_NUM_THREADS="1")
    return env, log


@pytest.mark.slow  # the `make demo` job at reduced size in a fresh interpreter: ~20-30 s on 2 busy cores
def test_the_demo_job_runs_with_the_network_blocked(tmp_path):
    """`make demo` runs `acd bench` (every default agent and protocol); here with 1 seed and 1 prompt per task."""
    env, log = _blocked_env(tmp_path, "control")
    control = subprocess.run(  # the block works: a connection is refused before any packet is sent
        [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert control.returncode != 0 and "network blocked by test_offline" in control.stderr
    assert json.loads(log.read_text())["attempts"][0][0] == "socket.create_connection"

    env, log = _blocked_env(tmp_path, "demo")
    acd = Path(sys.executable).with_name("acd")
    cmd = [str(acd)] if acd.is_file() else [sys.executable, "-m", "benchmarks.cli"]
    out = tmp_path / "demo"
    args = ["bench", "--seeds", "1", "--prompts-per-task", "1", "--no-progress", "--out", str(out)]
    proc = subprocess.run([*cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(log.read_text())["attempts"] == []
    board = json.loads((out / "leaderboard.json").read_text())
    ran = {(r["protocol"], r["agent"]) for r in board["rows"] if r["status"] == "ok"}
    assert {("zero-shot", "oracle"), ("zero-shot", "greedy"), ("train-test", "ranker")} <= ran
    assert (out / "report.html").is_file() and any((out / "tb").rglob("events.out.tfevents.*"))
