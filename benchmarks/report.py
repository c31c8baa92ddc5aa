"""A self-contained `report.html` (plotly, with plotly.js inline: opens offline) from the results and leaderboard.

Sections: the cumulative and per-step effect curves of every agent with 95 % CIs (one figure per protocol), the
leaderboard table, the active-inference diagnostics over steps (belief entropy, expected free energy), the AIF
importance ranking of one prompt against the true ablation KL, and the learning curve of memory-keeping
protocols (efficiency vs prompt index). Also `curves.png` of the main figure when plotly can export images
(kaleido installed); otherwise that file is skipped.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.leaderboard import _fmt, columns

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _mean_ci(series: Mapping) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted x, mean and normal 95 % band (mean ± 1.96 s.e.) of {x: [values]}."""
    x = sorted(series)
    mean = np.array([np.mean(series[t]) for t in x])
    se = np.array([np.std(series[t]) / np.sqrt(len(series[t])) for t in x])
    return x, mean, mean - 1.96 * se, mean + 1.96 * se


def _band(
    fig,
    x,
    mean,
    lo,
    hi,
    name: str,
    color: str,
    *,
    row: int | None = None,
    col: int | None = None,
    show: bool = True,
) -> None:
    import plotly.graph_objects as go

    where = {"row": row, "col": col} if row is not None else {}
    x = list(x)
    fig.add_trace(
        go.Scatter(
            x=x + x[::-1],
            y=list(hi) + list(lo)[::-1],
            fill="toself",
            fillcolor=_rgba(color, 0.15),
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            legendgroup=name,
        ),
        **where,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=list(mean),
            mode="lines+markers",
            name=name,
            legendgroup=name,
            showlegend=show,
            line={"color": color},
            marker={"size": 4},
        ),
        **where,
    )


def curve_figures(board: Sequence[Mapping], protocols: Sequence[str], agents: Sequence[str]):
    """protocol → figure: cumulative efficiency and per-step gain over steps, mean and 95 % CI per agent (from the
    leaderboard rows' `curve*` / `gain*`, computed in the same bootstrap as the efficiency CIs)."""
    from plotly.subplots import make_subplots

    rows = {(r["protocol"], r["agent"]): r for r in board if r.get("status") == "ok" and "curve" in r}
    figures = {}
    for protocol in protocols:
        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=(
                "cumulative effect ÷ oracle's total over B steps",
                "effect found per step ÷ oracle's total",
            ),
        )
        for i, agent in enumerate(agents):
            r = rows.get((protocol, agent))
            if r is None:
                continue
            x = range(1, len(r["curve"]) + 1)
            color = PALETTE[i % len(PALETTE)]
            _band(fig, x, r["curve"], r["curve_lo"], r["curve_hi"], agent, color, row=1, col=1)
            _band(fig, x, r["gain"], r["gain_lo"], r["gain_hi"], agent, color, row=1, col=2, show=False)
        fig.update_xaxes(title_text="step")
        fig.update_layout(
            title=f"Discovery curves — {protocol} (mean, 95 % stratified-bootstrap CI)",
            height=450,
            template="plotly_white",
        )
        figures[protocol] = fig
    return figures


