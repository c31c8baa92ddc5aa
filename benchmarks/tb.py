"""TensorBoard event files from `results.jsonl`: one run per (protocol, agent), at `tb/<protocol>/<agent>`.

Written after the episodes have run, from the results file (so a resumed run gives the same events, never
duplicates), with torch's `SummaryWriter`. `tensorboard --logdir <run dir>/tb` shows:

| tag | x axis | value |
|---|---|---|
| `discovery/reward` | global step (steps over the run's episodes, ordered by seed, fold, prompt order) | reward of that step |
| `discovery/cumulative_efficiency` | global step | the episode's cumulative efficiency after that step |
| `discovery/efficiency`, `discovery/auc`, `discovery/recall`, `discovery/steps80` | global step at the episode's end | per-episode metrics |
| `discovery/mean_curve` | step within the episode (1..B) | cumulative efficiency, mean over the run's episodes |
| `aif/belief_entropy`, `aif/efe`, any other `diagnostics()` scalar | global step | the agent's diagnostics after that step |
| `stream/efficiency` | prompt index in the seed's order | efficiency, mean over seeds (protocols that keep memory: the learning curve) |
| `losses/*` … | the agent's training step | the agent's `training_log()` (PPO), in the run `train/<agent>` |
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def run_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _episode_order(e: Mapping) -> tuple:
    return (int(e["seed"]), str(e.get("fold", "")), int(e.get("order", 0)), str(e["prompt_id"]))


def write_tensorboard(
    rows: Sequence[Mapping], out: str | Path, keep_memory: Sequence[str] = ("stream",)
) -> Path:
    """Write every run's event file under `out` (replaced if present). keep_memory: protocols whose prompt order
    is a learning curve (`stream/efficiency`)."""
    from torch.utils.tensorboard import SummaryWriter

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    episodes: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    steps: dict[tuple, list[Mapping]] = defaultdict(list)
    logs: list[Mapping] = []
    for r in rows:
        kind = r.get("kind")
        if kind == "episode":
            episodes[(r["protocol"], r["agent"])].append(r)
        elif kind == "step":
            steps[(r["agent"], r["protocol"], r["prompt_id"], int(r["seed"]))].append(r)
        elif kind == "log":
            logs.append(r)
    for (protocol, agent), eps in sorted(episodes.items()):
        writer = SummaryWriter(log_dir=str(out / run_name(protocol) / run_name(agent)))
        global_step = 0
        curves = []
        by_index: dict[int, list[float]] = defaultdict(list)
        for e in sorted(eps, key=_episode_order):
            curve = e["metrics"]["curve"]
            curves.append(curve)
            for s in sorted(
                steps.get((agent, protocol, e["prompt_id"], int(e["seed"])), []), key=lambda s: s["step"]
            ):
                t = int(s["step"])
                writer.add_scalar("discovery/reward", float(s["reward"]), global_step + t)
                writer.add_scalar("discovery/cumulative_efficiency", float(curve[t - 1]), global_step + t)
                for tag, value in sorted((s.get("diag") or {}).items()):
                    writer.add_scalar(tag, float(value), global_step + t)
            global_step += int(e["n_steps"])
            m = e["metrics"]
            for name in ("efficiency", "auc", "recall", "steps80"):
                writer.add_scalar(f"discovery/{name}", float(m[name]), global_step)
            by_index[int(e.get("order", 0))].append(float(m["efficiency"]))
        for t, value in enumerate(np.mean(np.asarray(curves, dtype=np.float64), axis=0), start=1):
            writer.add_scalar("discovery/mean_curve", float(value), t)
        if protocol in keep_memory:
            for i in sorted(by_index):
                writer.add_scalar("stream/efficiency", float(np.mean(by_index[i])), i)
        writer.close()
    for log in sorted(logs, key=lambda r: r["agent"]):
        writer = SummaryWriter(log_dir=str(out / "train" / run_name(log["agent"])))
        for rec in log["records"]:
            for tag, value in sorted(rec.items()):
                if tag != "step":
                    writer.add_scalar(tag, float(value), int(rec["step"]))
        writer.close()
    return out
