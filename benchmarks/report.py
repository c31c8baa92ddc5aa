"""A self-contained `report.html` (plotly, with plotly.js inline: opens offline) from the results and leaderboard,
written for a reader who has not seen the project before.

Sections: how to read the report (one line per agent and per metric: `AGENT_NOTES`, `METRIC_NOTES`, the same
lines as the README's "Agents and metrics"), the run's configuration (with the command line, date and versions),
the leaderboard (one table per protocol, with column names in words), the cumulative and per-step effect curves
of every agent with 95 % CIs (one figure per protocol), the active-inference diagnostics over steps (belief
entropy, expected free energy), the AIF importance ranking of one prompt against the true ablation KL, and the
learning curve of memory-keeping protocols (efficiency vs prompt index). Each agent keeps one colour in every
figure (the oracle: black, dashed), and legends list agents best first. Also `curves.png` of the main figure
when plotly can export images (kaleido installed); otherwise matplotlib draws it.
"""

from __future__ import annotations

import html
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from benchmarks.leaderboard import _fmt

# One line per agent: what it may see, what it costs, privileged or not (README: "Agents and metrics").
AGENT_NOTES = {
    "oracle": "privileged, the yardstick: reads every candidate's true measured effect (all K × T interventions, "
    "which a real agent would have to pay for) and takes the best remaining one; defines 100 %",
    "atp": "sees the attribution-patching estimate of each candidate's effect (one extra forward + backward pass "
    "per prompt) and takes them best first; not privileged. It sits next to the oracle on the toy zoo because "
    "there a single feature's effect is nearly linear, so one backward pass ranks the candidates almost exactly",
    "ranker": "gradient-boosted trees fitted offline on train circuit tables (descriptors → measured KL), then "
    "best predicted first; needs a protocol that fits (train-test, held-out-*); not privileged",
    "ppo": "a MaskablePPO policy trained offline on train circuit tables (shipped, or trained on first use: "
    "minutes); acts on the descriptors and what it has measured; needs a protocol that fits; not privileged",
    "aif": "active inference (pymdp): beliefs about each candidate's importance from its descriptors and "
    "measurements, picks by expected free energy, learns across prompts; JAX compile on the first step; "
    "not privileged",
    "aif-argmax": "aif's planning ablation: the same model, beliefs and learning, but it picks the candidate with "
    "the highest posterior expected importance (a plain argmax, no expected free energy); not privileged",
    "ucb": "LinUCB: a linear model of log KL on the descriptors, learned online from its own measurements "
    "(memory kept across prompts in the stream protocol); not privileged",
    "greedy": "circuit-tracer's influence ranking from the attribution graph (free once the graph is built), "
    "best first; learns nothing; not privileged; the baseline to beat",
    "magnitude": "activation × decoder norm of each feature (free), largest first; learns nothing; not privileged",
    "random": "only the action mask; a uniformly random valid candidate each step; the floor",
}

# One line per metric (leaderboard columns; README: "Agents and metrics").
METRIC_NOTES = {
    "efficiency": "discovery efficiency: Σ ablation KL of the B features the agent chose ÷ Σ of the B largest "
    "(oracle = 1); the headline score, mean of the per-task means with a 95 % stratified-bootstrap CI",
    "IQM": "interquartile mean of the per-episode efficiency (the middle 50 % of episodes; robust to outliers)",
    "AUC": "anytime AUC: the area under the agent's cumulative-effect curve over steps 1..B ÷ the oracle's; "
    "rewards finding the big features early",
    "recall@B": "share of the oracle's top-B features that the agent chose",
    "steps→80 %": "steps until the agent had found 80 % of the oracle's B-step total effect (B + 1 if never)",
    "reached 80 %": "share of episodes that reached 80 % within the budget",
    "P(>X)": "probability that a random episode of this agent beats one of agent X on the same prompt "
    "(rliable's probability of improvement; 0.5 = a tie)",
    "picks scored by another type": "the same chosen features scored by patching or steering KL (÷ that "
    "type's own top-B): whether the features found matter under other interventions too. They re-score the "
    "picks; which interventions the agent actually ran is the 'interventions used' column",
}

