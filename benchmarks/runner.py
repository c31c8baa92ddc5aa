"""Run episodes (agent × protocol × prompt × seed) on `CircuitDiscoveryEnv` and append them to `results.jsonl`
(its rows, keys and resume: benchmarks.results_log).

Nothing is lost: all rows of an episode are written with one `write` and `fsync`ed, so a killed run keeps
every finished episode and at most leaves a torn tail, which the next run into the same directory truncates
back to the last complete episode. A re-run skips finished episodes (key: track, agent, protocol, prompt, seed);
in protocols that keep memory across prompts it first replays the seed's finished episodes, unrecorded, to
rebuild the agent's memory, so that resumed and uninterrupted runs give the same results.

Seeds: the agent of a (protocol, seed, fold) sequence is built with `seed` (fitted agents: see `Runner._agent`);
each episode resets the env with a seed derived from (seed, prompt id) and pins the prompt, and agents that draw
random numbers derive their episode generator from (seed, prompt id) (see agents/random_agent.py), so an
episode's outcome depends only on (agent, protocol, seed, prompt) and, in memory-keeping protocols, on the
prompts before it in the seed's order.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from acd_env.errors import ACDError
from acd_env.scores import play_episode
from acd_env.table_store import restrict_columns
from benchmarks.metrics import episode_metrics
from benchmarks.protocols import Fold, Protocol, applicability, derive_seed
from benchmarks.results_log import (  # noqa: F401 (re-exported: the results log's public names)
    BLOCK_END,
    ResultsLog,
    _clean,
    episode_key,
    fit_key,
    read_results,
    track_of,
)

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


# ---------------------------------------------------------------------------------------------- run plan
@dataclass
class AgentSpec:
    """An agent to run: its name (as given), a factory `build(seed)` and its class (for applicability)."""

    name: str
    build: Callable[[int], Any]
    cls: Any = None
    needs_atp: bool = False
    track: str = "features"  # or "circuit" (CircuitSearch-v0, benchmarks.circuit_episode)


@dataclass
class EpisodeSequence:
    """One (agent, protocol, fold, seed) sequence of episodes."""

    agent: AgentSpec
    protocol: Protocol
    fold: Fold
    seed: int
    order: list[int] = field(default_factory=list)
    fit_seed: int | None = None  # the seed the shared fit is built with (default: this sequence's seed)


@dataclass
class EnvSet:
    """The test environments, one per (track, descriptor set) (graph; graph + atp when the tables have those
    columns). `make(descriptors, track)` builds one."""

    make: Callable[[tuple[str, ...], str], Any]
    has_atp: bool
    _envs: dict = field(default_factory=dict)

    def get(self, descriptors: tuple[str, ...], track: str = "features") -> Any:
        if (track, descriptors) not in self._envs:
            self._envs[(track, descriptors)] = self.make(descriptors, track)
        return self._envs[(track, descriptors)]


def run_episode(env: Any, agent: Any, prompt_index: int, seed: int, base: dict, budget: int) -> list[dict]:
    """Run one episode (acd_env.scores.play_episode); return its step rows followed by its `episode` row."""
    prompt = env.unwrapped.prompts[prompt_index]
    steps: list[dict] = []
    diagnostics: Callable[[], Mapping[str, Any] | None] | None = getattr(agent, "diagnostics", None)

    def on_step(step: int, action: Any, reward: float, info: dict, elapsed: float) -> None:
        invalid = bool(info.get("invalid_action", False))
        row: dict[str, Any] = dict(
            kind="step", step=step + 1, action=int(action), invalid=invalid, reward=float(reward)
        )
        if not invalid:
            row.update({k: info[k] for k in STEP_INFO})
        row["wall_time_s"] = elapsed
        diag = scalar_diagnostics(diagnostics)
        if diag:
            row["diag"] = diag
        steps.append(row)

    env_seed = derive_seed("env", seed, prompt.id)
    played = play_episode(env, agent, prompt_index, seed=env_seed, budget=budget, on_step=on_step)
    info, effects = played.info, played.effects
    base = dict(base, task=info["task"], prompt_id=info["prompt_id"], seed=seed)
    interventions = tuple(info["interventions"])
    rows = [dict(base, **row) for row in steps]
    used = dict.fromkeys(interventions, 0)
    for row in steps:
        if not row["invalid"]:
            used[row["intervention"]] += 1
    total_reward = 0.0
    total_time = 0.0
    for row in steps:
        total_reward += row["reward"]
        total_time += row["wall_time_s"]
    episode = dict(base, kind="episode", n_steps=len(rows), reward=total_reward, interventions=used)
    episode["metrics"] = episode_metrics(played.chosen, effects.kl, effects.valid, budget, interventions)
    ranking = getattr(agent, "importance_ranking", None)
    if callable(ranking):  # the agent's own ranking of every candidate, most important first (e.g. aif)
        order = [int(k) for k in np.asarray(ranking()).reshape(-1)]
        p = interventions.index("ablation") if "ablation" in interventions else 0
        episode["importance_order"] = order
        episode["true_effect"] = np.asarray(effects.kl)[:, p][np.asarray(effects.valid, dtype=bool)]
    episode["wall_time_s"] = total_time
    episode["step_ms"] = 1000.0 * total_time / max(len(rows), 1)
    return [*rows, episode]


def scalar_diagnostics(diagnostics: Callable[[], Mapping[str, Any] | None] | None) -> dict[str, float]:
    """An agent's `diagnostics()` after a step, its finite scalars only (empty when it has none)."""
    if not callable(diagnostics):
        return {}
    return {str(k): float(v) for k, v in (diagnostics() or {}).items() if _is_scalar(v)}


