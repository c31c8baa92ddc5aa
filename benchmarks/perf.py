"""`acd perf`: the performance figures of docs/design.md (Performance targets), measured in one run, as ratios where timing is noisy.

    acd perf [--quick] [--model toy-4l] [--device cuda] [--json PATH] [--skip-bench] [--skip-ray]

Figures: live `env.step` ÷ bare `feature_intervention`; batched sweep of all K×types vs one by one (with an
equality check); replay steps/s (single env and a vector env); `aif` decision latency for K = 64/256/512 ×
3 types after JIT and its compile time; how live step and attribution time grow with prompt length and K;
a circuit table's per-prompt cost (attribution, batched sweep) and `acd tables build` local vs Ray with 2
workers (a ratio; Ray start-up included); default `acd bench` wall time; peak memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

SCHEMA_VERSION = 1
TARGETS = {
    "live_step_over_feature_intervention": ("<=", 1.2),
    "batched_speedup": (">=", 20.0),
    "batched_max_abs_diff": ("<=", 1e-5),
    "replay_steps_per_s": (">=", 50_000.0),
    "aif_decision_ms_k512": ("<=", 2.0),
    "bench_wall_s": ("<=", 180.0),  # both tracks (the feature track alone: 120 s)
    "set_rows_over_clean_forward": ("<=", 3.0),
    "reference_search_s": ("<=", 5.0),
}


def _median_time(fn: Callable[[], Any], reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def live_step_ratio(model: Any, reps: int) -> dict:
    """Median live env.step time ÷ median bare feature_intervention time for the same interventions."""
    from acd_env.backends import LiveBackend
    from acd_env.env import CircuitDiscoveryEnv
    from acd_env.tasks import load_task

    env = CircuitDiscoveryEnv(model=model, prompts=load_task("ioi", split="test", n=1), budget=64)
    env.reset(seed=0)
    case, tokens = env.case, cast(LiveBackend, env.backend)._entry(0)[1].tokens  # a model given: live
    step_times, bare_times = [], []
    for k in range(min(reps, case.n_valid)):
        layer, pos, feat = (int(x) for x in case.features[k])
        value = float(case.values[k, 0])
        t0 = time.perf_counter()
        model.feature_intervention(tokens, [(layer, pos, feat, value)], freeze_attention=False)
        bare_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        env.step(k * env.n_types)
        step_times.append(time.perf_counter() - t0)
    step, bare = statistics.median(step_times[2:]), statistics.median(bare_times[2:])
    return {"live_step_ms": step * 1e3, "feature_intervention_ms": bare * 1e3,
            "live_step_over_feature_intervention": step / bare}  # fmt: skip


def batched_sweep(model: Any, reps: int) -> dict:
    """All K×types interventions of one prompt: one batched engine call vs a feature_intervention loop."""

    from acd_env.backends import LiveBackend
    from acd_env.case import CaseSettings
    from acd_env.interventions import Intervention, run_batch
    from acd_env.tasks import load_task

    backend = LiveBackend(model, load_task("ioi", split="test", n=1), CaseSettings())
    case, clean = backend._entry(0)
    rows = [Intervention._make([*(int(x) for x in case.features[k]), float(case.values[k, t])])
            for k in range(case.n_valid) for t in range(case.values.shape[1])]  # fmt: skip
    batched_s = _median_time(lambda: run_batch(model, clean.tokens, rows, clean.activations), reps, warmup=1)
    result = run_batch(model, clean.tokens, rows, clean.activations)
    t0, max_diff = time.perf_counter(), 0.0
    for i, row in enumerate(rows):
        logits, _ = model.feature_intervention(clean.tokens, [tuple(row)], freeze_attention=False)
        max_diff = max(max_diff, float((logits[0, -1] - result.logits[i]).abs().max()))
    loop_s = time.perf_counter() - t0
    return {"sweep_rows": len(rows), "batched_s": batched_s, "loop_s": loop_s,
            "batched_speedup": loop_s / batched_s, "batched_max_abs_diff": max_diff}  # fmt: skip


def set_rows_ratio(model: Any, reps: int) -> dict:
    """A batch of K keep-only set rows (random circuits) ÷ a clean forward pass of the same batch size."""
    import torch

    from acd_env.backends import LiveBackend
    from acd_env.case import CaseSettings
    from acd_env.set_engine import run_sets
    from acd_env.tasks import load_task

    case, clean_state = LiveBackend(model, load_task("ioi", split="test", n=1), CaseSettings())._entry(0)
    n = case.n_valid
    tokens = clean_state.tokens
    keep = np.random.default_rng(0).random((n, n)) < 0.3
    rows_s = _median_time(lambda: run_sets(model, tokens, case.features[:n], np.zeros(n), ~keep), reps)

    def clean() -> None:
        with torch.no_grad():
            model(tokens.unsqueeze(0).expand(n, -1))

    clean_s = _median_time(clean, reps)
    return {"set_rows": n, "set_rows_ms": rows_s * 1e3, "clean_forward_ms": clean_s * 1e3,
            "set_rows_over_clean_forward": rows_s / clean_s}  # fmt: skip


def reference_search(model: Any, n_prompts: int) -> dict:
    """Seconds of the circuit track's reference search (beam 4, k ≤ 20) per test prompt of ioi and induction
    (median), on one core by default."""
    from acd_env.backends import LiveBackend
    from acd_env.case import CaseSettings
    from acd_env.circuit_reference import CircuitMeasurer
    from acd_env.tasks import load_task

    prompts = [p for task in ("ioi", "induction") for p in load_task(task, split="test", n=n_prompts)]
    backend = LiveBackend(model, prompts, CaseSettings())
    times = []
    for i in range(len(prompts)):
        case, clean = backend._entry(i)
        n = case.n_valid
        t0 = time.perf_counter()
        cm = CircuitMeasurer(model, clean.tokens, case.features[:n], np.zeros(n), clean.logits, case.answer_id,
                             case.cf_answer_id)  # fmt: skip
        cm.reference(len(case.features))
        times.append(time.perf_counter() - t0)
    return {"reference_search_prompts": len(times), "reference_search_s": statistics.median(times)}


def replay_throughput(model_name: str, n_steps: int) -> dict:
    """Steps per second of the replay env (unwrapped, one process) and of a 4-env sync vector env."""
    import gymnasium as gym

    from acd_env.env import CircuitDiscoveryEnv

    env = CircuitDiscoveryEnv(model=model_name, backend="replay", split="test")
    env.reset(seed=0)
    actions = np.random.default_rng(0).permutation(env.action_space.n)
    t0, done_steps = time.perf_counter(), 0
    while done_steps < n_steps:
        for a in actions[: env.budget]:
            _, _, terminated, _, _ = env.step(int(a))
            done_steps += 1
            if terminated:
                break
        env.reset()
    single = done_steps / (time.perf_counter() - t0)
    vec = gym.make_vec("CircuitDiscovery-v0", num_envs=4, vectorization_mode="sync", model=model_name,
                       backend="replay", split="test")  # fmt: skip
    vec.reset(seed=0)
    t0, vec_steps = time.perf_counter(), 0
    rng = np.random.default_rng(0)
    while vec_steps < n_steps // 4:
        vec.step(rng.integers(0, env.action_space.n, size=4))
        vec_steps += 1
    vec_rate = 4 * vec_steps / (time.perf_counter() - t0)
    vec.close()
    return {"replay_steps_per_s": single, "replay_vec4_steps_per_s": vec_rate}


def aif_latency(quick: bool) -> dict:
    """Decision latency of the active-inference agent after JIT, and its compile time, for K = 64/256/512."""
    try:
        from agents.aif import decision_benchmark
    except ImportError as e:  # the agent is optional for this figure
        return {"aif_error": f"agents.aif.decision_benchmark unavailable: {e}"}
    out = {}
    for k in (64, 256, 512):
        compile_s, decision_s = decision_benchmark(k, n_types=3, reps=20 if quick else 200)
        out[f"aif_compile_s_k{k}"] = compile_s
        out[f"aif_decision_ms_k{k}"] = decision_s * 1e3
    return out


def scaling(model: Any, quick: bool) -> dict:
    """Attribution and live step time as the prompt grows (induction prompts of 9–13 tokens and ioi 15)."""
    from acd_env.attribution.graph import attribute_graph
    from acd_env.tasks import load_task

    rows = []
    prompts = {len(p.clean.split()): p for t in ("counting", "induction", "agreement", "ioi")
               for p in load_task(t, split="test", n=10)}  # fmt: skip
    lengths = sorted(prompts)[:: 2 if quick else 1]
    for n_words in lengths:
        prompt = prompts[n_words]
        tokens = model.ensure_tokenized(prompt.clean)
        attr_s = _median_time(
            lambda tokens=tokens: attribute_graph(model, tokens), 1 if quick else 3, warmup=1
        )
        graph = attribute_graph(model, tokens)
        n_features = len(graph.selected_features)
        layer, pos, feat = (int(x) for x in graph.active_features[0])
        step_s = _median_time(
            lambda tokens=tokens, layer=layer, pos=pos, feat=feat: model.feature_intervention(
                tokens, [(layer, pos, feat, 0.0)], freeze_attention=False
            ),
            5 if quick else 20,
        )
        rows.append({"n_tokens": len(tokens), "n_active_features": n_features,
                     "attribution_s": attr_s, "intervention_ms": step_s * 1e3})  # fmt: skip
    return {"scaling": rows}


def table_cost(model: Any, quick: bool) -> dict:
    """Per-prompt cost of a circuit table: attribution + descriptors, and the batched sweep of K × types."""
    from acd_env.backends import LiveBackend
    from acd_env.case import CaseSettings
    from acd_env.tasks import load_task

    prompts = load_task("ioi", split="test", n=2 if quick else 6)
    backend = LiveBackend(model, prompts, CaseSettings())
    backend.case(0)  # warm-up (first-call allocations)
    case_s, sweep_s = [], []
    for i in range(1, len(prompts)):
        t0 = time.perf_counter()
        backend.case(i)
        case_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        backend.oracle(i)
        sweep_s.append(time.perf_counter() - t0)
    return {
        "table_prompt_attribution_s": statistics.mean(case_s),
        "table_prompt_sweep_s": statistics.mean(sweep_s),
    }


def ray_tables_ratio(model: str, quick: bool) -> dict:
    """`acd tables build` of one task split, local vs `--executor ray --workers 2` (fresh processes; Ray's
    start-up and each worker's model load included)."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("ray") is None:
        return {"ray_tables_error": "ray is not installed"}
    n = "8" if quick else "40"
    walls = {}
    with tempfile.TemporaryDirectory() as out:
        for name, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "2"])):
            cmd = [sys.executable, "-m", "benchmarks.cli", "tables", "build", "--model", model, "--task", "ioi",
                   "--n", n, "--out", f"{out}/{name}.npz", "--no-progress", *extra]  # fmt: skip
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            walls[name] = time.perf_counter() - t0
            if proc.returncode != 0:
                return {"ray_tables_error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return {"tables_prompts": int(n), "tables_local_s": walls["local"], "tables_ray2_s": walls["ray"],
            "tables_local_over_ray2": walls["local"] / walls["ray"]}  # fmt: skip


