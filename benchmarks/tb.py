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

Circuit-track runs (`circuit/<protocol>/<agent>`, benchmarks.circuit_report; `write_circuit_steps` here adds):

| tag | x axis | value |
|---|---|---|
| `aif/belief_entropy`, `aif/efe`, any other `diagnostics()` scalar | global step | the agent's diagnostics after that step |
| `circuit/aif_posterior_top` (TEXT tab) | episode index (ordered by seed, fold, prompt order) | a table of the episode's steps: the query (kind, toggle, candidate, measured score) and the agent's 5 likeliest members after it, with P(member) (step rows' `posterior_top`) |

Every tag carries its description (TensorBoard shows it under the chart's ⓘ), written in the summary metadata of
the tag's first event (`TAG_DESCRIPTIONS`, `CIRCUIT_TAG_DESCRIPTIONS` on circuit runs), and the run `about` holds
these tables as a text panel (TEXT tab).
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

POSTERIOR_TOP_TAG = "circuit/aif_posterior_top"
TAG_DESCRIPTIONS = {
    "discovery/reward": "Reward of each step: the KL divergence (nats) its intervention caused in the next-token "
    "distribution. x: global step over the run's episodes.",
    "discovery/cumulative_efficiency": "Within an episode, the ablation effect of the features chosen so far ÷ "
    "the oracle's total over B steps (1 = as good as the oracle). x: global step.",
    "discovery/efficiency": "Discovery efficiency of each episode: Σ ablation KL of the B chosen features ÷ Σ of "
    "the B largest (oracle = 1). x: global step at the episode's end.",
    "discovery/auc": "Anytime AUC of each episode: area under its cumulative-effect curve ÷ the oracle's "
    "(rewards finding the big features early). x: global step at the episode's end.",
    "discovery/recall": "recall@B of each episode: share of the oracle's top-B features the agent chose. x: "
    "global step at the episode's end.",
    "discovery/steps80": "Steps the episode took to reach 80 % of the oracle's B-step total (B + 1 if never). "
    "x: global step at the episode's end.",
    "discovery/mean_curve": "Cumulative efficiency after each step of an episode, mean over the run's episodes. "
    "x: step within the episode (1..B).",
    "stream/efficiency": "Efficiency on the n-th prompt of the stream, mean over seeds; the agent keeps its "
    "memory from prompt to prompt, so a rising line means it learns. x: prompt index.",
    "aif/belief_entropy": "Active inference: entropy (nats) of the agent's beliefs about the candidates' "
    "importance after each step; falls as it learns what matters. x: global step.",
    "aif/efe": "Active inference: expected free energy of the action the agent chose (lower = preferred). "
    "x: global step.",
}

# on circuit-track runs (`circuit/<protocol>/<agent>`): the same diagnostics mean membership, not importance
CIRCUIT_TAG_DESCRIPTIONS = {
    "aif/belief_entropy": "Circuit-track active inference: mean entropy (nats) of the agent's beliefs about the "
    "candidates' circuit membership after each step; falls as its queries settle who is in. x: global step over "
    "the run's episodes.",
    "aif/efe": "Circuit-track active inference: expected free energy of the query the agent chose (lower = "
    "preferred). x: global step.",
    POSTERIOR_TOP_TAG: "Circuit-track active inference, one table per episode (x: its index in the run's order): "
    "every step's query (kind keep/ablate, toggle in/out of the working circuit, candidate, the score it "
    "measured) and the agent's 5 likeliest circuit members after it, each with its posterior P(member) = "
    "P(minor or core member), highest first: how the queries move its beliefs about the circuit.",
}


def describe(tag: str) -> str:
    """The description shown with a tag in TensorBoard."""
    if tag in TAG_DESCRIPTIONS:
        return TAG_DESCRIPTIONS[tag]
    if tag.startswith("losses/") or tag.startswith("train/"):
        return f"The agent's own training log (training_log()): {tag.split('/', 1)[1]}. x: its training step."
    return f"The agent's diagnostics() value {tag!r} after each step. x: global step."


class _Writer:
    """torch's SummaryWriter (a new one for `log_dir`, or `writer`), writing each tag's description
    (`descriptions`, else `describe`) into the summary metadata of its first event."""

    def __init__(
        self,
        log_dir: Path | None = None,
        *,
        writer: Any = None,
        descriptions: Mapping[str, str] | None = None,
    ) -> None:
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(log_dir))
        self.writer = writer
        self.descriptions = dict(descriptions or {})
        self.described: set[str] = set()

    def describe(self, tag: str) -> str:
        return self.descriptions.get(tag) or describe(tag)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if tag in self.described:
            self.writer.add_scalar(tag, value, step)
            return
        # protobuf-generated module: Summary is made at import time, so pyright cannot see it
        from tensorboard.compat.proto.summary_pb2 import Summary  # pyright: ignore[reportAttributeAccessIssue]
        from tensorboard.plugins.scalar.metadata import create_summary_metadata

        self.described.add(tag)
        meta = create_summary_metadata(display_name=tag, description=self.describe(tag))
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value), metadata=meta)])
        self.writer._get_file_writer().add_summary(summary, step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        """A markdown text summary under exactly `tag` (torch's add_text would append "/text_summary")."""
        # protobuf-generated modules (see add_scalar)
        from tensorboard.compat.proto.summary_pb2 import Summary  # pyright: ignore[reportAttributeAccessIssue]
        from tensorboard.compat.proto.tensor_pb2 import TensorProto  # pyright: ignore[reportAttributeAccessIssue]
        from tensorboard.compat.proto.tensor_shape_pb2 import (
            TensorShapeProto,  # pyright: ignore[reportAttributeAccessIssue]
        )
        from tensorboard.plugins.text.metadata import create_summary_metadata

        description = "" if tag in self.described else self.describe(tag)
        self.described.add(tag)
        meta = create_summary_metadata(display_name=tag, description=description)
        shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)])
        tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")], tensor_shape=shape)
        summary = Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)])
        self.writer._get_file_writer().add_summary(summary, step)

    def close(self) -> None:
        self.writer.close()