def _is_scalar(v: Any) -> bool:
    try:
        return math.isfinite(float(v)) and np.ndim(v) == 0
    except (TypeError, ValueError):
        return False


@dataclass
class Known:
    """What the results file already holds that decides how a sequence runs (a picklable snapshot). Rows it
    yields that the file already has (`fit`, `na`, `log`) are dropped when they are recorded (`Runner.record`)."""

    episodes: dict[tuple, float]  # episode key -> recorded efficiency
    not_applicable: bool  # the (agent, protocol) is already marked n/a

    @classmethod
    def of(cls, log: ResultsLog, seq: EpisodeSequence, prompt_ids: Sequence[str]) -> Known:
        keys = [sequence_key(seq, prompt_ids[i]) for i in seq.order]
        done = {k: log.episodes[k]["metrics"]["efficiency"] for k in keys if k in log.episodes}
        return cls(done, (seq.agent.track, seq.agent.name, seq.protocol.name) in log.na)


def sequence_key(seq: EpisodeSequence, prompt_id: str) -> tuple:
    """The `episode_key` of a sequence's episode on a prompt."""
    return (seq.agent.track, seq.agent.name, seq.protocol.name, prompt_id, seq.seed)


class Event(NamedTuple):
    """What running a sequence produces, in order: rows to append (one block) and progress."""

    rows: list[dict]
    advance: int = 0  # episodes this event accounts for (progress bar)
    count: str | None = None  # "ran", "skipped", "replayed" or "na" (an agent that does not apply)


class AgentFactory:
    """The agent of a sequence: built with its seed and, where the fold fits, fitted.

    With `share_fit` (default) the fit is done once per (agent, protocol, fold), on an agent built with the
    sequence's `fit_seed` (the first seed of the run), and every seed gets a deep copy of that fitted agent with
    its `seed` and `rng` set to its own (the BaseAgent convention; episode randomness derives from them). Seeds
    then vary the episodes, not the offline fit, and a sequence gives the same agent whether it runs in this
    process or on a Ray worker that fits its own copy. `share_fit=False` (`acd bench --fit-per-seed`) fits
    every seed itself, for agents whose fit is stochastic; so does an agent that cannot be deep-copied.
    """

    def __init__(self, share_fit: bool = True) -> None:
        self.share_fit = share_fit
        self._fitted: dict[tuple[str, str, str, str], Any] = {}  # (track, agent, protocol, fold)

    def __call__(self, seq: EpisodeSequence, env: Any) -> tuple[Any, list[dict]]:
        """(agent, `fit` rows to log)."""
        spec, protocol, fold, seed = seq.agent, seq.protocol, seq.fold, seq.seed
        if not fold.fits or (spec.cls is not None and not callable(getattr(spec.cls, "fit", None))):
            return spec.build(seed), []
        if not self.share_fit:
            agent = spec.build(seed)
            return agent, [self._fit(agent, seq, seed, env)]
        key = (spec.track, spec.name, protocol.name, fold.name)
        rows = []
        if key not in self._fitted:
            fit_seed = seed if seq.fit_seed is None else seq.fit_seed
            template = spec.build(fit_seed)
            if not callable(getattr(template, "fit", None)):
                return spec.build(seed), []
            rows.append(self._fit(template, seq, fit_seed, env))
            self._fitted[key] = template
        try:
            agent = copy.deepcopy(self._fitted[key])
        except Exception:  # not copyable: fit this seed's own agent
            agent = spec.build(seed)
            return agent, [*rows, self._fit(agent, seq, seed, env)]
        if hasattr(agent, "seed"):
            agent.seed = seed
        if hasattr(agent, "rng"):
            agent.rng = np.random.default_rng(seed)
        return agent, rows

    @staticmethod
    def _fit(agent: Any, seq: EpisodeSequence, seed: int, env: Any) -> dict:
        names = list(env.unwrapped.settings.descriptor_names)
        tables = [restrict_columns(t, names) for t in seq.fold.tables() or []]
        start = time.perf_counter()
        agent.fit(tables)
        return {
            "kind": "fit",
            "track": seq.agent.track,
            "agent": seq.agent.name,
            "protocol": seq.protocol.name,
            "fold": seq.fold.name,
            "seed": seed,
            "source": seq.fold.fit_source,
            "n_tables": len(tables),
            "fit_s": time.perf_counter() - start,
        }


