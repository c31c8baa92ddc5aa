"""The circuit track's leaderboard: one row per (protocol, agent), appended to leaderboard.md and written as
circuit_leaderboard.csv / .json.

Columns (per episode, aggregated over prompts × seeds with tasks as strata, as on the feature track):

| column | meaning |
|---|---|
| `efficiency`, `_lo/_hi` | circuit efficiency: the declared circuit's AUC ÷ the reference's, mean of per-task means, 95 % stratified-bootstrap CI |
| `auc`, `_lo/_hi` | circuit AUC: mean KL-faithfulness f(C_k) over k ∈ {1, 2, 3, 5, 8, 13, 20}, with its CI |
| `iqm`, `_lo/_hi` | interquartile mean of circuit efficiency, with its CI |
| `cpr`, `cmd` | MIB's circuit performance ratio (area under f) and circuit-model distance (area under abs(1 − f)) |
| `logit_auc` | mean logit-difference faithfulness over the grid |
| `necessity` | mean KL(ablate C_k) ÷ KL(keep ∅) over the grid |
| `f_<k>` | mean f(C_k) at each grid size (the report's curve) |
| `p_gt_atp` | rliable probability of improvement over `atp` (compares episodes across prompts) |
| `diff_atp`, `_lo/_hi`, `win_atp` | paired on the same (prompt, seed): mean of efficiency − atp's efficiency with its stratified-bootstrap CI, and the share of pairs where the agent is ahead (ties count half) |
| `queries` | mean set queries used per episode |
| `by_task` | mean circuit efficiency per task (JSON; the markdown's per-task table) |
| `step_ms` | timing: mean wall time per step, the harness's evaluation included |
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from acd_env.circuit import K_GRID
from benchmarks.aggregate import (
    DEFAULT_REPS,
    interval_estimates,
    ordered_episodes,
    probability_of_improvement,
    summarize,
)
from benchmarks.leaderboard import _ci, _fmt, _round

BASELINE = "atp"
SCORES = ("efficiency", "auc", "cpr", "cmd", "necessity")
TIMING_COLUMNS = ("step_ms",)


def _per_task(episodes: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """task → (n_runs, 5 + G): the SCORES then f at every grid size, per episode."""
    out: dict[str, list[list[float]]] = {}
    for e in ordered_episodes(episodes):
        m = e["metrics"]
        out.setdefault(e["task"], []).append([float(m[s]) for s in SCORES] + [float(x) for x in m["f"]])
    return {t: np.asarray(v, dtype=np.float64) for t, v in out.items()}


def _efficiency_by_task(episodes: Sequence[Mapping]) -> dict[str, np.ndarray]:
    return {t: v[:, 0] for t, v in _per_task(episodes).items()}


def paired_difference(
    agent: Sequence[Mapping], baseline: Sequence[Mapping], *, reps: int, seed: int
) -> dict[str, float]:
    """Mean (of per-task means) of efficiency − baseline efficiency over the (prompt, seed) pairs both ran,
    with its stratified-bootstrap 95 % CI, and the share of pairs the agent wins (ties half)."""
    base = {(e["prompt_id"], e["seed"]): float(e["metrics"]["efficiency"]) for e in baseline}
    diffs: dict[str, list[float]] = {}
    for e in ordered_episodes(agent):
        key = (e["prompt_id"], e["seed"])
        if key in base:
            diffs.setdefault(e["task"], []).append(float(e["metrics"]["efficiency"]) - base[key])
    if not diffs:
        nan = float("nan")
        return {"diff": nan, "diff_lo": nan, "diff_hi": nan, "win": nan}
    est = interval_estimates(diffs, reps=reps, seed=seed, name="paired")
    flat = np.concatenate([np.asarray(v) for v in diffs.values()])
    win = float(np.mean((flat > 0) + 0.5 * (flat == 0)))
    return {"diff": est["mean"], "diff_lo": est["mean_lo"], "diff_hi": est["mean_hi"], "win": win}


def build_circuit_leaderboard(
    rows: Sequence[Mapping],
    *,
    protocols: Sequence[str],
    agents: Sequence[str],
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    not_applicable: Mapping[tuple[str, str], str] | None = None,
) -> list[dict]:
    """Leaderboard rows from circuit-track results rows (`track == "circuit"`)."""
    episodes: dict[tuple[str, str], list[Mapping]] = {}
    na = dict(not_applicable or {})
    for r in rows:
        if r.get("track") != "circuit":
            continue
        if r.get("kind") == "episode":
            episodes.setdefault((r["protocol"], r["agent"]), []).append(r)
        elif r.get("kind") == "na":
            na[(r["agent"], r["protocol"])] = r["reason"]
    board: list[dict] = []
    for protocol in protocols:
        ranked, missing = [], []
        base = episodes.get((protocol, BASELINE))
        for agent in agents:
            eps = episodes.get((protocol, agent))
            if not eps:
                reason = na.get((agent, protocol), "no finished episodes")
                missing.append({"protocol": protocol, "agent": agent, "status": f"n/a: {reason}"})
                continue
            row: dict = {"protocol": protocol, "agent": agent, "status": "ok", "episodes": len(eps)}
            row["tasks"] = len({e["task"] for e in eps})
            per_task = _per_task(eps)
            est = summarize(per_task, reps=reps, seed=seed)
            cols = len(SCORES)
            for j, name in enumerate(SCORES):
                row[name] = float(est["columns"][j])
                if name in ("efficiency", "auc"):
                    row[f"{name}_lo"] = float(est["columns_lo"][j])
                    row[f"{name}_hi"] = float(est["columns_hi"][j])
            row.update(iqm=est["iqm"], iqm_lo=est["iqm_lo"], iqm_hi=est["iqm_hi"])
            for j, k in enumerate(K_GRID):
                row[f"f_{k}"] = float(est["columns"][cols + j])
                row[f"f_{k}_lo"] = float(est["columns_lo"][cols + j])
                row[f"f_{k}_hi"] = float(est["columns_hi"][cols + j])
            logit = [
                float(e["metrics"]["logit_auc"]) for e in eps if e["metrics"].get("logit_auc") is not None
            ]
            row["logit_auc"] = (
                float(np.nanmean(logit)) if logit and np.isfinite(logit).any() else float("nan")
            )
            if base is not None and agent != BASELINE:
                row["p_gt_atp"] = probability_of_improvement(
                    _efficiency_by_task(eps), _efficiency_by_task(base)
                )
                paired = paired_difference(eps, base, reps=reps, seed=seed)
                row.update(
                    diff_atp=paired["diff"], diff_atp_lo=paired["diff_lo"], diff_atp_hi=paired["diff_hi"]
                )
                row["win_atp"] = paired["win"]
            row["by_task"] = {t: float(v[:, 0].mean()) for t, v in sorted(per_task.items())}
            row["queries"] = float(np.mean([e.get("queries", 0) for e in eps]))
            row["step_ms"] = float(np.mean([e["step_ms"] for e in eps]))
            ranked.append(row)
        ranked.sort(key=lambda r: (-r["efficiency"], r["agent"]))
        missing.sort(key=lambda r: r["agent"])
        board.extend(ranked + missing)
    return board


def reference_curve(rows: Sequence[Mapping]) -> np.ndarray:
    """(G,) the reference's mean f at every grid size over the circuit episodes of `rows` (one per prompt)."""
    curves = {e["prompt_id"]: e["metrics"]["ref_f"] for e in rows if e.get("kind") == "episode"}
    if not curves:
        return np.full(len(K_GRID), np.nan)
    return np.mean(np.asarray(list(curves.values()), dtype=np.float64), axis=0)


