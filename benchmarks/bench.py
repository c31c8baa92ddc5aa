"""`acd bench`: the default leaderboard, end to end (docs/design.md, The benchmark).

    acd bench                                   # toy-4l, all toy tasks, test split (5 prompts per task),
                                                # 5 seeds, K=64, B=20, every available agent, protocols
                                                # zero-shot and train-test; ~50 s of CPU on 2 cores
    acd bench --protocol stream,held-out-task   # other protocols (repeatable or comma-separated)
    acd bench --prompts-per-task 0 --seeds 10 --protocol zero-shot,stream,train-test,held-out-task,held-out-model
                                                # the full grid: every test prompt (0 = all); held-out-model
                                                # needs a second zoo model with tables (else leave it out)
    acd bench --backend live --prompts my.jsonl # your own prompts, run live through circuit-tracer
    acd bench --out runs/x                      # re-running into runs/x resumes: finished episodes are skipped
    acd bench --executor ray --workers 8        # episode sequences as Ray tasks (benchmarks/executors.py)

Flow: check the arguments → build the test env(s) (replay on the model's circuit tables by default) → plan
the (agent, protocol, fold, seed) sequences → run them into results.jsonl (benchmarks.runner) → leaderboard
.md/.csv/.json (benchmarks.leaderboard) → TensorBoard runs (benchmarks.tb) → report.html (benchmarks.report)
→ print the leaderboard.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from acd_env import table_store
from acd_env.errors import ACDError, check_out_dir, output_error, unknown
from acd_env.models.registry import DEFAULT_MODEL
from benchmarks.aggregate import DEFAULT_REPS
from benchmarks.executors import ExecutorOptions, add_executor_args
from benchmarks.options import add_options, default_of, from_args, option
from benchmarks.protocols import DEFAULT_PROTOCOLS, PROTOCOLS, get_protocol, plan_folds

TRACKS = (
    "features",
    "circuit",
)  # the feature track (CircuitDiscovery-v0) and the circuit track (CircuitSearch-v0)

DEFAULT_SEEDS = 5
DEFAULT_K = 64  # candidates per prompt
DEFAULT_BUDGET = 20  # interventions per episode
DEFAULT_PROMPTS_PER_TASK = 5  # keeps the default run within ~120 s on 2 CPU cores; 0 = every test prompt
SPLIT = "test"
# What must match to resume into an existing run directory (seeds, agents and protocols may be added).
RESUME_KEYS = (
    "model",
    "tasks",
    "prompts_file",
    "backend",
    "tables",
    "k",
    "budget",
    "prompts_per_task",
    "split",
    "fit_per_seed",
)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _seeds(text: str) -> list[int]:
    """`5` → seeds 0..4; `0,3,7` → those seeds."""
    if "," in text:
        return _int_list(text)
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seeds or a comma list of seeds, got {text!r}"
        ) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"the number of seeds must be positive, got {n}")
    return list(range(n))


def _names(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated option values → the names (None when the option was not given)."""
    if values is None:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _names_or_default(values: list[str] | None) -> list[str] | None:
    return _names(values) or None


