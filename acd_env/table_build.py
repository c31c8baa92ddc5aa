"""Build circuit tables with the live backend's batched engine (`acd tables build`), resumably.

A build is split in two so that it can run in one process or on many workers (benchmarks.executors):

- `PromptMeasurer` (one per worker, holds the model): `describe()` gives the table's metadata and prompt ids,
  `measure(i)` measures every (candidate, type) of prompt i and returns a `MeasuredPrompt`.
- `build_table_sharded` (the driver, the only writer): hands out the prompts not measured yet, writes what
  comes back in **shards** (small tables, each written atomically) in a hidden directory beside the output,
  and when every prompt is in, assembles the table in prompt order, saves it atomically and removes the
  shards. A build killed at any point resumes from the shards on the next run with the same settings; a
  prompt that arrives twice (retried after a worker died) is kept once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from acd_env.backends import LiveBackend
from acd_env.case import CaseSettings, PromptCase
from acd_env.discretise import BIN_EDGES
from acd_env.errors import TableError
from acd_env.measurements import MEASUREMENT_NAMES
from acd_env.tables import CircuitTable, load_table, make_meta, save_table
from acd_env.tasks import TOY_TASKS, load_task

# metadata of one file (a shard or the table) rather than of the build: left out when shards are compared
PER_FILE_META = ("build_seconds", "n_prompts", "prompt_indices")
PromptCircuit = dict[str, np.ndarray | np.float32]  # one prompt's CIRCUIT_ARRAYS (the scalars as float32)


@dataclass(frozen=True)
class TableJob:
    """What to measure: a model (a name or toy model directory; the worker loads it), a task split, settings."""

    model: str
    task: str
    split: str
    settings: CaseSettings
    n: int | None = None
    circuit: bool = True

    def measurer(self, load: Callable[[str], Any]) -> PromptMeasurer:
        """The worker side, with the model loaded by `load(self.model)`."""
        return PromptMeasurer(
            load(self.model), self.task, self.split, self.settings, n=self.n, circuit=self.circuit
        )


class MeasuredPrompt(NamedTuple):
    index: int
    case: PromptCase
    measurements: dict[str, np.ndarray]  # name -> (K, n_types)
    seconds: float
    circuit: PromptCircuit | None = None  # CIRCUIT_ARRAYS of this prompt (no leading P axis)


class PromptMeasurer:
    """The worker side of a build: `model` is a loaded ReplacementModel (or a name `load_model` knows)."""

    def __init__(
        self,
        model: Any,
        task: str,
        split: str,
        settings: CaseSettings,
        *,
        n: int | None = None,
        circuit: bool = True,
    ) -> None:
        from acd_env.circuit_reference import BEAM_WIDTH
        from acd_env.models import load_model, model_info

        self.circuit = circuit
        self.model = load_model(model)
        info = model_info(self.model)
        self.prompts = load_task(task, model=self.model, split=split, n=n)
        reference = load_task(task, split="train") if task in TOY_TASKS else None
        self.backend = LiveBackend(self.model, self.prompts, settings, reference_prompts=reference)
        self.meta = make_meta(
            info.name,
            info.weights_hash,
            str(task),
            split,
            settings,
            {k: list(v) for k, v in BIN_EDGES.items()},
            circuit=circuit,
            **({"circuit_beam": BEAM_WIDTH, "circuit_complement": "ablation"} if circuit else {}),
        )

    def describe(self) -> dict:
        return {"meta": self.meta, "prompt_ids": [p.id for p in self.prompts]}

    def measure(self, i: int, *, forget: bool = True) -> MeasuredPrompt:
        """Measure prompt i; with `forget`, drop its cached attribution afterwards (a build needs it once)."""
        start = time.perf_counter()
        case = self.backend.case(i)
        effects = self.backend.oracle(i)
        measured = {n: np.asarray(getattr(effects, n)) for n in MEASUREMENT_NAMES}
        circuit = self._circuit(i) if self.circuit else None
        if forget:
            self.backend.forget(i)
        return MeasuredPrompt(i, case, measured, time.perf_counter() - start, circuit)

    def _circuit(self, i: int) -> PromptCircuit:
        from acd_env.circuit_reference import measure_circuit

        case, clean = self.backend._entry(i)
        n = case.n_valid
        return measure_circuit(
            self.model,
            clean.tokens,
            case.features[:n],
            np.zeros(n, np.float32),
            case.clean_act[:n],
            clean.logits,
            case.answer_id,
            case.cf_answer_id,
            len(case.features),
            freeze_attention=self.backend.settings.freeze_attention,
        )


def shard_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.shards"


def _comparable(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in PER_FILE_META}


class ShardStore:
    """The shards of one build: `done` maps prompt index → (case, measurements) of every prompt written."""

    def __init__(self, out: Path, meta: dict, prompt_ids: Sequence[str]) -> None:
        self.dir = shard_dir(out)
        digest = hashlib.sha256(json.dumps(list(prompt_ids)).encode()).hexdigest()[:16]
        self.meta = dict(meta, prompt_ids_digest=digest)
        self.n_prompts = len(prompt_ids)
        self.done: dict[int, tuple[PromptCase, dict[str, np.ndarray], PromptCircuit | None]] = {}
        self._next = 0
        if self.dir.is_dir():
            self._read()

    def _read(self) -> None:
        for tmp in self.dir.glob(".*.tmp"):  # a shard write killed half-way
            tmp.unlink(missing_ok=True)
        for path in sorted(self.dir.glob("shard-*.npz")):
            shard = load_table(path)
            if _comparable(shard.meta) != _comparable(self.meta):
                diff = sorted(
                    k
                    for k in set(_comparable(shard.meta)) | set(_comparable(self.meta))
                    if shard.meta.get(k) != self.meta.get(k)
                )
                raise TableError(
                    f"{str(self.dir)!r} holds shards of a build with other settings ({', '.join(diff)} differ); "
                    "delete that directory (or pass --restart) to start this build afresh"
                )
            for j, index in enumerate(shard.meta["prompt_indices"]):
                circuit = {n: v[j] for n, v in shard.circuit.items()} if shard.circuit else None
                self.done[int(index)] = (
                    shard.cases[j],
                    {n: v[j] for n, v in shard.measurements.items()},
                    circuit,
                )
            self._next = max(self._next, int(path.stem.split("-")[1]) + 1)

    def write(self, items: Sequence[MeasuredPrompt]) -> None:
        if not items:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, prompt_indices=[m.index for m in items])
        measurements = {n: np.stack([m.measurements[n] for m in items]) for n in MEASUREMENT_NAMES}
        save_table(
            CircuitTable(
                meta, [m.case for m in items], measurements, _stack_circuit([m.circuit for m in items])
            ),
            self.dir / f"shard-{self._next:05d}.npz",
        )
        self._next += 1
        for m in items:
            self.done[m.index] = (m.case, m.measurements, m.circuit)

    def assemble(self, seconds: float) -> CircuitTable:
        missing = [i for i in range(self.n_prompts) if i not in self.done]
        if missing:
            raise TableError(f"the build is missing prompts {missing[:10]} (of {self.n_prompts})")
        rows = [self.done[i] for i in range(self.n_prompts)]
        meta = {k: v for k, v in self.meta.items() if k != "prompt_ids_digest"}
        measurements = {n: np.stack([r[1][n] for r in rows]) for n in MEASUREMENT_NAMES}
        return CircuitTable(
            dict(meta, build_seconds=round(seconds, 3)),
            [r[0] for r in rows],
            measurements,
            _stack_circuit([r[2] for r in rows]),
        )

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _stack_circuit(items: Sequence[PromptCircuit | None]) -> dict[str, np.ndarray] | None:
    """Per-prompt circuit arrays stacked on a leading prompt axis (None when the build has none)."""
    if not items or any(c is None for c in items):
        return None
    return {n: np.stack([c[n] for c in items]) for n in items[0]}  # type: ignore[index]


def build_table_sharded(
    out: str | Path,
    description: dict,
    measure: Callable[[list[int]], Iterable[MeasuredPrompt]],
    *,
    shard_size: int = 16,
    shard_seconds: float = 30.0,
    restart: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Measure the prompts of `description` not in a shard yet (`measure(pending)` yields them, in any order),
    write them in shards (every `shard_size` prompts or `shard_seconds`), then assemble and save the table.

    `progress(done, total)` is called after every prompt, including those already in shards at the start.
    """
    out = Path(out)
    if out.exists() and out.is_dir():
        raise TableError(f"output {str(out)!r} is a directory; give a .npz file path")
    start = time.perf_counter()
    if restart:
        shutil.rmtree(shard_dir(out), ignore_errors=True)
    store = ShardStore(out, description["meta"], description["prompt_ids"])
    pending = [i for i in range(store.n_prompts) if i not in store.done]
    total = store.n_prompts
    if progress:
        progress(total - len(pending), total)
    buffer: list[MeasuredPrompt] = []
    seen = set(store.done)
    last_write = time.monotonic()
    if pending:
        for item in measure(pending):
            if item.index in seen:  # a retried prompt that came back twice
                continue
            seen.add(item.index)
            buffer.append(item)
            if len(buffer) >= shard_size or time.monotonic() - last_write >= shard_seconds:
                store.write(buffer)
                buffer, last_write = [], time.monotonic()
            if progress:
                progress(len(seen), total)
        store.write(buffer)
    table = store.assemble(time.perf_counter() - start)
    save_table(table, out)
    store.remove()
    return out


