"""`ppo` on the circuit track: a MaskablePPO set policy trained on `CircuitSearch-v0` replay, acting
deterministically.

What it does in an episode: it toggles candidates into (and out of) the working circuit W with `keep` queries,
one policy decision per step (`model.predict(obs, action_masks=keep-only mask, deterministic=True)`); it does
not learn during test episodes. Its circuit (`circuit_ranking()`) is W's members in the order they entered,
then every other candidate by descending `ig`: with no useful query the policy falls back to the zero-query IG
ranking, and every query it spends is meant to improve on it. The policy reads the env's observation with two
per-prompt IG columns appended (`ig_share`, `ig_rank`). Why these choices, the training reward
(eff(declared ranking) − eff(ig ranking) at the end of the episode), the IG warm start and the validation
fold: `agents.circuit.ppo_train`.

`fit(tables)` (called by `acd bench` in `train-test` and `held-out-task`):
    1. a policy passed as `policy=...` is kept (a warning names the settings that differ from the tables');
    2. otherwise the shipped circuit-track policy (`agents/policies/circuit-*.zip` + `.json` sidecar) trained
       on the same kind of tables (same weights hash, task set, descriptor columns, K, ...; `agents.ppo_store`
       keys circuit policies with `track: circuit`, so feature-track policies never match) is loaded;
    3. otherwise one is trained in-process with `train_circuit_policy` (a logged warning gives the expected
       time; `scripts/train_circuit_ppo.py` trains and ships policies).
It needs the gradient columns (`needs_atp`): descriptors ("graph", "atp").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acd_env.errors import ACDError
from agents.base import load_tables
from agents.circuit.base import CircuitAgent
from agents.circuit.ppo_train import (
    ACT_KINDS,
    DEFAULT_TRAIN_STEPS,
    STEPS_PER_SECOND,
    TRACK,
    augment_obs,
    circuit_key,
    declared_ranking,
    keep_mask,
    train_circuit_policy,
)
from agents.ppo_store import (
    MATCH_KEYS,
    POLICY_DIR,
    find_policy,
    fit_problems,
    load_policy,
    resolve_policy_path,
    shipped_policies,
)

log = logging.getLogger(__name__)

CIRCUIT_COLUMNS = ("ig", "atp_joint_rank")  # the env's zero-query columns (descriptors graph,atp)


class CircuitPPOAgent(CircuitAgent):
    """A trained circuit-track MaskablePPO policy, acting deterministically with keep queries.

    Args:
        seed: seed of an in-process training run (acting is deterministic).
        policy: a shipped policy name (`agents/policies/<name>.zip`, e.g. `circuit-toy-4l-all`) or a path to
            a policy zip; None (default) lets `fit(tables)` pick the shipped policy for the tables, or train one.
        train_steps: PPO steps of an in-process training run (default `DEFAULT_TRAIN_STEPS`).
        policy_dir: where shipped policies are looked up (default `agents/policies`).
        train_kwargs: extra keyword arguments for `train_circuit_policy` when training in-process.
    """

    name = "ppo"
    needs_atp = True
    learns_offline = True

    def __init__(
        self,
        *,
        seed: int = 0,
        policy: str | Path | None = None,
        train_steps: int = DEFAULT_TRAIN_STEPS,
        policy_dir: str | Path = POLICY_DIR,
        train_kwargs: dict | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.train_steps = int(train_steps)
        self.policy_dir = Path(policy_dir)
        self.train_kwargs = dict(train_kwargs or {})
        self.model: Any = None
        self.meta: dict = {}
        self.source = ""  # "shipped:<file>", "path:<file>" or "trained"
        self._log: list[dict] = []
        self._explicit = policy is not None
        self._entered: list[int] = []
        self._ig = np.zeros(0)
        self._ig_col = -1
        if policy is not None:
            path = resolve_policy_path(policy, self.policy_dir, TRACK)
            self._use(*load_policy(path, TRACK), f"path:{path}")

    @classmethod
    def from_model(cls, model: Any, meta: dict) -> CircuitPPOAgent:
        """An agent around an in-memory model (e.g. during training)."""
        agent = cls()
        agent._use(model, meta, "trained")
        agent._explicit = True
        return agent

    def _use(self, model: Any, meta: dict, source: str, log_: list[dict] | None = None) -> None:
        self.model, self.meta, self.source = model, meta, source
        self._log = list(meta.get("training_log", []) if log_ is None else log_)

    # -- offline learning -----------------------------------------------------------------------
    def fit(self, tables: Any) -> CircuitPPOAgent:
        """Use the policy for these train tables: the explicit one, a matching shipped one, or a fresh one."""
        loaded = load_tables(tables)
        key = circuit_key(loaded)
        if self._explicit and self.model is not None:
            differs = [k for k in MATCH_KEYS if self.meta.get("key", {}).get(k) != key[k]]
            if differs:
                log.warning(
                    "circuit PPO policy %s was trained on other tables (%s differ); using it as asked",
                    self.source,
                    ", ".join(differs),
                )
            return self
        found = find_policy(key, ACT_KINDS, self.policy_dir)
        if found is not None:
            self._use(*load_policy(found, TRACK), f"shipped:{found.name}")
            return self
        kw = {"steps": self.train_steps, "seed": self.seed, **self.train_kwargs}
        log.warning(
            "no shipped circuit PPO policy matches these tables (model %s, tasks %s, %d columns, K=%d); training "
            "one in-process for %d steps, about %.0f s on one thread (scripts/train_circuit_ppo.py trains and "
            "ships policies)",
            key["weights_hash"],
            key["tasks"],
            len(key["descriptor_names"]),
            key["n_candidates"],
            kw["steps"],
            kw["steps"] / STEPS_PER_SECOND,
        )
        result = train_circuit_policy(loaded, **kw)
        log.warning(
            "circuit PPO in-process training took %.0f s (train efficiency %.3f)",
            result.meta["train_seconds"],
            result.meta["train_efficiency"],
        )
        self._use(result.model, result.meta, "trained", result.log)
        return self

    def training_log(self) -> list[dict]:
        """The policy's training curve: [{"step": s, "losses/policy_loss": ..., "eval/val_efficiency": ...}]."""
        return list(self._log)

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def _check(self, names: Sequence[str], k: int) -> None:
        problems = fit_problems(self.meta.get("key", {}), names, k)
        if problems:
            raise ACDError(
                f"the circuit PPO policy ({self.source or 'unnamed'}) does not fit this environment: "
                + "; ".join(problems)
                + ". Train one for these settings (scripts/train_circuit_ppo.py, or agent.fit(train tables "
                "built with them)) or build the env with the policy's settings"
            )

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, obs: dict, info: dict) -> None:
        from acd_env.observation import CIRCUIT_DYNAMIC_COLUMNS

        super().reset(obs, info)
        if self.model is None:
            raise ACDError(
                "the circuit PPO agent has no policy: call agent.fit(train tables) (loads the matching shipped "
                "policy or trains one) or pass policy=NAME|PATH (shipped: "
                f"{[p.stem for p in shipped_policies(self.policy_dir, TRACK)]})"
            )
        missing = [c for c in CIRCUIT_COLUMNS if c not in self.columns]
        if missing:
            raise ACDError(
                f"circuit ppo needs descriptor columns {missing}; run it with descriptors=('graph', 'atp')"
            )
        names = info["descriptor_names"]
        static = [c for c in names if c not in CIRCUIT_COLUMNS and c not in CIRCUIT_DYNAMIC_COLUMNS]
        self._check(static, info["n_candidates"])
        self._ig_col = self.columns["ig"]
        self._ig = self.column(obs, "ig")
        self._entered = []

    def act(self, obs: dict, info: dict) -> int:
        if self.model is None:
            raise ACDError("the circuit PPO agent has no policy: call agent.fit(tables) or pass policy=...")
        mask = keep_mask(np.asarray(info["action_mask"], dtype=bool))
        if not mask.any():
            raise ACDError("the circuit PPO agent got an observation with no valid action")
        action, _ = self.model.predict(
            augment_obs(obs, self.n_valid, self._ig_col), action_masks=mask, deterministic=True
        )
        a = int(np.asarray(action).reshape(-1)[0])
        if not mask[a]:  # cannot happen with a masked distribution; kept as a guard
            a = int(np.flatnonzero(mask)[0])
        return a

    def observe(self, action: int, reward: float, obs: dict, info: dict) -> None:
        if info.get("invalid_action") or "candidate" not in info:
            return
        c = int(info["candidate"])
        if info.get("toggle") == "in":
            self._entered.append(c)
        elif c in self._entered:
            self._entered.remove(c)

    def circuit_ranking(self) -> list[int]:
        return declared_ranking(self._entered, self._ig)
