"""`ppo`: an sb3-contrib `MaskablePPO` policy trained on circuit tables in replay mode, acting deterministically.

What it is: a policy network (`agents.ppo_policy.SetPolicy`: a permutation-equivariant actor that scores every
(candidate, intervention type) with one shared per-candidate MLP plus a pooled prompt context, and a pooled
critic) trained by PPO on the replay backend of the **train** split's circuit tables. At test time it picks
`model.predict(obs, action_masks=mask, deterministic=True)`; it does not learn during test episodes.

Like the other agents it acts with one intervention type, `intervention="ablation"` by default: the env's reward
for an ablation *is* the ablation KL that discovery efficiency scores. Letting the policy choose the type too
(`intervention=None`, trained with `act_types=None`) makes it chase steering, whose KL is several times larger and ranks
candidates differently from ablation KL, which costs efficiency (BENCHMARKS.md, PPO design choices).

`fit(tables)` (called by `acd bench` in `train-test` and `held-out-task`):
    1. a policy passed as `policy=...` is kept (after checking it fits the tables' columns, K and types);
    2. otherwise the shipped policy (`agents/policies/*.zip` + `.json` sidecar) trained on the same kind of
       tables — same weights hash, task set, descriptor columns, K, intervention types, steering scale and
       attention setting — and acting with the same types is loaded (no training);
    3. otherwise one is trained in-process with `train_policy`, the code `scripts/train_ppo.py` runs
       (`train_steps` environment steps on one torch thread; a logged warning gives the expected time, minutes).
`reset` refuses an env whose descriptor columns, K or intervention types differ from the policy's
(`ACDError`): a network trained on one column layout silently mis-reads another.

Training (`train_policy`): `DummyVecEnv` of replay envs over the merged train tables, a random prompt per
episode, the other intervention types masked out. Reward: the env's KL reward divided by the prompt's Σ of its
top-B ablation KLs (the denominator of discovery efficiency, read from the train table: privileged, train-only).
A constant factor per episode leaves each prompt's optimal policy unchanged, but raw KL varies by more than an
order of magnitude between tasks, so without it PPO all but ignores the low-KL tasks;
with ablation-only actions an episode's return is exactly its discovery efficiency. `reward="kl"` trains on
the raw reward instead. TensorBoard: SB3's `train/*` and `rollout/*`, CleanRL-style aliases
(`losses/policy_loss`, `losses/value_loss`, `losses/entropy`, `losses/approx_kl`, `losses/clipfrac`,
`losses/explained_variance`, `charts/episodic_return`) and `eval/train_efficiency` (deterministic discovery
efficiency on a fixed sample of 48 train prompts; `eval/final_train_efficiency` at the end: on every train
prompt); `training_log()` returns the same scalars.

Why a set policy: a plain `MultiInputPolicy` MLP on the flattened K x F matrix tends to reproduce
influence-greedy (the candidates come sorted by influence, so "take the lowest free index" is the easiest
policy it can represent); the set policy learns from the descriptors. The comparison of these choices is in
BENCHMARKS.md (PPO design choices).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acd_env.errors import ACDError
from agents.base import BaseAgent, load_tables

log = logging.getLogger(__name__)

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
DEFAULT_TRAIN_STEPS = 60_000  # in-process fit when no shipped policy matches (a few minutes on one thread)
STEPS_PER_SECOND = 350.0  # measured training speed of the set policy on one busy CPU thread (for the warning)
ARCHS = ("set", "mlp", "mlp-norm")
REWARDS = ("prompt", "kl")
ALIASES = {
    "train/policy_gradient_loss": "losses/policy_loss",
    "train/value_loss": "losses/value_loss",
    "train/approx_kl": "losses/approx_kl",
    "train/clip_fraction": "losses/clipfrac",
    "train/explained_variance": "losses/explained_variance",
    "rollout/ep_rew_mean": "charts/episodic_return",
}


# ---------------------------------------------------------------------------------------------- tables
def table_key(tables: Sequence[Any]) -> dict[str, Any]:
    """What a policy trained on `tables` is specific to (compared with a shipped policy's sidecar)."""
    first = tables[0].meta
    for t in tables[1:]:
        for k in ("weights_hash", "descriptor_names", "n_candidates", "interventions"):
            if t.meta[k] != first[k]:
                raise ACDError(
                    f"fit() got tables with different {k}: {first[k]!r} vs {t.meta[k]!r}; "
                    "build them for the same model and settings"
                )
    tasks = sorted({task for t in tables for task in str(t.meta["task"]).split("+")})
    return {
        "weights_hash": first["weights_hash"],
        "tasks": tasks,
        "descriptor_names": list(first["descriptor_names"]),
        "n_candidates": int(first["n_candidates"]),
        "interventions": list(first["interventions"]),
        "steering_scale": float(first["steering_scale"]),
        "freeze_attention": bool(first["freeze_attention"]),
    }


def restrict_columns(table: Any, descriptors: Sequence[str]) -> Any:
    """The table as an env built with `descriptors` shows it: only those families' descriptor columns."""
    from dataclasses import replace

    from acd_env.case import CaseSettings

    names = list(CaseSettings(descriptors=tuple(descriptors)).descriptor_names)
    have = list(table.meta["descriptor_names"])
    if have == names:
        return table
    missing = [n for n in names if n not in have]
    if missing:
        raise ACDError(
            f"table {table.meta.get('task')!r} lacks descriptor columns {missing}; build it with "
            f"--descriptors {','.join(descriptors)} or use descriptors=('graph',)"
        )
    cols = [have.index(n) for n in names]
    meta = dict(table.meta, descriptor_names=names, descriptors=list(descriptors))
    cases = [replace(c, descriptors=c.descriptors[:, cols]) for c in table.cases]
    return replace(table, meta=meta, cases=cases)


def prompts_fingerprint(tables: Sequence[Any]) -> str:
    ids = sorted(f"{c.prompt.task}/{c.prompt.id}" for t in tables for c in t.cases)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def column_stats(tables: Sequence[Any]) -> tuple[list[float], list[float], int]:
    """Per-column (mean, std) of the env's candidate matrix, from the train tables only, and the number of
    static columns. Static columns: over every real candidate. Dynamic columns (`visited`, `measured_*`):
    over every (candidate, type) as the env would fill them in once measured."""
    from acd_env.env import DYNAMIC_COLUMNS

    static = np.concatenate([c.descriptors[: c.n_valid] for t in tables for c in t.cases]).astype(np.float64)
    n_types = len(tables[0].meta["interventions"])
    kl, down, aff = (
        np.concatenate(
            [t.measurements[n][i, : c.n_valid].ravel() for t in tables for i, c in enumerate(t.cases)]
        )
        for n in ("kl", "downstream", "n_affected")
    )
    dyn = {
        "visited": np.array([0.0, 1.0]),
        "measured_type": np.arange(1, n_types + 1) / n_types,
        "measured_log_kl": np.log10(kl + 1e-6) + 6.0,
        "measured_downstream": down,
        "measured_log_affected": np.log1p(aff),
    }
    mean = [*static.mean(0), *(dyn[n].mean() for n in DYNAMIC_COLUMNS)]
    std = [*static.std(0), *(dyn[n].std() for n in DYNAMIC_COLUMNS)]
    return [float(m) for m in mean], [float(max(s, 1e-6)) for s in std], static.shape[1]


# ---------------------------------------------------------------------------------------------- envs
def make_env(tables: Sequence[Any], budget: int = 20) -> Any:
    """A replay `CircuitDiscoveryEnv` over the merged tables with their own settings."""
    from acd_env.env import CircuitDiscoveryEnv

    m = tables[0].meta
    return CircuitDiscoveryEnv(
        model=m["model"],
        backend="replay",
        tables=list(tables),
        n_candidates=m["n_candidates"],
        budget=budget,
        interventions=tuple(m["interventions"]),
        steering_scale=m["steering_scale"],
        descriptors=tuple(m["descriptors"]),
        freeze_attention=m["freeze_attention"],
    )


def type_mask(n_candidates: int, interventions: Sequence[str], act_types: Sequence[str]) -> np.ndarray:
    """(K * n_types,) bool: the actions whose type is in `act_types`."""
    allowed = np.array([t in act_types for t in interventions])
    return np.tile(allowed, n_candidates)


def restrict_mask(mask: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """The valid actions of the allowed types (all valid actions if none of those is valid)."""
    if allowed is None:
        return mask
    out = mask & allowed
    return out if out.any() else mask


def _training_wrapper() -> Any:
    import gymnasium as gym

    class TrainingWrapper(gym.Wrapper):
        """Training only. `act_types`: mask every other intervention type (the agent acts with these only).
        `scale`: divide the env's KL reward by the prompt's Σ of its top-B ablation KLs (from the train table),
        so that every prompt weighs the same; with ablation-only actions an episode's return is then exactly
        its discovery efficiency."""

        def __init__(self, env: Any, act_types: Sequence[str] | None, scale: bool) -> None:
            super().__init__(env)
            u = env.unwrapped
            types = u.settings.interventions
            self.allowed = None if act_types is None else type_mask(u.settings.n_candidates, types, act_types)
            self.scale, self._scale = scale, 1.0
            self._abl = ablation_index(types)

        def reset(self, **kw: Any) -> Any:
            obs, info = self.env.reset(**kw)
            if self.scale:
                u = self.env.unwrapped
                effects = u.oracle_effects()
                top = np.sort(effects.kl[effects.valid, self._abl])[::-1][: u.budget]
                self._scale = max(float(top.sum()), 1e-6)
            return obs, info

        def step(self, action: Any) -> Any:
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, reward / self._scale, terminated, truncated, info

        def action_masks(self) -> np.ndarray:
            return restrict_mask(self.env.unwrapped.action_masks(), self.allowed)

    return TrainingWrapper


def make_vec_env(
    tables: Sequence[Any], n_envs: int, budget: int, reward: str, act_types: Sequence[str] | None
) -> Any:
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    wrapper = _training_wrapper()

    def one() -> Any:
        return Monitor(wrapper(make_env(tables, budget), act_types, reward == "prompt"))

    return DummyVecEnv([one for _ in range(n_envs)])


# ---------------------------------------------------------------------------------------------- evaluation
def ablation_index(interventions: Sequence[str]) -> int:
    return list(interventions).index("ablation") if "ablation" in interventions else 0


def episode_efficiency(env: Any, agent: Any, prompt_index: int, seed: int = 0) -> float:
    """Run one episode of `agent` on prompt `prompt_index`; its discovery efficiency (docs/design.md, Metrics): Σ ablation KL
    of the distinct candidates chosen ÷ Σ of the top-B ablation KLs (1.0 when that is 0)."""
    obs, info = env.reset(seed=seed, options={"prompt_index": int(prompt_index)})
    u = env.unwrapped
    n_types = len(info["interventions"])
    effects = u.oracle_effects()
    effect = np.where(effects.valid, effects.kl[:, ablation_index(info["interventions"])], 0.0)
    agent.reset(obs, info)
    chosen: set[int] = set()
    done = False
    while not done:
        mask = np.asarray(info["action_mask"], dtype=bool)
        a = int(agent.act(obs, info))
        if 0 <= a < len(mask) and mask[a]:
            chosen.add(a // n_types)
        obs, r, term, trunc, info = env.step(a)
        agent.observe(a, r, obs, info)
        done = term or trunc
    best = np.sort(effect[effects.valid])[::-1][: u.budget].sum()
    return 1.0 if best <= 0 else float(effect[sorted(chosen)].sum() / best)


def evaluate(env: Any, agent: Any, prompt_indices: Sequence[int] | None = None, seed: int = 0) -> np.ndarray:
    """Per-prompt discovery efficiency of `agent` on `env` (every prompt by default)."""
    idx = range(env.unwrapped.backend.n_prompts) if prompt_indices is None else prompt_indices
    return np.array([episode_efficiency(env, agent, i, seed) for i in idx])


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model: Any
    meta: dict
    log: list[dict] = field(default_factory=list)


def _logger(records: list[dict], tb_dir: str | Path | None, verbose: bool) -> Any:
    from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger, TensorBoardOutputFormat

    def with_aliases(kv: dict[str, Any]) -> dict[str, Any]:
        out = dict(kv)
        for src, dst in ALIASES.items():
            if src in kv:
                out[dst] = kv[src]
        if "train/entropy_loss" in kv:
            out["losses/entropy"] = -float(kv["train/entropy_loss"])
        return out

    class Recorder(KVWriter):
        def write(self, key_values: dict, key_excluded: dict, step: int = 0) -> None:
            kv = with_aliases(key_values)
            rec = {
                k: float(v)
                for k, v in kv.items()
                if isinstance(v, int | float | np.floating | np.integer) and not k.startswith("time/")
            }
            records.append({"step": int(step), **rec})

        def close(self) -> None:
            return None

    class AliasedTensorBoard(TensorBoardOutputFormat):
        def write(self, key_values: dict, key_excluded: dict, step: int = 0) -> None:
            kv = with_aliases(key_values)
            excl = {**key_excluded, **{k: () for k in kv if k not in key_excluded}}
            super().write(kv, excl, step)

    formats: list[Any] = [Recorder()]
    if tb_dir is not None:
        Path(tb_dir).mkdir(parents=True, exist_ok=True)
        formats.append(AliasedTensorBoard(str(tb_dir)))
    if verbose:
        import sys

        formats.append(HumanOutputFormat(sys.stdout))
    return Logger(str(tb_dir) if tb_dir is not None else None, formats)


class _EvalCallback:
    """Every `every` steps: deterministic discovery efficiency on a fixed sample of train prompts."""

    def __new__(cls, env: Any, prompts: Sequence[int], every: int, meta: dict) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class Callback(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.next_at = every

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                if every > 0 and self.num_timesteps >= self.next_at:
                    self.next_at += every
                    agent = PPOAgent.from_model(self.model, meta)
                    self.logger.record("eval/train_efficiency", float(evaluate(env, agent, prompts).mean()))

        return Callback()


def train_policy(
    tables: Any,
    *,
    steps: int = DEFAULT_TRAIN_STEPS,
    seed: int = 0,
    arch: str = "set",
    hidden: int = 64,
    reward: str = "prompt",
    act_types: Sequence[str] | None = ("ablation",),
    budget: int = 20,
    n_envs: int = 8,
    n_steps: int = 64,
    batch_size: int = 256,
    n_epochs: int = 4,
    learning_rate: float = 3e-4,
    anneal_lr: bool = False,
    gamma: float = 0.9,
    gae_lambda: float = 0.95,
    ent_coef: float = 0.003,
    clip_range: float = 0.2,
    tb_dir: str | Path | None = None,
    eval_every: int = 10_000,
    eval_prompts: int = 48,
    threads: int | None = 1,
    verbose: bool = False,
) -> TrainResult:
    """Train a MaskablePPO policy on the replay env of `tables` (train split). Deterministic for a seed.

    arch: `"set"` (agents.ppo_policy.SetPolicy, the default), `"mlp"` (sb3's plain `MultiInputPolicy`: an MLP on
    the flattened observation) or `"mlp-norm"` (the same MLP on standardised columns). reward: `"prompt"`
    (KL ÷ the prompt's top-B ablation KL) or `"kl"` (the env's raw reward). act_types: the intervention types
    the policy may use (default ablation only; None: every type of the tables), the others are masked. threads: torch threads while
    training (restored afterwards; None leaves torch's setting).
    """
    import torch
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy

    from agents.ppo_policy import CandidateInputs, SetPolicy

    if arch not in ARCHS:
        raise ACDError(f"unknown PPO architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if reward not in REWARDS:
        raise ACDError(f"unknown PPO training reward {reward!r}; valid: {', '.join(REWARDS)}")
    tables = load_tables(tables)
    key = table_key(tables)
    act_types = list(key["interventions"]) if act_types is None else list(act_types)
    bad = [t for t in act_types if t not in key["interventions"]]
    if bad or not act_types:
        raise ACDError(
            f"act_types {act_types} must be a non-empty subset of the tables' types {key['interventions']}"
        )
    mean, std, n_static = column_stats(tables)
    env = make_vec_env(tables, n_envs, budget, reward, act_types)
    eval_env = make_env(tables, budget)
    n_prompts = eval_env.backend.n_prompts
    sample = np.random.default_rng(seed).permutation(n_prompts)[: min(eval_prompts, n_prompts)].tolist()
    stats = {"mean": mean, "std": std, "n_static": n_static}
    if arch == "set":
        policy, policy_kwargs = SetPolicy, {"hidden": hidden, "features_extractor_kwargs": stats}
    elif arch == "mlp-norm":
        policy = MaskableMultiInputActorCriticPolicy
        policy_kwargs = {
            "features_extractor_class": CandidateInputs,
            "features_extractor_kwargs": stats,
            "net_arch": [hidden, hidden],
        }
    else:
        policy, policy_kwargs = "MultiInputPolicy", {"net_arch": [hidden, hidden]}
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    records: list[dict] = []
    start = time.perf_counter()
    try:
        model = MaskablePPO(
            policy,
            env,
            learning_rate=_linear(learning_rate) if anneal_lr else learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            clip_range=clip_range,
            policy_kwargs=policy_kwargs,
            seed=seed,
            device="cpu",
            verbose=0,
        )
        model.set_logger(_logger(records, tb_dir, verbose))
        meta = {
            "key": key,
            "arch": arch,
            "hidden": hidden,
            "budget": budget,
            "steps": int(steps),
            "seed": seed,
            "reward": reward,
            "act_types": act_types,
            "n_train_prompts": n_prompts,
            "train_prompts_sha": prompts_fingerprint(tables),
            "hyperparameters": dict(
                n_envs=n_envs,
                n_steps=n_steps,
                batch_size=batch_size,
                n_epochs=n_epochs,
                learning_rate=learning_rate,
                anneal_lr=anneal_lr,
                gamma=gamma,
                gae_lambda=gae_lambda,
                ent_coef=ent_coef,
                clip_range=clip_range,
            ),
        }
        callback = _EvalCallback(eval_env, sample, eval_every, meta)
        model.learn(total_timesteps=int(steps), callback=callback)
        train_s = time.perf_counter() - start
        final = evaluate(eval_env, PPOAgent.from_model(model, meta))
        model.logger.record("eval/final_train_efficiency", float(final.mean()))  # every train prompt
        model.logger.dump(model.num_timesteps)
        model.logger.close()
    finally:
        torch.set_num_threads(old_threads)
    meta.update(
        timesteps=int(model.num_timesteps),
        train_seconds=round(train_s, 1),
        train_efficiency=round(float(final.mean()), 4),
        sb3_contrib=_version("sb3_contrib"),
        stable_baselines3=_version("stable_baselines3"),
        torch=torch.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    return TrainResult(model, meta, records)


def _linear(start: float) -> Any:
    """SB3 schedule: `start` decayed linearly to 0 over training (CleanRL's `anneal_lr`)."""

    def schedule(progress_remaining: float) -> float:
        return start * progress_remaining

    return schedule


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


# ---------------------------------------------------------------------------------------------- files
def _zip(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


def _atomic_write(path: Path, write: Any) -> None:
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
    meta = dict(result.meta, file=path.name, size_bytes=path.stat().st_size)
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


def load_policy(path: str | Path) -> tuple[Any, dict]:
    """(MaskablePPO model on CPU, metadata) from `<path>.zip` + `<path>.json`."""
    from sb3_contrib import MaskablePPO

    path = _zip(path)
    if not path.is_file():
        raise ACDError(f"PPO policy {str(path)!r} does not exist; train one with scripts/train_ppo.py")
    meta = read_meta(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MaskablePPO.load(
            path,
            device="cpu",
            custom_objects={"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.2},
        )
    return model, meta


def shipped_policies(directory: str | Path = POLICY_DIR) -> list[Path]:
    return sorted(p for p in Path(directory).glob("*.zip") if p.with_suffix(".json").is_file())


def find_policy(
    key: dict, act_types: Sequence[str] | None = None, directory: str | Path = POLICY_DIR
) -> Path | None:
    """The shipped policy trained on tables with this key (see `MATCH_KEYS`) acting with `act_types` (None:
    every type of the key), or None."""
    want = list(key["interventions"]) if act_types is None else list(act_types)
    for p in shipped_policies(directory):
        try:
            meta = read_meta(p)
        except (ACDError, json.JSONDecodeError):
            continue
        other = meta.get("key", {})
        if all(other.get(k) == key[k] for k in MATCH_KEYS) and meta.get("act_types") == want:
            return p
    return None


def resolve_policy_path(policy: str | Path, directory: str | Path = POLICY_DIR) -> Path:
    p = Path(policy)
    if p.suffix == ".zip" or p.parent != Path("."):
        return p
    shipped = Path(directory) / f"{policy}.zip"
    if shipped.is_file():
        return shipped
    names = [q.stem for q in shipped_policies(directory)]
    raise ACDError(f"no PPO policy named {policy!r}; shipped: {names}, or pass a path to a .zip")


# ---------------------------------------------------------------------------------------------- agent
class PPOAgent(BaseAgent):
    """A trained MaskablePPO policy acting deterministically under the action mask.

    Args:
        seed: seed of an in-process training run (acting is deterministic).
        intervention: the intervention type the agent acts with (default `"ablation"`, as the other agents;
            discovery efficiency scores ablation KL, and the env's reward for an ablation *is* ablation KL);
            None lets the policy choose the type too (it then favours steering, whose KL is ~5x larger).
        policy: a shipped policy name (`agents/policies/<name>.zip`) or a path to a policy zip; None (default)
            lets `fit(tables)` pick the shipped policy trained on the same kind of tables, or train one.
        train_steps: environment steps of an in-process training run (default `DEFAULT_TRAIN_STEPS`).
        policy_dir: where shipped policies are looked up (default `agents/policies`).
        train_kwargs: extra keyword arguments for `train_policy` when training in-process.
    """

    name = "ppo"
    learns_offline = True

    def __init__(
        self,
        *,
        seed: int = 0,
        intervention: str | None = "ablation",
        policy: str | Path | None = None,
        train_steps: int = DEFAULT_TRAIN_STEPS,
        policy_dir: str | Path = POLICY_DIR,
        train_kwargs: dict | None = None,
    ) -> None:
        super().__init__(seed=seed, intervention=intervention or "ablation")
        self.act_types = None if intervention is None else [intervention]
        self.train_steps = int(train_steps)
        self.policy_dir = Path(policy_dir)
        self.train_kwargs = dict(train_kwargs or {})
        self.model: Any = None
        self.meta: dict = {}
        self.source = ""  # "shipped:<file>", "path:<file>" or "trained"
        self._log: list[dict] = []
        self._explicit = policy is not None
        self._allowed: np.ndarray | None = None
        if policy is not None:
            path = resolve_policy_path(policy, self.policy_dir)
            self._use(*load_policy(path), f"path:{path}")

    @classmethod
    def from_model(cls, model: Any, meta: dict) -> PPOAgent:
        """An agent around an in-memory model (e.g. during training); it acts with the model's types."""
        agent = cls(intervention=None)
        agent._use(model, meta, "trained")
        agent._explicit = True
        return agent

    def _use(self, model: Any, meta: dict, source: str, log_: list[dict] | None = None) -> None:
        self.model, self.meta, self.source = model, meta, source
        self._log = list(meta.get("training_log", []) if log_ is None else log_)
        key = meta.get("key", {})
        types = meta.get("act_types") or key.get("interventions", [])
        self._allowed = type_mask(key.get("n_candidates", 0), key.get("interventions", []), types)

    # -- offline learning -----------------------------------------------------------------------
    def fit(self, tables: Any) -> PPOAgent:
        """Use the policy for these train tables: the explicit one, a matching shipped one, or a fresh one."""
        loaded = load_tables(tables)
        key = table_key(loaded)
        if self._explicit and self.model is not None:
            self._check(key["descriptor_names"], key["n_candidates"], key["interventions"], "the fit tables")
            differs = [k for k in MATCH_KEYS if self.meta.get("key", {}).get(k) != key[k]]
            if differs:
                log.warning(
                    "PPO policy %s was trained on other tables (%s differ); using it as asked",
                    self.source,
                    ", ".join(differs),
                )
            return self
        found = find_policy(key, self.act_types, self.policy_dir)
        if found is not None:
            self._use(*load_policy(found), f"shipped:{found.name}")
            return self
        kw = {"steps": self.train_steps, "seed": self.seed, "act_types": self.act_types, **self.train_kwargs}
        est = kw["steps"] / STEPS_PER_SECOND
        log.warning(
            "no shipped PPO policy matches these tables (model %s, tasks %s, %d columns, K=%d, acting with %s); "
            "training one in-process for %d steps, about %.0f s on one thread (scripts/train_ppo.py trains and "
            "ships policies)",
            key["weights_hash"],
            key["tasks"],
            len(key["descriptor_names"]),
            key["n_candidates"],
            kw["act_types"] or "every type",
            kw["steps"],
            est,
        )
        result = train_policy(loaded, **kw)
        log.warning(
            "PPO in-process training took %.0f s (train efficiency %.3f)",
            result.meta["train_seconds"],
            result.meta["train_efficiency"],
        )
        self._use(result.model, result.meta, "trained", result.log)
        return self

    def training_log(self) -> list[dict]:
        """The policy's training curve: [{"step": s, "losses/policy_loss": ..., "eval/train_efficiency": ...}]."""
        return list(self._log)

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def _check(self, names: Sequence[str], k: int, types: Sequence[str], what: str) -> None:
        key = self.meta.get("key", {})
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
        if list(types) != list(key.get("interventions", [])):
            problems.append(
                f"interventions {list(types)}, the policy was trained with {key.get('interventions')}"
            )
        if problems:
            raise ACDError(
                f"the PPO policy ({self.source or 'unnamed'}) does not fit {what}: "
                + "; ".join(problems)
                + ". Train one for these settings (scripts/train_ppo.py, or agent.fit(train tables built with "
                "them)) or build the env with the policy's settings"
            )

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, obs: dict, info: dict) -> None:
        from agents.ranker import static_names

        super().reset(obs, info)
        if self.model is None:
            raise ACDError(
                "the PPO agent has no policy: call agent.fit(train tables) (loads the matching shipped policy "
                "or trains one) or pass policy=NAME|PATH (shipped: "
                f"{[p.stem for p in shipped_policies(self.policy_dir)]})"
            )
        self._check(
            static_names(info["descriptor_names"]),
            info["n_candidates"],
            info["interventions"],
            "this environment",
        )

    def act(self, obs: dict, info: dict) -> int:
        if self.model is None:
            raise ACDError("the PPO agent has no policy: call agent.fit(tables) or pass policy=...")
        mask = restrict_mask(np.asarray(info["action_mask"], dtype=bool), self._allowed)
        action, _ = self.model.predict(obs, action_masks=mask, deterministic=True)
        a = int(np.asarray(action).reshape(-1)[0])
        if not mask[a]:  # cannot happen with a masked distribution; kept as a guard
            a = int(np.flatnonzero(mask)[0]) if mask.any() else a
        return a


def policy_summary(meta: dict) -> str:
    k = meta.get("key", {})
    return (
        f"{meta.get('file', '?')}: tasks {k.get('tasks')}, {len(k.get('descriptor_names', []))} columns, "
        f"K={k.get('n_candidates')}, acts with {meta.get('act_types')}, {meta.get('steps')} steps, "
        f"train efficiency {meta.get('train_efficiency')}"
    )