def prompt_env(envs: EnvSet, spec: AgentSpec) -> Any:
    """An env of the agent's track that lists the test prompts (the graph-descriptor one: it exists whatever
    descriptor columns the tables hold, and every env of a track lists the same prompts)."""
    return envs.get(("graph",), spec.track)


def env_for(envs: EnvSet, spec: AgentSpec) -> Any:
    return envs.get(("graph", "atp") if spec.needs_atp else ("graph",), spec.track)


def sequence_events(
    seq: EpisodeSequence, envs: EnvSet, budget: int, known: Known, agents: AgentFactory
) -> Iterator[Event]:
    """Run one (agent, protocol, fold, seed) sequence, skipping what `known` says is done (see the module
    docstring); yields the blocks to append and the progress. Runs the same in this process or on a worker."""
    spec, protocol, seed = seq.agent, seq.protocol, seq.seed
    n = len(seq.order)

    def na(reason: str) -> Event:
        return Event(
            [
                {
                    "kind": "na",
                    "track": spec.track,
                    "agent": spec.name,
                    "protocol": protocol.name,
                    "reason": reason,
                }
            ],
            n,
            "na",
        )

    if known.not_applicable:
        yield Event([], n, "na")
        return
    prompts = prompt_env(envs, spec).unwrapped.prompts
    keys = [sequence_key(seq, prompts[i].id) for i in seq.order]
    pending = [k not in known.episodes for k in keys]
    if not any(pending):
        yield Event([], n, "skipped")
        return
    if spec.needs_atp and not envs.has_atp:
        yield na("needs the attribution-patching columns (tables built with --descriptors graph,atp)")
        return
    env = env_for(envs, spec)
    started = any(k in known.episodes for k in keys)
    fit_rows: list[dict] = []
    try:
        reason = applicability(spec.cls if spec.cls is not None else spec.build(seed), protocol)
        agent: Any = None  # built (and fitted) when the agent applies
        if not reason:
            agent, fit_rows = agents(seq, env)
    except ACDError as e:  # the agent cannot be built or fitted here (e.g. no shipped policy for this K)
        if started:
            raise
        reason = str(e)
    if reason:
        yield na(reason)
        return
    if fit_rows:
        yield Event(fit_rows)
    if getattr(agent, "privileged", False):
        if spec.track == "circuit":
            agent.attach_reference(env.unwrapped.reference)
        else:
            agent.attach_oracle(env.unwrapped.oracle_effects)
    log_row = _training_log_row(agent, spec)
    if log_row:
        yield Event([log_row])
    last_pending = max(i for i, p in enumerate(pending) if p)
    base = {"agent": spec.name, "protocol": protocol.name, "fold": seq.fold.name}
    if spec.track == "circuit":
        from benchmarks.circuit_episode import run_circuit_episode as run
    else:
        run = run_episode
    for idx, (prompt_index, key) in enumerate(zip(seq.order, keys, strict=True)):
        if idx > last_pending:
            for _ in range(n - idx):
                yield Event([], 1, "skipped")
            return
        if not protocol.keep_memory:
            agent.reset_memory()
        done = known.episodes.get(key)
        if done is not None and not protocol.keep_memory:
            yield Event([], 1, "skipped")
            continue
        try:
            rows = run(env, agent, prompt_index, seed, dict(base, order=idx), budget)
        except ACDError as e:  # e.g. an agent that needs descriptor columns this env lacks
            if idx == 0 and not started:
                yield na(str(e))
                return
            raise
        if done is not None:  # replayed to rebuild memory: check it matches what was recorded
            got = rows[-1]["metrics"]["efficiency"]
            if got != done:
                warnings.warn(
                    f"resuming {spec.name}/{protocol.name} seed {seed}: replaying prompt {key[2]} gave efficiency "
                    f"{got:.6f}, recorded {done:.6f}; the agent is not deterministic, so the resumed stream may "
                    "differ from an uninterrupted one",
                    stacklevel=2,
                )
            yield Event([], 1, "replayed")
        else:
            yield Event(rows, 1, "ran")


