"""Check prompts against a model's tokenizer before any model call, with errors that name the bad value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from acd_env.errors import ACDError, unknown
from acd_env.tasks.prompt import Prompt


def _tokenizer_and_ctx(model: Any) -> tuple[Any, int] | None:
    if isinstance(model, str):
        from acd_env.models import is_toy_model, load_tokenizer

        if not is_toy_model(model):
            from acd_env.models import available_models
            from acd_env.models.pretrained import parse_pretrained

            if parse_pretrained(model) is None:
                raise unknown("model", model, [*available_models(), "HF_MODEL::TRANSCODER_SET"])
            return None  # pretrained tokenizers need the hub; checked later on the loaded model
        tok = load_tokenizer(model)
        from acd_env.models import toy_config

        return tok, toy_config(model)["n_ctx"]
    return model.tokenizer, int(model.cfg.n_ctx)


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` as circuit-tracer sees them (with BOS)."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


def validate_prompt(prompt: Prompt, tokenizer: Any, n_ctx: int) -> int:
    """Raise ACDError if `prompt` cannot run on the model; return its token length (with BOS)."""
    if not prompt.clean or not prompt.clean.strip():
        raise ACDError(f"prompt {prompt.id!r} is empty; give a non-empty text")
    unk = tokenizer.unk_token_id
    bos = tokenizer.bos_token_id
    special = {i for i in getattr(tokenizer, "all_special_ids", ()) if i != unk}
    for field in ("clean", "counterfactual"):
        text = getattr(prompt, field)
        if text is None:
            continue
        ids = token_ids(tokenizer, text)
        if unk is not None and unk in ids:
            vocab = tokenizer.get_vocab()
            bad = sorted({w for w in text.split() if w not in vocab or w == tokenizer.unk_token})
            raise ACDError(
                f"prompt {prompt.id!r} {field} has words outside the toy vocabulary: {bad}; "
                f"the toy models know {len(vocab)} words (see acd_env.tasks.grammar.VOCAB)"
            )
        body = ids[1:] if bos is not None and ids and ids[0] == bos else ids
        reserved = [tokenizer.convert_ids_to_tokens(i) for i in body if i in special]
        if reserved:
            raise ACDError(
                f"prompt {prompt.id!r} {field} contains special token(s) {sorted(set(reserved))}; write plain "
                "words (the tokenizer adds the BOS token itself)"
            )
        if len(ids) > n_ctx:
            raise ACDError(
                f"prompt {prompt.id!r} {field} is {len(ids)} tokens long; the model's context holds {n_ctx}"
            )
    if prompt.counterfactual is not None:
        n_clean = len(token_ids(tokenizer, prompt.clean))
        n_cf = len(token_ids(tokenizer, prompt.counterfactual))
        if n_clean != n_cf:
            raise ACDError(
                f"prompt {prompt.id!r}: the counterfactual has {n_cf} tokens but the clean prompt has "
                f"{n_clean}; activation patching needs the same token length"
            )
    for field in ("answer", "counterfactual_answer"):
        word = getattr(prompt, field)
        if word is None:
            continue
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == unk or ids[0] in special:
            raise ACDError(
                f"prompt {prompt.id!r} {field} {word!r} is not a single token of the model's vocabulary "
                "(the answer must be one known word)"
            )
    return len(token_ids(tokenizer, prompt.clean))


def validate_prompts(prompts: Sequence[Prompt], model: Any) -> None:
    found = _tokenizer_and_ctx(model)
    if found is None:
        return
    tokenizer, n_ctx = found
    for p in prompts:
        validate_prompt(p, tokenizer, n_ctx)
