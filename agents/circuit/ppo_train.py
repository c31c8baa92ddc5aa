"""Training the circuit-track `ppo` policy (`agents.circuit.ppo.CircuitPPOAgent`) on `CircuitSearch-v0` replay.

**What the policy does.** It grows (and may shrink) the env's working circuit W with `keep` queries: the
`ablate` half of the actions is masked (`keep_mask`), because the score is keep-only faithfulness and an
ablate query spends budget on a number the score never reads. The agent declares W's members in the order
they entered, then the other candidates by descending `ig` (`declared_ranking`): a policy that adds the top-IG
candidates in order reproduces the `ig` ranking exactly, so the policy's job is to do better than that order
with what its queries show.

**Observation.** The env's observation, with two per-prompt columns appended to the candidate rows
(`augment`): `ig_share` (IG ÷ Σ|IG| over the prompt's candidates, on the same scale as the measured change of
f a toggle shows in `keep_delta`) and `ig_rank` (1 − position in descending IG / n). Raw IG scales with the
prompt's KL(clean ‖ keep ∅), which varies by an order of magnitude between tasks; these two do not.
The network is the feature track's permutation-equivariant `agents.ppo_policy.SetPolicy` (one shared
per-candidate MLP → one logit per query kind; the masked ablate logits are never chosen), with column
statistics from the training prompts (`column_stats`).

**Reward** (`CircuitTrainingWrapper`; training only). The env's reward (increase of the best keep f) is not
the evaluation score, so the wrapper pays 0 per step and, when the episode ends, the circuit efficiency of the
ranking the agent would declare minus that of the `ig` ranking on the same prompt:
`eff(declared) − eff(ig)`, efficiency = mean f(C_k) over `K_GRID` ÷ the stored reference's (as
`benchmarks.circuit_metrics`). The reference curve is privileged (train tables only, as the feature track's
reward scale). Subtracting the IG baseline (a constant per prompt, cached) leaves each prompt's optimal policy
unchanged and removes the between-prompt spread of attainable efficiency from the returns. The terminal
evaluation costs one batch of 7 keep rows (no ablate rows); a truncated episode (free toggles up to the env's
cap) ends the same way. γ = 1: the return is the episode's score.

**Warm start** (`bc_epochs`): before PPO, the actor is fitted by cross-entropy to the IG-greedy trajectory of
every training prompt (add the next top-IG candidate with a keep query; ~20 queries per prompt, read from the
query store or run once). From a random policy, PPO spends its first tens of thousands of steps (each a new set
query, ~10–20 ms on the toy model) rediscovering "follow IG". The warm start is kept *short* on purpose
(5 epochs, ~70 gradient steps: the actor follows IG on ~70 % of states, entropy ~1.3 nats): a full one
(30 epochs, 99.9 %) leaves the policy too sure of IG's order for PPO to find better ones.

**Validation** (train split only): a seeded, per-task stratified fold of the train prompts (`val_fraction`)
is held out of PPO; every `eval_every` steps the deterministic policy's efficiency on it is logged
(`eval/val_efficiency`, beside `eval/val_ig`; the sidecar's `val`) and the best snapshot is kept
(`keep_best`), so a late collapse of PPO cannot ship. Prompts whose KL(clean ‖ keep ∅) is below `KL_FLOOR`
are left out, as the harness leaves them out of the circuit track.

**Choices, made on the toy-4l train split only** (171 training / 43 validation prompts, seed 0; circuit
efficiency on the validation fold, the `ig` ranking there: 0.879):

| warm start | ent_coef | steps | lr | validation (best snapshot) |
|---|---|---|---|---|
| 30 epochs (99.9 % IG) | 0.01 | 16k | 3e-4 | 0.886 |
| 30 epochs | 0.03 | 40k | 3e-4 | 0.882 |
| 5 epochs (70 % IG) | 0.01 | 40k | 3e-4 | 0.903 |
| 5 epochs | 0.01 | 80k | 3e-4 annealed to 0 | 0.928 (shipped `circuit-toy-4l-all`) |

The learned policy never takes a candidate back out: it is a sequential ranking that reorders IG's (it
agrees with IG's first ~5 of 20 members on average) using what its keep queries measured; the gain over IG on
the validation fold is largest on induction (0.83 vs 0.75) and counting (0.95 vs 0.93), none on ioi.
Defaults of `train_circuit_policy` are the shipped policy's, except `steps` (`DEFAULT_TRAIN_STEPS`, for an
in-process fit).

Set queries missing from the query store run on the toy model and are written to the user cache
(`$ACD_CACHE_DIR`); the training envs share one backend, so one store and one model.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from acd_env.circuit import (
    KL_FLOOR,
    check_ranking,
    circuit_efficiency,
    faithfulness,
    grid_sizes,
    prefix_masks,
)
from acd_env.errors import ACDError
from acd_env.observation import CIRCUIT_DYNAMIC_COLUMNS, OBS_BOUND
from acd_env.table_store import env_settings, table_key
from agents.base import load_tables
from agents.circuit.ranker import rank_score
from agents.ppo_train import (
    EvalCallback,
    TrainResult,
    linear_schedule,
    package_version,
    prompts_fingerprint,
    sb3_logger,
)

log = logging.getLogger(__name__)

TRACK = "circuit"
ACT_KINDS = ["keep"]  # the query kinds the policy acts with (the sidecar's `act_types`)
EXTRA_COLUMNS = ("ig_share", "ig_rank")  # appended to the env's candidate rows by `augment`
DEFAULT_TRAIN_STEPS = 30_000  # in-process fit when no shipped policy matches (~10 min on one busy thread)
STEPS_PER_SECOND = 40.0  # measured on one busy thread while most set queries are new (for the warning)
# fixed scales of the env's dynamic columns (in_circuit, toggles, keep_delta, ablate_delta): their
# distribution depends on the policy, so they are not estimated from data
DYNAMIC_STATS = {
    "in_circuit": (0.2, 0.4),
    "toggles": (0.3, 0.6),
    "keep_delta": (0.0, 0.1),
    "ablate_delta": (0.0, 0.1),
}


def circuit_key(tables: Sequence[Any]) -> dict[str, Any]:
    """The policy-store key of circuit-track tables: the tables' key (`table_key`) marked `track: circuit`."""
    return {**table_key(tables), "track": TRACK}


