"""Circuit tables: every measurement of every (candidate, intervention) of a set of prompts (replay data).

One `.npz` file per (model, task, split). `meta` (JSON) records the format version, model name and weights
hash, task, split, K, intervention types, steering scale, descriptor columns, attention setting, outcome bin
edges and the circuit-tracer version; the arrays hold, per prompt, the `PromptCase` fields, the
measurements (P, K, n_types) and, for the circuit track, the prompt's circuit data (`circuit`: KL and logit
difference of keep(∅), the reference ranking and its faithfulness curve, the atp-joint ranking and the
integrated-gradients scores; see `acd_env.circuit_reference`). Writes are atomic (temporary file + rename); loading validates everything and
refuses a table built for another model or settings with an error that says what to rebuild.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acd_env.case import CaseSettings, PromptCase
from acd_env.errors import TableError, is_integer
from acd_env.measurements import MEASUREMENT_NAMES
from acd_env.tasks.prompt import Prompt

FORMAT_VERSION = 3  # 3: circuit-track arrays (c_*) added
_CASE_ARRAYS = ("features", "n_valid", "clean_act", "values", "descriptors", "answer_id", "cf_answer_id",
                "top_ids", "top_probs")  # fmt: skip
_STRINGS = ("prompt_id", "task", "clean", "counterfactual", "answer", "cf_answer", "patch_source")
_META_KEYS = ("model", "weights_hash", "n_prompts", "n_candidates", "interventions", "steering_scale",
              "descriptors", "descriptor_names", "freeze_attention")  # fmt: skip
_KL_TOLERANCE = 1e-5  # a KL divergence is ≥ 0; float32 rounding of a near-zero value may dip just below


@dataclass
class CircuitTable:
    """A loaded or freshly built table. `measurements[name]` has shape (P, K, n_types)."""

    meta: dict
    cases: list[PromptCase]
    measurements: dict[str, np.ndarray]
    circuit: dict[str, np.ndarray] | None = None  # CIRCUIT_ARRAYS, each (P, ...); None: a feature-track table

    @property
    def has_circuit(self) -> bool:
        return self.circuit is not None

    @property
    def settings(self) -> CaseSettings:
        m = self.meta
        return CaseSettings(
            n_candidates=m["n_candidates"],
            interventions=tuple(m["interventions"]),
            steering_scale=m["steering_scale"],
            descriptors=tuple(m["descriptors"]),
            freeze_attention=m["freeze_attention"],
        )

    def __len__(self) -> int:
        return len(self.cases)


def make_meta(model_name: str, weights_hash: str, task: str, split: str, settings: CaseSettings,
              bin_edges: dict, **extra: Any) -> dict:  # fmt: skip
    import circuit_tracer

    return {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "weights_hash": weights_hash,
        "task": task,
        "split": split,
        "n_candidates": settings.n_candidates,
        "interventions": list(settings.interventions),
        "steering_scale": settings.steering_scale,
        "descriptors": list(settings.descriptors),
        "descriptor_names": list(settings.descriptor_names),
        "freeze_attention": settings.freeze_attention,
        "bin_edges": bin_edges,
        "circuit_tracer_version": getattr(circuit_tracer, "__version__", "0.5.0"),
        "measurements": list(MEASUREMENT_NAMES),
        **extra,
    }


def save_table(table: CircuitTable, path: str | Path) -> Path:
    """Write atomically: a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    cases = table.cases
    max_len = max((len(c.tokens) for c in cases), default=1)
    tokens = np.full((len(cases), max_len), -1, np.int64)
    for i, c in enumerate(cases):
        tokens[i, : len(c.tokens)] = c.tokens
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps({**table.meta, "n_prompts": len(cases), "circuit": table.has_circuit})),
        "tokens": tokens,
        "prompt_id": np.array([c.prompt.id for c in cases], dtype=str),
        "task": np.array([c.prompt.task for c in cases], dtype=str),
        "clean": np.array([c.prompt.clean for c in cases], dtype=str),
        "counterfactual": np.array([c.prompt.counterfactual or "" for c in cases], dtype=str),
        "answer": np.array([c.prompt.answer or "" for c in cases], dtype=str),
        "cf_answer": np.array([c.prompt.counterfactual_answer or "" for c in cases], dtype=str),
        "patch_source": np.array([c.patch_source for c in cases], dtype=str),
    }
    for name in _CASE_ARRAYS:
        arrays[name] = np.stack([np.asarray(getattr(c, name)) for c in cases])
    for name in MEASUREMENT_NAMES:
        arrays[f"m_{name}"] = table.measurements[name]
    for name, values in (table.circuit or {}).items():
        arrays[f"c_{name}"] = values
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # numpy's stub lets **arrays bind to savez_compressed's allow_pickle: bool keyword
            np.savez_compressed(f, **arrays)  # pyright: ignore[reportArgumentType]
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; a table is ordinary data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_table(
    path: str | Path, *, weights_hash: str | None = None, model_name: str | None = None
) -> CircuitTable:
    """Load and validate a table; with `weights_hash`, refuse a table built for other weights."""
    if not isinstance(path, str | os.PathLike):
        raise TableError(f"a circuit table path must be a str or Path, got {type(path).__name__} {path!r}")
    path = Path(path)
    if path.is_dir():
        raise TableError(
            f"circuit table {str(path)!r} is a directory; give the .npz file (e.g. {str(path / 'ioi-test.npz')!r})"
        )
    if not path.is_file():
        raise TableError(f"circuit table {str(path)!r} does not exist; build it with `acd tables build`")
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zlib.error) as e:
        raise TableError(f"circuit table {str(path)!r} is corrupt or truncated ({e}); rebuild it") from None
    if "meta" not in raw:
        raise TableError(
            f"{str(path)!r} is not a circuit table (no metadata); rebuild it with `acd tables build`"
        )
    try:
        meta = json.loads(str(raw["meta"]))
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise TableError(f"circuit table {str(path)!r} has unreadable metadata; rebuild it")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise TableError(
            f"circuit table {str(path)!r} has format version {version!r}, this version reads {FORMAT_VERSION}; "
            "rebuild it with `acd tables build`"
        )
    if weights_hash is not None and meta.get("weights_hash") != weights_hash:
        raise TableError(
            f"circuit table {str(path)!r} was built for model {meta.get('model')!r} (weights {meta.get('weights_hash')}),"
            f" not for {model_name or 'this model'!r} (weights {weights_hash}); rebuild it for this model"
        )
    return _from_arrays(raw, meta, path)