def measure_in_process(measurer: PromptMeasurer) -> Callable[[list[int]], Iterable[MeasuredPrompt]]:
    return lambda pending: (measurer.measure(i) for i in pending)


def build_task_table(
    model: Any,
    task: str,
    split: str,
    settings: CaseSettings,
    *,
    n: int | None = None,
    circuit: bool = True,
) -> CircuitTable:
    """Measure every (candidate, type) of a task split's prompts in memory; `model` is a name or a model."""
    measurer = PromptMeasurer(model, task, split, settings, n=n, circuit=circuit)
    start = time.perf_counter()
    # in memory: the attributions stay cached, so a live env on the same prompts does not redo them
    items = [measurer.measure(i, forget=False) for i in range(len(measurer.prompts))]
    measurements = {n_: np.stack([m.measurements[n_] for m in items]) for n_ in MEASUREMENT_NAMES}
    meta = dict(measurer.meta, build_seconds=round(time.perf_counter() - start, 3))
    return CircuitTable(
        meta, [m.case for m in items], measurements, _stack_circuit([m.circuit for m in items])
    )


def build_table_file(
    model: Any,
    task: str,
    split: str,
    out: str | Path,
    settings: CaseSettings,
    *,
    n: int | None = None,
    progress: bool = False,
    shard_size: int = 16,
    restart: bool = False,
    circuit: bool = True,
) -> Path:
    """Build one table file in this process, resumably (see `build_table_sharded`)."""
    measurer = PromptMeasurer(model, task, split, settings, n=n, circuit=circuit)
    with progress_bar(f"{measurer.meta['model']} {task}/{split}", progress) as tick:
        return build_table_sharded(
            out,
            measurer.describe(),
            measure_in_process(measurer),
            shard_size=shard_size,
            restart=restart,
            progress=tick,
        )


class progress_bar:
    """A tqdm bar driven by `tick(done, total)`; a no-op when disabled."""

    def __init__(self, desc: str, enabled: bool, unit: str = "prompt") -> None:
        self.desc, self.enabled, self.unit, self.bar = desc, enabled, unit, None

    def __enter__(self) -> Callable[[int, int], None]:
        def tick(done: int, total: int) -> None:
            if not self.enabled:
                return
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done, desc=self.desc, unit=self.unit, dynamic_ncols=True)
            else:
                self.bar.update(done - self.bar.n)

        return tick

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
