"""`reference`: privileged; declares the stored beam-search reference circuit. The ceiling row.

The harness hands it `env.unwrapped.reference` with `attach_reference`; no other agent gets it. Its circuit
efficiency is 1 by construction (the evaluation re-measures what the table stores), so the row checks the
evaluation as much as it marks the ceiling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from acd_env.errors import ACDError
from agents.circuit.base import CircuitAgent


class ReferenceAgent(CircuitAgent):
    name = "reference"
    uses_queries = False
    privileged = True

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._reference: Callable[[], Any] | None = None

    def attach_reference(self, reference: Callable[[], Any]) -> None:
        if not callable(reference):
            raise ACDError(f"attach_reference needs a callable (env.unwrapped.reference), got {reference!r}")
        self._reference = reference

    def circuit_ranking(self) -> list[int]:
        if self._reference is None:
            raise ACDError(
                "the reference agent is privileged and has no reference attached: call "
                "agent.attach_reference(env.unwrapped.reference) first"
            )
        order = self._reference().ref_order
        return [int(k) for k in order[: self.n_valid]]