# ---------------------------------------------------------------------------------------------- observation
def augment(candidates: np.ndarray, n_valid: int, ig_col: int) -> np.ndarray:
    """(K, F) candidate rows → (K, F + 2) with `EXTRA_COLUMNS` (zero in padding rows)."""
    cand = np.asarray(candidates, dtype=np.float32)
    extra = np.zeros((cand.shape[0], len(EXTRA_COLUMNS)), np.float32)
    n = int(n_valid)
    if n > 0:
        ig = cand[:n, ig_col].astype(np.float64)
        extra[:n, 0] = ig / max(float(np.abs(ig).sum()), 1e-9)
        extra[:n, 1] = rank_score(ig)
    return np.concatenate([cand, extra], axis=1)


def augment_obs(obs: dict, n_valid: int, ig_col: int) -> dict:
    return {**obs, "candidates": augment(obs["candidates"], n_valid, ig_col)}


def keep_mask(mask: np.ndarray) -> np.ndarray:
    """The valid actions that are keep queries (action = 2·candidate + kind, kind 0 = keep)."""
    out = np.asarray(mask, dtype=bool).copy()
    out[1::2] = False
    return out


def declared_ranking(entered: Sequence[int], ig: np.ndarray) -> list[int]:
    """W's members in entry order, then every other candidate by descending IG (ties: lower index first)."""
    seen = set(int(c) for c in entered)
    rest = [
        int(c) for c in np.argsort(-np.asarray(ig, dtype=np.float64), kind="stable") if int(c) not in seen
    ]
    return [*(int(c) for c in entered), *rest]


