"""The leaderboard: one row per (protocol, agent), written as leaderboard.md / .csv / .json.

Columns (every score is per episode, aggregated over prompts × seeds with tasks as strata; benchmarks.aggregate):

| column | meaning |
|---|---|
| `efficiency`, `efficiency_lo/hi` | discovery efficiency, mean of the per-task means, with its 95 % stratified-bootstrap CI |
| `iqm`, `iqm_lo/hi` | interquartile mean of discovery efficiency over all episodes, with its CI |
| `eff_<type>` | the candidates the agent chose (whatever intervention it ran on them) scored by that type's effect against that type's own top-B; `eff_ablation` equals `efficiency`. The markdown shows the other types as "picks scored by <type>" |
| `recall` | recall@B of the oracle's top-B candidates |
| `auc` | anytime AUC of the cumulative-effect curve ÷ the oracle's |
| `steps80` | steps to 80 % of the oracle's cumulative effect (B + 1 when never reached) |
| `reached80` | share of episodes that reached 80 % within the budget |
| `p_gt_greedy` | rliable probability of improvement over `greedy` in the same protocol |
| `p_gt_ranker` | the same over `ranker`, where the protocol lets the ranker run (it needs fitting) |
| `interventions` | interventions used, per type |
| `step_ms`, `fit_s` | timing: mean wall time per step (act + env step + observe; one-off costs such as an agent's JIT compilation on its first step included) and per fit |
| `eff_first_half`, `eff_second_half` | protocols that keep memory across prompts: plain mean efficiency of the episodes in the first and second half of each prompt stream (`order` < n / 2 and ≥ n / 2, n the fold's number of test prompts), so learning over the stream shows as second − first; empty elsewhere |

The markdown shows the two halves (`1st half`, `2nd half`) in the tables of memory-keeping protocols only.

Rows: within a protocol, by efficiency (descending), then agent name; agents that do not apply follow, with the
reason. Numbers are formatted with fixed precision and the JSON is written with sorted keys, so the same
results give byte-identical files apart from the timing columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.aggregate import (
    DEFAULT_REPS,
    curves_by_task,
    probability_of_improvement,
    scores_by_task,
    summarize,
)
from benchmarks.protocols import PROTOCOLS

TIMING_COLUMNS = ("step_ms", "fit_s")
HALF_COLUMNS = ("eff_first_half", "eff_second_half")
BASELINES = ("greedy", "ranker")


def keeps_memory(protocol: str) -> bool:
    """Whether a protocol runs its test prompts as a stream with memory kept (its prompt order is a learning curve)."""
    return protocol in PROTOCOLS and PROTOCOLS[protocol].keep_memory


def stream_halves(episodes: Sequence[Mapping]) -> tuple[float, float]:
    """Plain mean efficiency over the episodes in the first and in the second half of their prompt stream.

    An episode's position is its `order` (index in its seed's prompt order); a fold's stream length n is the
    largest `order` in it plus one, and the first half is `order` < n / 2 (for odd n the middle prompt counts in
    the first half). Every seed and fold of the (protocol, agent) is pooled, episodes weighted equally.
    (nan, nan) when no episode carries an `order`.
    """
    ordered = [e for e in episodes if e.get("order") is not None]
    length: dict[str, int] = {}
    for e in ordered:
        fold = str(e.get("fold", ""))
        length[fold] = max(length.get(fold, 0), int(e["order"]) + 1)
    halves: tuple[list[float], list[float]] = ([], [])
    for e in ordered:
        second = 2 * int(e["order"]) >= length[str(e.get("fold", ""))]
        halves[second].append(float(e["metrics"]["efficiency"]))
    return tuple(float(np.mean(h)) if h else float("nan") for h in halves)  # type: ignore[return-value]


def _task_mean(episodes: Sequence[Mapping], metric: str) -> float:
    """Mean of the per-task means of a metric (the same weighting as the headline efficiency)."""
    by_task = scores_by_task(episodes, metric)
    values = [float(np.mean(v)) for v in by_task.values() if len(v)]
    return float(np.mean(values)) if values else float("nan")


def build_leaderboard(
    rows: Sequence[Mapping],
    *,
    protocols: Sequence[str],
    agents: Sequence[str],
    interventions: Sequence[str],
    budget: int,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    not_applicable: Mapping[tuple[str, str], str] | None = None,
) -> list[dict]:
    """Leaderboard rows from results rows (`results.jsonl`). `not_applicable`: extra (agent, protocol) → reason.

    Rows of agents that ran also carry `curve`, `curve_lo`, `curve_hi` (cumulative efficiency after steps 1..B,
    mean of per-task means and 95 % CI) and `gain`, `gain_lo`, `gain_hi` (effect found per step), from the same
    bootstrap as the efficiency CI; the report plots them (they are not leaderboard columns).
    """
    episodes: dict[tuple[str, str], list[Mapping]] = {}
    fit_times: dict[tuple[str, str], list[float]] = {}
    na = dict(not_applicable or {})
    for r in rows:
        kind = r.get("kind")
        if kind == "episode":
            episodes.setdefault((r["protocol"], r["agent"]), []).append(r)
        elif kind == "fit":
            fit_times.setdefault((r["protocol"], r["agent"]), []).append(float(r["fit_s"]))
        elif kind == "na":
            na[(r["agent"], r["protocol"])] = r["reason"]
    scores = {key: scores_by_task(eps, "efficiency") for key, eps in episodes.items()}
    board: list[dict] = []
    for protocol in protocols:
        ranked, missing = [], []
        for agent in agents:
            eps = episodes.get((protocol, agent))
            if not eps:
                reason = na.get((agent, protocol), "no finished episodes")
                missing.append({"protocol": protocol, "agent": agent, "status": f"n/a: {reason}"})
                continue
            row: dict = {"protocol": protocol, "agent": agent, "status": "ok", "episodes": len(eps)}
            row["tasks"] = len({e["task"] for e in eps})
            est = summarize(curves_by_task(eps, budget), reps=reps, seed=seed)
            row.update(
                efficiency=est["mean"],
                efficiency_lo=est["mean_lo"],
                efficiency_hi=est["mean_hi"],
                iqm=est["iqm"],
                iqm_lo=est["iqm_lo"],
                iqm_hi=est["iqm_hi"],
            )
            for suffix in ("", "_lo", "_hi"):
                values = est["columns" + suffix]
                row["curve" + suffix] = [float(v) for v in values[1 : budget + 1]]
                row["gain" + suffix] = [float(v) for v in values[budget + 1 :]]
            for kind in interventions:
                row[f"eff_{kind}"] = _task_mean(eps, f"efficiency_{kind}")
            row["recall"] = _task_mean(eps, "recall")
            row["auc"] = _task_mean(eps, "auc")
            row["steps80"] = _task_mean(eps, "steps80")
            row["reached80"] = float(np.mean([bool(e["metrics"]["reached80"]) for e in eps]))
            for base in BASELINES:
                other = scores.get((protocol, base))
                row[f"p_gt_{base}"] = (
                    probability_of_improvement(scores[(protocol, agent)], other)
                    if other is not None and agent != base
                    else float("nan")
                )
            used = dict.fromkeys(interventions, 0)
            for e in eps:
                for kind, n in e.get("interventions", {}).items():
                    used[kind] = used.get(kind, 0) + int(n)
            row["interventions"] = " ".join(f"{k}:{v}" for k, v in used.items())
            row["step_ms"] = float(np.mean([e["step_ms"] for e in eps]))
            fits = fit_times.get((protocol, agent))
            row["fit_s"] = float(np.mean(fits)) if fits else float("nan")
            halves = stream_halves(eps) if keeps_memory(protocol) else (float("nan"), float("nan"))
            row.update(zip(HALF_COLUMNS, halves, strict=True))
            ranked.append(row)
        ranked.sort(key=lambda r: (-r["efficiency"], r["agent"]))
        missing.sort(key=lambda r: r["agent"])
        board.extend(ranked + missing)
    return board


def columns(interventions: Sequence[str]) -> list[str]:
    return [
        "protocol",
        "agent",
        "status",
        "episodes",
        "tasks",
        "efficiency",
        "efficiency_lo",
        "efficiency_hi",
        "iqm",
        "iqm_lo",
        "iqm_hi",
        *(f"eff_{k}" for k in interventions),
        "recall",
        "auc",
        "steps80",
        "reached80",
        "p_gt_greedy",
        "p_gt_ranker",
        "interventions",
        *TIMING_COLUMNS,
        *HALF_COLUMNS,
    ]


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def to_csv(board: Sequence[Mapping], interventions: Sequence[str]) -> str:
    cols = columns(interventions)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in board:
        writer.writerow([_fmt(row.get(c), 2 if c in TIMING_COLUMNS else 4) for c in cols])
    return buf.getvalue()


def _round(value: object) -> object:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def to_json(board: Sequence[Mapping], interventions: Sequence[str], config: Mapping) -> str:
    cols = columns(interventions)
    doc = {
        "columns": cols,
        "timing_columns": list(TIMING_COLUMNS),
        "config": dict(config),
        "rows": [{c: _round(row.get(c)) for c in cols if c in row} for row in board],
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def _ci(row: Mapping, key: str) -> str:
    return f"{row[key]:.3f} [{row[key + '_lo']:.3f}, {row[key + '_hi']:.3f}]"


def to_markdown(board: Sequence[Mapping], interventions: Sequence[str], config: Mapping) -> str:
    head = [
        "agent",
        "efficiency [95% CI]",
        "IQM [95% CI]",
        *(f"picks scored by {k}" for k in interventions if k != "ablation"),
        "recall@B",
        "AUC",
        "steps→80%",
        "P(>greedy)",
        "P(>ranker)",
        "interventions",
        "n",
        "step_ms",
    ]
    lines = [
        "# Active Circuit Discovery leaderboard",
        "",
        f"Model `{config.get('model')}`, tasks {', '.join(config.get('tasks', []))}, {config.get('split', 'test')} "
        f"split, K = {config.get('k')}, B = {config.get('budget')}, seeds {config.get('seeds')}, "
        f"backend {config.get('backend')}. Efficiency = Σ ablation-KL of the chosen features ÷ Σ of the top-B "
        "(oracle = 1). CIs: 95 % stratified bootstrap over prompts × seeds, tasks as strata (rliable, "
        f"{config.get('reps')} reps). steps→80%: B + 1 when never reached. `step_ms` is timing (not reproducible).",
    ]
    for protocol in dict.fromkeys(r["protocol"] for r in board):
        rows = [r for r in board if r["protocol"] == protocol]
        halves = keeps_memory(protocol)
        cols = [*head[:-3], "1st half", "2nd half", *head[-3:]] if halves else head
        lines += ["", f"## {protocol}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        notes = []
        for r in rows:
            if r["status"] != "ok":
                notes.append(f"- `{r['agent']}`: {r['status']}")
                continue
            cells = [f"`{r['agent']}`", _ci(r, "efficiency"), _ci(r, "iqm")]
            cells += [_fmt(r[f"eff_{k}"], 3) for k in interventions if k != "ablation"]
            cells += [_fmt(r["recall"], 3), _fmt(r["auc"], 3), _fmt(r["steps80"], 2)]
            cells += [_fmt(r["p_gt_greedy"], 3) or "—", _fmt(r["p_gt_ranker"], 3) or "—"]
            if halves:
                cells += [_fmt(r.get(c, float("nan")), 3) or "—" for c in HALF_COLUMNS]
            cells += [r["interventions"], str(r["episodes"]), _fmt(r["step_ms"], 3)]
            lines.append("| " + " | ".join(cells) + " |")
        if notes:
            lines += ["", "Not applicable:", *notes]
    return "\n".join(lines) + "\n"


def write_leaderboard(
    out: str | Path, board: Sequence[Mapping], interventions: Sequence[str], config: Mapping
) -> dict:
    """Write leaderboard.md / .csv / .json into `out`; returns their paths."""
    out = Path(out)
    paths = {
        "md": out / "leaderboard.md",
        "csv": out / "leaderboard.csv",
        "json": out / "leaderboard.json",
    }
    paths["md"].write_text(to_markdown(board, interventions, config))
    paths["csv"].write_text(to_csv(board, interventions))
    paths["json"].write_text(to_json(board, interventions, config))
    return paths