@dataclass
class BenchConfig:
    """The settings of one `acd bench` run; every field with help text is also its command-line option
    (benchmarks.options), with the field's default."""

    model: str = option(DEFAULT_MODEL, help="model name or toy model directory (default: %(default)s)")
    # None: every task with test tables (replay) / every toy task (live)
    tasks: list[str] | None = option(  # noqa: RUF009 (option() is a dataclasses.field)
        None,
        action="append",
        parse=_names,
        help="task(s), comma-separated or repeated (default: every toy task)",
    )
    prompts_file: str | None = option(
        None, flag="--prompts", help="custom prompts (JSONL); needs --backend live"
    )
    # None: every registered agent that is installed
    agents: list[str] | None = option(  # noqa: RUF009 (option() is a dataclasses.field)
        None,
        action="append",
        parse=_names,
        help="agent(s), comma-separated or repeated, or package.module:Class "
        "(default: every registered agent that is installed)",
    )
    protocols: list[str] = option(  # noqa: RUF009 (option() is a dataclasses.field)
        default_factory=lambda: list(DEFAULT_PROTOCOLS),
        flag="--protocol",
        action="append",
        parse=_names_or_default,
        help=f"protocol(s), comma-separated or repeated: {', '.join(PROTOCOLS)} "
        f"(default: {','.join(DEFAULT_PROTOCOLS)})",
    )
    seeds: list[int] = option(  # noqa: RUF009 (option() is a dataclasses.field)
        default_factory=lambda: list(range(DEFAULT_SEEDS)),
        type=_seeds,
        help=f"number of seeds (N → 0..N-1) or a comma list (default: {DEFAULT_SEEDS})",
    )
    budget: int = option(DEFAULT_BUDGET, help="interventions per episode, B (default: %(default)s)")
    k: int = option(DEFAULT_K, help="candidates per prompt, K (default: %(default)s)")
    backend: str = option("replay", help="replay (circuit tables, default) or live (circuit-tracer)")
    # a folder of TASK-SPLIT.npz (acd_env.table_store)
    tables: str | None = option(
        None, help="directory of TASK-SPLIT.npz circuit tables (default: the model's shipped ones)"
    )
    # held-out-model: the model to fit on (default: another zoo model with tables)
    fit_model: str | None = option(None, help="held-out-model: model whose train tables the agents fit on")
    prompts_per_task: int = option(
        DEFAULT_PROMPTS_PER_TASK, help="test prompts per task, 0 = all (default: %(default)s)"
    )
    reps: int = option(DEFAULT_REPS, help="bootstrap replications (default: %(default)s)")
    device: str | None = option(None, help="torch device for --backend live")
    out: str | None = option(
        None, help="output directory (default: runs/<timestamp>); an existing one is resumed"
    )
    fit_per_seed: bool = option(
        False,
        help="fit every seed's agent itself (default: one fit per agent, protocol and fold, copied to every seed)",
    )
    # features, circuit (None: see resolve_tracks)
    tracks: list[str] | None = option(  # noqa: RUF009 (option() is a dataclasses.field)
        None,
        flag="--track",
        action="append",
        parse=_names,
        help="track(s), comma-separated or repeated: features (CircuitDiscovery-v0, single features) and "
        "circuit (CircuitSearch-v0, sets scored by faithfulness) (default: both on replay tables with circuit "
        "data, else features)",
    )
    progress: bool = option(True, flag="--no-progress", help="no progress bar")
    split: str = SPLIT
    # where the episodes run: the options of benchmarks.executors.ExecutorOptions (added by add_executor_args)
    executor: str = default_of(ExecutorOptions, "kind")
    ray_address: str | None = default_of(ExecutorOptions, "address")
    workers: int | None = default_of(ExecutorOptions, "workers")
    gpus_per_worker: float = default_of(ExecutorOptions, "gpus_per_worker")

    def executor_options(self) -> ExecutorOptions:
        return ExecutorOptions(self.executor, self.ray_address, self.workers, self.gpus_per_worker)


# ---------------------------------------------------------------------------------------------- inputs
def default_agents(track: str = "features") -> list[str]:
    from agents import available_agents

    return available_agents(track)


def track_agents(cfg: BenchConfig, track: str) -> list[str]:
    """The agents that run on a track: the given ones that exist there (a `module:Class` path runs on the track
    its class names with `track`, default features), else every registered agent of the track."""
    if cfg.agents is None:
        return default_agents(track)
    known = default_agents(track)
    return [n for n in cfg.agents if n in known or (":" in n and _path_track(n) == track)]


def _path_track(path: str) -> str:
    from agents import agent_class

    return getattr(agent_class(path), "track", "features")


def agent_problem(name: str, track: str = "features") -> str | None:
    """None when the agent can be built, else why not (its module is missing, an import fails, ...)."""
    from agents import agent_class

    try:
        agent_class(name, track)
    except ACDError as e:
        return str(e)
    except Exception as e:  # an agent module that fails to import: report it, run the others
        return f"cannot import agent {name!r}: {type(e).__name__}: {e}"
    return None


