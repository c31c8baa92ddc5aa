"""The bad-input catalogue (docs/design.md, Reliability rules): every public entry point, fed every kind of bad input, fails cleanly.

One table, `CATALOGUE`, of cases. Each case prepares its inputs in a fresh folder (corrupted copies of the
shipped toy-4l tables, prompt files, a regular file where a directory belongs, ...), then calls one entry point:

- the Python API: `acd_env.models.load_model`, `acd_env.tasks.load_task`, `gymnasium.make("CircuitDiscovery-v0")`
  (and its `reset(options=...)`), `acd_env.case.build_case`, `agents.make_agent`, `acd_env.tables.load_table`;
- the `acd` CLI through `benchmarks.cli.main([...])`: `bench`, `tables build`, `graph`, `perf`.

and checks three things:

1. the error is the library's own: `acd_env.errors.ACDError` (a `ValueError`) from the API; from the CLI exit
   code 2 and exactly one stderr line `acd <command>...: error: ...` (argparse's own errors have the same form),
   never a traceback;
2. the message names the bad value and what is accepted (the `expect` substrings);
3. nothing half-written remains: every file in the case's folder is unchanged, no file was added (no output
   directory, no `.*.tmp` beside a table, no shards, no `runs/` in the working directory).

Cases covered by other test files are not repeated here:
- tests/test_tasks.py: unknown task, bad split, empty prompt list and blank prompt, bad JSONL line, missing JSONL
  file, words outside the toy vocabulary (clean and counterfactual), counterfactual of another length, over-long
  prompt (all through `load_task`);
- tests/test_models.py: unknown model name, a model argument of the wrong type; pretrained models offline;
- tests/test_env.py: unknown backend / reward / intervention / task / model (live), n_candidates 0, budget -1 and
  2.5, bad descriptors, replay settings that do not match the table, invalid and non-integer actions;
- tests/test_tables.py: missing, truncated (200 bytes) and garbage files, an .npz without metadata, format
  version 1, a table of other weights (`load_table(weights_hash=...)`), NaN in the KL, a mis-shaped descriptor
  array, atomic writes;
- tests/test_agents_baselines.py: unknown agent name, unimportable or missing user class, a class without `act`,
  unknown constructor arguments, an unknown intervention;
- tests/test_bench.py: `acd bench` with an unknown agent / protocol / task / backend / model, --budget 0, --k -3,
  --seeds two, --prompts without --backend live, resuming with other settings, a torn results tail;
  `acd graph` and `acd tables build` with an unknown model / task.

"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import acd_env  # noqa: F401  (registers CircuitDiscovery-v0)
from acd_env.errors import ACDError, TableError
from acd_env.tables import FORMAT_VERSION, load_table

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "acd_env" / "models" / "zoo" / "toy-4l" / "tables"
N_CTX = 64  # toy-4l's context (acd_env.models.toy_config("toy-4l")["n_ctx"]); checked below
GOOD = "when alice and bob went to the park , alice gave a ball to"
LONG = " ".join(["alice"] * (N_CTX + 6))  # 71 tokens with BOS
VALID_MODELS = ("valid models", "toy-4l", "gemma-2-2b")
NO_CUDA = not torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------- inputs
class Ctx:
    """A case's folder (`tmp`), the working directory (`cwd`, inside it) and makers of bad inputs."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.tmp, self.request = tmp, request
        self.cwd = tmp / "cwd"
        self.cwd.mkdir(parents=True)
        self._restore: list[Path] = []

    @property
    def model(self) -> Any:
        return self.request.getfixturevalue("toy_model")

    def file(self, name: str, text: str = "x") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def jsonl(self, name: str, *rows: dict) -> Path:
        return self.file(name, "".join(json.dumps(r) + "\n" for r in rows))

    def read_only_dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        path.chmod(0o500)
        self._restore.append(path)
        if os.access(path, os.W_OK):
            pytest.skip("permissions are not enforced for this user (root): a read-only folder is writable")
        return path

    def table(self, kind: str, name: str = "counting-test.npz") -> Path:
        """A bad copy of toy-4l's shipped counting test table (see `TABLE_DAMAGE`)."""
        path = self.tmp / name
        TABLE_DAMAGE[kind](path)
        return path

    def tables_dir(self, kind: str) -> Path:
        """A --tables folder: the shipped counting train table and a bad counting test table."""
        folder = self.tmp / f"tables-{kind}"
        folder.mkdir()
        shutil.copy(SHIPPED / "counting-train.npz", folder / "counting-train.npz")
        TABLE_DAMAGE[kind](folder / "counting-test.npz")
        return folder

    def close(self) -> None:
        for path in self._restore:
            path.chmod(0o700)


