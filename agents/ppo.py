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

Modules: this one is the agent; `agents.ppo_train` trains a policy (envs, reward scaling, logging, evaluation;
the training reward and TensorBoard scalars are described there); `agents.ppo_store` saves, loads and matches
shipped policies; `agents.ppo_policy` is the network. The training and store names are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acd_env.errors import ACDError
from agents.base import BaseAgent, load_tables
from agents.ppo_store import (
    MATCH_KEYS,
    POLICY_DIR,
    find_policy,
    fit_problems,
    load_policy,
    policy_summary,
    read_meta,
    resolve_policy_path,
    save_policy,
    shipped_policies,
    table_key,
)
from agents.ppo_train import (
    ARCHS,
    DEFAULT_TRAIN_STEPS,
    REWARDS,
    STEPS_PER_SECOND,
    TrainResult,
    column_stats,
    episode_efficiency,
    evaluate,
    make_env,
    make_vec_env,
    restrict_columns,
    restrict_mask,
    train_policy,
    type_mask,
)

__all__ = [  # the agent, and (re-exported) the training and policy-store names callers import from here
    "ARCHS",
    "DEFAULT_TRAIN_STEPS",
    "MATCH_KEYS",
    "POLICY_DIR",
    "REWARDS",
    "PPOAgent",
    "TrainResult",
    "column_stats",
    "episode_efficiency",
    "evaluate",
    "find_policy",
    "load_policy",
    "make_env",
    "make_vec_env",
    "policy_summary",
    "read_meta",
    "resolve_policy_path",
    "restrict_columns",
    "save_policy",
    "shipped_policies",
    "table_key",
    "train_policy",
]

log = logging.getLogger(__name__)


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
        problems = fit_problems(self.meta.get("key", {}), names, k, types)
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
