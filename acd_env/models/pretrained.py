"""Pretrained models through circuit-tracer's own loader (needs the Hugging Face hub and, for speed, a GPU)."""

from __future__ import annotations

import os
from typing import Any

from acd_env.errors import ACDError

# acd name -> (Hugging Face model, circuit-tracer transcoder set)
PRETRAINED = {
    "gemma-2-2b": ("google/gemma-2-2b", "gemma"),
    "llama-3.2-1b": ("meta-llama/Llama-3.2-1B", "llama"),
}


def parse_pretrained(name: str) -> tuple[str, str] | None:
    """`gemma-2-2b`, `llama-3.2-1b`, or any circuit-tracer pair written `HF_MODEL::TRANSCODER_SET`."""
    if name in PRETRAINED:
        return PRETRAINED[name]
    if "::" in name:
        model, _, transcoders = name.partition("::")
        if model and transcoders:
            return model, transcoders
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def load_pretrained(name: str, hf_model: str, transcoder_set: str, device: str | None) -> Any:
    import torch

    if _offline():
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(hf_model, local_files_only=True)
        except Exception:
            raise ACDError(
                f"model {name!r} ({hf_model} with circuit-tracer transcoders {transcoder_set!r}) needs the "
                "Hugging Face hub and is not in the local cache. Set HF_HUB_OFFLINE=0 before importing acd_env, "
                "log in with a token that may read the model (`huggingface-cli login`), and use a GPU "
                "(device='cuda') for speed; or pass a ready ReplacementModel. Offline, use a toy model: "
                "'toy-4l'."
            ) from None
    from circuit_tracer import ReplacementModel

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return ReplacementModel.from_pretrained(
            hf_model, transcoder_set, backend="transformerlens", device=torch.device(dev), dtype=torch.float32
        )
    except OSError as e:
        raise ACDError(
            f"could not load {name!r} ({hf_model} + {transcoder_set!r}) from the Hugging Face hub: {e}. "
            "It needs network access to the hub and a token that may read the model."
        ) from None