def columns() -> list[str]:
    return [
        "protocol", "agent", "status", "episodes", "tasks",
        "efficiency", "efficiency_lo", "efficiency_hi", "auc", "auc_lo", "auc_hi", "iqm", "iqm_lo", "iqm_hi",
        "cpr", "cmd", "logit_auc", "necessity", *(f"f_{k}" for k in K_GRID),
        "p_gt_atp", "diff_atp", "diff_atp_lo", "diff_atp_hi", "win_atp", "queries", *TIMING_COLUMNS,
    ]  # fmt: skip


JSON_ONLY = ("by_task",)


def to_csv(board: Sequence[Mapping]) -> str:
    cols = columns()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in board:
        writer.writerow([_fmt(row.get(c), 2 if c in TIMING_COLUMNS else 4) for c in cols])
    return buf.getvalue()


def to_json(board: Sequence[Mapping], config: Mapping) -> str:
    doc = {
        "columns": columns(),
        "timing_columns": list(TIMING_COLUMNS),
        "config": dict(config),
        "rows": [
            {c: _round(row.get(c)) for c in columns() if c in row}
            | {k: {t: _round(v) for t, v in row[k].items()} for k in JSON_ONLY if k in row}
            for row in board
        ],
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def to_markdown(board: Sequence[Mapping], config: Mapping) -> str:
    head = ["agent", "circuit efficiency [95% CI]", "IQM [95% CI]", "AUC [95% CI]", "CPR", "CMD", "logit-diff AUC",
            "necessity", "queries", "P(>atp)", "Δ vs atp, paired [95% CI]", "wins vs atp", "n", "step_ms"]  # fmt: skip
    excluded = config.get("circuit_excluded", {})
    lines = [
        "",
        "# Circuit track (`CircuitSearch-v0`)",
        "",
        f"Circuit efficiency = the declared circuit's AUC ÷ the reference's (beam search, no budget); AUC = mean "
        f"KL-faithfulness f(C_k) over k ∈ {{{', '.join(map(str, K_GRID))}}}; CPR / CMD = areas under f and "
        f"|1 − f|. f is reported as measured: on a few prompts a partial circuit drives f far below 0 and one such "
        "prompt moves a mean by several hundredths; the IQM (interquartile mean over prompts × seeds) is robust to "
        f"it. B = {config.get('budget')} set queries. P(>atp) is rliable's probability of improvement; the "
        "paired Δ compares the same (prompt, seed) episodes. Prompts whose candidates, all ablated, move the "
        f"next-token distribution by less than {config.get('kl_floor')} nats are excluded: "
        + (", ".join(f"{t} {n}" for t, n in excluded.items()) if excluded else "none")
        + ".",
    ]
    for protocol in dict.fromkeys(r["protocol"] for r in board):
        rows = [r for r in board if r["protocol"] == protocol]
        lines += [
            "",
            f"## circuit · {protocol}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        notes = []
        for r in rows:
            if r["status"] != "ok":
                notes.append(f"- `{r['agent']}`: {r['status']}")
                continue
            paired = _ci(r, "diff_atp") if "diff_atp" in r and not math.isnan(r["diff_atp"]) else "—"
            cells = [f"`{r['agent']}`", _ci(r, "efficiency"), _ci(r, "iqm"), _ci(r, "auc"), _fmt(r["cpr"], 3), _fmt(r["cmd"], 3),
                     _fmt(r["logit_auc"], 3), _fmt(r["necessity"], 3), _fmt(r["queries"], 1),
                     _fmt(r.get("p_gt_atp"), 3) or "—", paired, _fmt(r.get("win_atp"), 3) or "—",
                     str(r["episodes"]), _fmt(r["step_ms"], 3)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        if notes:
            lines += ["", "Not applicable:", *notes]
        ok = [r for r in rows if r["status"] == "ok"]
        tasks = sorted({t for r in ok for t in r["by_task"]})
        if len(tasks) > 1:
            lines += ["", "Circuit efficiency per task (mean over prompts × seeds):", "",
                      "| agent | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]  # fmt: skip
            for r in ok:
                cells = [_fmt(r["by_task"].get(t), 3) or "—" for t in tasks]
                lines.append(f"| `{r['agent']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_circuit_leaderboard(out: str | Path, board: Sequence[Mapping], config: Mapping) -> dict:
    """Append the circuit section to leaderboard.md; write circuit_leaderboard.csv / .json. Returns the paths."""
    out = Path(out)
    paths = {"md": out / "leaderboard.md", "csv": out / "circuit_leaderboard.csv",
             "json": out / "circuit_leaderboard.json"}  # fmt: skip
    with open(paths["md"], "a") as f:
        f.write(to_markdown(board, config))
    paths["csv"].write_text(to_csv(board))
    paths["json"].write_text(to_json(board, config))
    return paths