def _arrays() -> dict[str, np.ndarray]:
    with np.load(SHIPPED / "counting-test.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _edited(edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        arrays = _arrays()
        edit(arrays)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    return write


def _meta(**changes: Any) -> Callable[[dict[str, np.ndarray]], None]:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        meta = {**json.loads(str(arrays["meta"])), **changes}
        arrays["meta"] = np.array(json.dumps({k: v for k, v in meta.items() if v is not _DROP}))

    return edit


_DROP = object()


def _put(name: str, value: float, index: tuple = (0, 0, 0)) -> Callable[[dict[str, np.ndarray]], None]:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays[name] = arrays[name].copy()
        arrays[name][index] = value

    return edit


def _flip(path: Path) -> None:
    data = bytearray((SHIPPED / "counting-test.npz").read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 2000):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _random_npz(path: Path) -> None:
    with open(path, "wb") as f:
        np.savez(f, weights=np.random.default_rng(0).random((4, 4)))


TABLE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": lambda p: p.write_bytes((SHIPPED / "counting-test.npz").read_bytes()[:50_000]),
    "empty": lambda p: p.write_bytes(b""),
    "flipped-bytes": _flip,
    "random-npz": _random_npz,
    "old-version": _edited(_meta(format_version=FORMAT_VERSION - 1)),
    "foreign-model": _edited(_meta(model="toy-9l", weights_hash="0123456789abcdef")),
    "meta-not-a-dict": _edited(lambda a: a.__setitem__("meta", np.array("[1, 2, 3]"))),
    "meta-lacks-keys": _edited(_meta(n_candidates=_DROP, interventions=_DROP)),
    "short-prompt-ids": _edited(lambda a: a.__setitem__("prompt_id", a["prompt_id"][:3])),
    "nan-kl": _edited(_put("m_kl", np.nan)),
    "inf-downstream": _edited(_put("m_downstream", np.inf)),
    "nan-descriptors": _edited(_put("descriptors", np.nan)),
    "inf-values": _edited(_put("values", -np.inf)),
    "negative-kl": _edited(_put("m_kl", -3.0)),
    "n-valid-over-k": _edited(_put("n_valid", 500, (0,))),
}
CORRUPT = ("corrupt or truncated", "rebuild it")


# ---------------------------------------------------------------------------------------------- the catalogue
@dataclass(frozen=True)
class Case:
    """`prepare(ctx)` writes the inputs and returns a thunk (API) or an argv list (CLI)."""

    id: str
    prepare: Callable[[Ctx], Any]
    expect: tuple[str, ...]
    error: type[BaseException] = ACDError


def api(id: str, prepare: Callable[[Ctx], Callable[[], Any]], *expect: str, error=ACDError, marks=()) -> Any:
    return pytest.param(Case(id, prepare, expect, error), id=id, marks=marks)


def cli(id: str, prepare: Callable[[Ctx], list[str]], *expect: str, marks=()) -> Any:
    return pytest.param(Case(id, prepare, expect, SystemExit), id=f"cli-{id}", marks=marks)


def make_env(**kw: Any) -> Callable[[], Any]:
    return lambda: gym.make("CircuitDiscovery-v0", **kw)


def live_env(ctx: Ctx, **kw: Any) -> Callable[[], Any]:
    return make_env(model=ctx.model, n_candidates=8, budget=2, **kw)


def replay(**kw: Any) -> dict:
    return dict(backend="replay", split="test", task="counting", **kw)


def reset_with(prompt: Any) -> Callable[[Ctx], Callable[[], Any]]:
    def prepare(ctx: Ctx) -> Callable[[], Any]:
        env = gym.make("CircuitDiscovery-v0", model=ctx.model, prompts=[GOOD], n_candidates=8, budget=2)
        return lambda: env.reset(seed=0, options={"prompt": prompt})

    return prepare


