"""Does a zoo model tell agents apart? The discrimination table of the embedded benchmark.

    python scripts/zoo_report.py                       # toy-4l, 20 test prompts per task
    python scripts/zoo_report.py --root DIR --n 10     # a model directory written by scripts/train_zoo.py
    python scripts/zoo_report.py --json report.json --check   # exit 1 when a quality bar fails

For every toy task it takes `--n` prompts of the test split and, for each prompt: attributes it with the
benchmark's settings (`acd_env.attribution.graph`), takes the K most influential features as candidates,
measures all K candidates x 3 intervention types in one batched sweep (`acd_env.interventions.run_batch`,
`freeze_attention=False`: ablation to 0, patching to the activation on the prompt's counterfactual, steering
to 4 x the clean activation) and compares three ways of spending a budget of B interventions per type:

- oracle: the B candidates with the largest measured KL (the best any agent can do);
- greedy: the B most influential candidates (what attribution alone predicts);
- random: any B candidates (its exact expectation, B x mean KL).

Printed per task and overall (the mean of the task means): test-split accuracy, circuit-tracer's
`compute_graph_scores` (replacement, completeness), attribution seconds per prompt, greedy / oracle and
random / oracle per intervention type, Spearman(influence, KL) per type, and the share of the total ablation
KL that the single strongest candidate holds. Then one PASS/FAIL line per quality bar (docs/design.md, Models).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

K_DEFAULT = 64
B_DEFAULT = 20
STEERING_SCALE = 4.0
BARS = {"accuracy": 0.95, "replacement": 0.7, "completeness": 0.85, "greedy": 0.95, "top_share": 0.5}


def token_id(tokenizer: Any, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not a single token of the model's vocabulary")
    return int(ids[0])


@torch.no_grad()
def accuracy(model: Any, prompts: Sequence[Any]) -> float:
    """Share of prompts whose most likely next token is the expected answer."""
    correct = 0
    for p in prompts:
        tokens = model.ensure_tokenized(p.clean)
        logits = model(tokens.unsqueeze(0))[0, -1]
        correct += int(logits.argmax()) == token_id(model.tokenizer, p.answer)
    return correct / len(prompts)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)


def budget_ratios(kl: np.ndarray, influence: np.ndarray, budget: int) -> dict[str, float]:
    """greedy / oracle, random / oracle and Spearman for measured `kl` of candidates ranked by `influence`."""
    b = min(budget, len(kl))
    oracle = float(np.sort(kl)[::-1][:b].sum())
    greedy_idx = np.argsort(-influence, kind="stable")[:b]
    if oracle <= 0:
        return {"greedy": math.nan, "random": math.nan, "spearman": math.nan, "oracle": oracle}
    return {
        "greedy": float(kl[greedy_idx].sum()) / oracle,
        "random": b * float(kl.mean()) / oracle,
        "spearman": _spearman(influence, kl),
        "oracle": oracle,
    }


def measure_prompt(
    model: Any,
    prompt: Any,
    *,
    k: int = K_DEFAULT,
    budget: int = B_DEFAULT,
    steering_scale: float = STEERING_SCALE,
    freeze_attention: bool = False,
) -> dict[str, Any]:
    """Attribute one prompt, measure its top-k candidates under every intervention type, and score budgets.

    Returns a flat record: attribution time, graph scores, number of feature nodes and candidates, and for
    each intervention type `greedy_<type>`, `random_<type>`, `spearman_<type>` and `oracle_<type>` (summed
    KL of the best `budget` candidates), plus `top_share` (largest ablation KL / total ablation KL).
    """
    from circuit_tracer.graph import compute_graph_scores

    from acd_env.attribution.graph import attribute_graph, node_influence, top_candidates, view
    from acd_env.interventions import (
        INTERVENTION_TYPES,
        Intervention,
        clean_run,
        intervention_value,
        run_batch,
    )
    from acd_env.measurements import measure

    if prompt.counterfactual is None or prompt.answer is None:
        raise ValueError(f"prompt {prompt.id!r} needs an answer and a counterfactual for this report")
    tokens = model.ensure_tokenized(prompt.clean)
    cf_tokens = model.ensure_tokenized(prompt.counterfactual)
    if cf_tokens.shape != tokens.shape:
        raise ValueError(
            f"prompt {prompt.id!r}: counterfactual has {len(cf_tokens)} tokens, clean {len(tokens)}"
        )

    start = time.perf_counter()
    graph = attribute_graph(model, tokens)
    attribution_s = time.perf_counter() - start
    replacement, completeness = compute_graph_scores(graph)
    g = view(graph)
    influence = node_influence(g)
    cand = top_candidates(influence, k)

    with torch.no_grad():
        clean_logits, clean_acts = clean_run(model, tokens)
        _, cf_acts = clean_run(model, cf_tokens)
    rows = []
    for kind in INTERVENTION_TYPES:
        for j in cand:
            layer, pos, feat = (int(x) for x in g.features[j])
            value = intervention_value(
                kind, float(clean_acts[layer, pos, feat]), float(cf_acts[layer, pos, feat]), steering_scale
            )
            rows.append(Intervention(layer, pos, feat, value))
    result = run_batch(model, tokens, rows, clean_acts, freeze_attention=freeze_attention)
    m = measure(
        clean_logits[-1],
        result.logits,
        result.downstream_sq,
        result.downstream_ref_sq,
        result.n_affected,
        token_id(model.tokenizer, prompt.answer),
        token_id(model.tokenizer, prompt.counterfactual_answer) if prompt.counterfactual_answer else None,
    )
    kl = m.kl.astype(np.float64).reshape(len(INTERVENTION_TYPES), len(cand))
    cand_influence = influence[cand].double().numpy()
    record: dict[str, Any] = {
        "id": prompt.id,
        "task": prompt.task,
        "n_pos": len(tokens),
        "n_features": len(g.features),
        "n_candidates": len(cand),
        "top1_correct": bool(int(clean_logits[-1].argmax()) == token_id(model.tokenizer, prompt.answer)),
        "attribution_s": attribution_s,
        "replacement": float(replacement),
        "completeness": float(completeness),
    }
    for i, kind in enumerate(INTERVENTION_TYPES):
        for key, value in budget_ratios(kl[i], cand_influence, budget).items():
            record[f"{key}_{kind}"] = value
    ablation = kl[INTERVENTION_TYPES.index("ablation")]
    record["top_share"] = float(ablation.max() / ablation.sum()) if ablation.sum() > 0 else math.nan
    return record


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


METRICS = [
    "replacement",
    "completeness",
    *(f"{m}_{t}" for m in ("greedy", "random", "spearman") for t in ("ablation", "patching", "steering")),
    "top_share",
]


def summarize(records: Sequence[dict], acc: float, n_acc: int) -> dict[str, float]:
    out: dict[str, float] = {"accuracy": acc, "n_accuracy": n_acc, "n_prompts": len(records)}
    for key in METRICS:
        out[key] = _mean([r[key] for r in records])
    times = [r["attribution_s"] for r in records]
    out["attribution_s_mean"] = _mean(times)
    out["attribution_s_max"] = max(times) if times else math.nan
    return out


def overall(per_task: dict[str, dict]) -> dict[str, float]:
    """The mean of the task means (each task weighs the same); attribution max is the max over tasks."""
    rows = list(per_task.values())
    out = {key: _mean([r[key] for r in rows]) for key in ["accuracy", *METRICS, "attribution_s_mean"]}
    out["attribution_s_max"] = max(r["attribution_s_max"] for r in rows)
    out["n_accuracy"] = sum(r["n_accuracy"] for r in rows)
    out["n_prompts"] = sum(r["n_prompts"] for r in rows)
    return out


def check_bars(per_task: dict[str, dict], total: dict[str, float]) -> list[dict]:
    """The quality bars (docs/design.md, Models), each {"bar", "passed", "detail"}."""
    types = ("ablation", "patching", "steering")
    low_acc = {
        t: round(r["accuracy"], 3) for t, r in per_task.items() if not r["accuracy"] >= BARS["accuracy"]
    }
    saturated = [t for t, r in per_task.items() if all(r[f"greedy_{k}"] >= BARS["greedy"] for k in types)]
    return [
        {
            "bar": f"every task accuracy >= {BARS['accuracy']}",
            "passed": not low_acc,
            "detail": f"below: {low_acc}" if low_acc else "all tasks",
        },
        {
            "bar": f"mean replacement >= {BARS['replacement']}",
            "passed": total["replacement"] >= BARS["replacement"],
            "detail": f"{total['replacement']:.3f}",
        },
        {
            "bar": f"mean completeness >= {BARS['completeness']}",
            "passed": total["completeness"] >= BARS["completeness"],
            "detail": f"{total['completeness']:.3f}",
        },
        {
            "bar": f"no task with greedy >= {BARS['greedy']} of the oracle for every intervention type",
            "passed": not saturated,
            "detail": f"saturated: {saturated}" if saturated else "none saturated",
        },
        {
            "bar": f"mean top-feature share of ablation KL < {BARS['top_share']}",
            "passed": total["top_share"] < BARS["top_share"],
            "detail": f"{total['top_share']:.3f}",
        },
    ]


def markdown(per_task: dict[str, dict], total: dict[str, float], k: int, budget: int, scale: float) -> str:
    cols = {**per_task, "all": total}

    def row(label: str, fmt) -> str:
        return f"| {label} | " + " | ".join(fmt(r) for r in cols.values()) + " |"

    def f3(key: str):
        return lambda r: "n/a" if math.isnan(r[key]) else f"{r[key]:.3f}"

    labels = {"ablation": "ablation", "patching": "patching", "steering": f"steering {scale:g}x"}
    lines = [
        "| | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
        row("test prompts (accuracy / measured)", lambda r: f"{r['n_accuracy']} / {r['n_prompts']}"),
        row("accuracy", f3("accuracy")),
        row("replacement / completeness", lambda r: f"{r['replacement']:.2f} / {r['completeness']:.2f}"),
        row(
            "attribution s/prompt (mean / max)",
            lambda r: f"{r['attribution_s_mean']:.2f} / {r['attribution_s_max']:.2f}",
        ),
    ]
    for metric, title in (
        ("greedy", "greedy ÷ oracle"),
        ("random", "random ÷ oracle"),
        ("spearman", "Spearman(influence, KL)"),
    ):
        for kind, label in labels.items():
            lines.append(row(f"{title}, {label}", f3(f"{metric}_{kind}")))
    lines.append(row("top feature's share of ablation KL", f3("top_share")))
    lines.append("")
    lines.append(
        f"K = {k} candidates by influence, budget B = {budget}, freeze_attention = False; 'all' = mean of tasks."
    )
    return "\n".join(lines)


def load(model_name: str, root: Path | None, device: str | None) -> tuple[Any, str, str]:
    """(model, name, weights hash) for a zoo name or a model directory."""
    from acd_env.models import toy

    if root is not None:
        root = Path(root)
        if not (root / "config.json").is_file():
            raise SystemExit(
                f"{root} is not a model directory (no config.json); build one with scripts/train_zoo.py"
            )
        return toy.load_toy(root.name, device, root=root), root.name, toy.weights_hash(root)
    from acd_env.models import load_model, model_info

    model = load_model(model_name, device)
    return model, model_name, model_info(model).weights_hash


def build_report(
    model: Any,
    tasks: Sequence[str],
    n: int,
    *,
    k: int = K_DEFAULT,
    budget: int = B_DEFAULT,
    steering_scale: float = STEERING_SCALE,
    log=print,
) -> dict[str, Any]:
    from acd_env.attribution.graph import attribute_graph
    from acd_env.tasks import load_task

    per_task: dict[str, dict] = {}
    records: list[dict] = []
    warmed = False
    for task in tasks:
        prompts = load_task(task, model=model, split="test")
        acc = accuracy(model, prompts)
        if not warmed:  # the first attribution pays one-off set-up costs: keep them out of the timings
            attribute_graph(model, model.ensure_tokenized(prompts[0].clean))
            warmed = True
        task_records = []
        for p in prompts[:n]:
            rec = measure_prompt(model, p, k=k, budget=budget, steering_scale=steering_scale)
            task_records.append(rec)
            log(
                f"{p.id:18s} n_pos={rec['n_pos']:2d} features={rec['n_features']:4d} "
                f"t={rec['attribution_s']:.2f}s rep={rec['replacement']:.2f} comp={rec['completeness']:.2f} "
                f"greedy abl/pat/ste={rec['greedy_ablation']:.2f}/{rec['greedy_patching']:.2f}/"
                f"{rec['greedy_steering']:.2f} top={rec['top_share']:.2f}"
            )
        per_task[task] = summarize(task_records, acc, len(prompts))
        records += task_records
    total = overall(per_task)
    return {
        "settings": {
            "n": n,
            "k": k,
            "budget": budget,
            "steering_scale": steering_scale,
            "freeze_attention": False,
        },
        "tasks": per_task,
        "overall": total,
        "bars": check_bars(per_task, total),
        "prompts": records,
    }


def _finite(x: Any) -> Any:
    """The report with NaN as null, so that the JSON is strict."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float | np.floating):
        return None if math.isnan(x) else float(x)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy-4l", help="zoo model name (default toy-4l)")
    ap.add_argument("--root", type=Path, default=None, help="a model directory instead of --model")
    ap.add_argument("--n", type=int, default=20, help="test prompts measured per task (default 20)")
    ap.add_argument("--k", type=int, default=K_DEFAULT, help="candidates per prompt (default 64)")
    ap.add_argument("--budget", type=int, default=B_DEFAULT, help="interventions per type (default 20)")
    ap.add_argument("--tasks", nargs="+", default=None, help="toy tasks (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="write the full report (per prompt too) here")
    ap.add_argument("--check", action="store_true", help="exit 1 when a quality bar fails")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--device", default=None, help="torch device (default cpu)")
    ap.add_argument("--quiet", action="store_true", help="no per-prompt lines")
    args = ap.parse_args(argv)
    for name in ("n", "k", "budget", "threads"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name} must be a positive integer, got {getattr(args, name)}")

    from acd_env.tasks import TOY_TASKS

    tasks = args.tasks or list(TOY_TASKS)
    bad = [t for t in tasks if t not in TOY_TASKS]
    if bad:
        ap.error(f"unknown toy task(s) {bad}; valid: {', '.join(TOY_TASKS)}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")  # circuit-tracer's attribute
    t0 = time.perf_counter()
    model, name, weights = load(args.model, args.root, args.device)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    report = build_report(model, tasks, args.n, k=args.k, budget=args.budget, log=log)
    report = {"model": name, "weights_hash": weights, **report, "seconds": round(time.perf_counter() - t0, 1)}
    s = report["settings"]
    print(f"\n## {name} ({weights}): {report['overall']['n_prompts']} prompts, {report['seconds']} s\n")
    print(markdown(report["tasks"], report["overall"], s["k"], s["budget"], s["steering_scale"]))
    print()
    for bar in report["bars"]:
        print(f"{'PASS' if bar['passed'] else 'FAIL'}  {bar['bar']}  ({bar['detail']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(report), indent=1) + "\n")
        print(f"wrote {args.json}")
    failed = not all(bar["passed"] for bar in report["bars"])
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