def keep_efficiency(backend: Any, i: int, ranking: Sequence[int]) -> float:
    """Circuit efficiency of `ranking` on prompt `i` (AUC of keep f over `K_GRID` ÷ the reference's), from one
    batch of keep queries only (the harness's `score_circuit` also runs ablate rows, which this needs not)."""
    n = int(backend.case(i).n_valid)
    data = backend.circuit(i)
    sizes = grid_sizes(n)
    masks = prefix_masks(check_ranking(ranking, n), n, sizes)
    kl, _ = backend.query(i, ["keep"] * len(sizes), masks)
    return circuit_efficiency(faithfulness(kl, data.kl_empty), np.asarray(data.ref_curve)[sizes - 1])


# ---------------------------------------------------------------------------------------------- envs
def make_env(tables: Sequence[Any], budget: int = 20) -> Any:
    """A replay `CircuitSearchEnv` over the merged tables with their settings and the gradient columns."""
    from acd_env.circuit_env import CircuitSearchEnv

    s = env_settings(tables[0])
    if "atp" not in s["descriptors"]:
        raise ACDError(
            "the circuit ppo agent needs tables with the gradient columns (descriptors graph,atp: `ig`); these "
            f"tables have {s['descriptors']}"
        )
    return CircuitSearchEnv(
        model=s["model"],
        backend="replay",
        tables=list(tables),
        budget=budget,
        n_candidates=s["n_candidates"],
        descriptors=s["descriptors"],
        freeze_attention=s["freeze_attention"],
    )


def eligible_prompts(env: Any) -> list[int]:
    """The env's prompts the circuit track scores (KL(clean ‖ keep ∅) ≥ `KL_FLOOR`)."""
    backend = env.unwrapped.backend
    return [i for i in range(backend.n_prompts) if backend.circuit(i).kl_empty >= KL_FLOOR]