def about_text() -> str:
    """The text panel of the run `about`: every tag and what it means."""
    lines = ["| tag | meaning |", "|---|---|"]
    lines += [f"| `{tag}` | {text} |" for tag, text in TAG_DESCRIPTIONS.items()]
    lines.append("| `losses/*` | the agent's own training log (PPO), in the run `train/<agent>` |")
    lines += [f"| `{tag}` (circuit runs) | {text} |" for tag, text in CIRCUIT_TAG_DESCRIPTIONS.items()]
    return "Runs are `<protocol>/<agent>` (circuit track: `circuit/<protocol>/<agent>`). " + "\n".join(
        ["", *lines]
    )


def run_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _episode_order(e: Mapping) -> tuple:
    return (int(e["seed"]), str(e.get("fold", "")), int(e.get("order", 0)), str(e["prompt_id"]))


def write_tensorboard(
    rows: Sequence[Mapping], out: str | Path, keep_memory: Sequence[str] = ("stream",)
) -> Path:
    """Write every run's event file under `out` (replaced if present). keep_memory: protocols whose prompt order
    is a learning curve (`stream/efficiency`)."""
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
        writer = _Writer(out / run_name(protocol) / run_name(agent))
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
        writer = _Writer(out / "train" / run_name(log["agent"]))
        for rec in log["records"]:
            for tag, value in sorted(rec.items()):
                if tag != "step":
                    writer.add_scalar(tag, float(value), int(rec["step"]))
        writer.close()
    if episodes or logs:
        from torch.utils.tensorboard import SummaryWriter

        about = SummaryWriter(log_dir=str(out / "about"))
        about.add_text("about/tags", about_text(), 0)
        about.close()
    return out


def _fmt_score(value: Any) -> str:
    return "—" if value is None else f"{float(value):.3f}"


def posterior_table(episode: Mapping, steps: Sequence[Mapping]) -> str:
    """Markdown for `circuit/aif_posterior_top`: one circuit episode's steps, each query beside the agent's
    likeliest members after it (step rows' `posterior_top`)."""
    head = f"prompt `{episode.get('prompt_id', '?')}`, seed {episode.get('seed', '?')}"
    if episode.get("fold") not in (None, ""):
        head += f", fold {episode['fold']}"
    eff = (episode.get("metrics") or {}).get("efficiency")
    if eff is not None:
        head += f", circuit efficiency {float(eff):.3f}"
    lines = [head, "", "| step | query | toggle | candidate | score | top members: candidate (P(member)) |"]
    lines.append("|---|---|---|---|---|---|")
    for s in sorted(steps, key=lambda s: int(s["step"])):
        top = ", ".join(f"{int(c)} ({float(p):.3f})" for c, p in s.get("posterior_top") or [])
        if s.get("invalid"):
            query = ["invalid", "", "", ""]
        else:
            kind = str(s.get("query", "?")) + (" (repeat, free)" if s.get("repeat") else "")
            query = [kind, str(s.get("toggle", "")), str(s.get("candidate", "")), _fmt_score(s.get("score"))]
        lines.append("| " + " | ".join([str(s["step"]), *query, top]) + " |")
    return "\n".join(lines)


def write_circuit_steps(
    writer: Any, episodes: Sequence[Mapping], episode_steps: Sequence[Sequence[Mapping]]
) -> None:
    """Per-step rows of one circuit-track run into its open torch `SummaryWriter` (the caller closes it): every
    `diag` scalar at the global step (steps over the run's episodes, in the given order), and per episode the
    `circuit/aif_posterior_top` table when its step rows carry `posterior_top`. Descriptions:
    `CIRCUIT_TAG_DESCRIPTIONS`."""
    w = _Writer(writer=writer, descriptions=CIRCUIT_TAG_DESCRIPTIONS)
    global_step = 0
    for i, (episode, steps) in enumerate(zip(episodes, episode_steps, strict=True)):
        ordered = sorted(steps, key=lambda s: int(s["step"]))
        for s in ordered:
            for tag, value in sorted((s.get("diag") or {}).items()):
                w.add_scalar(tag, float(value), global_step + int(s["step"]))
        global_step += int(episode.get("n_steps", len(ordered)))
        if any("posterior_top" in s for s in ordered):
            w.add_text(POSTERIOR_TOP_TAG, posterior_table(episode, ordered), i)