# Leaderboard columns in the report: (heading, key, tooltip). eff_<type> and the CIs are handled in table_html.
TABLE_COLUMNS = (
    ("Efficiency (95 % CI)", "efficiency", METRIC_NOTES["efficiency"]),
    ("IQM (95 % CI)", "iqm", METRIC_NOTES["IQM"]),
    ("Recall@B", "recall", METRIC_NOTES["recall@B"]),
    ("AUC", "auc", METRIC_NOTES["AUC"]),
    ("Steps to 80 %", "steps80", METRIC_NOTES["steps→80 %"]),
    ("Reached 80 %", "reached80", METRIC_NOTES["reached 80 %"]),
    ("P(beats greedy)", "p_gt_greedy", METRIC_NOTES["P(>X)"]),
    ("P(beats ranker)", "p_gt_ranker", METRIC_NOTES["P(>X)"]),
)

# A fixed colour per agent (Okabe-Ito first: distinguishable, also for colour-blind readers); the oracle is a
# black dashed reference line, so it never hides the agent drawn on top of it (atp, at 0.998).
AGENT_COLORS = {
    "oracle": "#000000",
    "atp": "#e69f00",
    "ranker": "#0072b2",
    "ppo": "#e7298a",
    "aif": "#7b3294",
    "ucb": "#009e73",
    "greedy": "#56b4e9",
    "magnitude": "#8c564b",
    "random": "#999999",
}
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
DASHED = ("oracle",)

# Diagnostics tags in words: (panel title, y-axis label).
TAG_TITLES = {
    "aif/belief_entropy": ("Belief entropy: how unsure the agent still is", "entropy of its beliefs (nats)"),
    "aif/efe": ("Expected free energy of its chosen action", "expected free energy (lower = preferred)"),
}


def agent_color(agent: str, agents: Sequence[str] = ()) -> str:
    """The agent's colour: fixed for the zoo's agents, else by its place among the others."""
    if agent in AGENT_COLORS:
        return AGENT_COLORS[agent]
    others = [a for a in agents if a not in AGENT_COLORS] or [agent]
    return PALETTE[(others.index(agent) if agent in others else 0) % len(PALETTE)]


def tag_words(tag: str) -> tuple[str, str]:
    """(panel title, y-axis label) of a diagnostics tag, in words."""
    if tag in TAG_TITLES:
        return TAG_TITLES[tag]
    words = tag.split("/", 1)[-1].replace("_", " ")
    return words[:1].upper() + words[1:], words


def ranked(agents: Sequence[str], score: Mapping[str, float]) -> list[str]:
    """Agents best first by `score` (missing or NaN last, then by name)."""

    def key(a: str) -> tuple:
        v = score.get(a)
        bad = v is None or not np.isfinite(v)
        return (bad, -(v if v is not None and not bad else 0.0), a)

    return sorted(agents, key=key)


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
    rank: int = 0,
    dash: bool = False,
) -> None:
    import plotly.graph_objects as go

    where = {"row": row, "col": col} if row is not None else {}
    x = list(x)
    fig.add_trace(
        go.Scatter(
            x=x + x[::-1],
            y=list(hi) + list(lo)[::-1],
            fill="toself",
            fillcolor=_rgba(color, 0.12),
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
            legendrank=1000 + rank,
            showlegend=show,
            line={"color": color, "dash": "dash" if dash else "solid", "width": 2.5 if dash else 2},
            marker={"size": 4},
        ),
        **where,
    )


def _legend(fig, n_entries: int, title: str, base_height: int) -> None:
    """A legend to the right that lists every entry without scrolling (the figure grows with the entries)."""
    fig.update_layout(
        height=max(base_height, 200 + 24 * n_entries),
        legend={"title": {"text": title}, "traceorder": "normal", "itemclick": "toggle"},
    )


def _scores(board: Sequence[Mapping], protocol: str) -> dict[str, float]:
    return {
        r["agent"]: float(r["efficiency"])
        for r in board
        if r.get("protocol") == protocol and r.get("status") == "ok" and r.get("efficiency") is not None
    }