def featureless_case(ctx: Ctx) -> Callable[[], Any]:
    """A real attribution graph of a real prompt with every feature node removed: nothing to intervene on."""
    from acd_env.attribution.graph import attribute_graph
    from acd_env.case import CaseSettings, build_case
    from acd_env.tasks import load_task

    prompt = load_task("counting", split="test", n=1)[0]
    graph = attribute_graph(ctx.model, ctx.model.ensure_tokenized(prompt.clean))
    graph.selected_features = graph.selected_features[:0]
    return lambda: build_case(ctx.model, prompt, CaseSettings(n_candidates=8), graph=graph)


def model_call(*args: Any, **kw: Any) -> Callable[[Ctx], Callable[[], Any]]:
    from acd_env.models import load_model as load

    return lambda ctx: lambda: load(*args, cache=False, **kw)


def task_call(*args: Any, with_model: bool = False, **kw: Any) -> Callable[[Ctx], Callable[[], Any]]:
    from acd_env.tasks import load_task as load

    return lambda ctx: lambda: load(*args, **({"model": ctx.model} if with_model else {}), **kw)


def agent_call(*args: Any, **kw: Any) -> Callable[[Ctx], Callable[[], Any]]:
    from agents import make_agent as make

    return lambda ctx: lambda: make(*args, **kw)


def _options(defaults: dict[str, Any], extra: tuple[Any, ...], ctx: Ctx) -> list[str]:
    """`--option value` pairs: the defaults, each replaced by the case's own value (callables get ctx)."""
    given = [str(x(ctx)) if callable(x) else x for x in extra]
    options = dict(defaults)
    options.update(zip(given[::2], given[1::2], strict=True))
    return [x for pair in options.items() for x in pair]


def bench(*extra: Any) -> Callable[[Ctx], list[str]]:
    """`acd bench`, as small as it gets, into <case folder>/out (which must never appear)."""

    def argv(ctx: Ctx) -> list[str]:
        defaults = {"--agents": "greedy", "--seeds": "1", "--prompts-per-task": "1", "--tasks": "counting",
                    "--protocol": "zero-shot", "--reps": "50", "--out": str(ctx.tmp / "out")}  # fmt: skip
        return ["bench", "--no-progress", *_options(defaults, extra, ctx)]

    return argv


def build(*extra: Any) -> Callable[[Ctx], list[str]]:
    """`acd tables build` (a tiny one) into <case folder>/t.npz (which must never appear)."""

    def argv(ctx: Ctx) -> list[str]:
        defaults = {"--task": "counting", "--n": "1", "--k": "4", "--out": str(ctx.tmp / "t.npz")}
        return ["tables", "build", "--no-progress", *_options(defaults, extra, ctx)]

    return argv


def graph(*extra: Any) -> Callable[[Ctx], list[str]]:
    """`acd graph` (K = 4, B = 2) into <case folder>/g (which must never appear)."""

    def argv(ctx: Ctx) -> list[str]:
        defaults = {"--prompt": GOOD, "--k": "4", "--budget": "2", "--out": str(ctx.tmp / "g")}
        return ["graph", *_options(defaults, extra, ctx)]

    return argv


def prompts_file(*rows: dict) -> Callable[[Ctx], Path]:
    return lambda ctx: ctx.jsonl("prompts.jsonl", *rows)


def live_bench(*rows: dict) -> Callable[[Ctx], list[str]]:
    """`acd bench --backend live --prompts FILE` (custom prompts run live; --tasks must not be given)."""

    def argv(ctx: Ctx) -> list[str]:
        args = bench("--backend", "live", "--prompts", prompts_file(*rows))(ctx)
        i = args.index("--tasks")
        return args[:i] + args[i + 2 :]

    return argv


def stale_out(ctx: Ctx) -> Path:
    """An --out folder holding a run whose config.json is unreadable."""
    out = ctx.tmp / "out"
    out.mkdir()
    (out / "config.json").write_text("{not json")
    (out / "results.jsonl").write_text("")
    return out


OOV = {"clean": "when zebra and bob went to the park"}
EMPTY = {"clean": ""}
LONG_ROW = {"clean": LONG}
CF_LENGTH = {"clean": "when alice and bob went to the park", "counterfactual": "when bob went"}

