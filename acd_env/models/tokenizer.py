"""The toy models' word-level tokenizer: built offline with `tokenizers`, saved beside the weights.

Gotchas handled here: BOS gets a non-zero id and is added by the
tokenizer's own post-processor (so TransformerLens and circuit-tracer tokenise identically), the tokenizer is
created with `add_bos_token=True` and saved to a local directory (so TransformerLens never re-creates it from
the hub), and decoding does not clean up spaces (so decode round-trips).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def build_tokenizer(vocab: Sequence[str], save_dir: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {w: i for i, w in enumerate(vocab)}
    assert ids["<pad>"] == 0 and ids["<bos>"] != 0, "BOS must not have id 0 (circuit-tracer skips a falsy id)"
    tk = Tokenizer(models.WordLevel(vocab=ids, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", ids["<bos>"])]
    )
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )
    save_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(save_dir))
    return load_tokenizer_dir(save_dir)


def load_tokenizer_dir(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