def curve_figures(board: Sequence[Mapping], protocols: Sequence[str], agents: Sequence[str]):
    """protocol → figure: cumulative efficiency and per-step gain over steps, mean and 95 % CI per agent (from the
    leaderboard rows' `curve*` / `gain*`, computed in the same bootstrap as the efficiency CIs); legend best
    first."""
    from plotly.subplots import make_subplots

    rows = {(r["protocol"], r["agent"]): r for r in board if r.get("status") == "ok" and "curve" in r}
    figures = {}
    for protocol in protocols:
        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=(
                "Effect found so far (cumulative), as a share of the oracle's B-step total",
                "Effect found at each step, as a share of the oracle's B-step total",
            ),
        )
        order = ranked([a for a in agents if (protocol, a) in rows], _scores(board, protocol))
        for rank, agent in enumerate(order):
            r = rows[(protocol, agent)]
            x = range(1, len(r["curve"]) + 1)
            color, dash = agent_color(agent, agents), agent in DASHED
            common: dict[str, Any] = dict(rank=rank, dash=dash)
            _band(fig, x, r["curve"], r["curve_lo"], r["curve_hi"], agent, color, row=1, col=1, **common)
            _band(
                fig,
                x,
                r["gain"],
                r["gain_lo"],
                r["gain_hi"],
                agent,
                color,
                row=1,
                col=2,
                show=False,
                **common,
            )
        fig.update_xaxes(title_text="step (intervention number)")
        fig.update_yaxes(title_text="cumulative effect ÷ oracle's total", row=1, col=1)
        fig.update_yaxes(title_text="effect at this step ÷ oracle's total", row=1, col=2)
        fig.update_layout(
            title=f"Discovery curves — {protocol} (mean over tasks, shaded: 95 % stratified-bootstrap CI)",
            template="plotly_white",
        )
        _legend(fig, len(order), "agent (best first)", 450)
        figures[protocol] = fig
    return figures


def diagnostics_figure(
    rows: Sequence[Mapping],
    protocols: Sequence[str],
    agents: Sequence[str],
    board: Sequence[Mapping] = (),
):
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
    fig = make_subplots(rows=1, cols=len(tags), subplot_titles=[tag_words(t)[0] for t in tags])
    entries = [
        (protocol, agent)
        for protocol in protocols
        for agent in ranked(agents, _scores(board, protocol))
        if any((t, protocol, agent) in values for t in tags)
    ]
    styles = ("solid", "dot", "dashdot", "longdash")
    for j, tag in enumerate(tags, start=1):
        for rank, (protocol, agent) in enumerate(entries):
            series = values.get((tag, protocol, agent))
            if not series:
                continue
            x, mean, lo, hi = _mean_ci(series)
            name = f"{agent} ({protocol})"
            _band(
                fig, x, mean, lo, hi, name, agent_color(agent, agents), row=1, col=j, show=j == 1, rank=rank
            )
            # plotly types fig.data as base traces, which have no `line`; a Scatter trace has
            fig.data[-1].line.dash = styles[protocols.index(protocol) % len(styles)]  # pyright: ignore[reportAttributeAccessIssue]
        fig.update_yaxes(title_text=tag_words(tag)[1], row=1, col=j)
    fig.update_xaxes(title_text="step (intervention number)")
    fig.update_layout(
        title="Active inference over an episode (mean over episodes, shaded: ± 1.96 SE)",
        template="plotly_white",
    )
    _legend(fig, len(entries), "agent (protocol)", 420)
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
    ranked_ = [k for k in e["importance_order"] if 0 <= k < len(truth)]
    rank = np.array([ranked_.index(k) + 1 if k in ranked_ else len(ranked_) + 1 for k in range(len(truth))])
    # scipy makes spearmanr's result class at run time (_make_tuple_bunch): pyright cannot see .statistic
    rho = spearmanr(-rank, truth).statistic if len(truth) > 1 else float("nan")  # pyright: ignore[reportAttributeAccessIssue]
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
                text=[f"candidate {k}" + (f", step {picked[int(k)]}" if k in picked else "") for k in ks],
            )
        )
    fig.update_yaxes(type="log", title_text="true ablation KL (nats, log scale)")
    fig.update_xaxes(title_text="the agent's importance rank after the episode (1 = most important)")
    fig.update_layout(
        title=f"{e['agent']}: its importance ranking vs the true effect — prompt {e['prompt_id']}, "
        f"{e['protocol']}, seed {e['seed']} (Spearman ρ = {rho:.3f}; a good ranking falls from left to right)",
        height=450,
        template="plotly_white",
    )
    return fig