CATALOGUE = [
    # ------------------------------------------------------------------ acd_env.models.load_model
    api(
        "model-device-unknown",
        model_call("toy-4l", device="tpu"),
        "'tpu'",
        "valid devices",
        "'cpu'",
        "'cuda'",
    ),
    api("model-device-type", model_call("toy-4l", device=3), "int", "'cpu'"),
    api(
        "model-device-cuda-absent",
        model_call("toy-4l", device="cuda"),
        "'cuda'",
        "device='cpu'",
        marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU"),
    ),
    # ------------------------------------------------------------------ acd_env.tasks.load_task
    api("task-none", task_call(None), "NoneType", "ioi", "JSONL path", "list of prompts"),
    api("task-int", task_call(7), "int 7", "ioi"),
    api("task-n-float", task_call("ioi", n=2.5), "n must be a positive integer", "2.5"),
    api("task-n-string", task_call("ioi", n="3"), "n must be a positive integer", "'3'"),
    api("task-n-bool", task_call("ioi", n=True), "n must be a positive integer", "True"),
    api("task-n-zero", task_call("ioi", n=0), "n must be a positive integer", "got 0"),
    api("task-model-unknown", task_call("ioi", model="gpt-9"), "'gpt-9'", *VALID_MODELS),
    api(
        "task-answer-unknown-word",
        task_call([{"clean": GOOD, "answer": "zebra"}], with_model=True),
        "'zebra'",
        "answer",
        "one known word",
    ),
    api(
        "task-answer-not-a-string",
        task_call([{"clean": GOOD, "answer": 3}]),
        "'answer'",
        "must be a string",
        "int 3",
    ),
    api("task-special-token", task_call(["<pad> alice went"], with_model=True), "'<pad>'", "plain words"),
    api("task-unk-token", task_call(["alice <unk> went"], with_model=True), "['<unk>']", "vocabulary"),
    # ------------------------------------------------------------------ gym.make("CircuitDiscovery-v0", ...)
    api(
        "env-k-string",
        lambda ctx: make_env(n_candidates="3", **replay()),
        "n_candidates",
        "'3'",
        "positive integer",
    ),
    api("env-k-bool", lambda ctx: make_env(n_candidates=True, **replay()), "n_candidates", "True"),
    api("env-k-float", lambda ctx: make_env(n_candidates=8.0, **replay()), "n_candidates", "8.0"),
    api("env-budget-zero", lambda ctx: make_env(budget=0, **replay()), "budget", "got 0", "positive integer"),
    api("env-budget-string", lambda ctx: make_env(budget="3", **replay()), "budget", "'3'"),
    api("env-budget-bool", lambda ctx: make_env(budget=True, **replay()), "budget", "True"),
    api(
        "env-split-unknown",
        lambda ctx: make_env(backend="replay", split="val"),
        "'val'",
        "valid splits: test, train",
    ),
    api(
        "env-replay-task-unknown",
        lambda ctx: make_env(backend="replay", task="sorting"),
        "'sorting'",
        "valid tasks",
        "counting",
    ),
    api(
        "env-replay-model-unknown",
        lambda ctx: make_env(backend="replay", model="gpt-9"),
        "'gpt-9'",
        *VALID_MODELS,
    ),
    api(
        "env-replay-pretrained-without-tables",
        lambda ctx: make_env(backend="replay", model="gemma-2-2b"),
        "'gemma-2-2b'",
        "acd tables build",
        "tables=PATH",
        error=TableError,
    ),
    api("env-interventions-none", lambda ctx: make_env(interventions=None, **replay()), "None", "'ablation'"),
    api(
        "env-interventions-empty",
        lambda ctx: make_env(interventions=(), **replay()),
        "non-empty",
        "'patching'",
    ),
    api(
        "env-steering-nan",
        lambda ctx: make_env(steering_scale=float("nan"), **replay()),
        "steering_scale",
        "nan",
    ),
    api("env-steering-string", lambda ctx: make_env(steering_scale="4", **replay()), "steering_scale", "'4'"),
    api("env-device-unknown", lambda ctx: make_env(prompts=[GOOD], device="tpu"), "'tpu'", "'cpu'"),
    api("env-prompt-empty", lambda ctx: live_env(ctx, prompts=[""]), "is empty", "non-empty text"),
    api("env-prompt-blank", lambda ctx: live_env(ctx, prompts=[" \t "]), "is empty", "non-empty text"),
    api(
        "env-prompt-too-long",
        lambda ctx: live_env(ctx, prompts=[LONG]),
        f"{N_CTX + 7} tokens",
        f"holds {N_CTX}",
    ),
    api("env-prompt-unknown-word", lambda ctx: live_env(ctx, prompts=[OOV]), "['zebra']", "vocabulary"),
    api(
        "env-prompt-special-token",
        lambda ctx: live_env(ctx, prompts=["<bos> alice"]),
        "'<bos>'",
        "plain words",
    ),
    api(
        "env-prompt-cf-length",
        lambda ctx: live_env(ctx, prompts=[CF_LENGTH]),
        "4 tokens",
        "9",
        "same token length",
    ),
    api("env-prompts-a-string", lambda ctx: live_env(ctx, prompts=GOOD), "does not exist", "pass a list"),
    api("env-prompts-int", lambda ctx: live_env(ctx, prompts=3), "prompts must be a list", "int"),
    api(
        "env-prompts-item-int",
        lambda ctx: live_env(ctx, prompts=[3]),
        "item 0 is a int",
        "a string or a dict",
    ),
    api("env-reset-prompt-too-long", reset_with(LONG), f"holds {N_CTX}"),
    api("env-reset-prompt-empty", reset_with(""), "is empty"),
    api("env-reset-prompt-unknown-word", reset_with("zebra zebra"), "['zebra']"),
    api("env-tables-a-directory", lambda ctx: make_env(**replay(tables=ctx.tmp)), "is a directory", ".npz"),
    *(
        api(
            f"env-table-{kind}",
            lambda ctx, kind=kind: make_env(**replay(tables=ctx.table(kind))),
            "counting-test.npz",
            *expect,
            error=TableError,
        )
        for kind, expect in {
            "truncated": CORRUPT,
            "random-npz": ("not a circuit table", "acd tables build"),
            "old-version": (f"format version {FORMAT_VERSION - 1}", f"reads {FORMAT_VERSION}", "rebuild"),
            "foreign-model": ("'toy-9l'", "'toy-4l'", "rebuild it for this model"),
            "nan-kl": ("NaN or inf", "'kl'"),
            "nan-descriptors": ("NaN or inf", "'descriptors'"),
        }.items()
    ),
    # ------------------------------------------------------------------ acd_env.case.build_case
    api("case-no-active-features", featureless_case, "no active transcoder features", "choose a prompt"),
    # ------------------------------------------------------------------ agents.make_agent
    api("agent-seed-string", agent_call("random", seed="7"), "seed", "'7'", "non-negative integer"),
    api("agent-seed-float", agent_call("ucb", seed=2.5), "seed", "2.5", "non-negative integer"),
    api("agent-seed-negative", agent_call("greedy", seed=-1), "seed", "-1", "non-negative integer"),
    api("agent-seed-bool", agent_call("random", seed=True), "seed", "True"),
    api("agent-none", agent_call(None), "NoneType", "greedy", "package.module:Class"),
    # ------------------------------------------------------------------ acd_env.tables.load_table
    api("table-path-none", lambda ctx: lambda: load_table(None), "str or Path", "NoneType", error=TableError),
    api(
        "table-a-directory",
        lambda ctx: lambda: load_table(ctx.tmp),
        "is a directory",
        ".npz",
        error=TableError,
    ),
    *(
        api(
            f"table-{kind}",
            lambda ctx, kind=kind: lambda path=ctx.table(kind): load_table(path),
            "counting-test.npz",
            *expect,
            error=TableError,
        )
        for kind, expect in {
            "empty": CORRUPT,
            "flipped-bytes": (*CORRUPT, "CRC"),
            "meta-not-a-dict": ("unreadable metadata",),
            "meta-lacks-keys": ("metadata lacks", "'n_candidates'", "'interventions'"),
            "short-prompt-ids": ("prompt_id has shape (3,)", "expected (20,)"),
            "inf-downstream": ("NaN or inf", "'downstream'"),
            "inf-values": ("NaN or inf", "'values'"),
            "negative-kl": ("negative KL", "-3"),
            "n-valid-over-k": ("n_valid must lie in [0, 64]", "500"),
        }.items()
    ),
    # ------------------------------------------------------------------ acd bench
    cli("bench-budget-float", bench("--budget", "2.5"), "--budget", "'2.5'"),
    cli("bench-k-zero", bench("--k", "0"), "--k", "got 0", "positive integer"),
    cli("bench-k-above-the-tables", bench("--k", "65"), "n_candidates=65", "64"),
    cli("bench-reps-zero", bench("--reps", "0"), "--reps", "got 0"),
    cli("bench-prompts-per-task-negative", bench("--prompts-per-task", "-1"), "--prompts-per-task", "-1"),
    cli("bench-seeds-zero", bench("--seeds", "0"), "--seeds", "positive", "got 0"),
    cli("bench-agents-empty", bench("--agents", ","), "no agent given", "valid agents", "greedy"),
    cli("bench-fit-model-unknown", bench("--fit-model", "nope"), "'nope'", *VALID_MODELS),
    cli("bench-device-unknown", bench("--backend", "live", "--device", "tpu"), "'tpu'", "'cpu'"),
    cli("bench-prompt-unknown-word", live_bench(OOV), "['zebra']", "vocabulary"),
    cli("bench-prompt-empty", live_bench(EMPTY), "is empty"),
    cli("bench-prompt-too-long", live_bench(LONG_ROW), f"holds {N_CTX}"),
    cli("bench-prompt-cf-length", live_bench(CF_LENGTH), "same token length"),
    cli("bench-prompts-file-empty", live_bench(), "prompt list is empty"),
    cli("bench-tables-a-file", bench("--tables", lambda ctx: ctx.file("tables")), "is not a directory"),
    *(
        cli(f"bench-table-{kind}", bench("--tables", lambda ctx, kind=kind: ctx.tables_dir(kind)), *expect)
        for kind, expect in {
            "truncated": ("counting-test.npz", *CORRUPT),
            "random-npz": ("counting-test.npz", "not a circuit table"),
            "old-version": ("counting-test.npz", f"format version {FORMAT_VERSION - 1}"),
            "foreign-model": ("counting-test.npz", "'toy-9l'", "'toy-4l'", "rebuild it for this model"),
            "nan-kl": ("counting-test.npz", "NaN or inf", "'kl'"),
        }.items()
    ),
    cli("bench-out-a-file", bench("--out", lambda ctx: ctx.file("out")), "--out", "is a file"),
    cli(
        "bench-out-under-a-file",
        bench("--out", lambda ctx: ctx.file("out") / "run"),
        "--out",
        "under the file",
    ),
    cli(
        "bench-out-read-only",
        bench("--out", lambda ctx: ctx.read_only_dir("ro") / "run"),
        "--out",
        "not writable",
    ),
    cli("bench-out-config-unreadable", bench("--out", stale_out), "config.json", "choose another --out"),
    # ------------------------------------------------------------------ acd tables build
    cli("tables-split-unknown", build("--split", "val"), "'val'", "valid splits: test, train"),
    cli("tables-k-zero", build("--k", "0"), "--k", "got 0"),
    cli("tables-k-float", build("--k", "2.5"), "--k", "'2.5'"),
    cli("tables-n-negative", build("--n", "-2"), "--n", "-2"),
    cli(
        "tables-intervention-unknown",
        build("--interventions", "zap"),
        "'zap'",
        "ablation, patching, steering",
    ),
    cli("tables-interventions-empty", build("--interventions", ","), "non-empty", "'ablation'"),
    cli("tables-descriptors-unknown", build("--descriptors", "foo"), "'foo'", "graph,atp"),
    cli("tables-steering-nan", build("--steering-scale", "nan"), "steering_scale", "nan", "finite number"),
    cli("tables-model-unknown", build("--model", "gpt-9"), "'gpt-9'", *VALID_MODELS),
    cli("tables-device-unknown", build("--device", "tpu"), "'tpu'", "'cpu'"),
    cli("tables-prompt-unknown-word", build("--task", prompts_file(OOV)), "['zebra']", "vocabulary"),
    cli("tables-prompt-empty", build("--task", prompts_file(EMPTY)), "is empty"),
    cli("tables-prompt-too-long", build("--task", prompts_file(LONG_ROW)), f"holds {N_CTX}"),
    cli("tables-prompt-cf-length", build("--task", prompts_file(CF_LENGTH)), "same token length"),
    cli(
        "tables-out-under-a-file", build("--out", lambda ctx: ctx.file("f") / "t.npz"), "lies under the file"
    ),
    cli("tables-out-a-directory", build("--out", lambda ctx: ctx.tmp), "--out"),
    cli(
        "tables-out-read-only", build("--out", lambda ctx: ctx.read_only_dir("ro") / "t.npz"), "not writable"
    ),
    # ------------------------------------------------------------------ acd graph
    cli("graph-prompt-empty", graph("--prompt", ""), "--prompt", "non-empty"),
    cli("graph-prompt-unknown-word", graph("--prompt", "zebra went to"), "['zebra']", "vocabulary"),
    cli("graph-prompt-too-long", graph("--prompt", LONG), f"{N_CTX + 7} tokens", f"holds {N_CTX}"),
    cli("graph-prompt-special-token", graph("--prompt", "<pad> alice"), "'<pad>'", "plain words"),
    cli("graph-agent-unknown", graph("--agent", "nosuch"), "'nosuch'", "valid agents", "greedy"),
    cli("graph-k-zero", graph("--k", "0"), "--k", "got 0"),
    cli("graph-budget-zero", graph("--budget", "0"), "--budget", "got 0"),
    cli("graph-budget-float", graph("--budget", "2.5"), "--budget", "'2.5'"),
    cli("graph-seed-negative", graph("--seed", "-1"), "seed", "-1", "non-negative integer"),
    cli("graph-device-unknown", graph("--device", "tpu"), "'tpu'", "'cpu'"),
    cli("graph-out-a-file", graph("--out", lambda ctx: ctx.file("g")), "--out", "is a file"),
    # ------------------------------------------------------------------ acd perf
    cli("perf-model-unknown", lambda ctx: ["perf", "--model", "gpt-9", "--quick", "--skip-bench"], "'gpt-9'"),
    cli(
        "perf-threads-zero",
        lambda ctx: ["perf", "--threads", "0", "--quick", "--skip-bench"],
        "--threads",
        "0",
    ),
]


