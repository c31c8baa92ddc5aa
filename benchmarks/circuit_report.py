"""The circuit track in the report and in TensorBoard.

Report sections (plotly): the faithfulness curve f(C_k) against circuit size k per agent with its 95 % band
and the reference, one panel per protocol; and one prompt's query sequence — which sets each query-spending
agent tested and what came back.

TensorBoard (`tb/circuit/<protocol>/<agent>`):

| tag | x axis | value |
|---|---|---|
| `circuit/efficiency`, `circuit/auc`, `circuit/cmd`, `circuit/necessity` | episode index (ordered by seed, fold, prompt order) | per-episode metrics |
| `circuit/f_at_k` | circuit size k | mean f(C_k) over the run's episodes |
| `circuit/score` | global query index | the score (f or necessity) each query measured |
| `circuit/size` | global query index | the working circuit's size after each query |
| `aif/*` (diagnostics), `circuit/aif_posterior_top` | global step / episode index | per-step agent diagnostics and the posterior's top members (benchmarks.tb.write_circuit_steps) |
"""

from __future__ import annotations

import html
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from acd_env.circuit import K_GRID

if TYPE_CHECKING:
    from benchmarks.report import Section

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
TAG_HELP = {
    "circuit/efficiency": "Circuit efficiency: the declared circuit's AUC divided by the reference's (1 = reference).",
    "circuit/auc": "Circuit AUC: mean KL-faithfulness f(C_k) over k = 1, 2, 3, 5, 8, 13, 20.",
    "circuit/cmd": "Circuit-model distance: area under |1 - f| over the grid (0 = faithful at every size).",
    "circuit/necessity": "Mean KL(ablate C_k) / KL(keep none) over the grid.",
    "circuit/f_at_k": "Mean KL-faithfulness of the first k candidates of the declared circuit, against k.",
    "circuit/score": "The score each query measured: f for keep queries, necessity for ablate queries.",
    "circuit/size": "Size of the working circuit after each query.",
}


def _episode_order(e: Mapping) -> tuple:
    return (int(e["seed"]), str(e.get("fold", "")), int(e.get("order", 0)), str(e["prompt_id"]))


def write_circuit_tensorboard(rows: Sequence[Mapping], out: str | Path) -> Path:
    """Event files of the circuit track under `out/circuit` (replaced if present)."""
    from torch.utils.tensorboard import SummaryWriter

    from benchmarks.tb import run_name, write_circuit_steps

    out = Path(out) / "circuit"
    if out.exists():
        shutil.rmtree(out)
    episodes: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    steps: dict[tuple, list[Mapping]] = defaultdict(list)
    for r in rows:
        if r.get("kind") == "episode":
            episodes[(r["protocol"], r["agent"])].append(r)
        elif r.get("kind") == "step":
            steps[(r["agent"], r["protocol"], r["prompt_id"], int(r["seed"]))].append(r)
    for (protocol, agent), eps in sorted(episodes.items()):
        writer = SummaryWriter(log_dir=str(out / run_name(protocol) / run_name(agent)))
        writer.add_text("circuit/tags", "\n".join(f"- `{k}`: {v}" for k, v in TAG_HELP.items()))
        query = 0
        ordered = sorted(eps, key=_episode_order)
        for i, e in enumerate(ordered):
            m = e["metrics"]
            for name in ("efficiency", "auc", "cmd", "necessity"):
                writer.add_scalar(f"circuit/{name}", float(m[name]), i)
            for s in steps.get((agent, protocol, e["prompt_id"], int(e["seed"])), []):
                if s.get("invalid") or s.get("repeat"):
                    continue
                query += 1
                writer.add_scalar("circuit/score", float(s["score"]), query)
                writer.add_scalar("circuit/size", float(s["circuit_size"]), query)
        mean_f = np.mean([e["metrics"]["f"] for e in eps], axis=0)
        for k, v in zip(K_GRID, mean_f, strict=False):
            writer.add_scalar("circuit/f_at_k", float(v), k)
        run_steps = [steps.get((agent, protocol, e["prompt_id"], int(e["seed"])), []) for e in ordered]
        write_circuit_steps(writer, ordered, run_steps)
        writer.close()
    return out