def learning_curve_figure(rows: Sequence[Mapping], protocols: Sequence[str], agents: Sequence[str]):
    """Efficiency vs prompt index (mean ± 1.96 SE over seeds and folds) for memory-keeping protocols; legend best
    first (by mean efficiency over the stream)."""
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
    means = {key: float(np.mean([v for vs in series.values() for v in vs])) for key, series in data.items()}
    entries = sorted(data, key=lambda key: (stream.index(key[0]), -means[key], key[1]))
    fig = go.Figure()
    styles = ("solid", "dot", "dashdot", "longdash")
    for rank, (protocol, agent) in enumerate(entries):
        x, mean, lo, hi = _mean_ci(data[(protocol, agent)])
        name = f"{agent} ({protocol})" if len(stream) > 1 else agent
        _band(fig, x, mean, lo, hi, name, agent_color(agent, agents), rank=rank, dash=agent in DASHED)
        if agent not in DASHED:
            # plotly types fig.data as base traces, which have no `line`; a Scatter trace has
            fig.data[-1].line.dash = styles[stream.index(protocol) % len(styles)]  # pyright: ignore[reportAttributeAccessIssue]
    fig.update_xaxes(
        title_text="prompt number in the stream (the agent keeps its memory from one to the next)"
    )
    fig.update_yaxes(title_text="discovery efficiency on that prompt")
    fig.update_layout(
        title="Learning curve over the test prompts (mean over seeds, shaded: ± 1.96 SE); "
        "a rising line means the agent learns as it goes",
        template="plotly_white",
    )
    _legend(fig, len(entries), "agent (best first)", 420)
    return fig


def _ci_cell(row: Mapping, key: str) -> str:
    mid, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if mid is None:
        return ""
    text = f"{_fmt(mid, 3)}"
    if lo is not None and hi is not None:
        text += f'<br><span class="ci">[{_fmt(lo, 3)}, {_fmt(hi, 3)}]</span>'
    return text


def _interventions_cell(text: object) -> str:
    """`ablation:1600 patching:0 steering:0` → the types used, one per line: `ablation 1600`."""
    used = [part.split(":", 1) for part in str(text or "").split()]
    used = [(kind, n) for kind, n in used if n != "0"] or used
    return "<br>".join(html.escape(f"{kind} {n}") for kind, n in used)


def _number(key: str, digits: int = 3):
    def cell(row: Mapping) -> str:
        value = row.get(key)
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        if key == "reached80" and value is not None:
            return f"{100 * float(value):.0f} %"
        return html.escape(_fmt(value, digits)) or "—"

    return cell