def split_prompts(
    env: Any, prompts: Sequence[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train, validation): a seeded `fraction` of each task's prompts held out."""
    rng = np.random.default_rng(seed)
    tasks = [env.unwrapped.prompts[i].task for i in prompts]
    train, val = [], []
    for task in dict.fromkeys(tasks):
        idx = [p for p, t in zip(prompts, tasks, strict=True) if t == task]
        idx = [idx[j] for j in rng.permutation(len(idx))]
        n_val = round(fraction * len(idx))
        val += sorted(idx[:n_val])
        train += sorted(idx[n_val:])
    return train, val


def _wrapper_class() -> Any:
    import gymnasium as gym
    from gymnasium import spaces

    class CircuitTrainingWrapper(gym.Wrapper):
        """Training only: prompts drawn from `prompts`, keep-only mask, augmented observation, and the terminal
        reward eff(declared ranking) − eff(ig ranking) (see the module docstring)."""

        def __init__(self, env: Any, prompts: Sequence[int], seed: int, baseline: dict[int, float]) -> None:
            super().__init__(env)
            self.base = u = env.unwrapped
            self.prompts = list(prompts)
            self.rng = np.random.default_rng(seed)
            self.baseline = baseline  # prompt index → eff(ig ranking), shared by the envs
            self.ig_col = list(u.descriptor_names).index("ig")
            box = cast(spaces.Box, u.observation_space["candidates"])
            k, f = box.shape
            self.observation_space = spaces.Dict(
                {
                    **u.observation_space.spaces,
                    "candidates": spaces.Box(-OBS_BOUND, OBS_BOUND, (k, f + len(EXTRA_COLUMNS)), np.float32),
                }
            )
            self.i, self.n, self.ig = 0, 0, np.zeros(0)

        def reset(self, **kw: Any) -> Any:
            i = self.prompts[int(self.rng.integers(len(self.prompts)))]
            obs, info = self.env.reset(seed=kw.get("seed"), options={"prompt_index": i})
            self.i, self.n = i, int(info["n_valid"])
            self.ig = np.asarray(obs["candidates"][: self.n, self.ig_col], dtype=np.float64)
            if i not in self.baseline:
                self.baseline[i] = keep_efficiency(self.base.backend, i, declared_ranking([], self.ig))
            return augment_obs(obs, self.n, self.ig_col), info

        def step(self, action: Any) -> Any:
            obs, _, terminated, truncated, info = self.env.step(action)
            reward, done = 0.0, bool(terminated or truncated)
            if done:
                eff = keep_efficiency(
                    self.base.backend, self.i, declared_ranking(self.base.entry_order(), self.ig)
                )
                info["efficiency"] = eff
                reward = eff - self.baseline[self.i]
            return augment_obs(obs, self.n, self.ig_col), reward, done, False, info

        def action_masks(self) -> np.ndarray:
            return keep_mask(self.base.action_masks())

    return CircuitTrainingWrapper


def make_vec_env(
    env: Any, prompts: Sequence[int], *, n_envs: int, seed: int, baseline: dict[int, float]
) -> Any:
    """`n_envs` training envs; shallow copies of `env`, so they share its backend (one query store, one model)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    wrapper = _wrapper_class()

    def one(j: int) -> Any:
        return lambda: Monitor(wrapper(copy.copy(env), prompts, seed * 1000 + j, baseline))

    return DummyVecEnv([one(j) for j in range(n_envs)])


def column_stats(env: Any, prompts: Sequence[int]) -> tuple[list[float], list[float], int]:
    """Per-column (mean, std) of the augmented candidate matrix over the given prompts' real candidates (static
    and `EXTRA_COLUMNS`), fixed scales for the dynamic columns (`DYNAMIC_STATS`); and the number of static
    columns (what marks a row as a real candidate)."""
    u = env.unwrapped
    n_static = len(u.descriptor_names) - len(CIRCUIT_DYNAMIC_COLUMNS)
    ig_col = list(u.descriptor_names).index("ig")
    rows = []
    for i in prompts:
        obs, info = u.reset(options={"prompt_index": int(i)})
        n = int(info["n_valid"])
        rows.append(augment(obs["candidates"], n, ig_col)[:n])
    x = np.concatenate(rows).astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    for j, name in enumerate(CIRCUIT_DYNAMIC_COLUMNS):
        mean[n_static + j], std[n_static + j] = DYNAMIC_STATS[name]
    return [float(m) for m in mean], [float(max(s, 1e-6)) for s in std], n_static


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(env: Any, agent: Any, prompts: Sequence[int]) -> np.ndarray:
    """Per-prompt circuit efficiency of `agent`'s declared ranking after a full episode on each prompt."""
    u = env.unwrapped
    out = []
    for i in prompts:
        obs, info = env.reset(options={"prompt_index": int(i)})
        agent.reset(obs, info)
        done = False
        while not done:
            a = agent.act(obs, info)
            obs, r, terminated, truncated, info = env.step(a)
            agent.observe(a, r, obs, info)
            done = terminated or truncated
        out.append(keep_efficiency(u.backend, int(i), agent.circuit_ranking()))
    return np.array(out)


def ig_efficiency(env: Any, prompts: Sequence[int]) -> np.ndarray:
    """Per-prompt circuit efficiency of the zero-query `ig` ranking (the reward's baseline)."""
    u = env.unwrapped
    ig_col = list(u.descriptor_names).index("ig")
    out = []
    for i in prompts:
        obs, info = u.reset(options={"prompt_index": int(i)})
        ig = obs["candidates"][: info["n_valid"], ig_col]
        out.append(keep_efficiency(u.backend, int(i), declared_ranking([], ig)))
    return np.array(out)


