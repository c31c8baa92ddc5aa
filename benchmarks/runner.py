"""Run episodes (agent × protocol × prompt × seed) on `CircuitDiscoveryEnv` and append them to `results.jsonl`.

`results.jsonl` holds one JSON object per line, each with a `kind`:
- `step`: one per step — agent, protocol, fold, task, prompt_id, seed, step, action, candidate, feature,
  intervention, invalid, reward, kl, logit_diff, downstream, n_affected, top1_changed, wall_time_s and
  `diag` (the agent's `diagnostics()` scalars after the step, e.g. `aif/belief_entropy`), if any;
- `episode`: one per finished episode, after its steps — the keys above plus `order` (index in the seed's
  prompt order), `metrics` (benchmarks.metrics.episode_metrics), `interventions` used, `reward`, `wall_time_s`,
  `step_ms`, and for agents with `importance_ranking()` that ranking (`importance_order`: candidate indices, most
  important first) beside the true ablation KL of every real candidate (`true_effect`);
- `fit`: one per fitted (agent, protocol, fold, seed): the tables it was fitted on and `fit_s`;
- `na`: an (agent, protocol) that does not apply, with the reason;
- `log`: an agent's training log (`training_log()`, e.g. PPO losses), once per agent.

Nothing is lost: all rows of an episode are written with one `write` and `fsync`ed, so a killed run keeps
every finished episode and at most leaves a torn tail, which the next run into the same directory truncates
back to the last complete episode. A re-run skips finished episodes (key: agent, protocol, prompt, seed); in
protocols that keep memory across prompts it first replays the seed's finished episodes, unrecorded, to
rebuild the agent's memory, so that resumed and uninterrupted runs give the same results.

Seeds: the agent of a (protocol, seed, fold) sequence is built with `seed` (fitted agents: see `Runner._agent`);
each episode resets the env with a seed derived from (seed, prompt id) and pins the prompt, and agents that draw
random numbers derive their episode generator from (seed, prompt id) (see agents/random_agent.py), so an
episode's outcome depends only on (agent, protocol, seed, prompt) and, in memory-keeping protocols, on the
prompts before it in the seed's order.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acd_env.errors import ACDError
from benchmarks.metrics import episode_metrics
from benchmarks.protocols import Fold, Protocol, applicability, derive_seed, restrict_table

BLOCK_END = ("episode", "fit", "na", "log")
STEP_INFO = (
    "candidate",
    "feature",
    "intervention",
    "kl",
    "logit_diff",
    "downstream",
    "n_affected",
    "top1_changed",
)


# ---------------------------------------------------------------------------------------------- results file
def episode_key(row: dict) -> tuple:
    return (row["agent"], row["protocol"], row["prompt_id"], int(row["seed"]))


def _clean(value: Any) -> Any:
    """JSON-safe value: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _numpy_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(row: dict) -> str:
    """One compact JSON line; NaN/inf become null (the slow path, only when present)."""
    try:
        return json.dumps(row, separators=(",", ":"), default=_numpy_default, allow_nan=False)
    except ValueError:
        return json.dumps(_clean(row), separators=(",", ":"))