def board_columns(interventions: Sequence[str]) -> list[tuple[str, str, Any]]:
    """The report's leaderboard columns: (heading, meaning, row → cell HTML)."""
    primary = "ablation" if "ablation" in interventions else (interventions[0] if interventions else "")
    cols: list[tuple[str, str, Any]] = [
        ("Efficiency (95 % CI)", METRIC_NOTES["efficiency"], lambda r: _ci_cell(r, "efficiency")),
        ("IQM (95 % CI)", METRIC_NOTES["IQM"], lambda r: _ci_cell(r, "iqm")),
    ]
    cols += [(h, tip, _number(key, 2 if key == "steps80" else 3)) for h, key, tip in TABLE_COLUMNS[2:]]
    cols += [
        (f"Picks scored by {t} KL", METRIC_NOTES["picks scored by another type"], _number(f"eff_{t}"))
        for t in interventions
        if t != primary
    ]
    cols += [(HALF_HEADS[key][0], HALF_HEADS[key][1], _number(key)) for key in HALF_COLUMNS]
    cols += [
        (
            "Interventions used",
            "how many interventions of each type the agent ran, over all its episodes",
            lambda r: _interventions_cell(r.get("interventions")),
        ),
        ("Episodes", "prompts × seeds", _number("episodes")),
        (
            "ms per step",
            "mean wall time per step (agent + environment); timing, not reproducible",
            _number("step_ms", 2),
        ),
        ("Fit (s)", "time to fit the agent offline, where the protocol fits; timing", _number("fit_s", 2)),
    ]
    return cols


