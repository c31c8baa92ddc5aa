"""One circuit-track episode: the agent queries sets within its budget, then declares its circuit, which the
harness evaluates (`CircuitSearchEnv.score_circuit`) against the stored reference.

Rows: a `step` row per env step (`query` kind, toggle, the candidate, the measured score; the agent's
`diagnostics()` scalars as `diag`; for an agent with `posterior_top(n)`, e.g. `aif`, its POSTERIOR_TOP likeliest
members after the step as `posterior_top`) and one `episode` row with `metrics` (benchmarks.circuit_metrics), the
declared `ranking` (first K_MAX members), `queries` used, `kl_empty`, `step_ms` and `wall_time_s`. Both carry
`track: "circuit"`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from acd_env.circuit import K_MAX, check_ranking, complete_ranking
from benchmarks.circuit_metrics import circuit_metrics
from benchmarks.protocols import derive_seed
from benchmarks.runner import scalar_diagnostics

STEP_INFO = ("candidate", "toggle", "circuit_size", "score", "logit_f", "kl")  # + `query`: info["kind"]
POSTERIOR_TOP = 5  # members per step row's `posterior_top`


def run_circuit_episode(
    env: Any, agent: Any, prompt_index: int, seed: int, base: dict, budget: int
) -> list[dict]:
    """Run one episode; return its step rows followed by its `episode` row."""
    u = env.unwrapped
    prompt = u.prompts[prompt_index]
    obs, info = env.reset(seed=derive_seed("env", seed, prompt.id), options={"prompt_index": prompt_index})
    n = int(info["n_valid"])
    base = dict(base, track="circuit", task=info["task"], prompt_id=info["prompt_id"], seed=seed)
    agent.reset(obs, info)
    rows: list[dict] = []
    total_time = total_reward = 0.0
    queries_left = budget
    diagnostics: Callable[[], Mapping[str, Any] | None] | None = getattr(agent, "diagnostics", None)
    posterior_top: Callable[[int], Any] | None = getattr(agent, "posterior_top", None)
    if getattr(agent, "uses_queries", True):
        for step in range(10**6):
            start = time.perf_counter()
            action = agent.act(obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            agent.observe(action, reward, obs, info)
            elapsed = time.perf_counter() - start
            total_time += elapsed
            total_reward += reward
            queries_left = int(info["queries_left"])
            invalid = bool(info.get("invalid_action", False))
            row: dict[str, Any] = dict(
                base, kind="step", step=step + 1, action=int(action), invalid=invalid, reward=float(reward)
            )
            row["repeat"] = bool(info.get("repeat", False))
            if not invalid:
                row.update({k: info[k] for k in STEP_INFO}, query=info["kind"])  # `kind` names the row
            row["wall_time_s"] = elapsed
            diag = scalar_diagnostics(diagnostics)
            if diag:
                row["diag"] = diag
            if callable(posterior_top):  # [[candidate, P(member)], ...], likeliest first
                row["posterior_top"] = [[int(c), round(float(p), 4)] for c, p in posterior_top(POSTERIOR_TOP)]
            rows.append(row)
            if terminated or truncated:
                break
    start = time.perf_counter()
    declared = agent.circuit_ranking() if callable(getattr(agent, "circuit_ranking", None)) else []
    name = base.get("agent", type(agent).__name__)
    ranking = complete_ranking(
        check_ranking(declared, n, f"agent {name!r}'s circuit_ranking()"), [*u.entry_order(), *range(n)], n
    )
    score = u.score_circuit(ranking)
    ref = u.reference()
    ref_f = np.asarray(ref.ref_curve)[score.sizes - 1]
    total_time += time.perf_counter() - start
    episode = dict(
        base, kind="episode", n_steps=len(rows), reward=total_reward, queries=budget - queries_left
    )
    episode["metrics"] = circuit_metrics(score.f, score.logit_f, score.necessity, ref_f)
    episode["ranking"] = ranking[:K_MAX]
    episode["kl_empty"] = float(ref.kl_empty)
    episode["wall_time_s"] = total_time
    episode["step_ms"] = 1000.0 * total_time / max(len(rows), 1)
    return [*rows, episode]
