"""`CircuitDiscoveryEnv` (`CircuitDiscovery-v0`): sequential circuit discovery as a Gymnasium environment."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeAlias, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from acd_env.backends import Effects, LiveBackend, ReplayBackend
from acd_env.case import CaseSettings, PromptCase
from acd_env.discretise import BIN_EDGES, NONE_YET, OUTCOME_DIMS, level, n_levels
from acd_env.errors import ACDError, check_positive_int, unknown
from acd_env.interventions import INTERVENTION_TYPES
from acd_env.observation import FEATURE_DYNAMIC_COLUMNS, OBS_BOUND, measured_log_kl
from acd_env.tasks import TOY_TASKS, Prompt, load_task, prompts_from
from acd_env.tasks.grammar import SPLITS

REWARDS = ("kl", "logit_diff")
BACKENDS = ("live", "replay")
DYNAMIC_COLUMNS = FEATURE_DYNAMIC_COLUMNS  # the schema's owner is acd_env.observation

# The types of both tracks' envs (this one and `acd_env.circuit_env.CircuitSearchEnv`).
Obs: TypeAlias = dict[str, np.ndarray]  # a sample of the env's `spaces.Dict` observation space
Action: TypeAlias = int | np.integer  # a `spaces.Discrete` action: a Python int or a numpy integer
Info: TypeAlias = dict[str, Any]


class CircuitDiscoveryEnv(gym.Env[Obs, Action]):
    """Find the transcoder features that matter for a prompt with as few interventions as possible.

    ## Description
    A language model with transcoders (a circuit-tracer `ReplacementModel`) and a prompt give an attribution
    graph. Its K most influential features (circuit-tracer's `compute_node_influence`, the ranking
    `prune_graph` uses) are the **candidates**. Each step the agent picks one candidate and one intervention
    type; the environment runs it through `ReplacementModel.feature_intervention` (live backend) or reads the
    same measurement from a circuit table (replay backend), observes its discretised effect and pays the KL
    divergence it caused. Every candidate can be intervened on once per episode.

    ## Action Space
    `Discrete(K * n_types)`: action `a = candidate * n_types + type`, candidates in descending influence,
    types in the order of `interventions` (default `ablation`, `patching`, `steering`):

    | type | the feature is set to |
    |---|---|
    | ablation | 0 |
    | patching | its activation on the prompt's counterfactual (same layer, position, feature); for a prompt without one, its mean activation over the reference prompts (`info["patch_source"]` says which) |
    | steering | `steering_scale` × its clean activation |

    Valid actions: `info["action_mask"]` (int8) and `env.unwrapped.action_masks()` (bool, sb3-contrib
    `MaskablePPO` convention). A candidate already intervened on, and padding when a graph has fewer than K
    features, are masked. **Invalid actions** (masked or out of range) do not crash: they change nothing,
    pay reward 0, still use one unit of budget (so every episode ends) and set `info["invalid_action"]`.

    ## Observation Space
    `Dict`, suitable for SB3's `MultiInputPolicy`:

    | key | space | content |
    |---|---|---|
    | `outcome` | `MultiDiscrete([7, 7, 7])` | the last intervention's KL, downstream change and number of affected later features, each in fixed log-scale bins (`acd_env.discretise.BIN_EDGES`); level 0 = none yet |
    | `candidates` | `Box(K, F)` float32 | per candidate: static descriptors (`descriptor_names`: influence, activation, decoder norm, magnitude, graph-linearised effect of each type, direct logit effect, layer, position, edge statistics, counterfactual ratio; with `descriptors=("graph", "atp")` also attribution-patching estimates), then `visited`, `measured_type`, `measured_log_kl` (log10(KL + 1e-6) + 6), `measured_downstream`, `measured_log_affected` (log1p) |
    | `budget` | `Box(0, 1, (1,))` | fraction of the budget left |

    ## Rewards
    The KL divergence KL(clean ‖ intervened) of the next-token distribution at the last position caused by
    the chosen intervention (nats); with `reward="logit_diff"`, |change of the answer logit minus the
    counterfactual answer's|. Invalid actions pay 0.

    ## Starting State
    `reset(seed=...)` picks a prompt with the env's seeded generator (`options={"prompt_index": i}` or
    `{"prompt": "..."}` pins one), attributes it (cached per prompt) and returns the "none yet" observation.
    `info` carries `prompt_id`, `task` and `action_mask`.

    ## Episode End
    `terminated` when the budget is spent or no valid action remains; never truncated.

    ## Info (step)
    `prompt_id`, `action_mask`, `invalid_action`, and for a valid action: `candidate`, `feature`
    (`L{layer}_P{pos}_F{idx}`), `intervention`, `patch_source`, and the measurements `kl`, `logit_diff`,
    `downstream`, `n_affected`, `top1_changed`.

    ## Privileged access
    `oracle_effects()` returns every measurement of every (candidate, type) of the current prompt (batched in
    live mode). It is for the `oracle` agent and for metrics only.

    ## Arguments
    - `model`: toy model name (default `"toy-4l"`), a pretrained name (`"gemma-2-2b"`, needs the hub and a GPU),
      or a ready `ReplacementModel`.
    - `task`: a suite name or list of names (default: every toy task), or a JSONL path.
    - `split`: `"train"` (default) or `"test"`.
    - `prompts`: custom prompts (strings, dicts or `Prompt`s); overrides `task`.
    - `backend`: `"live"` (runs circuit-tracer) or `"replay"` (reads `tables`).
    - `tables`: circuit table path(s) for replay (default: the tables shipped with a toy model).
    - `n_candidates`: K, default 64. `budget`: interventions per episode, default 20.
    - `interventions`: subset of `("ablation", "patching", "steering")`.
    - `steering_scale`: default 4.0. `reward`: `"kl"` or `"logit_diff"`.
    - `descriptors`: `("graph",)` or `("graph", "atp")`.
    - `freeze_attention`: default False (the measured effect includes attention's response).
    - `device`: torch device for the live backend.
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
        backend: str = "live",
        tables: str | Path | Sequence[str | Path] | None = None,
        n_candidates: int = 64,
        budget: int = 20,
        interventions: Sequence[str] = INTERVENTION_TYPES,
        steering_scale: float = 4.0,
        reward: str = "kl",
        descriptors: Sequence[str] = ("graph",),
        freeze_attention: bool = False,
        device: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if reward not in REWARDS:
            raise unknown("reward", reward, REWARDS)
        budget = check_env_args(backend=backend, split=split, budget=budget, render_mode=render_mode)
        # CaseSettings validates n_candidates, interventions, steering_scale and descriptors (ACDError) and
        # normalises any sequence of names (or one name) to a tuple, the type of its fields
        self.settings = CaseSettings(
            n_candidates=n_candidates,
            interventions=cast(tuple[str, ...], interventions),
            steering_scale=steering_scale,
            descriptors=cast(tuple[str, ...], descriptors),
            freeze_attention=bool(freeze_attention),
        )
        n_candidates, interventions = self.settings.n_candidates, self.settings.interventions
        self.budget = budget
        self.reward_kind = reward
        self.backend_kind = backend
        self.backend = make_backend(
            self.settings,
            backend,
            model=model,
            task=task,
            split=split,
            prompts=prompts,
            tables=tables,
            device=device,
        )
        if self.backend.n_prompts == 0:
            raise ACDError("the environment has no prompts")

        k, n_types = n_candidates, len(interventions)
        self.n_types = n_types
        self.descriptor_names = (*self.settings.descriptor_names, *DYNAMIC_COLUMNS)
        self._n_static = len(self.settings.descriptor_names)
        self.action_space = spaces.Discrete(k * n_types)
        self.observation_space = spaces.Dict(
            {
                "outcome": spaces.MultiDiscrete([n_levels(d) for d in OUTCOME_DIMS]),
                "candidates": spaces.Box(-OBS_BOUND, OBS_BOUND, (k, len(self.descriptor_names)), np.float32),
                "budget": spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )
        self._prompt_index = -1
        self._case: PromptCase | None = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Obs, Info]:
        super().reset(seed=seed)
        i = choose_prompt(options, self.backend.n_prompts, self.np_random, self._pin_prompt)
        self._prompt_index = i
        case = self.backend.case(i)
        self._case = case
        k, n_types = self.settings.n_candidates, self.n_types
        self._mask = np.zeros(k * n_types, dtype=bool)
        self._mask[: case.n_valid * n_types] = True
        self._candidates = np.zeros((k, len(self.descriptor_names)), np.float32)
        self._candidates[:, : self._n_static] = np.clip(case.descriptors, -OBS_BOUND, OBS_BOUND)
        self._outcome = np.full(len(OUTCOME_DIMS), NONE_YET, dtype=np.int64)
        self._left = self.budget
        return self._obs(), {
            "prompt_id": case.prompt.id,
            "task": case.prompt.task,
            "prompt_index": i,
            "n_valid": case.n_valid,
            "n_candidates": k,
            "interventions": self.settings.interventions,
            "descriptor_names": self.descriptor_names,
            "action_mask": self._mask.astype(np.int8),
        }

    def step(self, action: Action) -> tuple[Obs, float, bool, bool, Info]:
        if self._case is None:
            raise ACDError("call reset() before step()")
        if self._left <= 0:
            raise ACDError("the episode has ended; call reset()")
        a = parse_action(action, int(self.action_space.n))
        self._left -= 1
        case = self._case
        info: dict[str, Any] = {"prompt_id": case.prompt.id, "invalid_action": False}
        reward = 0.0
        if not 0 <= a < len(self._mask) or not self._mask[a]:
            info["invalid_action"] = True
        else:
            k, t = divmod(a, self.n_types)
            m = self.backend.step(self._prompt_index, k, t)
            reward = m.kl if self.reward_kind == "kl" else abs(m.logit_diff)
            self._mask[k * self.n_types : (k + 1) * self.n_types] = False
            row = self._candidates[k]
            s = self._n_static
            row[s] = 1.0
            row[s + 1] = (t + 1) / self.n_types
            row[s + 2] = measured_log_kl(m.kl)
            row[s + 3] = m.downstream
            row[s + 4] = math.log1p(m.n_affected)
            self._outcome[0] = level("kl", m.kl)
            self._outcome[1] = level("downstream", m.downstream)
            self._outcome[2] = level("n_affected", m.n_affected)
            kind = self.settings.interventions[t]
            info.update(
                candidate=k,
                intervention=kind,
                feature=case.feature_id(k),
                kl=m.kl,
                logit_diff=m.logit_diff,
                downstream=m.downstream,
                n_affected=m.n_affected,
                top1_changed=m.top1_changed,
                patch_source=case.patch_source if kind == "patching" else None,
            )
        terminated = self._left <= 0 or not self._mask.any()  # any() over K*n_types bools: cheap
        if terminated:
            self._left = 0
        info["action_mask"] = self._mask.astype(np.int8)
        return self._obs(), float(reward), bool(terminated), False, info

    def _obs(self) -> Obs:
        return {
            "outcome": self._outcome.copy(),
            "candidates": self._candidates.copy(),
            "budget": np.array([self._left / self.budget], dtype=np.float32),
        }

    # ------------------------------------------------------------------ extras
    def action_masks(self) -> np.ndarray:
        """Valid actions as a bool array (sb3-contrib MaskablePPO convention)."""
        if self._case is None:
            return np.ones(self.action_space.n, dtype=bool)
        return self._mask.copy()

    def oracle_effects(self) -> Effects:
        """Privileged: every measurement of every (candidate, type) of the current prompt, each (K, n_types)."""
        if self._case is None:
            raise ACDError("call reset() before oracle_effects()")
        return self.backend.oracle(self._prompt_index)

    @property
    def case(self) -> PromptCase:
        """The current prompt's candidates and descriptors (public knowledge, not privileged)."""
        if self._case is None:
            raise ACDError("call reset() first")
        return self._case

    @property
    def prompts(self) -> list[Prompt]:
        return self.backend.prompts

    @property
    def bin_edges(self) -> dict[str, tuple[float, ...]]:
        return dict(BIN_EDGES)

    def _pin_prompt(self, spec: Any) -> int:
        prompt, i = find_prompt(self.backend.prompts, spec)
        if i is not None:
            return i
        if isinstance(self.backend, ReplayBackend):
            raise ACDError(
                f"prompt {prompt.clean!r} is not in the circuit table; replay only knows its prompts"
            )
        from acd_env.tasks.validate import validate_prompts

        validate_prompts([prompt], self.backend.model)
        self.backend.prompts.append(prompt)
        return len(self.backend.prompts) - 1


# ---------------------------------------------------------------------- reset/step pieces (shared with CircuitSearch-v0)
def check_env_args(*, backend: str, split: str, budget: Any, render_mode: str | None) -> int:
    """The constructor checks both envs share (one clear ACDError each); returns the budget."""
    if backend not in BACKENDS:
        raise unknown("backend", backend, BACKENDS)
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    budget = check_positive_int("budget", budget)
    if render_mode is not None:
        raise ACDError(f"render_mode {render_mode!r} is not supported; this env has no renderer (use None)")
    return budget


def choose_prompt(
    options: dict | None, n_prompts: int, rng: np.random.Generator, pin: Callable[[Any], int]
) -> int:
    """The prompt a `reset` asks for: `options["prompt_index"]` (checked), `options["prompt"]` (`pin` finds
    it), else a draw from the env's seeded generator."""
    options = options or {}
    if "prompt_index" in options:
        i = options["prompt_index"]
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < n_prompts:
            raise ACDError(f"prompt_index must be an int in [0, {n_prompts}), got {i!r}")
        return int(i)
    if "prompt" in options:
        return pin(options["prompt"])
    return int(rng.integers(n_prompts))


def find_prompt(prompts: Sequence[Prompt], spec: Any) -> tuple[Prompt, int | None]:
    """`spec` (a Prompt, a clean string or a prompt dict) as a Prompt, and its index in `prompts` (None if absent)."""
    prompt = prompts_from([spec])[0] if not isinstance(spec, Prompt) else spec
    for i, p in enumerate(prompts):
        if p.clean == prompt.clean:
            return prompt, i
    return prompt, None


def parse_action(action: Any, n_actions: int) -> int:
    """An action as an int (range and mask are the env's business); one clear error for a non-integer."""
    try:
        a = int(action)
        if a != action:
            raise ValueError
    except (TypeError, ValueError):
        raise ACDError(f"action must be an integer in [0, {n_actions}), got {action!r}") from None
    return a


# ---------------------------------------------------------------------- backends (shared with CircuitSearch-v0)
def make_backend(
    settings: CaseSettings,
    backend: str,
    *,
    model: Any,
    task: Any,
    split: str,
    prompts: Any,
    tables: Any,
    device: str | None,
) -> LiveBackend | ReplayBackend:
    """The live or replay backend an env with these settings runs on."""
    if backend == "live":
        return _live_backend(settings, model, task, split, prompts, device)
    return _replay_backend(settings, model, task, split, tables)


def _prompt_list(task: Any, split: str, prompts: Any) -> list[Prompt]:
    if prompts is not None:
        return prompts_from(prompts)
    tasks = list(TOY_TASKS) if task is None else ([task] if isinstance(task, str | Path) else list(task))
    return [p for t in tasks for p in load_task(t, split=split)]


def _live_backend(
    settings: CaseSettings, model: Any, task: Any, split: str, prompts: Any, device: str | None
) -> LiveBackend:
    from acd_env.models import load_model
    from acd_env.tasks.validate import validate_prompts

    prompt_list = _prompt_list(task, split, prompts)
    loaded = load_model(model, device)
    validate_prompts(prompt_list, loaded)
    reference = None
    if any(p.counterfactual is None for p in prompt_list):
        shipped = [t for t in dict.fromkeys(p.task for p in prompt_list) if t in TOY_TASKS]
        reference = [p for t in shipped for p in load_task(t, split="train")] or None
    return LiveBackend(loaded, prompt_list, settings, reference_prompts=reference)


def _replay_backend(settings: CaseSettings, model: Any, task: Any, split: str, tables: Any) -> ReplayBackend:
    from acd_env.table_store import resolve_tables

    table = resolve_tables(model, task, split, tables)
    meta = table.meta
    s = settings
    problems = []
    if s.n_candidates > meta["n_candidates"]:
        problems.append(f"n_candidates={s.n_candidates} > the table's {meta['n_candidates']}")
    missing = [t for t in s.interventions if t not in meta["interventions"]]
    if missing:
        problems.append(f"interventions {missing} not in the table's {meta['interventions']}")
    if "steering" in s.interventions and s.steering_scale != meta["steering_scale"]:
        problems.append(f"steering_scale={s.steering_scale} but the table used {meta['steering_scale']}")
    absent = [n for n in s.descriptor_names if n not in meta["descriptor_names"]]
    if absent:
        problems.append(f"descriptors {s.descriptors} need columns the table lacks ({absent[:3]}...)")
    if s.freeze_attention != meta["freeze_attention"]:
        problems.append(
            f"freeze_attention={s.freeze_attention} but the table used {meta['freeze_attention']}"
        )
    if problems:
        raise ACDError("the circuit table does not match the environment: " + "; ".join(problems))
    return ReplayBackend(table, s)