# ---------------------------------------------------------------------------------------------- the test
def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def ctx(tmp_path, request, monkeypatch):
    context = Ctx(tmp_path / "case", request)
    monkeypatch.chdir(context.cwd)  # a stray default output (runs/, tables/, graphs/) would land here
    yield context
    context.close()


@pytest.mark.parametrize("case", CATALOGUE)
def test_bad_input_fails_cleanly(case: Case, ctx: Ctx, capsys):
    from benchmarks.cli import main

    prepared = case.prepare(ctx)
    before = _snapshot(ctx.tmp)
    capsys.readouterr()
    if case.error is SystemExit:
        try:
            code = main(prepared)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        err = capsys.readouterr().err.strip()
        assert code == 2, (code, err)
        command = prepared[0]
        assert err.startswith(f"acd {command}") and ": error: " in err, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        message = err
    else:
        with pytest.raises(case.error) as info:
            prepared()
        assert isinstance(info.value, ACDError) and isinstance(info.value, ValueError)
        message = str(info.value)
    for text in case.expect:
        assert text in message, (text, message)
    after = _snapshot(ctx.tmp)
    assert after == before, (
        f"files changed or left behind: {sorted(set(after.items()) ^ set(before.items()))}"
    )


def test_the_catalogue_knows_the_toy_context():
    from acd_env.models import toy_config

    assert toy_config("toy-4l")["n_ctx"] == N_CTX
    ids = [p.id for p in CATALOGUE]
    assert len(ids) == len(set(ids))


def test_check_out_dir(tmp_path):
    from acd_env.errors import check_out_dir

    assert check_out_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # it checks, it does not create
    (tmp_path / "f").write_text("x")
    with pytest.raises(ACDError, match="is a file"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(ACDError, match="under the file"):
        check_out_dir(tmp_path / "f" / "run", "--out")