def faithfulness_figure(
    rows: Sequence[Mapping], board: Sequence[Mapping], protocols: Sequence[str], agents: Sequence[str]
):
    """f(C_k) against k, per agent (mean with 95 % band) and the reference, one panel per protocol."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from benchmarks.circuit_leaderboard import reference_curve

    ran = [p for p in protocols if any(r["protocol"] == p and r["status"] == "ok" for r in board)]
    if not ran:
        return None
    fig = make_subplots(
        rows=1, cols=len(ran), subplot_titles=[f"protocol: {p}" for p in ran], shared_yaxes=True
    )
    colours = {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(agents)}
    ks = list(K_GRID)
    for c, protocol in enumerate(ran, start=1):
        ok = sorted(
            (r for r in board if r["protocol"] == protocol and r["status"] == "ok"),
            key=lambda r: -r["efficiency"],
        )
        for r in ok:
            colour = colours.get(r["agent"], "#444")
            lo = [r[f"f_{k}_lo"] for k in ks]
            hi = [r[f"f_{k}_hi"] for k in ks]
            fig.add_trace(
                go.Scatter(x=ks + ks[::-1], y=hi + lo[::-1], fill="toself", fillcolor=colour, opacity=0.12,
                           line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=r["agent"]),
                row=1, col=c,
            )  # fmt: skip
            fig.add_trace(
                go.Scatter(x=ks, y=[r[f"f_{k}"] for k in ks], mode="lines+markers", name=r["agent"],
                           line={"color": colour, "dash": "dash" if r["agent"] == "reference" else "solid"},
                           legendgroup=r["agent"], showlegend=c == 1),
                row=1, col=c,
            )  # fmt: skip
        ref = reference_curve([e for e in rows if e.get("protocol") == protocol])
        fig.add_trace(
            go.Scatter(x=ks, y=list(ref), mode="lines", name="reference (stored)", line={"color": "black", "width": 1},
                       showlegend=c == 1),
            row=1, col=c,
        )  # fmt: skip
        fig.update_xaxes(type="log", tickvals=ks, title_text="circuit size k (first k of the declared ranking)",
                         row=1, col=c)  # fmt: skip
    fig.update_yaxes(title_text="KL-faithfulness f(C_k)", row=1, col=1)
    fig.update_layout(height=420, margin={"t": 40, "b": 40}, legend={"title": "agent (ranked)"})
    return fig


def query_sequence_html(rows: Sequence[Mapping], agents: Sequence[str], max_agents: int = 3) -> str:
    """One prompt's query sequence for each query-spending agent (first protocol, seed and prompt they share)."""
    steps: dict[tuple, list[Mapping]] = defaultdict(list)
    for r in rows:
        if r.get("kind") == "step" and r.get("track") == "circuit":
            steps[(r["agent"], r["protocol"], int(r["seed"]), r["prompt_id"])].append(r)
    priority = (
        "aif",
        "acdc",
    )  # the experiment designer beside the pruning rule, then the other query spenders
    ordered = [a for a in priority if a in agents] + [a for a in agents if a not in priority]
    spenders = [a for a in ordered if any(k[0] == a for k in steps)][:max_agents]
    if not spenders:
        return ""
    first = min(k for k in steps if k[0] == spenders[0])
    _, protocol, seed, prompt_id = first
    parts = [f"<p>Prompt <code>{html.escape(prompt_id)}</code>, protocol {html.escape(protocol)}, seed {seed}. "
             "Each row is one step: the candidate toggled into (+) or out of (−) the working circuit W, the query run "
             "on the new W and what it measured (f for keep, necessity for ablate); repeats of a measured set are "
             "free.</p><div class='cols'>"]  # fmt: skip
    for agent in spenders:
        seq = sorted(steps.get((agent, protocol, seed, prompt_id), []), key=lambda s: s["step"])
        items = []
        for s in seq:
            if s.get("invalid"):
                items.append("<li>invalid action</li>")
                continue
            sign = "+" if s["toggle"] == "in" else "−"
            free = " <i>(repeat, free)</i>" if s.get("repeat") else ""
            items.append(
                f"<li>{sign}{s['candidate']} · {s['query']} · |W| = {s['circuit_size']} → {s['score']:.3f}{free}</li>"
            )
        parts.append(f"<div><h3>{html.escape(agent)}</h3><ol>{''.join(items)}</ol></div>")
    parts.append("</div>")
    return "".join(parts)


def circuit_section(
    rows: Sequence[Mapping], board: Sequence[Mapping], *, protocols: Sequence[str], agents: Sequence[str]
) -> list[Section]:
    """The report's circuit-track sections: (title, plotly figure or HTML)."""
    from benchmarks.circuit_leaderboard import to_markdown

    sections: list[Section] = []
    table = (
        "<pre style='white-space:pre-wrap;font-size:12px'>" + html.escape(to_markdown(board, {})) + "</pre>"
    )
    sections.append(("Circuit track: leaderboard", table))
    fig = faithfulness_figure(rows, board, protocols, agents)
    if fig is not None:
        sections.append(("Circuit track: faithfulness f(C_k) against circuit size", fig))
    sequence = query_sequence_html(rows, agents)
    if sequence:
        sections.append(("Circuit track: one prompt's query sequence", sequence))
    return sections