def diagnostics_figure(rows: Sequence[Mapping], protocols: Sequence[str], agents: Sequence[str]):
    """Every `aif/*` diagnostic over steps (mean ± 1.96 SE over episodes) per (protocol, agent); None if none."""
    from plotly.subplots import make_subplots

    values: dict[tuple[str, str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("kind") == "step" and r.get("diag"):
            for tag, v in r["diag"].items():
                if tag.startswith("aif/"):
                    values[(tag, r["protocol"], r["agent"])][int(r["step"])].append(float(v))
    tags = sorted({k[0] for k in values})
    if not tags:
        return None
    fig = make_subplots(rows=1, cols=len(tags), subplot_titles=tags)
    for j, tag in enumerate(tags, start=1):
        for p, protocol in enumerate(protocols):
            for i, agent in enumerate(agents):
                series = values.get((tag, protocol, agent))
                if not series:
                    continue
                x, mean, lo, hi = _mean_ci(series)
                color = PALETTE[(i + p) % len(PALETTE)]
                _band(
                    fig,
                    x,
                    mean,
                    lo,
                    hi,
                    f"{agent} ({protocol})",
                    color,
                    row=1,
                    col=j,
                    show=j == 1,
                )
    fig.update_xaxes(title_text="step")
    fig.update_layout(
        title="Active inference over an episode (mean ± 1.96 SE)", height=420, template="plotly_white"
    )
    return fig


def importance_figure(rows: Sequence[Mapping], protocols: Sequence[str]):
    """One prompt: the agent's importance rank of every candidate (its `importance_ranking()` at the end of the
    episode) vs the candidate's true ablation KL. The first such episode by protocol, agent, seed, prompt."""
    import plotly.graph_objects as go
    from scipy.stats import spearmanr

    candidates = [r for r in rows if r.get("kind") == "episode" and r.get("importance_order")]
    if not candidates:
        return None
    order = {p: i for i, p in enumerate(protocols)}
    e = min(candidates, key=lambda r: (order.get(r["protocol"], 99), r["agent"], r["seed"], r["prompt_id"]))
    truth = np.asarray(e["true_effect"], dtype=np.float64)
    ranked = [k for k in e["importance_order"] if 0 <= k < len(truth)]
    rank = np.array([ranked.index(k) + 1 if k in ranked else len(ranked) + 1 for k in range(len(truth))])
    rho = spearmanr(-rank, truth).statistic if len(truth) > 1 else float("nan")
    picked = {
        int(s["candidate"]): int(s["step"])
        for s in rows
        if s.get("kind") == "step"
        and not s.get("invalid")
        and s["agent"] == e["agent"]
        and s["protocol"] == e["protocol"]
        and s["seed"] == e["seed"]
        and s["prompt_id"] == e["prompt_id"]
    }
    measured = np.array([k in picked for k in range(len(truth))])
    fig = go.Figure()
    for flag, label, symbol in (
        (True, "measured by the agent", "circle"),
        (False, "not measured", "circle-open"),
    ):
        ks = np.flatnonzero(measured == flag)
        fig.add_trace(
            go.Scatter(
                x=rank[ks],
                y=np.maximum(truth[ks], 1e-9),
                mode="markers",
                name=label,
                marker={"size": 8, "symbol": symbol},
                text=[f"candidate {k}" + (f", step {picked[k]}" if k in picked else "") for k in ks],
            )
        )
    fig.update_yaxes(type="log", title_text="true ablation KL (nats)")
    fig.update_xaxes(title_text="the agent's importance rank after the episode (1 = most important)")
    fig.update_layout(
        title=f"{e['agent']} importance ranking vs oracle — prompt {e['prompt_id']}, {e['protocol']}, seed "
        f"{e['seed']} (Spearman ρ = {rho:.3f})",
        height=450,
        template="plotly_white",
    )
    return fig


def learning_curve_figure(rows: Sequence[Mapping], protocols: Sequence[str], agents: Sequence[str]):
    """Efficiency vs prompt index (mean ± 1.96 SE over seeds and folds) for memory-keeping protocols."""
    import plotly.graph_objects as go

    from benchmarks.protocols import PROTOCOLS

    stream = [p for p in protocols if p in PROTOCOLS and PROTOCOLS[p].keep_memory]
    data: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("kind") == "episode" and r["protocol"] in stream:
            data[(r["protocol"], r["agent"])][int(r.get("order", 0))].append(
                float(r["metrics"]["efficiency"])
            )
    if not data:
        return None
    fig = go.Figure()
    for p, protocol in enumerate(stream):
        for i, agent in enumerate(agents):
            series = data.get((protocol, agent))
            if not series:
                continue
            x, mean, lo, hi = _mean_ci(series)
            _band(
                fig,
                x,
                mean,
                lo,
                hi,
                f"{agent} ({protocol})",
                PALETTE[(i + 3 * p) % len(PALETTE)],
            )
    fig.update_xaxes(title_text="prompt index in the seed's order")
    fig.update_yaxes(title_text="discovery efficiency")
    fig.update_layout(
        title="Learning curve over the test prompts (memory kept)", height=420, template="plotly_white"
    )
    return fig


def table_html(board: Sequence[Mapping], interventions: Sequence[str]) -> str:
    cols = columns(interventions)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in board:
        cells = "".join(f"<td>{html.escape(_fmt(row.get(c), 3))}</td>" for c in cols)
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="board"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def write_report(
    out: str | Path,
    rows: Sequence[Mapping],
    board: Sequence[Mapping],
    *,
    protocols: Sequence[str],
    agents: Sequence[str],
    interventions: Sequence[str],
    config: Mapping,
) -> dict:
    """Write report.html (and curves.png when possible) into `out`; returns {"html": path, "png": path | None}."""
    out = Path(out)
    sections: list[tuple[str, object | str]] = []
    figures = curve_figures(board, protocols, agents)
    for protocol, fig in figures.items():
        sections.append((f"Discovery curves: {protocol}", fig))
    sections.append(("Leaderboard", table_html(board, interventions)))
    for title, fig in (
        (
            "Active inference: belief entropy and expected free energy",
            diagnostics_figure(rows, protocols, agents),
        ),
        ("Active inference: importance ranking vs oracle", importance_figure(rows, protocols)),
        ("Learning curve", learning_curve_figure(rows, protocols, agents)),
    ):
        if fig is not None:
            sections.append((title, fig))
    parts, first = [], True
    for title, item in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(item, str):
            parts.append(item)
        else:
            parts.append(item.to_html(full_html=False, include_plotlyjs=first))
            first = False
    summary = ", ".join(
        f"{k}: {v}"
        for k, v in config.items()
        if k in ("model", "tasks", "seeds", "budget", "k", "backend", "protocols")
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Active Circuit Discovery benchmark</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table.board{{border-collapse:collapse;font-size:12px}}
table.board td,table.board th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head>
<body><h1>Active Circuit Discovery benchmark</h1><p>{html.escape(summary)}</p>
{"".join(parts)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(doc)
    png = None
    if figures:
        main = next(iter(figures.values()))
        try:
            main.write_image(str(out / "curves.png"), width=1200, height=450)
            png = out / "curves.png"
        except Exception:  # no kaleido (or no browser for it): draw the same lines with matplotlib
            png = matplotlib_png(main, out / "curves.png")
    return {"html": path, "png": png}


def matplotlib_png(fig, path: Path) -> Path | None:
    """A static PNG of a plotly figure's line traces (one panel per x axis; CI bands drawn as fills)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    axes_ids = sorted({t.xaxis or "x" for t in fig.data}, key=lambda a: int(a[1:] or 1))
    f, axes = plt.subplots(1, len(axes_ids), figsize=(6 * len(axes_ids), 4.5), squeeze=False)
    titles = [a.text for a in fig.layout.annotations or ()]
    for i, axis_id in enumerate(axes_ids):
        ax = axes[0][i]
        for trace in fig.data:
            if (trace.xaxis or "x") != axis_id or trace.x is None or trace.y is None:
                continue
            color = getattr(trace.line, "color", None) or getattr(trace, "fillcolor", None)
            if trace.fill:
                ax.fill(list(trace.x), list(trace.y), alpha=0.15, color=_mpl_color(color), linewidth=0)
            else:
                ax.plot(list(trace.x), list(trace.y), label=trace.name, color=_mpl_color(color))
        if i < len(titles):
            ax.set_title(titles[i])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)
    return path


def _mpl_color(color: str | None):
    if not color:
        return None
    if color.startswith("rgba("):
        r, g, b, _ = (float(x) for x in color[5:-1].split(","))
        return (r / 255, g / 255, b / 255)
    return color
