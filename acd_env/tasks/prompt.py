"""The `Prompt` record every task suite yields."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Prompt:
    """One prompt of a task suite.

    Attributes:
        id: stable identifier, unique within a suite and split (e.g. ``"ioi/test/007"``).
        task: suite name.
        clean: the prompt text (no BOS; the model's tokenizer adds it).
        answer: the expected next token (None for custom prompts without one: the clean top-1 is used).
        counterfactual: a prompt of the same token length whose answer differs (used by activation
            patching), or None.
        counterfactual_answer: the answer to `counterfactual`, or None.
    """

    id: str
    task: str
    clean: str
    answer: str | None
    counterfactual: str | None = None
    counterfactual_answer: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