# ---------------------------------------------------------------------------------------------- warm start
def imitate_ig(model: Any, env: Any, prompts: Sequence[int], *, epochs: int, seed: int) -> dict[str, float]:
    """Fit the actor by cross-entropy to the IG-greedy trajectory of each prompt (add the next top-IG candidate
    with a keep query, for the budget); returns the final loss and accuracy."""
    import torch as th

    u = env.unwrapped
    ig_col = list(u.descriptor_names).index("ig")
    obs_rows: list[dict] = []
    masks, actions = [], []
    for i in prompts:
        obs, info = u.reset(options={"prompt_index": int(i)})
        n = int(info["n_valid"])
        order = declared_ranking([], obs["candidates"][:n, ig_col])
        done, j = False, 0
        while not done and j < n:
            obs_rows.append(augment_obs(obs, n, ig_col))
            masks.append(keep_mask(u.action_masks()))
            actions.append(2 * order[j])
            obs, _, terminated, truncated, info = u.step(2 * order[j])
            done, j = terminated or truncated, j + 1
    policy = model.policy
    batch = {key: np.stack([o[key] for o in obs_rows]) for key in obs_rows[0]}
    obs_t, _ = policy.obs_to_tensor(batch)
    act_t = th.as_tensor(np.array(actions))
    mask_np = np.stack(masks)
    opt = th.optim.Adam(policy.parameters(), lr=1e-3)
    gen = th.Generator().manual_seed(seed)
    n_rows, loss, acc = len(actions), 0.0, 0.0
    policy.set_training_mode(True)
    for _ in range(epochs):
        perm = th.randperm(n_rows, generator=gen)
        for start in range(0, n_rows, 256):
            b = perm[start : start + 256]
            sub = {key: v[b] for key, v in obs_t.items()}
            _, logp, _ = policy.evaluate_actions(sub, act_t[b], action_masks=mask_np[b.numpy()])
            loss_t = -logp.mean()
            opt.zero_grad()
            loss_t.backward()
            opt.step()
    policy.set_training_mode(False)
    with th.no_grad():
        dist = policy.get_distribution(obs_t, action_masks=mask_np)
        pred = dist.mode()
        acc = float((pred == act_t).float().mean())
        loss = float(-dist.log_prob(act_t).mean())
    return {"bc/loss": round(loss, 4), "bc/accuracy": round(acc, 4), "bc/rows": n_rows}