def _training_log_row(agent: Any, spec: AgentSpec) -> dict | None:
    """An agent's own training log (e.g. PPO losses): `training_log()` → [{"step": s, tag: v}]."""
    getter: Callable[[], Iterable[Any] | None] | None = getattr(agent, "training_log", None)
    if not callable(getter):
        return None
    records = []
    for rec in getter() or []:
        if isinstance(rec, dict) and "step" in rec:
            values = {str(k): float(v) for k, v in rec.items() if k != "step" and _is_scalar(v)}
            records.append({"step": int(rec["step"]), **values})
    return {"kind": "log", "track": spec.track, "agent": spec.name, "records": records} if records else None


class Runner:
    """Runs every sequence of a plan into a ResultsLog, with an executor (`run_local`, or Ray: benchmarks.ray_bench)."""

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

    def known(self, seq: EpisodeSequence) -> Known:
        return Known.of(self.log, seq, [p.id for p in prompt_env(self.envs, seq.agent).unwrapped.prompts])

    def record(self, event: Event, bar: Any, counts: dict) -> None:
        """Append an event's rows (a `fit`, `na` or `log` row already in the file is not written twice)."""
        rows = [r for r in event.rows if not self._recorded(r)]
        if rows:
            self.log.append(rows)
        if event.count:
            counts[event.count] += event.advance
        bar.update(event.advance)

    def _recorded(self, row: dict) -> bool:
        kind = row.get("kind")
        if kind == "fit":
            return fit_key(row) in self.log.fits
        if kind == "na":
            return (track_of(row), row["agent"], row["protocol"]) in self.log.na
        if kind == "log":
            return (track_of(row), row["agent"]) in self.log.logs
        return False

    def run(self, sequences: Sequence[EpisodeSequence], executor: SequenceExecutor | None = None) -> dict:
        """Run all sequences; returns counts {"ran", "skipped", "replayed", "na"} (they add up to the progress
        bar's total: "na" counts the planned episodes of agents that do not apply). `executor`: where the
        sequences run (`run_local`, the default, or benchmarks.ray_bench.RayExecutor; `acd bench` picks it in
        benchmarks.bench.sequence_executor)."""
        from tqdm import tqdm

        total = sum(len(s.order) for s in sequences)
        counts = {"ran": 0, "skipped": 0, "replayed": 0, "na": 0}
        with tqdm(
            total=total, desc="acd bench", unit="episode", disable=not self.progress, dynamic_ncols=True
        ) as bar:
            (executor or run_local)(self, sequences, lambda ev: self.record(ev, bar, counts))
        return counts


SequenceExecutor = Callable[[Runner, Sequence[EpisodeSequence], Callable[[Event], None]], None]
"""Runs a plan's sequences for a Runner and hands every event to `record`, in each sequence's order."""


def run_local(runner: Runner, sequences: Sequence[EpisodeSequence], record: Callable[[Event], None]) -> None:
    """The local executor: every sequence in this process, one after the other."""
    agents = AgentFactory(runner.share_fit)
    for seq in sequences:
        for event in sequence_events(seq, runner.envs, runner.budget, runner.known(seq), agents):
            record(event)
