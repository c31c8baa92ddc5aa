"""Set queries of a prompt, answered by the query store or, on a miss, by the model (`CircuitBackend`).

It wraps a feature-track backend (live or replay), which supplies each prompt's `PromptCase`, and adds:
- the prompt's `CircuitData` (keep(∅), the reference, atp-joint, IG): read from a replay table's circuit
  arrays, or computed on the model in live mode (`acd_env.circuit_reference.measure_circuit`);
- `query(i, kinds, members)`: the KL and logit difference of keep/ablate rows, from the `QueryStore`; what the
  store lacks runs in one batch on the model (loaded on first need in replay mode; a model that cannot be had
  is a clear error) and is added to the store;
- `score(i, ranking)`: the harness's evaluation of a declared circuit at every size of `K_GRID`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from acd_env.circuit import (
    COMPLEMENTS,
    QUERY_KINDS,
    faithfulness,
    grid_sizes,
    logit_faithfulness,
    necessity,
    prefix_masks,
)
from acd_env.errors import ACDError, unknown


class CircuitData(NamedTuple):
    """One prompt's circuit facts (arrays padded to K; orders −1-padded)."""

    kl_empty: float  # KL(clean ‖ keep ∅)
    m_clean: float  # logit difference of the clean run
    m_empty: float  # ... of keep(∅)
    ref_order: np.ndarray  # (K,) the reference ranking
    ref_curve: np.ndarray  # (K_MAX,) f(C_k) along it, k = 1..K_MAX
    ref_lcurve: np.ndarray  # (K_MAX,) logit-difference faithfulness along it
    atp_joint: np.ndarray  # (K,) greedy ranking on the AtP-linearised model
    ig: np.ndarray  # (K,) integrated-gradients score per candidate


class CircuitScore(NamedTuple):
    """A declared circuit evaluated at the sizes `sizes` (each (len(K_GRID),))."""

    sizes: np.ndarray
    f: np.ndarray  # KL-faithfulness of keep(C_k)
    logit_f: np.ndarray  # logit-difference faithfulness of keep(C_k)
    necessity: np.ndarray  # KL(ablate C_k) ÷ KL(keep ∅)


