"""The query store: every measured set query, cached per model, shared by live and replay runs.

A set query is deterministic given the model's weights, the prompt, the attention setting and the features it
intervenes on with their values, so its result — KL(clean ‖ run) and the run's logit difference m — is kept.
A key is a digest of exactly that (`query_key`), so it does not depend on K or on a candidate's index.

Files are JSON lines: a header `{"store": 1, "model": ..., "weights_hash": ...}`, then `{"q": key, "kl": ...,
"m": ...}` per query. Writes append whole lines in one `write` + `fsync` (O_APPEND), so a killed process
leaves at most a torn last line, which the next open cuts off; several processes may append to one file.

A `QueryStore` reads the store shipped beside a toy model's tables (`tables/queries.jsonl`, read-only) and a
writable cache (`$ACD_CACHE_DIR/queries/<model>-<weights hash>.jsonl`, default `~/.cache/acd`), and writes new
results to the cache. `scripts/build_query_store.py` refreshes the shipped file from a run's cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from acd_env.errors import ACDError

STORE_VERSION = 1
SHIPPED_NAME = "queries.jsonl"


def cache_dir() -> Path:
    """Where writable query stores live: `$ACD_CACHE_DIR/queries` (default `~/.cache/acd/queries`)."""
    return Path(os.environ.get("ACD_CACHE_DIR") or Path.home() / ".cache" / "acd") / "queries"


def query_key(prompt_key: str, freeze_attention: bool, features: np.ndarray, values: np.ndarray) -> str:
    """Digest of one query: the prompt (clean and counterfactual text), the attention setting and the
    intervened features (layer, pos, feature) with their values, in a canonical order."""
    feats = np.asarray(features, dtype=np.int64).reshape(-1, 3)
    vals = np.asarray(values, dtype=np.float32).reshape(-1)
    order = np.lexsort(feats.T[::-1])
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{prompt_key}|{int(bool(freeze_attention))}|".encode())
    h.update(feats[order].tobytes())
    h.update(vals[order].tobytes())
    return h.hexdigest()


class QueryStore:
    """Read-through cache of set queries: `get(keys)`, `put(keys, kl, m)`."""

    def __init__(
        self, model: str, weights_hash: str, *, read: Sequence[Path] = (), write: Path | None = None
    ):
        self.model, self.weights_hash = model, weights_hash
        self.write_path = Path(write) if write is not None else None
        self._data: dict[str, tuple[float, float]] = {}
        self.hits = self.misses = 0
        for path in [*read, *([self.write_path] if self.write_path else [])]:
            self._load(Path(path))

    @classmethod
    def for_model(cls, model: str, weights_hash: str, *, shipped: Path | None = None) -> QueryStore:
        """The shipped store (if any) plus the user cache of this model's weights."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model)[:60]
        write = cache_dir() / f"{safe}-{weights_hash[:16]}.jsonl"
        return cls(model, weights_hash, read=[shipped] if shipped and shipped.is_file() else [], write=write)

    def __len__(self) -> int:
        return len(self._data)

    def _load(self, path: Path) -> None:
        if not path.is_file():
            return
        data = path.read_bytes()
        good = 0
        lines = data.split(b"\n")
        for i, line in enumerate(
            lines[:-1]
        ):  # the last element follows the last newline (a torn line or b"")
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if any(x.strip() for x in lines[i + 1 :]):
                    raise ACDError(
                        f"query store {str(path)!r} line {i + 1} is corrupt and complete lines follow it; "
                        "delete the file (it is a cache) to start it afresh"
                    ) from None
                break
            if i == 0:
                if row.get("store") != STORE_VERSION or row.get("weights_hash") != self.weights_hash:
                    raise ACDError(
                        f"query store {str(path)!r} belongs to model {row.get('model')!r} (weights "
                        f"{row.get('weights_hash')}, store version {row.get('store')}), not to {self.model!r} "
                        f"(weights {self.weights_hash}); delete it or point ACD_CACHE_DIR elsewhere"
                    )
            else:
                self._data[row["q"]] = (float(row["kl"]), float(row["m"]))
            good += len(line) + 1
        if good < len(data) and path == self.write_path:
            with open(path, "r+b") as f:  # a torn tail from a killed writer
                f.truncate(good)

    def get(self, keys: Iterable[str]) -> list[tuple[float, float] | None]:
        out = [self._data.get(k) for k in keys]
        found = sum(r is not None for r in out)
        self.hits += found
        self.misses += len(out) - found
        return out

    def put(self, keys: Sequence[str], kl: Sequence[float], m: Sequence[float]) -> None:
        new = [(k, float(a), float(b)) for k, a, b in zip(keys, kl, m, strict=True) if k not in self._data]
        for k, a, b in new:
            self._data[k] = (a, b)
        if not new or self.write_path is None:
            return
        lines = [json.dumps({"q": k, "kl": a, "m": b}, separators=(",", ":")) for k, a, b in new]
        path = self.write_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.stat().st_size == 0:
                header = {"store": STORE_VERSION, "model": self.model, "weights_hash": self.weights_hash}
                lines.insert(0, json.dumps(header, sort_keys=True))
            _append(path, ("\n".join(lines) + "\n").encode())
        except OSError as e:  # a cache that cannot be written only costs speed
            self.write_path = None
            import warnings

            warnings.warn(
                f"query store {str(path)!r} is not writable ({e}); results are kept in memory", stacklevel=2
            )


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
