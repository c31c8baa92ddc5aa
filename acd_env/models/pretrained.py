"""Pretrained models through circuit-tracer's own loader (needs the Hugging Face hub and, for speed, a GPU),
or from local files: either side of `HF_MODEL::TRANSCODER_SET` may be a directory (acd_env/models/local.py)."""

from __future__ import annotations

import os
from pathlib import Path
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

    from acd_env.models import local

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if local.is_hf_dir(hf_model) or local.is_transcoder_dir(transcoder_set):
        return _load_local(name, hf_model, transcoder_set, dev)
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

    try:
        return ReplacementModel.from_pretrained(
            hf_model, transcoder_set, backend="transformerlens", device=torch.device(dev), dtype=torch.float32
        )
    except OSError as e:
        raise ACDError(
            f"could not load {name!r} ({hf_model} + {transcoder_set!r}) from the Hugging Face hub: {e}. "
            "It needs network access to the hub and a token that may read the model."
        ) from None


def _load_local(name: str, hf_model: str, transcoder_set: str, device: str) -> Any:
    """Either side local: a Hugging Face checkpoint directory and/or a transcoder directory."""
    import torch

    from acd_env.models import local

    for side, spec, is_dir in (("HF_MODEL", hf_model, local.is_hf_dir), ("TRANSCODER_SET", transcoder_set, local.is_transcoder_dir)):  # fmt: skip
        if ("/" in spec or spec.startswith(".")) and Path(spec).exists() and not is_dir(spec):
            what = (
                "config.json (save_pretrained)"
                if side == "HF_MODEL"
                else "config.yaml (circuit-tracer layout)"
            )
            raise ACDError(f"model {name!r}: {side} directory {spec!r} has no {what}")
    if _offline() and not (local.is_hf_dir(hf_model) and local.is_transcoder_dir(transcoder_set)):
        hub = hf_model if not local.is_hf_dir(hf_model) else transcoder_set
        raise ACDError(
            f"model {name!r}: {hub!r} is not a local directory and the hub is off (HF_HUB_OFFLINE=1); give both "
            "sides as local directories, or set HF_HUB_OFFLINE=0 before importing acd_env"
        )
    transcoders = local.load_transcoders(transcoder_set, torch.device(device), torch.float32)
    if local.is_hf_dir(hf_model):
        return local.load_local_model(hf_model, transcoders, device)
    from circuit_tracer import ReplacementModel

    return ReplacementModel.from_pretrained_and_transcoders(
        hf_model, transcoders, backend="transformerlens", device=torch.device(device), dtype=torch.float32
    )