def table_html(board: Sequence[Mapping], interventions: Sequence[str]) -> str:
    """The leaderboard, one table per protocol (best first), with column names in words (their meaning on hover
    and in the glossary); a column with nothing to show in a protocol (e.g. P(beats ranker) where the ranker does
    not run) is left out of its table; agents that do not apply follow, with the reason."""
    spec = board_columns(interventions)
    parts = []
    for protocol in dict.fromkeys(r["protocol"] for r in board):
        rows = [r for r in board if r["protocol"] == protocol]
        ok = [r for r in rows if r.get("status") == "ok"]
        cells = {id(r): [fn(r) for _, _, fn in spec] for r in ok}
        keep = [j for j in range(len(spec)) if any(cells[id(r)][j] not in ("", "—") for r in ok)]
        heads = [("Agent", "the agent (see 'Agents' below)"), *((spec[j][0], spec[j][1]) for j in keep)]
        head = "".join(f'<th title="{html.escape(tip)}">{html.escape(h)}</th>' for h, tip in heads)
        body = []
        for row in rows:
            color = agent_color(str(row["agent"]))
            name = f'<td class="agent"><span class="swatch" style="background:{color}"></span>'
            name += f"{html.escape(str(row['agent']))}</td>"
            if row.get("status") != "ok":
                reason = str(row.get("status", "")).removeprefix("n/a: ")
                body.append(
                    f'<tr class="na">{name}<td colspan="{len(heads) - 1}">not applicable: '
                    f"{html.escape(reason)}</td></tr>"
                )
                continue
            body.append(f"<tr>{name}{''.join(f'<td>{cells[id(row)][j]}</td>' for j in keep)}</tr>")
        parts.append(
            f"<h3>Protocol: {html.escape(protocol)}</h3>"
            f'<div class="scroll"><table class="board"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )
    return "".join(parts)


# Memory-keeping protocols: efficiency over the first and second half of each prompt stream (leaderboard.py).
HALF_COLUMNS = ("eff_first_half", "eff_second_half")
HALF_HEADS = {
    "eff_first_half": (
        "1st half of the stream",
        "mean efficiency over the first half of each prompt stream (memory kept): compare with the 2nd half",
    ),
    "eff_second_half": (
        "2nd half of the stream",
        "mean efficiency over the second half of each prompt stream: higher than the 1st half = it learns",
    ),
}

# ---------------------------------------------------------------------------------------------- the page
PROTOCOL_NOTES = {
    "zero-shot": "every agent starts fresh on each prompt; nothing is fitted",
    "stream": "the agent keeps what it learned from one test prompt to the next (a learning curve)",
    "train-test": "agents that learn offline are fitted on the train prompts of the same tasks first",
    "held-out-task": "fitted on the other tasks' train prompts, tested on a task never seen",
    "held-out-model": "fitted on another toy model's tables, tested on this model",
}


def how_to_read(config: Mapping) -> str:
    budget, k = config.get("budget", "B"), config.get("k", "K")
    return (
        "<p><b>How to read this.</b> For every test prompt an agent sees the "
        f"K = {html.escape(str(k))} most influential transcoder features of the prompt's attribution graph "
        f"and may intervene on B = {html.escape(str(budget))} of them, one per step; each intervention is paid "
        "the KL divergence it causes in the next-token distribution. The <i>oracle</i> knows every true effect "
        "and defines 100 %. <b>Efficiency</b> is the share of the oracle's total ablation effect that the "
        "agent's B choices hold; higher is better, and the 95 % confidence interval says how sure the number is "
        "(two agents whose intervals overlap may not differ). The curves show the same thing step by step: a "
        "curve that rises early finds the important features first. Start with the leaderboard, compare each "
        "agent with <code>greedy</code> (the attribution-graph baseline) and <code>random</code> (the floor), "
        "and read <i>P(beats greedy)</i>: above 0.5 the agent usually wins. Hover a column name for its "
        "meaning.</p>"
    )


def glossary_html(agents: Sequence[str], protocols: Sequence[str]) -> str:
    items = "".join(
        f"<li><code>{html.escape(a)}</code>: {html.escape(AGENT_NOTES.get(a, 'a user-supplied agent'))}</li>"
        for a in agents
    )
    metrics = "".join(
        f"<li><b>{html.escape(m)}</b>: {html.escape(text)}</li>" for m, text in METRIC_NOTES.items()
    )
    protos = "".join(
        f"<li><code>{html.escape(p)}</code>: {html.escape(PROTOCOL_NOTES.get(p, ''))}</li>" for p in protocols
    )
    return (
        '<div class="cols"><div><h3>Agents</h3><ul>'
        + items
        + "</ul></div><div><h3>Metrics</h3><ul>"
        + metrics
        + "</ul><h3>Protocols</h3><ul>"
        + protos
        + "</ul></div></div>"
    )


CONFIG_LABELS = (
    ("command", "Command line"),
    ("date", "Date"),
    ("model", "Model"),
    ("tasks", "Tasks"),
    ("split", "Prompts from split"),
    ("prompts", "Test prompts per task"),
    ("seeds", "Seeds"),
    ("k", "Candidates per prompt (K)"),
    ("budget", "Interventions per episode (B)"),
    ("backend", "Backend"),
    ("tracks", "Tracks"),
    ("protocols", "Protocols"),
    ("agents", "Agents"),
    ("circuit_agents", "Circuit-track agents"),
    ("fit", "Agents fitted on"),
    ("reps", "Bootstrap replications"),
    ("versions", "Versions"),
)


def _value_text(key: str, value: Any) -> str:
    if key == "backend":
        return {
            "replay": "replay (pre-measured circuit tables: every intervention looked up)",
            "live": "live (every intervention run through circuit-tracer)",
        }.get(str(value), str(value))
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if isinstance(v, list | tuple):
                v = ", ".join(map(str, v)) or "not fitted"
            items.append(f"{k}: {v}")
        return "; ".join(items) if items else "—"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def config_html(config: Mapping) -> str:
    rows = []
    for key, label in CONFIG_LABELS:
        if key not in config or config[key] in (None, "", [], {}):
            continue
        text = html.escape(_value_text(key, config[key]))
        if key == "command":
            text = f"<code>{text}</code>"
        rows.append(f"<tr><th>{html.escape(label)}</th><td>{text}</td></tr>")
    return f'<table class="config">{"".join(rows)}</table>'


# ---------------------------------------------------------------------------------------------- provenance
NOT_FLAGS = ("progress",)  # settings that do not change the results


def _bench_options() -> dict[str, str]:
    """BenchConfig field → its `acd bench` option, read from the command's own parser."""
    import argparse

    from benchmarks import bench

    sub = argparse.ArgumentParser().add_subparsers()
    bench.add_parser(sub)
    return {a.dest: a.option_strings[0] for a in sub.choices["bench"]._actions if a.option_strings}


def command_line(cfg: Any) -> str:
    """The `acd bench` command that reproduces a BenchConfig: every setting that differs from the defaults."""
    import shlex
    from dataclasses import asdict, fields

    defaults = asdict(type(cfg)())
    options = _bench_options()
    parts = ["acd", "bench"]
    for f in fields(cfg):
        name, value = f.name, getattr(cfg, f.name)
        if name in NOT_FLAGS or name not in options or value is None or value == defaults.get(name):
            continue
        flag = options[name]
        if isinstance(value, bool):
            parts += [flag] if value else []
        elif name == "seeds":
            parts += [
                flag,
                str(len(value)) if list(value) == list(range(len(value))) else ",".join(map(str, value)),
            ]
        elif isinstance(value, list | tuple):
            parts += [flag, ",".join(map(str, value))]
        else:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def versions() -> dict[str, str]:
    """Python and the packages that decide the numbers (read from package metadata: nothing is imported)."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version()}
    for dist in ("active-circuit-discovery", "circuit-tracer", "torch", "numpy", "gymnasium", "plotly"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance(cfg: Any) -> dict:
    """What the report records about how the run was made: command line, date, versions."""
    return {
        "command": command_line(cfg),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": versions(),
    }


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1360px;
  padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd} h3{margin:1em 0 .3em}
.scroll{overflow-x:auto;max-width:100%}
table.board{border-collapse:collapse;font-size:13px;width:100%}
table.board th{background:#f4f4f4;font-weight:600;vertical-align:bottom;cursor:help}
table.board td,table.board th{border:1px solid #ddd;padding:3px 6px;text-align:right}
table.board td.agent,table.board th:first-child{text-align:left;white-space:nowrap}
table.board tr.na td{color:#777;text-align:left}
table.board .ci{color:#666;font-size:11px;white-space:nowrap}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;border-radius:2px;vertical-align:middle}
table.config{border-collapse:collapse;font-size:14px}
table.config th{text-align:left;padding:2px 1em 2px 0;vertical-align:top;white-space:nowrap;font-weight:600}
table.config td{padding:2px 0;overflow-wrap:anywhere}
.cols{display:flex;gap:2em;flex-wrap:wrap} .cols>div{flex:1 1 30em}
.cols li{margin-bottom:.3em}
"""


class HtmlFigure(Protocol):
    """What a report section needs of a plotly figure."""

    def to_html(self, *args: Any, **kwargs: Any) -> str | None: ...


Section = tuple[str, "str | HtmlFigure"]  # (title, HTML or a plotly figure)


def write_report(
    out: str | Path,
    rows: Sequence[Mapping],
    board: Sequence[Mapping],
    *,
    protocols: Sequence[str],
    agents: Sequence[str],
    interventions: Sequence[str],
    config: Mapping,
    extra_sections: Sequence[Section] = (),
) -> dict:
    """Write report.html (and curves.png when possible) into `out`; returns {"html": path, "png": path | None}.

    `config`: the run's settings (as in leaderboard.json), plus `command`, `date` and `versions` when known
    (`provenance`). `extra_sections`: more (title, plotly figure or HTML) sections, appended (the circuit
    track's)."""
    out = Path(out)
    sections: list[Section] = []
    sections.append(("Leaderboard", table_html(board, interventions)))
    sections.append(("Agents, metrics and protocols", glossary_html(agents, protocols)))
    figures = curve_figures(board, protocols, agents) if board else {}  # no feature track: no curves
    for protocol, fig in figures.items():
        sections.append((f"Discovery curves: {protocol}", fig))
    for title, fig in (
        (
            "Active inference: belief entropy and expected free energy",
            diagnostics_figure(rows, protocols, agents, board),
        ),
        ("Active inference: importance ranking vs oracle", importance_figure(rows, protocols)),
        ("Learning curve", learning_curve_figure(rows, protocols, agents)),
    ):
        if fig is not None:
            sections.append((title, fig))
    sections.extend(extra_sections)
    parts, first = [], True
    for title, item in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(item, str):
            parts.append(item)
        else:
            parts.append(item.to_html(full_html=False, include_plotlyjs=first, config={"responsive": True}))
            first = False
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Active Circuit Discovery benchmark</title>
<style>{STYLE}</style></head>
<body><h1>Active Circuit Discovery benchmark</h1>
{how_to_read(config)}
<h2>This run</h2>
{config_html(config)}
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