def bench_wall(quick: bool) -> dict:
    """Wall time of the default `acd bench` (model load included) in a fresh process."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "benchmarks.cli", "bench", "--out", out]
        if quick:
            cmd += ["--agents", "random,greedy,oracle", "--seeds", "1", "--prompts-per-task", "2"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"bench_error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return {"bench_wall_s" if not quick else "bench_quick_wall_s": wall}


def verdicts(figures: dict) -> dict:
    out = {}
    for key, (op, target) in TARGETS.items():
        if key in figures:
            value = figures[key]
            out[key] = {
                "target": f"{op} {target:g}",
                "met": value <= target if op == "<=" else value >= target,
            }
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from acd_env.errors import ACDError, check_out_dir
    from acd_env.models import load_model

    if args.threads < 1:
        raise ACDError(f"--threads must be a positive integer, got {args.threads}")
    if args.json:
        check_out_dir(Path(args.json).parent, "--json")
    torch.set_num_threads(args.threads)
    quick = args.quick
    model = load_model(args.model, args.device)
    figures: dict[str, Any] = {}
    figures.update(live_step_ratio(model, reps=12 if quick else 40))
    figures.update(batched_sweep(model, reps=2 if quick else 5))
    figures.update(set_rows_ratio(model, reps=3 if quick else 10))
    figures.update(reference_search(model, n_prompts=1 if quick else 3))
    figures.update(replay_throughput(args.model, n_steps=5_000 if quick else 100_000))
    figures.update(aif_latency(quick))
    figures.update(scaling(model, quick))
    figures.update(table_cost(model, quick))
    if not args.skip_ray:
        figures.update(ray_tables_ratio(args.model, quick))
    if not args.skip_bench:
        figures.update(bench_wall(quick))
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "schema_version": SCHEMA_VERSION,
        "command": "acd " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "quick": quick,
        "model": args.model,
        "figures": figures,
        "targets": verdicts(figures),
    }
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def format_table(report: dict) -> str:
    lines = ["| figure | value | target | met |", "|---|---|---|---|"]
    for key, value in report["figures"].items():
        if key == "scaling":
            continue
        target = report["targets"].get(key)
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} | {target['target'] if target else ''} | "
                     f"{('yes' if target['met'] else 'NO') if target else ''} |")  # fmt: skip
    lines += ["", "| tokens | active features | attribution s | intervention ms |", "|---|---|---|---|"]
    for row in report["figures"].get("scaling", []):
        lines.append(f"| {row['n_tokens']} | {row['n_active_features']} | {row['attribution_s']:.3f} | "
                     f"{row['intervention_ms']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("perf", help="measure the performance targets (docs/design.md)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="few repetitions (a smoke test; figures are noisy)")
    p.add_argument("--model", default="toy-4l")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    p.add_argument("--skip-bench", action="store_true", help="do not time the default `acd bench`")
    p.add_argument("--skip-ray", action="store_true", help="do not time `acd tables build` local vs Ray")
    p.add_argument("--device", default=None, help="torch device (e.g. cuda; default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; see README)")
    p.set_defaults(func=run)
