"""`CircuitSearchEnv` (`CircuitSearch-v0`): find a faithful circuit — a *set* of features — with few set queries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from acd_env.case import CaseSettings, PromptCase
from acd_env.circuit import QUERY_KINDS, faithfulness, logit_faithfulness, necessity
from acd_env.circuit_backend import CircuitBackend, CircuitData, CircuitScore
from acd_env.env import (
    Action,
    Info,
    Obs,
    check_env_args,
    choose_prompt,
    find_prompt,
    make_backend,
    parse_action,
)
from acd_env.errors import ACDError
from acd_env.interventions import INTERVENTION_TYPES
from acd_env.observation import CIRCUIT_DESCRIPTORS, CIRCUIT_DYNAMIC_COLUMNS, OBS_BOUND
from acd_env.tasks import Prompt

SCORE_EDGES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.97, 1.03)  # bins of f, necessity and logit faithfulness
DYNAMIC_COLUMNS = CIRCUIT_DYNAMIC_COLUMNS  # the schema's owner is acd_env.observation
NONE_YET = 0
MAX_STEPS_PER_QUERY = 4  # free (repeated) queries are bounded: an episode takes at most this × budget steps


def score_level(value: float) -> int:
    """Level 1..len(SCORE_EDGES)+1 of a faithfulness-like value (0 is "none yet"); NaN → the middle level."""
    if not math.isfinite(value):
        return 1 + len(SCORE_EDGES) // 2
    return 1 + int(np.searchsorted(SCORE_EDGES, value, side="right"))


class CircuitSearchEnv(gym.Env[Obs, Action]):
    """Find the smallest faithful circuit of a prompt by testing sets of transcoder features.

    ## Description
    The candidates are the same as `CircuitDiscovery-v0`'s: the K most influential transcoder features of the
    prompt's attribution graph. The agent grows and shrinks a **working circuit** W (empty at reset) and tests
    it: each step toggles one candidate in or out of W and runs one **set query** on the new W, through the
    same intervention semantics as circuit-tracer's `feature_intervention`:

    | kind | what runs | observed score |
    |---|---|---|
    | `keep` | every candidate *not* in W ablated jointly (`complement="patching"`: set to its counterfactual value) | KL-faithfulness f(W) = 1 − KL(clean ‖ keep W) ÷ KL(clean ‖ keep ∅) |
    | `ablate` | the members of W ablated jointly | necessity n(W) = KL(clean ‖ ablate W) ÷ KL(clean ‖ keep ∅) |

    Effects of sets are not sums of single effects (features cancel, or do nothing alone and everything as a
    group), which is what makes choosing the next test worth learning. At the end the harness asks the agent
    for its circuit (`circuit_ranking()`, a ranking of candidates) and scores its first k members at
    k = 1, 2, 3, 5, 8, 13, 20 (`acd_env.circuit`); rewards are for RL only and never enter the leaderboard.

    ## Action Space
    `Discrete(2K)`: `a = candidate * 2 + kind`, kind 0 = `keep`, 1 = `ablate`. Every real candidate can be
    toggled at any step (`info["action_mask"]`, `action_masks()`); padding rows (graphs with fewer than K
    features) are masked. **Invalid actions** (masked or out of range) change nothing, pay 0, still use one
    query of budget (so every episode ends) and set `info["invalid_action"]`.

    ## Budget
    The budget B counts *new* measurements: a query of a (kind, W) already measured in the episode is
    answered again for free (`info["repeat"]`), so that stepping back out of a tested set costs nothing.
    Free steps are bounded: the episode is truncated after `MAX_STEPS_PER_QUERY × B` steps.

    ## Observation Space
    `Dict`, suitable for SB3's `MultiInputPolicy`:

    | key | space | content |
    |---|---|---|
    | `outcome` | `MultiDiscrete([3, 9, 9])` | the last query's kind (0 none yet, 1 keep, 2 ablate), the level of its score (f or n) and of its logit-difference faithfulness, in the fixed bins `SCORE_EDGES` (level 0 = none yet) |
    | `circuit` | `MultiBinary(K)` | W's members |
    | `candidates` | `Box(K, F)` float32 | static descriptors (as `CircuitDiscovery-v0`; with `descriptors=("graph", "atp")` also `ig` and `atp_joint_rank`, the zero-query scores), then `in_circuit`, `toggles` (times toggled), `keep_delta` / `ablate_delta` (change of the measured score of that kind when this candidate was last toggled with that kind, against the previous measurement of that kind) |
    | `budget` | `Box(0, 1, (1,))` | fraction of the query budget left |

    ## Rewards
    The increase of the best keep-only faithfulness measured so far in the episode (f(∅) = 0 to start);
    0 for `ablate` queries. An episode's return is the best f it measured.

    ## Starting State
    `reset(seed=...)` picks a prompt with the env's seeded generator (`options={"prompt_index": i}` or
    `{"prompt": "..."}` pins one) and returns the empty circuit. `info` carries `prompt_id`, `task`,
    `action_mask`, `n_valid`, `kl_empty` and `descriptor_names`.

    ## Episode End
    `terminated` when the budget of queries is spent; `truncated` after `MAX_STEPS_PER_QUERY × B` steps.

    ## Info (step)
    `prompt_id`, `action_mask`, `invalid_action`, `repeat`, `queries_left`, and for a valid action:
    `candidate`, `feature`, `kind`,
    `toggle` (`"in"` / `"out"`), `circuit_size`, and the measured `kl`, `m` (logit difference),
    `kl_empty`, `score` (f for keep, n for ablate), `f` or `necessity`, `logit_f`.

    ## Privileged access and evaluation (harness only)
    `reference()` gives the prompt's stored reference circuit (beam search with no budget) and its curve;
    `score_circuit(ranking)` evaluates a declared ranking (queries not charged to the budget);
    `entry_order()` lists W's members in the order they (last) entered it.

    ## Arguments
    As `CircuitDiscovery-v0` where they apply: `model`, `task`, `split`, `prompts`, `backend` (`"replay"`
    reads the circuit tables and answers set queries from the query store, running a missing one on the model;
    `"live"` attributes and searches the reference on the model), `tables`, `n_candidates` (K, default 64; in
    replay it must equal the tables'), `budget` (queries per episode, default 20), `descriptors`,
    `freeze_attention`, `device`; and `complement`: `"ablation"` (default) or `"patching"` — what keep(W) does
    to the candidates outside W (the stored reference is for ablation).
    """

    metadata: ClassVar[dict] = {"render_modes": []}
    action_space: spaces.Discrete
    observation_space: spaces.Dict

    def __init__(
        self,
        model: Any = "toy-4l",
        task: str | Sequence[str] | None = None,
        split: str = "train",
        prompts: Sequence[Any] | str | Path | None = None,
        backend: str = "replay",
        tables: str | Path | Sequence[str | Path] | None = None,
        n_candidates: int = 64,
        budget: int = 20,
        descriptors: Sequence[str] = ("graph",),
        freeze_attention: bool = False,
        complement: str = "ablation",
        device: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.budget = check_env_args(backend=backend, split=split, budget=budget, render_mode=render_mode)
        self.settings = CaseSettings(
            n_candidates=n_candidates,
            interventions=INTERVENTION_TYPES,
            descriptors=cast(tuple[str, ...], descriptors),  # CaseSettings normalises it to a tuple
            freeze_attention=bool(freeze_attention),
        )
        base = make_backend(
            self.settings,
            backend,
            model=model,
            task=task,
            split=split,
            prompts=prompts,
            tables=tables,
            device=device,
        )
        if base.n_prompts == 0:
            raise ACDError("the environment has no prompts")
        self.backend = CircuitBackend(
            base, complement=complement, model=model if backend == "replay" else None
        )
        self.backend_kind = backend
        k = self.settings.n_candidates
        extra = CIRCUIT_DESCRIPTORS if "atp" in self.settings.descriptors else ()
        self.descriptor_names = (*self.settings.descriptor_names, *extra, *DYNAMIC_COLUMNS)
        self._n_static = len(self.settings.descriptor_names) + len(extra)
        self.action_space = spaces.Discrete(2 * k)
        self.observation_space = spaces.Dict(
            {
                "outcome": spaces.MultiDiscrete([3, len(SCORE_EDGES) + 2, len(SCORE_EDGES) + 2]),
                "circuit": spaces.MultiBinary(k),
                "candidates": spaces.Box(-OBS_BOUND, OBS_BOUND, (k, len(self.descriptor_names)), np.float32),
                "budget": spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )
        self._i = -1
        self._case: PromptCase | None = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Obs, Info]:
        super().reset(seed=seed)
        i = choose_prompt(options, self.backend.n_prompts, self.np_random, self._pin_prompt)
        self._i = i
        case = self.backend.case(i)
        self._case = case
        self._data = self.backend.circuit(i)
        k = self.settings.n_candidates
        self._mask = np.zeros(2 * k, dtype=bool)
        self._mask[: 2 * case.n_valid] = True
        self._members = np.zeros(k, dtype=np.int8)
        self._entered: list[int] = []
        static = np.clip(case.descriptors, -OBS_BOUND, OBS_BOUND)
        self._candidates = np.zeros((k, len(self.descriptor_names)), np.float32)
        self._candidates[:, : static.shape[1]] = static
        if self._n_static > static.shape[1]:
            n = case.n_valid
            rank = np.zeros(k, np.float32)
            rank[self._data.atp_joint[:n]] = 1.0 - np.arange(n) / max(n, 1)
            self._candidates[:, static.shape[1]] = np.clip(self._data.ig, -OBS_BOUND, OBS_BOUND)
            self._candidates[:, static.shape[1] + 1] = rank
        self._outcome = np.zeros(3, dtype=np.int64)
        self._last = dict.fromkeys(QUERY_KINDS, None)
        self._best_f = 0.0
        self._left = self.budget
        self._steps = 0
        empty = self._members.tobytes()  # f(∅) = n(∅) = 0 by definition: known without a query
        self._seen: set[tuple[str, bytes]] = {("keep", empty), ("ablate", empty)}
        return self._obs(), {
            "prompt_id": case.prompt.id,
            "task": case.prompt.task,
            "prompt_index": i,
            "n_valid": case.n_valid,
            "n_candidates": k,
            "kl_empty": self._data.kl_empty,
            "descriptor_names": self.descriptor_names,
            "query_kinds": QUERY_KINDS,
            "action_mask": self._mask.astype(np.int8),
        }

    def step(self, action: Action) -> tuple[Obs, float, bool, bool, Info]:
        if self._case is None:
            raise ACDError("call reset() before step()")
        if self._left <= 0:
            raise ACDError("the episode has ended; call reset()")
        a = parse_action(action, int(self.action_space.n))
        self._steps += 1
        case, data = self._case, self._data
        info: dict[str, Any] = {"prompt_id": case.prompt.id, "invalid_action": False, "repeat": False}
        reward = 0.0
        if not 0 <= a < len(self._mask) or not self._mask[a]:
            info["invalid_action"] = True
            self._left -= 1
        else:
            k, kind_index = divmod(a, 2)
            kind = QUERY_KINDS[kind_index]
            entering = not self._members[k]
            self._members[k] = 1 if entering else 0
            if entering:
                self._entered.append(k)
            else:
                self._entered.remove(k)
            seen = (kind, self._members.tobytes())
            info["repeat"] = seen in self._seen
            if not info["repeat"]:
                self._seen.add(seen)
                self._left -= 1
            kl, m = self.backend.query(self._i, [kind], self._members[None, : case.n_valid].astype(bool))
            kl, m = float(kl[0]), float(m[0])
            score = float(faithfulness(kl, data.kl_empty) if kind == "keep" else necessity(kl, data.kl_empty))
            logit_f = float(logit_faithfulness(m, data.m_clean, data.m_empty))
            row = self._candidates[k]
            s = self._n_static
            row[s] = float(self._members[k])
            row[s + 1] += 1.0
            previous = self._last[kind]
            row[s + 2 + kind_index] = float(
                np.clip(score - (previous if previous is not None else 0.0), -10, 10)
            )
            self._last[kind] = score
            self._outcome[:] = (1 + kind_index, score_level(score), score_level(logit_f))
            if kind == "keep" and score > self._best_f:
                reward, self._best_f = score - self._best_f, score
            info.update(
                candidate=k,
                feature=case.feature_id(k),
                kind=kind,
                toggle="in" if entering else "out",
                circuit_size=int(self._members.sum()),
                kl=kl,
                m=m,
                kl_empty=data.kl_empty,
                score=score,
                logit_f=logit_f,
                **({"f": score} if kind == "keep" else {"necessity": score}),
            )
        terminated = self._left <= 0
        truncated = not terminated and self._steps >= MAX_STEPS_PER_QUERY * self.budget
        if truncated:
            self._left = 0
        info["queries_left"] = self._left
        info["action_mask"] = self._mask.astype(np.int8)
        return self._obs(), float(reward), terminated, truncated, info

    def _obs(self) -> Obs:
        return {
            "outcome": self._outcome.copy(),
            "circuit": self._members.copy(),
            "candidates": self._candidates.copy(),
            "budget": np.array([self._left / self.budget], dtype=np.float32),
        }

    # ------------------------------------------------------------------ extras
    def action_masks(self) -> np.ndarray:
        """Valid actions as a bool array (sb3-contrib MaskablePPO convention)."""
        if self._case is None:
            return np.ones(self.action_space.n, dtype=bool)
        return self._mask.copy()

    def entry_order(self) -> list[int]:
        """W's members, in the order they (last) entered it."""
        return list(self._entered)

    def reference(self) -> CircuitData:
        """Privileged: the current prompt's stored circuit facts, the reference ranking among them."""
        if self._case is None:
            raise ACDError("call reset() before reference()")
        return self._data

    def score_circuit(self, ranking: Sequence[int]) -> CircuitScore:
        """Harness: f, logit faithfulness and necessity of the ranking's first k candidates, k in K_GRID."""
        from acd_env.circuit import check_ranking

        if self._case is None:
            raise ACDError("call reset() before score_circuit()")
        n = self._case.n_valid
        order = check_ranking(ranking, n)
        if len(order) < n:
            raise ACDError(f"score_circuit needs a ranking of all {n} candidates, got {len(order)}")
        return self.backend.score(self._i, order)

    @property
    def case(self) -> PromptCase:
        if self._case is None:
            raise ACDError("call reset() first")
        return self._case

    @property
    def prompts(self) -> list[Prompt]:
        return self.backend.prompts

    def _pin_prompt(self, spec: Any) -> int:
        prompt, i = find_prompt(self.backend.prompts, spec)
        if i is not None:
            return i
        raise ACDError(f"prompt {prompt.clean!r} is not among this env's prompts")