class CircuitBackend:
    """Set queries on top of a feature-track backend (see the module docstring)."""

    def __init__(self, base: Any, *, complement: str = "ablation", model: Any = None) -> None:
        if complement not in COMPLEMENTS:
            raise unknown("complement", complement, COMPLEMENTS)
        self.base = base
        self.complement = complement
        self.freeze_attention = base.settings.freeze_attention
        self._model = (
            model if model is not None and not isinstance(model, str) else getattr(base, "model", None)
        )
        self._model_name = model if isinstance(model, str) else None
        self._table = getattr(base, "table", None)
        self._circuit: dict[int, CircuitData] = {}
        self._clean: dict[int, Any] = {}
        self._store = None
        if self._table is not None:
            if not self._table.has_circuit:
                raise ACDError(
                    f"circuit table of task {self._table.meta.get('task')!r} has no circuit data (built without "
                    "it); rebuild it with `acd tables build` (circuit data is on by default)"
                )
            k_table, k_env = int(self._table.meta["n_candidates"]), int(base.settings.n_candidates)
            if k_table != k_env:
                raise ACDError(
                    f"the circuit track needs K = the table's n_candidates ({k_table}), got n_candidates={k_env}"
                )

    # ------------------------------------------------------------------ prompts
    @property
    def n_prompts(self) -> int:
        return self.base.n_prompts

    @property
    def prompts(self) -> list:
        return self.base.prompts

    def case(self, i: int) -> Any:
        return self.base.case(i)

    def circuit(self, i: int) -> CircuitData:
        if i not in self._circuit:
            if self._table is not None:
                c = self._table.circuit
                self._circuit[i] = CircuitData(
                    float(c["kl_empty"][i]), float(c["m_clean"][i]), float(c["m_empty"][i]),
                    c["ref_order"][i], c["ref_curve"][i], c["ref_lcurve"][i], c["atp_joint"][i], c["ig"][i],
                )  # fmt: skip
            else:
                self._circuit[i] = self._measure_circuit(i)
        data = self._circuit[i]
        if self.complement == "patching":  # the stored facts are for ablation: keep(∅) is re-measured
            kl, m = self.query(i, ["keep"], np.zeros((1, self.case(i).n_valid), dtype=bool))
            data = data._replace(kl_empty=float(kl[0]), m_empty=float(m[0]))
        return data

    def _measure_circuit(self, i: int) -> CircuitData:
        from acd_env.circuit_reference import measure_circuit

        case, clean = self.base._entry(i)
        n = case.n_valid
        arrays = measure_circuit(
            self.base.model, clean.tokens, case.features[:n], np.zeros(n, np.float32), case.clean_act[:n],
            clean.logits, case.answer_id, case.cf_answer_id, len(case.features),
            freeze_attention=self.freeze_attention,
        )  # fmt: skip
        fields: dict[str, Any] = {k: (float(v) if np.ndim(v) == 0 else v) for k, v in arrays.items()}
        return CircuitData(**fields)

    # ------------------------------------------------------------------ queries
    def _values(self, case: Any) -> np.ndarray:
        n = case.n_valid
        if self.complement == "ablation":
            return np.zeros(n, np.float32)
        settings = self.base.settings
        if "patching" not in settings.interventions:
            raise ACDError(
                "complement='patching' needs the 'patching' intervention in the env's interventions"
            )
        return np.asarray(case.values[:n, settings.interventions.index("patching")], np.float32)

    def _prompt_key(self, case: Any) -> str:
        p = case.prompt
        return f"{p.clean}|{p.counterfactual or ''}"

    def query(self, i: int, kinds: Sequence[str], members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(KL, m) of each row: kinds[b] ∈ QUERY_KINDS applied to the set members[b] ((B, n_valid) bool)."""
        from acd_env.query_store import query_key

        case = self.case(i)
        n = case.n_valid
        members = np.asarray(members, dtype=bool).reshape(len(kinds), -1)[:, :n]
        for kind in kinds:
            if kind not in QUERY_KINDS:
                raise unknown("query kind", kind, QUERY_KINDS)
        intervene = np.array(
            [~row if kind == "keep" else row for kind, row in zip(kinds, members, strict=True)]
        )
        intervene = intervene.reshape(len(kinds), n)
        values = self._values(case)
        feats = case.features[:n]
        prompt_key = self._prompt_key(case)
        keys = [query_key(prompt_key, self.freeze_attention, feats[row], values[row]) for row in intervene]
        store = self.store()
        found = store.get(keys)
        # the endpoints are known by definition: nothing intervened is the clean run; keep(∅) is stored
        data = self._circuit.get(i) if self.complement == "ablation" else None
        for b, row in enumerate(intervene):
            if not row.any():
                found[b] = (0.0, float(self._clean_m(i)))
            elif data is not None and row.all():
                found[b] = (data.kl_empty, data.m_empty)
        kl = np.array([np.nan if r is None else r[0] for r in found])
        m = np.array([np.nan if r is None else r[1] for r in found])
        missing = [b for b, r in enumerate(found) if r is None]
        if missing:
            unique = list(dict.fromkeys(keys[b] for b in missing))
            rows = [intervene[keys.index(k)] for k in unique]
            new_kl, new_m = self._run(i, np.array(rows))
            store.put(unique, new_kl, new_m)
            got = dict(zip(unique, zip(new_kl, new_m, strict=True), strict=True))
            for b in missing:
                kl[b], m[b] = got[keys[b]]
        return kl, m

    def _clean_m(self, i: int) -> float:
        """The clean run's logit difference (stored with the circuit data; measured when not yet known)."""
        data = self._circuit.get(i)
        if data is not None:
            return data.m_clean
        _, m = self._run(i, np.zeros((1, self.case(i).n_valid), dtype=bool))
        return float(m[0])

    def _run(self, i: int, intervene: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from acd_env.case import clean_run
        from acd_env.set_engine import outcome, run_sets

        model = self.model()
        case = self.case(i)
        if i not in self._clean:
            tokens = torch.as_tensor(case.tokens, dtype=torch.long, device=model.cfg.device)
            logits, _ = clean_run(model, tokens)
            self._clean[i] = (tokens, logits[-1])
        tokens, clean_logits = self._clean[i]
        n = case.n_valid
        logits = run_sets(
            model,
            tokens,
            case.features[:n],
            self._values(case),
            intervene,
            freeze_attention=self.freeze_attention,
        )
        out = outcome(clean_logits, logits, case.answer_id, case.cf_answer_id)
        return out.kl, out.m

    def model(self) -> Any:
        """The model that answers queries the store lacks (replay: loaded on first need, hash-checked)."""
        if self._model is None:
            assert self._table is not None  # no model: a replay backend, which has a table
            meta = self._table.meta
            name = self._model_name or meta["model"]
            try:
                from acd_env.models import load_model, model_info

                model = load_model(name)
            except Exception as e:
                raise ACDError(
                    f"a set query of this replay episode is not in the query store, and model {name!r} that would "
                    f"answer it cannot be loaded ({e}); run with the model available or with a complete store"
                ) from None
            if model_info(model).weights_hash != meta["weights_hash"]:
                raise ACDError(
                    f"model {name!r} has other weights than the circuit table was built with; rebuild the table"
                )
            self._model = model
        return self._model

    def store(self) -> Any:
        if self._store is None:
            from acd_env.query_store import SHIPPED_NAME, QueryStore

            if self._table is not None:
                meta = self._table.meta
                name, weights = meta["model"], meta["weights_hash"]
            else:
                from acd_env.models import model_info

                info = model_info(self.base.model)
                name, weights = info.name, info.weights_hash
            shipped = None
            from acd_env.models import is_toy_model

            if isinstance(name, str) and is_toy_model(name):
                from acd_env.models.toy import toy_dir

                shipped = toy_dir(name) / "tables" / SHIPPED_NAME
            self._store = QueryStore.for_model(name, weights, shipped=shipped)
        return self._store

    # ------------------------------------------------------------------ evaluation
    def score(self, i: int, ranking: Sequence[int]) -> CircuitScore:
        """f, logit faithfulness and necessity of the ranking's first k candidates, k in `K_GRID` (one batch)."""
        n = self.case(i).n_valid
        data = self.circuit(i)
        sizes = grid_sizes(n)
        masks = prefix_masks(ranking, n, sizes)
        kinds = ["keep"] * len(sizes) + ["ablate"] * len(sizes)
        kl, m = self.query(i, kinds, np.concatenate([masks, masks]))
        keep_kl, ablate_kl = kl[: len(sizes)], kl[len(sizes) :]
        return CircuitScore(
            sizes,
            faithfulness(keep_kl, data.kl_empty),
            logit_faithfulness(m[: len(sizes)], data.m_clean, data.m_empty),
            necessity(ablate_kl, data.kl_empty),
        )
