"""Training a PPO policy for `agents.ppo.PPOAgent`: the replay envs, the training wrapper, the SB3 logger and
evaluation callback, `train_policy` (the code `scripts/train_ppo.py` and `PPOAgent.fit` run), and the evaluation
by discovery efficiency it reports.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from acd_env.errors import ACDError
from acd_env.scores import episode_efficiency
from acd_env.table_store import env_settings, table_key
from acd_env.table_store import restrict_descriptors as restrict_columns  # noqa: F401 (re-exported)
from agents.base import Agent, load_tables

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


def prompts_fingerprint(tables: Sequence[Any]) -> str:
    ids = sorted(f"{c.prompt.task}/{c.prompt.id}" for t in tables for c in t.cases)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def column_stats(tables: Sequence[Any]) -> tuple[list[float], list[float], int]:
    """Per-column (mean, std) of the env's candidate matrix, from the train tables only, and the number of
    static columns. Static columns: over every real candidate. Dynamic columns (`visited`, `measured_*`):
    over every (candidate, type) as the env would fill them in once measured."""
    from acd_env.observation import FEATURE_DYNAMIC_COLUMNS as DYNAMIC_COLUMNS

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

    return CircuitDiscoveryEnv(
        backend="replay", tables=list(tables), budget=budget, **env_settings(tables[0])
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

    from acd_env.env import Action, CircuitDiscoveryEnv, Obs

    class TrainingWrapper(gym.Wrapper[Obs, Action, Obs, Action]):
        """Training only. `act_types`: mask every other intervention type (the agent acts with these only).
        `scale`: divide the env's KL reward by the prompt's Σ of its top-B ablation KLs (from the train table),
        so that every prompt weighs the same; with ablation-only actions an episode's return is then exactly
        its discovery efficiency."""

        def __init__(self, env: gym.Env[Obs, Action], act_types: Sequence[str] | None, scale: bool) -> None:
            super().__init__(env)
            self.base = u = cast(CircuitDiscoveryEnv, env.unwrapped)
            types = u.settings.interventions
            self.allowed = None if act_types is None else type_mask(u.settings.n_candidates, types, act_types)
            self.scale, self._scale = scale, 1.0
            self._abl = ablation_index(types)

        def reset(self, **kw: Any) -> Any:
            obs, info = self.env.reset(**kw)
            if self.scale:
                u = self.base
                effects = u.oracle_effects()
                top = np.sort(effects.kl[effects.valid, self._abl])[::-1][: u.budget]
                self._scale = max(float(top.sum()), 1e-6)
            return obs, info

        def step(self, action: Any) -> Any:
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, float(reward) / self._scale, terminated, truncated, info

        def action_masks(self) -> np.ndarray:
            return restrict_mask(self.base.action_masks(), self.allowed)

    return TrainingWrapper


def make_vec_env(
    tables: Sequence[Any], *, n_envs: int, budget: int, reward: str, act_types: Sequence[str] | None
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


def evaluate(
    env: Any, agent: Agent, prompt_indices: Sequence[int] | None = None, *, seed: int = 0
) -> np.ndarray:
    """Per-prompt discovery efficiency of `agent` on `env` (every prompt by default)."""
    idx = range(env.unwrapped.backend.n_prompts) if prompt_indices is None else prompt_indices
    return np.array([episode_efficiency(env, agent, i, seed=seed) for i in idx])


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model: Any
    meta: dict
    log: list[dict] = field(default_factory=list)


def sb3_logger(records: list[dict], tb_dir: str | Path | None, verbose: bool) -> Any:
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


class EvalCallback:
    """Every `every` steps (at the end of a rollout): record `score(model)` as `name` (e.g. deterministic
    discovery efficiency on a fixed sample of train prompts). Both tracks' trainers use it."""

    def __new__(cls, score: Callable[[Any], float], every: int, name: str = "eval/train_efficiency") -> Any:
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
                    self.logger.record(name, float(score(self.model)))

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

    from agents.ppo import PPOAgent  # the agent module imports this one
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
    env = make_vec_env(tables, n_envs=n_envs, budget=budget, reward=reward, act_types=act_types)
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
            learning_rate=linear_schedule(learning_rate) if anneal_lr else learning_rate,
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
        model.set_logger(sb3_logger(records, tb_dir, verbose))
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

        def train_efficiency(m: Any) -> float:
            return float(evaluate(eval_env, PPOAgent.from_model(m, meta), sample).mean())

        callback = EvalCallback(train_efficiency, eval_every)
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
        sb3_contrib=package_version("sb3_contrib"),
        stable_baselines3=package_version("stable_baselines3"),
        torch=torch.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    return TrainResult(model, meta, records)


def linear_schedule(start: float) -> Callable[[float], float]:
    """SB3 schedule: `start` decayed linearly to 0 over training (CleanRL's `anneal_lr`)."""

    def schedule(progress_remaining: float) -> float:
        return start * progress_remaining

    return schedule


def package_version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)