# ---------------------------------------------------------------------------------------------- training
def train_circuit_policy(
    tables: Any,
    *,
    steps: int = DEFAULT_TRAIN_STEPS,
    seed: int = 0,
    hidden: int = 64,
    budget: int = 20,
    bc_epochs: int = 5,
    val_fraction: float = 0.2,
    keep_best: bool = True,
    n_envs: int = 8,
    n_steps: int = 64,
    batch_size: int = 128,
    n_epochs: int = 4,
    learning_rate: float = 3e-4,
    anneal_lr: bool = True,
    gamma: float = 1.0,
    gae_lambda: float = 0.95,
    ent_coef: float = 0.01,
    clip_range: float = 0.2,
    tb_dir: str | Path | None = None,
    eval_every: int = 4096,
    threads: int | None = 1,
    verbose: bool = False,
) -> TrainResult:
    """Train a MaskablePPO set policy on the circuit-track replay env of `tables` (train split, with the
    gradient columns). Deterministic for a seed (given the same query results). `val_fraction` of each task's
    prompts is held out for validation (0: none; then `keep_best` has nothing to choose by and the last
    policy is kept). threads: torch threads while training (restored afterwards; None leaves torch's)."""
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.callbacks import CallbackList

    from agents.circuit.ppo import CircuitPPOAgent  # the agent module imports this one
    from agents.ppo_policy import SetPolicy

    tables = load_tables(tables)
    key = circuit_key(tables)
    env = make_env(tables, budget)
    prompts = eligible_prompts(env)
    if not prompts:
        raise ACDError(f"no train prompt of tasks {key['tasks']} has KL(clean ‖ keep ∅) ≥ {KL_FLOOR}")
    train, val = split_prompts(env, prompts, val_fraction, seed) if val_fraction > 0 else (prompts, [])
    mean, std, n_static = column_stats(env, train)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    records: list[dict] = []
    baseline: dict[int, float] = {}
    start = time.perf_counter()
    try:
        vec = make_vec_env(env, train, n_envs=n_envs, seed=seed, baseline=baseline)
        eval_env = copy.copy(env)
        model = MaskablePPO(
            SetPolicy,
            vec,
            learning_rate=linear_schedule(learning_rate) if anneal_lr else learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            clip_range=clip_range,
            policy_kwargs={
                "hidden": hidden,
                "features_extractor_kwargs": {"mean": mean, "std": std, "n_static": n_static},
            },
            seed=seed,
            device="cpu",
            verbose=0,
        )
        model.set_logger(sb3_logger(records, tb_dir, verbose))
        meta: dict[str, Any] = {
            "key": key,
            "track": TRACK,
            "arch": "set",
            "hidden": hidden,
            "budget": budget,
            "steps": int(steps),
            "seed": seed,
            "reward": "efficiency-minus-ig",
            "act_types": list(ACT_KINDS),
            "extra_columns": list(EXTRA_COLUMNS),
            "n_train_prompts": len(train),
            "n_val_prompts": len(val),
            "train_prompts_sha": prompts_fingerprint(tables),
            "hyperparameters": dict(
                bc_epochs=bc_epochs,
                val_fraction=val_fraction,
                keep_best=keep_best,
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
        if bc_epochs > 0:
            meta["warm_start"] = imitate_ig(model, eval_env, train, epochs=bc_epochs, seed=seed)
            log.info("IG warm start: %s", meta["warm_start"])
        val_ig = float(ig_efficiency(eval_env, val).mean()) if val else float("nan")
        best: dict[str, Any] = {"eff": -np.inf, "state": None, "step": 0}

        def val_efficiency(m: Any) -> float:
            eff = float(evaluate(eval_env, CircuitPPOAgent.from_model(m, meta), val).mean())
            if eff > best["eff"]:
                best.update(eff=eff, state=copy.deepcopy(m.policy.state_dict()), step=int(m.num_timesteps))
            return eff

        callbacks = [EvalCallback(val_efficiency, eval_every, "eval/val_efficiency")] if val else []
        if val:  # the starting point (after the warm start) is a candidate too
            model.logger.record("eval/val_efficiency", val_efficiency(model))
            model.logger.record("eval/val_ig", val_ig)
            model.logger.dump(0)
        model.learn(total_timesteps=int(steps), callback=CallbackList(callbacks))
        train_s = time.perf_counter() - start
        if val:
            last = val_efficiency(model)
            if keep_best and best["state"] is not None and best["eff"] > last:
                model.policy.load_state_dict(best["state"])
            meta["val"] = {
                "ig": round(val_ig, 4),
                "last": round(last, 4),
                "best": round(float(best["eff"]), 4),
                "best_step": best["step"] if keep_best and best["eff"] > last else int(model.num_timesteps),
            }
        final = evaluate(eval_env, CircuitPPOAgent.from_model(model, meta), train)
        model.logger.record("eval/final_train_efficiency", float(final.mean()))
        model.logger.dump(model.num_timesteps)
        model.logger.close()
    finally:
        torch.set_num_threads(old_threads)
    meta.update(
        timesteps=int(model.num_timesteps),
        train_seconds=round(train_s, 1),
        train_efficiency=round(float(final.mean()), 4),
        train_ig=round(float(np.mean([baseline[i] for i in train if i in baseline] or [np.nan])), 4),
        sb3_contrib=package_version("sb3_contrib"),
        stable_baselines3=package_version("stable_baselines3"),
        torch=torch.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    return TrainResult(model, meta, records)
