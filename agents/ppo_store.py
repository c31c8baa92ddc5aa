"""The PPO policy store: shipped policies (`agents/policies/<name>.zip` + `<name>.json` sidecar), saving, loading
and matching a policy to the tables it is meant for.

A policy is specific to the kind of tables it was trained on: `table_key(tables)` is what the sidecar's `key`
records and `find_policy` compares (`MATCH_KEYS`: weights hash, task set, descriptor columns, K, intervention
types, steering scale and attention setting), together with the types the policy acts with (`act_types`).

Both tracks keep their policies here. A key's `track` entry says which env a policy acts in (`TRACKS`;
absent = `"features"`, as in the feature track's sidecars): `find_policy` matches it too and `load_policy`
refuses a policy of another track, so a circuit-track policy (`agents.circuit.ppo`) is never picked for
feature-track tables and vice versa, even where the tables' own keys agree.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acd_env.errors import ACDError
from acd_env.table_store import table_key  # noqa: F401 (a policy's key; re-exported)

if TYPE_CHECKING:
    from agents.ppo_train import TrainResult

POLICY_DIR = Path(__file__).resolve().parent / "policies"
MATCH_KEYS = (
    "weights_hash",
    "tasks",
    "descriptor_names",
    "n_candidates",
    "interventions",
    "steering_scale",
    "freeze_attention",
)
TRACKS = ("features", "circuit")


def policy_track(key: dict) -> str:
    """The track a policy key (or a tables' key) is for; keys without a `track` entry are the feature track's."""
    return str(key.get("track", "features"))


def _zip(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp_path)`, then rename over `path` (readable by all, as a packaged file should be)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_policy(result: TrainResult, path: str | Path, *, keep_log: bool = True) -> Path:
    """Write `<path>.zip` (the MaskablePPO model) and `<path>.json` (metadata and, with `keep_log`, the training
    curve's CleanRL-style scalars), each atomically."""
    path = _zip(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, result.model.save)
    meta: dict[str, Any] = dict(result.meta, file=path.name, size_bytes=path.stat().st_size)
    if keep_log:
        keep = ("step", "losses/", "charts/", "eval/")
        records = [{k: v for k, v in r.items() if k.startswith(keep)} for r in result.log]
        meta["training_log"] = [{k: round(v, 6) for k, v in r.items()} for r in records if len(r) > 1]

    def write_json(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(meta, indent=1) + "\n")

    _atomic_write(path.with_suffix(".json"), write_json)
    return path


def read_meta(path: str | Path) -> dict:
    sidecar = _zip(path).with_suffix(".json")
    if not sidecar.is_file():
        raise ACDError(f"PPO policy {str(path)!r} has no metadata sidecar {sidecar.name}; retrain it")
    return json.loads(sidecar.read_text())


def load_policy(path: str | Path, track: str = "features") -> tuple[Any, dict]:
    """(MaskablePPO model on CPU, metadata) from `<path>.zip` + `<path>.json`; a policy trained for another
    track than `track` is refused (ACDError)."""
    from sb3_contrib import MaskablePPO

    path = _zip(path)
    if not path.is_file():
        raise ACDError(f"PPO policy {str(path)!r} does not exist; train one with scripts/train_ppo.py")
    meta = read_meta(path)
    theirs = policy_track(meta.get("key", {}))
    if theirs != track:
        raise ACDError(
            f"PPO policy {path.name!r} was trained on the {theirs} track and cannot act on the {track} track; "
            f"use a {track}-track policy (shipped: {[p.stem for p in shipped_policies(path.parent, track)]})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MaskablePPO.load(
            path,
            device="cpu",
            custom_objects={"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.2},
        )
    return model, meta


def shipped_policies(directory: str | Path = POLICY_DIR, track: str | None = None) -> list[Path]:
    """The policies (zip with a sidecar) in `directory`; with `track`, only that track's."""
    found = sorted(p for p in Path(directory).glob("*.zip") if p.with_suffix(".json").is_file())
    if track is None:
        return found
    out = []
    for p in found:
        try:
            if policy_track(read_meta(p).get("key", {})) == track:
                out.append(p)
        except (ACDError, json.JSONDecodeError):
            continue
    return out


def find_policy(
    key: dict, act_types: Sequence[str] | None = None, directory: str | Path = POLICY_DIR
) -> Path | None:
    """The shipped policy trained on tables with this key (see `MATCH_KEYS`, and the key's track) acting with
    `act_types` (None: every type of the key), or None."""
    want = list(key["interventions"]) if act_types is None else list(act_types)
    for p in shipped_policies(directory):
        try:
            meta = read_meta(p)
        except (ACDError, json.JSONDecodeError):
            continue
        other = meta.get("key", {})
        same_track = policy_track(other) == policy_track(key)
        if same_track and all(other.get(k) == key[k] for k in MATCH_KEYS) and meta.get("act_types") == want:
            return p
    return None


def resolve_policy_path(
    policy: str | Path, directory: str | Path = POLICY_DIR, track: str | None = None
) -> Path:
    """A path as given, or the shipped policy of that name (ACDError naming the shipped ones, of `track` if
    given, when there is none)."""
    p = Path(policy)
    if p.suffix == ".zip" or p.parent != Path("."):
        return p
    shipped = Path(directory) / f"{policy}.zip"
    if shipped.is_file():
        return shipped
    names = [q.stem for q in shipped_policies(directory, track)]
    raise ACDError(f"no PPO policy named {policy!r}; shipped: {names}, or pass a path to a .zip")


def fit_problems(key: dict, names: Sequence[str], k: int, types: Sequence[str] | None = None) -> list[str]:
    """What makes a policy (its sidecar `key`) unfit for an env or tables with these descriptor columns, K and
    (feature track) intervention types; empty when it fits. A network trained on one column layout silently
    mis-reads another, so the agents refuse rather than warn."""
    theirs, ours = list(key.get("descriptor_names", [])), list(names)
    problems = []
    if ours != theirs:
        problems.append(
            f"descriptor columns differ (trained with but absent: {[c for c in theirs if c not in ours]}; "
            f"present but not trained with: {[c for c in ours if c not in theirs]}"
            + ("; same columns in another order" if sorted(theirs) == sorted(ours) else "")
            + ")"
        )
    if int(k) != key.get("n_candidates"):
        problems.append(f"K={k}, the policy was trained with K={key.get('n_candidates')}")
    if types is not None and list(types) != list(key.get("interventions", [])):
        problems.append(
            f"interventions {list(types)}, the policy was trained with {key.get('interventions')}"
        )
    return problems


def policy_summary(meta: dict) -> str:
    k = meta.get("key", {})
    return (
        f"{meta.get('file', '?')}: tasks {k.get('tasks')}, {len(k.get('descriptor_names', []))} columns, "
        f"K={k.get('n_candidates')}, acts with {meta.get('act_types')}, {meta.get('steps')} steps, "
        f"train efficiency {meta.get('train_efficiency')}"
    )