def check_config(cfg: BenchConfig) -> None:
    """Bad input → ACDError naming the bad value and the valid ones."""
    from acd_env.env import BACKENDS
    from acd_env.tasks import available_tasks
    from acd_env.tasks.grammar import SPLITS
    from benchmarks.modelarg import check_model_name

    if cfg.backend not in BACKENDS:
        raise unknown("backend", cfg.backend, BACKENDS)
    if cfg.split not in SPLITS:
        raise unknown("split", cfg.split, SPLITS)
    if cfg.tables is None or cfg.backend == "live":
        check_model_name(cfg.model)
    for p in cfg.protocols:
        get_protocol(p)
    if not cfg.protocols:
        raise ACDError(f"no protocol given; valid protocols: {', '.join(PROTOCOLS)}")
    for name, value in (("budget", cfg.budget), ("k", cfg.k), ("reps", cfg.reps)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ACDError(f"--{name} must be a positive integer, got {value!r}")
    if cfg.prompts_per_task < 0:
        raise ACDError(f"--prompts-per-task must be ≥ 0 (0 = every test prompt), got {cfg.prompts_per_task}")
    if not cfg.seeds or any(s < 0 for s in cfg.seeds):
        raise ACDError(f"--seeds must give at least one non-negative seed, got {cfg.seeds}")
    if cfg.prompts_file is not None:
        if cfg.backend != "live":
            raise ACDError(
                "custom prompts (--prompts FILE) need --backend live: replay only knows its tables' prompts"
            )
        if not Path(cfg.prompts_file).is_file():
            raise ACDError(
                f"prompts file {cfg.prompts_file!r} does not exist (expected JSONL, one prompt per line)"
            )
    if cfg.tasks is not None:
        if not cfg.tasks:
            raise ACDError(f"no task given; valid tasks: {', '.join(available_tasks())}")
        for t in cfg.tasks:
            if t not in available_tasks() and not (
                cfg.tables and table_store.table_file(cfg.tables, t, cfg.split).is_file()
            ):
                raise unknown("task", t, available_tasks())
    if cfg.tables is not None and not Path(cfg.tables).is_dir():
        raise ACDError(
            f"--tables {cfg.tables!r} is not a directory (expected one holding TASK-SPLIT.npz tables)"
        )
    if cfg.tracks is not None and (not cfg.tracks or any(t not in TRACKS for t in cfg.tracks)):
        bad = next((t for t in cfg.tracks if t not in TRACKS), None)
        raise (
            unknown("track", bad, TRACKS)
            if bad
            else ACDError(f"no track given; valid tracks: {', '.join(TRACKS)}")
        )
    if cfg.agents is not None:
        valid = list(dict.fromkeys(n for t in cfg.tracks or TRACKS for n in default_agents(t)))
        if not cfg.agents:
            raise ACDError(f"no agent given; valid agents: {', '.join(valid)}")
        for name in cfg.agents:
            if ":" in name:
                problem = agent_problem(name)
                if problem:
                    raise ACDError(problem)
            elif name not in valid:
                raise ACDError(
                    f"unknown agent {name!r} on track(s) {', '.join(cfg.tracks or TRACKS)}; valid agents: "
                    f"{', '.join(valid)}, "
                    "or a user class as 'package.module:Class'"
                )
            else:
                for track in cfg.tracks or TRACKS:
                    problem = agent_problem(name, track) if name in default_agents(track) else None
                    if problem:
                        raise ACDError(problem)
    if cfg.fit_model is not None:
        check_model_name(cfg.fit_model)
    from benchmarks.executors import check_available

    check_available(cfg.executor_options())
    if cfg.out is not None:
        check_out_dir(cfg.out, "--out")


# ---------------------------------------------------------------------------------------------- tables and envs
def tables_dir(cfg: BenchConfig, model: str) -> str | None:
    """The folder --tables gives for `model` (the run's own model only; others use their shipped tables)."""
    return cfg.tables if model == cfg.model else None


def table_path(cfg: BenchConfig, model: str, task: str, split: str) -> Path:
    return table_store.table_path(model, task, split, tables_dir(cfg, model))


def has_table(cfg: BenchConfig, model: str, task: str, split: str) -> bool:
    return table_store.has_table(model, task, split, tables_dir(cfg, model))


def resolve_tasks(cfg: BenchConfig) -> list[str]:
    from acd_env.tasks import TOY_TASKS

    if cfg.tasks is not None:
        return list(cfg.tasks)
    if cfg.prompts_file is not None:
        return []
    if cfg.backend == "replay" and cfg.tables is not None:
        found = table_store.tasks_in(cfg.tables, cfg.split)
        if not found:
            raise ACDError(
                f"--tables {cfg.tables!r} holds no {table_store.table_name('*', cfg.split)} circuit table"
            )
        return found
    return list(TOY_TASKS)


class TableCache:
    """Train tables, loaded once and validated against their model."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self._tables: dict[tuple[str, str], Any] = {}

    def __call__(self, model: str, task: str) -> Any:
        key = (model, task)
        if key not in self._tables:
            self._tables[key] = table_store.resolve_tables(
                model, task, "train", table_path(self.cfg, model, task, "train")
            )
        return self._tables[key]


def make_env_factory(cfg: BenchConfig, tasks: list[str]):
    from acd_env.env import CircuitDiscoveryEnv

    def make(descriptors: tuple[str, ...], track: str = "features") -> Any:
        common: dict[str, Any] = dict(
            n_candidates=cfg.k, budget=cfg.budget, descriptors=descriptors, split=cfg.split
        )
        if track == "circuit":
            return _circuit_env(cfg, tasks, common)
        if cfg.backend == "replay":
            paths = run_table_paths(cfg, tasks)
            return CircuitDiscoveryEnv(model=cfg.model, task=tasks, backend="replay", tables=paths, **common)
        from benchmarks.modelarg import load_model_arg

        model = load_model_arg(cfg.model, cfg.device)
        if cfg.prompts_file is not None:
            return CircuitDiscoveryEnv(
                model=model, prompts=cfg.prompts_file, backend="live", device=cfg.device, **common
            )
        return CircuitDiscoveryEnv(model=model, task=tasks, backend="live", device=cfg.device, **common)

    return make


def _circuit_env(cfg: BenchConfig, tasks: list[str], common: dict) -> Any:
    from acd_env.circuit_env import CircuitSearchEnv

    if cfg.backend == "replay":
        paths = run_table_paths(cfg, tasks)
        return CircuitSearchEnv(model=cfg.model, task=tasks, backend="replay", tables=paths, **common)
    from benchmarks.modelarg import load_model_arg

    model = load_model_arg(cfg.model, cfg.device)
    if cfg.prompts_file is not None:
        return CircuitSearchEnv(
            model=model, prompts=cfg.prompts_file, backend="live", device=cfg.device, **common
        )
    return CircuitSearchEnv(model=model, task=tasks, backend="live", device=cfg.device, **common)


def circuit_prompts(env: Any, by_task: dict[str, list[int]]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """The circuit track's test prompts: those whose candidates, all ablated, move the next-token distribution
    by at least `KL_FLOOR` nats (others have no behaviour to explain); returns them and the excluded counts."""
    from acd_env.circuit import KL_FLOOR

    backend = env.unwrapped.backend
    kept = {t: [i for i in idx if backend.circuit(i).kl_empty >= KL_FLOOR] for t, idx in by_task.items()}
    return kept, {t: len(by_task[t]) - len(kept[t]) for t in by_task}


def run_table_paths(cfg: BenchConfig, tasks: list[str]) -> list[Path]:
    return [table_path(cfg, cfg.model, t, cfg.split) for t in tasks]


def tables_have_atp(cfg: BenchConfig, tasks: list[str]) -> bool:
    return cfg.backend == "live" or table_store.have_atp(run_table_paths(cfg, tasks))


def resolve_tracks(cfg: BenchConfig, tasks: list[str]) -> list[str]:
    """The tracks to run: the given ones, else both on replay tables with circuit data, else the feature track
    (a live circuit track searches every prompt's reference on the model: ask for it with --track circuit)."""
    if cfg.tracks is not None:
        return list(cfg.tracks)
    if cfg.backend == "replay" and table_store.have_circuit(run_table_paths(cfg, tasks)):
        return list(TRACKS)
    return ["features"]


def agent_spec(name: str, track: str = "features") -> Any:
    from agents import agent_class, make_agent
    from benchmarks.runner import AgentSpec

    cls = agent_class(name, track)
    takes_seed = True
    try:
        params = inspect.signature(cls).parameters
        takes_seed = "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        pass

    def build(seed: int) -> Any:
        return make_agent(name, track=track, seed=seed) if takes_seed else make_agent(name, track=track)

    is_class = inspect.isclass(cls)
    needs_atp = is_class and bool(getattr(cls, "needs_atp", False))  # the agent says what columns it needs
    return AgentSpec(name=name, build=build, cls=cls if is_class else None, needs_atp=needs_atp, track=track)


# ---------------------------------------------------------------------------------------------- the run
def prepare_out(cfg: BenchConfig) -> Path:
    out = Path(cfg.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    current = {k: v for k, v in asdict(cfg).items() if k in RESUME_KEYS}
    if config_path.is_file() and (out / "results.jsonl").exists():
        try:
            previous = json.loads(config_path.read_text())
            if not isinstance(previous, dict):
                raise ValueError("not a JSON object")
        except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ACDError(
                f"output directory {str(out)!r} holds an unreadable config.json ({e}); remove it to resume, "
                "or choose another --out"
            ) from None
        diff = [k for k in RESUME_KEYS if previous.get(k) != current.get(k)]
        if diff:
            pairs = "; ".join(f"{k}: {previous.get(k)!r} there, {current.get(k)!r} now" for k in diff)
            raise ACDError(
                f"output directory {str(out)!r} holds a run with other settings ({pairs}); resume with the same "
                "settings or choose another --out"
            )
    config_path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    return out


@dataclass
class BenchPlan:
    """What a run will do (`plan_bench`): its tasks, tracks, test envs and prompts, agents and sequences."""

    tasks: list[str]
    tracks: list[str]
    envs: Any  # benchmarks.runner.EnvSet
    prompts: list[Any]  # the test env's prompts (sequence orders index them)
    by_task: dict[str, list[int]]  # task → its test prompts (feature track)
    test_prompts: dict[str, dict[str, list[int]]]  # track → task → its test prompts
    excluded: dict[str, int]  # circuit track: prompts below the KL floor, per task
    interventions: list[str]
    agent_names: dict[str, list[str]]  # track → the agents listed on it
    unavailable: dict[tuple[str, str], str]  # (track, agent) → why it is not available
    sequences: list[Any]  # benchmarks.runner.EpisodeSequence
    folds: dict[str, list[Any]]  # protocol → its folds


def sequence_executor(opts: ExecutorOptions) -> Any:
    """Where `acd bench` runs its sequences (the one place that chooses): this process
    (benchmarks.runner.run_local) or Ray (benchmarks.ray_bench.RayExecutor)."""
    if opts.is_ray:
        from benchmarks.ray_bench import RayExecutor

        return RayExecutor(opts)
    from benchmarks.runner import run_local

    return run_local


def run_bench(cfg: BenchConfig, *, echo: Any = print) -> dict:
    """Run the benchmark: plan it, run its episodes, publish the results; returns {"out", "leaderboard",
    "board", "circuit_board", "counts", "seconds", "phases"}."""
    start = time.perf_counter()
    plan = plan_bench(cfg)
    out, counts, phases = run_plan(cfg, plan, echo=echo, start=start)
    return publish(cfg, plan, out, counts, phases, echo=echo, start=start)


def plan_bench(cfg: BenchConfig) -> BenchPlan:
    """Check the config, find the tables, build the test env(s) and plan every (agent, protocol, fold, seed)
    sequence."""
    from acd_env.interventions import INTERVENTION_TYPES
    from benchmarks.runner import EnvSet, EpisodeSequence

    check_config(cfg)
    explicit_agents = cfg.agents is not None
    tasks = resolve_tasks(cfg)
    if cfg.backend == "replay":
        missing = [
            str(table_path(cfg, cfg.model, t, cfg.split))
            for t in tasks
            if not has_table(cfg, cfg.model, t, cfg.split)
        ]
        if missing:
            raise ACDError(
                f"no {cfg.split} circuit table for model {cfg.model!r} at {missing[0]}; build it with `acd tables build "
                f"--model {cfg.model} --task TASK --split {cfg.split}` or use --backend live"
            )
    tracks = resolve_tracks(cfg, tasks)
    envs = EnvSet(make=make_env_factory(cfg, tasks), has_atp=tables_have_atp(cfg, tasks))
    env = envs.get(("graph",), tracks[0])
    prompts = env.unwrapped.prompts
    if not tasks:  # custom prompts: their own task labels
        tasks = list(dict.fromkeys(p.task for p in prompts))
    by_task: dict[str, list[int]] = {t: [] for t in tasks}
    for i, p in enumerate(prompts):
        if p.task in by_task and (cfg.prompts_per_task == 0 or len(by_task[p.task]) < cfg.prompts_per_task):
            by_task[p.task].append(i)
    interventions: list[str] = list(INTERVENTION_TYPES)
    if "features" in tracks:
        interventions = list(envs.get(("graph",), "features").unwrapped.settings.interventions)
    test_prompts = {"features": by_task}
    excluded: dict[str, int] = {}
    if "circuit" in tracks:
        test_prompts["circuit"], excluded = circuit_prompts(envs.get(("graph",), "circuit"), by_task)

    # agents: explicit ones must work (checked above); the default list reports what is not installed
    agent_names = {track: track_agents(cfg, track) for track in tracks}
    unavailable: dict[tuple[str, str], str] = {}
    specs = []
    for track in tracks:
        for name in agent_names[track]:
            problem = None if explicit_agents else agent_problem(name, track)
            if problem:
                unavailable[(track, name)] = f"not available ({problem})"
                continue
            specs.append(agent_spec(name, track))

    from acd_env.models.toy import toy_names

    tables = TableCache(cfg)
    fit_tasks = [t for t in dict.fromkeys([*tasks, *_toy_tasks()]) if has_table(cfg, cfg.model, t, "train")]
    train_tasks = (
        fit_tasks if cfg.prompts_file is not None else tasks
    )  # custom prompts: every task with tables
    if cfg.fit_model is not None:
        fit_models = [cfg.fit_model]
    else:
        fit_models = [
            m
            for m in toy_names()
            if m != cfg.model and all(has_table(cfg, m, t, "train") for t in train_tasks)
        ]
    sequences = []
    plans = {}
    for track in tracks:
        for pname in cfg.protocols:
            protocol = get_protocol(pname)
            folds = plan_folds(
                protocol,
                test_tasks=tasks,
                test_by_task=test_prompts[track],
                train_tables=tables,
                model=cfg.model,
                fit_tasks=fit_tasks,
                fit_models=fit_models,
                train_tasks=train_tasks,
            )
            plans[pname] = folds
            for spec in (s for s in specs if s.track == track):
                for seed in cfg.seeds:
                    for fold in folds:
                        order = fold.order(protocol, seed)
                        sequences.append(
                            EpisodeSequence(spec, protocol, fold, seed, order, fit_seed=cfg.seeds[0])
                        )
    return BenchPlan(
        tasks=tasks,
        tracks=tracks,
        envs=envs,
        prompts=prompts,
        by_task=by_task,
        test_prompts=test_prompts,
        excluded=excluded,
        interventions=interventions,
        agent_names=agent_names,
        unavailable=unavailable,
        sequences=sequences,
        folds=plans,
    )


def run_plan(
    cfg: BenchConfig, plan: BenchPlan, *, echo: Any = print, start: float | None = None
) -> tuple[Path, dict, dict]:
    """Run the plan's sequences into `results.jsonl` of the output directory (resuming what it holds);
    returns (output directory, counts, phase seconds)."""
    from benchmarks.runner import ResultsLog, Runner

    start = time.perf_counter() if start is None else start
    out = prepare_out(cfg)
    log = ResultsLog(out / "results.jsonl")
    if log.truncated_bytes:
        echo(f"results.jsonl: dropped a torn tail of {log.truncated_bytes} bytes (an interrupted episode)")
    runner = Runner(log, plan.envs, cfg.budget, progress=cfg.progress, share_fit=not cfg.fit_per_seed)
    phases = {"setup": time.perf_counter() - start}
    mark = time.perf_counter()
    counts = runner.run(plan.sequences, sequence_executor(cfg.executor_options()))
    phases["episodes"] = time.perf_counter() - mark
    return out, counts, phases


def publish(
    cfg: BenchConfig,
    plan: BenchPlan,
    out: Path,
    counts: dict,
    phases: dict,
    *,
    echo: Any = print,
    start: float | None = None,
) -> dict:
    """This invocation's results → leaderboard(s) .md/.csv/.json, TensorBoard runs, report.html, and the
    leaderboard and a summary printed with `echo`."""
    from acd_env.circuit import KL_FLOOR
    from benchmarks.leaderboard import build_leaderboard, write_leaderboard
    from benchmarks.report import provenance, write_report
    from benchmarks.runner import read_results, sequence_key, track_of
    from benchmarks.tb import write_tensorboard

    start = time.perf_counter() if start is None else start
    tasks, tracks, agent_names, unavailable = plan.tasks, plan.tracks, plan.agent_names, plan.unavailable
    mark = time.perf_counter()
    # only this invocation's episodes (a directory may hold more seeds/agents from other invocations)
    wanted = {sequence_key(s, plan.prompts[i].id) for s in plan.sequences for i in s.order}
    rows = [r for r in read_results(out / "results.jsonl") if _wanted(r, wanted, cfg)]
    feature_rows = [r for r in rows if track_of(r) == "features"]
    circuit_rows = [r for r in rows if track_of(r) == "circuit"]
    config = {
        "model": cfg.model,
        "tasks": tasks,
        "split": cfg.split,
        "k": cfg.k,
        "budget": cfg.budget,
        "seeds": list(cfg.seeds),
        "backend": cfg.backend,
        "tracks": list(tracks),
        "protocols": list(cfg.protocols),
        "agents": agent_names.get("features", []),
        "prompts_per_task": cfg.prompts_per_task,
        "reps": cfg.reps,
        "prompts": {t: len(v) for t, v in plan.by_task.items()},
        "fit": {p: [f.fit_source for f in folds if f.fits] for p, folds in plan.folds.items()},
    }
    if "circuit" in tracks:
        config.update(
            circuit_agents=agent_names["circuit"], kl_floor=KL_FLOOR, circuit_excluded=plan.excluded
        )
    board: list[dict] = []
    paths: dict[str, Path] = {}
    if "features" in tracks:
        board = build_leaderboard(
            feature_rows,
            protocols=cfg.protocols,
            agents=agent_names["features"],
            interventions=plan.interventions,
            budget=cfg.budget,
            reps=cfg.reps,
            seed=0,
            not_applicable=_not_applicable(unavailable, "features", cfg.protocols),
        )
        paths = write_leaderboard(out, board, plan.interventions, config)
    else:
        (out / "leaderboard.md").write_text("")  # the circuit section is appended below
    circuit_board: list[dict] = []
    if "circuit" in tracks:
        from benchmarks.circuit_leaderboard import build_circuit_leaderboard, write_circuit_leaderboard

        circuit_board = build_circuit_leaderboard(
            circuit_rows,
            protocols=cfg.protocols,
            agents=agent_names["circuit"],
            reps=cfg.reps,
            seed=0,
            not_applicable=_not_applicable(unavailable, "circuit", cfg.protocols),
        )
        circuit_paths = write_circuit_leaderboard(out, circuit_board, config)
        paths = {**circuit_paths, **{k: v for k, v in paths.items() if k != "md"}, "md": circuit_paths["md"]}
    phases["leaderboard"] = time.perf_counter() - mark
    mark = time.perf_counter()
    keep = [p for p in cfg.protocols if PROTOCOLS[p].keep_memory]
    write_tensorboard(feature_rows, out / "tb", keep_memory=keep)
    if circuit_rows:
        from benchmarks.circuit_report import write_circuit_tensorboard

        write_circuit_tensorboard(circuit_rows, out / "tb")
    phases["tensorboard"] = time.perf_counter() - mark
    mark = time.perf_counter()
    report = write_report(
        out,
        feature_rows,
        board,
        protocols=cfg.protocols,
        agents=agent_names.get("features", []),
        interventions=plan.interventions,
        config={**config, **provenance(cfg)},  # + command line, date, versions (not in the leaderboard)
        **_circuit_report_args(circuit_rows, circuit_board, cfg, agent_names),
    )
    phases["report"] = time.perf_counter() - mark
    seconds = time.perf_counter() - start
    echo((out / "leaderboard.md").read_text())
    echo(
        f"{counts['ran']} episodes run, {counts['skipped']} already done"
        + (f", {counts['na']} not applicable (n/a)" if counts.get("na") else "")
        + (f", {counts['replayed']} replayed to restore memory" if counts["replayed"] else "")
        + f"; {seconds:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in phases.items())}). Outputs in {out}/: results.jsonl, leaderboard.md/.csv/.json, tb/ "
        f"(tensorboard --logdir {out / 'tb'}), report.html" + (", curves.png" if report["png"] else "")
    )
    return {
        "out": out,
        "leaderboard": paths,
        "board": board,
        "circuit_board": circuit_board,
        "counts": counts,
        "seconds": seconds,
        "phases": phases,
    }


def _not_applicable(
    unavailable: dict[tuple[str, str], str], track: str, protocols: list[str]
) -> dict[tuple[str, str], str]:
    """(agent, protocol) → reason, for the track's agents that are not available."""
    return {(name, p): reason for (t, name), reason in unavailable.items() if t == track for p in protocols}


def _circuit_report_args(rows: list[dict], board: list[dict], cfg: BenchConfig, agents: dict) -> dict:
    """The circuit track's part of the report (nothing when the track did not run)."""
    if not rows:
        return {}
    from benchmarks.circuit_report import circuit_section

    return {"extra_sections": circuit_section(rows, board, protocols=cfg.protocols, agents=agents["circuit"])}


def _toy_tasks() -> list[str]:
    from acd_env.tasks import TOY_TASKS

    return list(TOY_TASKS)


def _wanted(row: dict, wanted: set, cfg: BenchConfig) -> bool:
    from benchmarks.runner import episode_key

    kind = row.get("kind")
    if kind in ("step", "episode"):
        return episode_key(row) in wanted
    if kind == "fit":
        return int(row["seed"]) in cfg.seeds and row["protocol"] in cfg.protocols
    if kind == "na":
        return row["protocol"] in cfg.protocols
    return True


# ---------------------------------------------------------------------------------------------- CLI
def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run the benchmark: leaderboard with CIs, TensorBoard runs, HTML report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, BenchConfig)
    add_executor_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = BenchConfig(**from_args(BenchConfig, args))
    cfg.out = cfg.out or str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    try:
        run_bench(cfg, echo=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        print(
            f"acd bench: interrupted; finished episodes are saved: re-run with --out {cfg.out} to resume",
            file=sys.stderr,
        )
        return 130
    except OSError as e:  # an output path that cannot be written (/proc/x, a full disk): one line, exit 2
        error = output_error(e, cfg.out, "--out")
        if error is None:
            raise
        raise error from None
    sys.stdout.flush()
    return 0