def read_meta(path: str | Path) -> dict | None:
    """A table file's metadata without loading its arrays (None when it cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
    except Exception:
        return None
    return meta if isinstance(meta, dict) else None


def _from_arrays(raw: dict[str, np.ndarray], meta: dict, path: Path) -> CircuitTable:
    needed = ("tokens", *_STRINGS, *_CASE_ARRAYS, *(f"m_{n}" for n in MEASUREMENT_NAMES))
    missing = [k for k in needed if k not in raw]
    if missing:
        raise TableError(f"circuit table {str(path)!r} lacks arrays {missing}; rebuild it")
    absent = [k for k in _META_KEYS if k not in meta]
    if absent:
        raise TableError(f"circuit table {str(path)!r}: its metadata lacks {absent}; rebuild it")
    p, k = meta["n_prompts"], meta["n_candidates"]
    if (
        not is_integer(p)
        or p < 0
        or not is_integer(k)
        or k <= 0
        or not isinstance(meta["interventions"], list)
    ):
        raise TableError(
            f"circuit table {str(path)!r}: its metadata has n_prompts={p!r}, n_candidates={k!r}, "
            f"interventions={meta['interventions']!r}; rebuild it"
        )
    t, f = len(meta["interventions"]), len(meta["descriptor_names"])
    n_top = raw["top_ids"].shape[1:2]
    expected = {"features": (p, k, 3), "values": (p, k, t), "descriptors": (p, k, f), "n_valid": (p,),
                "clean_act": (p, k), "answer_id": (p,), "cf_answer_id": (p,), "top_ids": (p, *n_top),
                "top_probs": (p, *n_top), **{name: (p,) for name in _STRINGS},
                **{f"m_{n}": (p, k, t) for n in MEASUREMENT_NAMES}}  # fmt: skip
    for name, shape in expected.items():
        if raw[name].shape != shape:
            raise TableError(
                f"circuit table {str(path)!r}: {name} has shape {raw[name].shape}, expected {shape}; rebuild it"
            )
    if raw["tokens"].ndim != 2 or raw["tokens"].shape[0] != p:
        raise TableError(
            f"circuit table {str(path)!r}: tokens has shape {raw['tokens'].shape}, expected ({p}, length); "
            "rebuild it"
        )
    for name in ("kl", "logit_diff", "downstream"):
        if not np.isfinite(raw[f"m_{name}"]).all():
            raise TableError(
                f"circuit table {str(path)!r} holds NaN or inf in measurement {name!r}; rebuild it"
            )
    for name in ("descriptors", "values", "clean_act", "top_probs"):
        if not np.isfinite(raw[name]).all():
            raise TableError(f"circuit table {str(path)!r} holds NaN or inf in {name!r}; rebuild it")
    if (raw["m_kl"] < -_KL_TOLERANCE).any():
        raise TableError(
            f"circuit table {str(path)!r} holds a negative KL divergence ({float(raw['m_kl'].min()):.3g}); "
            "rebuild it"
        )
    n_valid = raw["n_valid"]
    if p and (n_valid.min() < 0 or n_valid.max() > k):
        raise TableError(
            f"circuit table {str(path)!r}: n_valid must lie in [0, {k}] (K), found {int(n_valid.min())}.."
            f"{int(n_valid.max())}; rebuild it"
        )
    cases = []
    for i in range(p):
        prompt = Prompt(
            id=str(raw["prompt_id"][i]),
            task=str(raw["task"][i]),
            clean=str(raw["clean"][i]),
            answer=str(raw["answer"][i]) or None,
            counterfactual=str(raw["counterfactual"][i]) or None,
            counterfactual_answer=str(raw["cf_answer"][i]) or None,
        )
        tokens = raw["tokens"][i]
        cases.append(
            PromptCase(
                prompt=prompt,
                tokens=tokens[tokens >= 0],
                patch_source=str(raw["patch_source"][i]),
                **{
                    name: (raw[name][i].item() if raw[name][i].ndim == 0 else raw[name][i])
                    for name in _CASE_ARRAYS
                },
            )
        )
    measurements = {n: raw[f"m_{n}"] for n in MEASUREMENT_NAMES}
    return CircuitTable(meta, cases, measurements, _circuit_arrays(raw, meta, path, p, k))


def circuit_shapes(p: int, k: int) -> dict[str, tuple[int, ...]]:
    """The shape of every circuit array of a table with p prompts and K = k."""
    from acd_env.circuit import K_MAX

    return {"kl_empty": (p,), "m_clean": (p,), "m_empty": (p,), "ref_order": (p, k), "ref_curve": (p, K_MAX),
            "ref_lcurve": (p, K_MAX), "atp_joint": (p, k), "ig": (p, k)}  # fmt: skip


def _circuit_arrays(raw: dict[str, np.ndarray], meta: dict, path: Path, p: int, k: int) -> dict | None:
    if not meta.get("circuit"):
        return None
    out = {}
    for name, shape in circuit_shapes(p, k).items():
        values = raw.get(f"c_{name}")
        if values is None or values.shape != shape:
            got = None if values is None else values.shape
            raise TableError(
                f"circuit table {str(path)!r}: circuit array {name} has shape {got}, expected {shape}; rebuild it"
            )
        if not np.isfinite(values).all():
            raise TableError(
                f"circuit table {str(path)!r} holds NaN or inf in circuit array {name!r}; rebuild it"
            )
        out[name] = values
    n_valid = raw["n_valid"]
    for name in ("ref_order", "atp_joint"):
        order = out[name]
        for i in range(p):
            n = int(n_valid[i])
            if sorted(order[i, :n].tolist()) != list(range(n)) or (order[i, n:] != -1).any():
                raise TableError(
                    f"circuit table {str(path)!r}: {name} of prompt {i} is not a ranking of its {n} candidates; "
                    "rebuild it"
                )
    return out


def select_prompts(table: CircuitTable, rows: Sequence[int]) -> CircuitTable:
    """The table restricted to some of its prompts (in the order given): cases, measurements and circuit
    arrays, all indexed by prompt. For folds by prompt of one table."""
    idx = np.asarray(rows, dtype=np.int64)
    meta = dict(table.meta, n_prompts=len(idx))
    cases = [table.cases[int(r)] for r in idx]
    measurements = {n: v[idx] for n, v in table.measurements.items()}
    circuit = None if table.circuit is None else {n: v[idx] for n, v in table.circuit.items()}
    return CircuitTable(meta, cases, measurements, circuit)


def merge_tables(tables: Sequence[CircuitTable]) -> CircuitTable:
    """Concatenate tables with identical settings (e.g. several tasks) into one."""
    if not tables:
        raise TableError("no tables to merge")
    first = tables[0]
    keys = (
        "weights_hash",
        "n_candidates",
        "interventions",
        "steering_scale",
        "descriptor_names",
        "freeze_attention",
    )
    for t in tables[1:]:
        for key in keys:
            if t.meta[key] != first.meta[key]:
                raise TableError(
                    f"cannot combine tables with different {key}: {first.meta[key]!r} vs {t.meta[key]!r}"
                )
    meta = dict(first.meta, task="+".join(dict.fromkeys(t.meta["task"] for t in tables)))
    cases = [c for t in tables for c in t.cases]
    measurements = {n: np.concatenate([t.measurements[n] for t in tables]) for n in MEASUREMENT_NAMES}
    circuit = None
    circuits = [t.circuit for t in tables if t.circuit is not None]
    if len(circuits) == len(tables):  # every table has circuit data
        circuit = {n: np.concatenate([c[n] for c in circuits]) for n in circuits[0]}
    return CircuitTable(meta, cases, measurements, circuit)