class ResultsLog:
    """Append-only `results.jsonl` with atomic episode blocks and resume.

    On opening, a torn tail (a partial line, or the step rows of an episode whose `episode` row never made it)
    is cut off, so the file always ends with a complete block.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.episodes: dict[tuple, dict] = {}
        self.fits: set[tuple] = set()
        self.na: set[tuple] = set()
        self.logs: set[str] = set()
        self.truncated_bytes = 0
        self._recover()

    def _recover(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0  # byte offset just after the last complete block
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break  # a partial last line
            try:
                row = json.loads(data[pos:end])
            except (json.JSONDecodeError, UnicodeDecodeError):
                break  # a torn line (a killed write): everything from here is dropped
            pos = end + 1
            if not isinstance(row, dict):
                break
            kind = row.get("kind")
            if kind in BLOCK_END:
                good = pos
                self._register(row)
        if good < len(data):
            self.truncated_bytes = len(data) - good
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())

    def _register(self, row: dict) -> None:
        kind = row["kind"]
        if kind == "episode":
            self.episodes[episode_key(row)] = row
        elif kind == "fit":
            self.fits.add((row["agent"], row["protocol"], row["fold"], int(row["seed"])))
        elif kind == "na":
            self.na.add((row["agent"], row["protocol"]))
        elif kind == "log":
            self.logs.add(row["agent"])

    def append(self, rows: Sequence[dict]) -> None:
        """Append rows as one block: a single write, flushed and fsynced."""
        data = "".join(_dumps(r) + "\n" for r in rows).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        for row in rows:
            if row.get("kind") in BLOCK_END:
                self._register(row)


def read_results(path: str | Path) -> list[dict]:
    """Every complete row of a results file (a torn last line is ignored)."""
    rows = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


# ---------------------------------------------------------------------------------------------- run plan
@dataclass
class AgentSpec:
    """An agent to run: its name (as given), a factory `build(seed)` and its class (for applicability)."""

    name: str
    build: Callable[[int], Any]
    cls: Any = None
    needs_atp: bool = False


@dataclass
class EpisodeSequence:
    """One (agent, protocol, fold, seed) sequence of episodes."""

    agent: AgentSpec
    protocol: Protocol
    fold: Fold
    seed: int
    order: list[int] = field(default_factory=list)


@dataclass
class EnvSet:
    """The test environments, one per descriptor set (graph; graph + atp when the tables have those columns)."""

    make: Callable[[tuple[str, ...]], Any]
    has_atp: bool
    _envs: dict = field(default_factory=dict)

    def get(self, descriptors: tuple[str, ...]) -> Any:
        if descriptors not in self._envs:
            self._envs[descriptors] = self.make(descriptors)
        return self._envs[descriptors]


def run_episode(env: Any, agent: Any, prompt_index: int, seed: int, base: dict, budget: int) -> list[dict]:
    """Run one episode; return its step rows followed by its `episode` row."""
    unwrapped = env.unwrapped
    prompt = unwrapped.prompts[prompt_index]
    obs, info = env.reset(seed=derive_seed("env", seed, prompt.id), options={"prompt_index": prompt_index})
    base = dict(base, task=info["task"], prompt_id=info["prompt_id"], seed=seed)
    interventions = tuple(info["interventions"])
    agent.reset(obs, info)
    effects = unwrapped.oracle_effects()
    rows: list[dict] = []
    chosen: list[int] = []
    used = dict.fromkeys(interventions, 0)
    total_time = total_reward = 0.0
    diagnostics = getattr(agent, "diagnostics", None)
    for step in range(budget):
        start = time.perf_counter()
        action = agent.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        agent.observe(action, reward, obs, info)
        elapsed = time.perf_counter() - start
        total_time += elapsed
        total_reward += reward
        invalid = bool(info.get("invalid_action", False))
        chosen.append(-1 if invalid else int(info["candidate"]))
        row = dict(
            base, kind="step", step=step + 1, action=int(action), invalid=invalid, reward=float(reward)
        )
        if not invalid:
            used[info["intervention"]] += 1
            row.update({k: info[k] for k in STEP_INFO})
        row["wall_time_s"] = elapsed
        if callable(diagnostics):
            diag = {str(k): float(v) for k, v in (diagnostics() or {}).items() if _is_scalar(v)}
            if diag:
                row["diag"] = diag
        rows.append(row)
        if terminated or truncated:
            break
    episode = dict(base, kind="episode", n_steps=len(rows), reward=total_reward, interventions=used)
    episode["metrics"] = episode_metrics(chosen, effects.kl, effects.valid, budget, interventions)
    ranking = getattr(agent, "importance_ranking", None)
    if callable(ranking):  # the agent's own ranking of every candidate, most important first (e.g. aif)
        order = [int(k) for k in np.asarray(ranking()).reshape(-1)]
        p = interventions.index("ablation") if "ablation" in interventions else 0
        episode["importance_order"] = order
        episode["true_effect"] = np.asarray(effects.kl)[:, p][np.asarray(effects.valid, dtype=bool)]
    episode["wall_time_s"] = total_time
    episode["step_ms"] = 1000.0 * total_time / max(len(rows), 1)
    return [*rows, episode]


def _is_scalar(v: Any) -> bool:
    try:
        return math.isfinite(float(v)) and np.ndim(v) == 0
    except (TypeError, ValueError):
        return False


class Runner:
    """Runs every sequence of a plan into a ResultsLog (see the module docstring)."""

    def __init__(
        self,
        log: ResultsLog,
        envs: EnvSet,
        budget: int,
        *,
        progress: bool = True,
        share_fit: bool = True,
    ) -> None:
        self.log = log
        self.envs = envs
        self.budget = budget
        self.progress = progress
        self.share_fit = share_fit
        self._fitted: dict[tuple[str, str, str], Any] = {}  # (agent, protocol, fold) -> fitted, unused agent

    def env_for(self, spec: AgentSpec) -> Any:
        return self.envs.get(("graph", "atp") if spec.needs_atp else ("graph",))

    def not_applicable(self, spec: AgentSpec, protocol: Protocol, reason: str) -> None:
        if (spec.name, protocol.name) not in self.log.na:
            self.log.append([{"kind": "na", "agent": spec.name, "protocol": protocol.name, "reason": reason}])

    def run(self, sequences: Sequence[EpisodeSequence]) -> dict:
        """Run all sequences; returns counts {"ran", "skipped", "replayed"}."""
        from tqdm import tqdm

        total = sum(len(s.order) for s in sequences)
        counts = {"ran": 0, "skipped": 0, "replayed": 0}
        with tqdm(
            total=total, desc="acd bench", unit="episode", disable=not self.progress, dynamic_ncols=True
        ) as bar:
            for seq in sequences:
                self._run_sequence(seq, bar, counts)
        return counts

    def _run_sequence(self, seq: EpisodeSequence, bar: Any, counts: dict) -> None:
        spec, protocol, fold, seed = seq.agent, seq.protocol, seq.fold, seq.seed
        if (spec.name, protocol.name) in self.log.na:
            bar.update(len(seq.order))
            return
        env = self.env_for(spec)
        prompts = env.unwrapped.prompts
        keys = [(spec.name, protocol.name, prompts[i].id, seed) for i in seq.order]
        pending = [k not in self.log.episodes for k in keys]
        if not any(pending):
            bar.update(len(keys))
            counts["skipped"] += len(keys)
            return
        if spec.needs_atp and not self.envs.has_atp:
            self.not_applicable(
                spec,
                protocol,
                "needs the attribution-patching columns (tables built with --descriptors graph,atp)",
            )
            bar.update(len(keys))
            return
        started = any(k in self.log.episodes for k in keys)
        try:
            reason = applicability(spec.cls if spec.cls is not None else spec.build(seed), protocol)
            agent = None if reason else self._agent(spec, protocol, fold, seed, env)
        except ACDError as e:  # the agent cannot be built or fitted here (e.g. no shipped policy for this K)
            if started:
                raise
            reason = str(e)
        if reason:
            self.not_applicable(spec, protocol, reason)
            bar.update(len(keys))
            return
        if getattr(agent, "privileged", False):
            agent.attach_oracle(env.unwrapped.oracle_effects)
        self._training_log(agent, spec)
        last_pending = max(i for i, p in enumerate(pending) if p)
        base = {"agent": spec.name, "protocol": protocol.name, "fold": fold.name}
        for idx, (prompt_index, key) in enumerate(zip(seq.order, keys, strict=True)):
            if idx > last_pending:
                bar.update(len(keys) - idx)
                counts["skipped"] += len(keys) - idx
                break
            if not protocol.keep_memory:
                agent.reset_memory()
            done = self.log.episodes.get(key)
            if done is not None and not protocol.keep_memory:
                bar.update(1)
                counts["skipped"] += 1
                continue
            try:
                rows = run_episode(env, agent, prompt_index, seed, dict(base, order=idx), self.budget)
            except ACDError as e:  # e.g. an agent that needs descriptor columns this env lacks
                if idx == 0 and not started:
                    self.not_applicable(spec, protocol, str(e))
                    bar.update(len(keys))
                    return
                raise
            if done is not None:  # replayed to rebuild memory: check it matches what was recorded
                counts["replayed"] += 1
                if rows[-1]["metrics"]["efficiency"] != done["metrics"]["efficiency"]:
                    warnings.warn(
                        f"resuming {spec.name}/{protocol.name} seed {seed}: replaying prompt {key[2]} gave efficiency "
                        f"{rows[-1]['metrics']['efficiency']:.6f}, recorded {done['metrics']['efficiency']:.6f}; "
                        "the agent is not deterministic, so the resumed stream may differ from an uninterrupted one",
                        stacklevel=2,
                    )
            else:
                self.log.append(rows)
                counts["ran"] += 1
            bar.update(1)

    def _agent(self, spec: AgentSpec, protocol: Protocol, fold: Fold, seed: int, env: Any) -> Any:
        """The agent for a sequence: built with `seed` and, where the fold fits, fitted.

        With `share_fit` (default) the fit is done once per (agent, protocol, fold), on an agent built with the
        first seed that needs it, and every seed gets a deep copy of that fitted agent with its `seed` and `rng`
        set to its own (the BaseAgent convention; episode randomness derives from them). Seeds then vary the
        episodes, not the offline fit. `share_fit=False` (`acd bench --fit-per-seed`) fits every seed itself,
        for agents whose fit is stochastic; so does an agent that cannot be deep-copied.
        """
        if not fold.fits or (spec.cls is not None and not callable(getattr(spec.cls, "fit", None))):
            return spec.build(seed)
        key = (spec.name, protocol.name, fold.name)
        if not self.share_fit:
            agent = spec.build(seed)
            self._fit(agent, spec, protocol, fold, seed, env)
            return agent
        if key not in self._fitted:
            template = spec.build(seed)
            if not callable(getattr(template, "fit", None)):
                return template
            self._fit(template, spec, protocol, fold, seed, env)
            self._fitted[key] = template
        try:
            agent = copy.deepcopy(self._fitted[key])
        except Exception:  # not copyable: fit this seed's own agent
            agent = spec.build(seed)
            self._fit(agent, spec, protocol, fold, seed, env)
            return agent
        if hasattr(agent, "seed"):
            agent.seed = seed
        if hasattr(agent, "rng"):
            agent.rng = np.random.default_rng(seed)
        return agent

    def _fit(self, agent: Any, spec: AgentSpec, protocol: Protocol, fold: Fold, seed: int, env: Any) -> None:
        names = [n for n in env.unwrapped.settings.descriptor_names]
        tables = [restrict_table(t, names) for t in fold.tables() or []]
        start = time.perf_counter()
        agent.fit(tables)
        elapsed = time.perf_counter() - start
        key = (spec.name, protocol.name, fold.name, seed)
        if key not in self.log.fits:
            self.log.append(
                [
                    {
                        "kind": "fit",
                        "agent": spec.name,
                        "protocol": protocol.name,
                        "fold": fold.name,
                        "seed": seed,
                        "source": fold.fit_source,
                        "n_tables": len(tables),
                        "fit_s": elapsed,
                    }
                ]
            )

    def _training_log(self, agent: Any, spec: AgentSpec) -> None:
        """An agent's own training log (e.g. PPO losses), written once: `training_log()` → [{"step": s, tag: v}]."""
        if spec.name in self.log.logs:
            return
        getter = getattr(agent, "training_log", None)
        if not callable(getter):
            return
        records = []
        for rec in getter() or []:
            if isinstance(rec, dict) and "step" in rec:
                values = {str(k): float(v) for k, v in rec.items() if k != "step" and _is_scalar(v)}
                records.append({"step": int(rec["step"]), **values})
        if records:
            self.log.append([{"kind": "log", "agent": spec.name, "records": records}])
