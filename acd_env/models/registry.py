"""`load_model` / `available_models`: the toy zoo shipped in the package and pretrained names."""

from __future__ import annotations

import atexit
import weakref
from dataclasses import dataclass
from typing import Any

from acd_env.errors import ACDError, unknown
from acd_env.models import toy
from acd_env.models.pretrained import PRETRAINED, load_pretrained, parse_pretrained

DEFAULT_MODEL = "toy-4l"


@dataclass(frozen=True)
class ModelInfo:
    """What a circuit table and a results row record about a model."""

    name: str
    weights_hash: str
    n_layers: int
    d_transcoder: int
    d_vocab: int


_INFO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE: dict[tuple[str, str], Any] = {}


@atexit.register
def _release_models() -> None:
    import gc

    _CACHE.clear()
    gc.collect()


def quiet_shutdown() -> None:
    """circuit-tracer's `TransformerLensReplacementModel.__del__` resets hooks; during interpreter shutdown
    torch is half torn down and it prints an ignored TypeError. Skip it only while the interpreter finalises."""
    import sys

    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel as cls,
    )

    original = cls.__dict__.get("__del__")
    if original is None or getattr(original, "_acd_quiet", False):
        return

    def __del__(self) -> None:
        if not sys.is_finalizing():
            original(self)

    __del__._acd_quiet = True  # type: ignore[attr-defined]
    cls.__del__ = __del__


def available_models() -> list[str]:
    """The embedded toy models (offline) followed by the pretrained names (hub + GPU)."""
    return [*toy.toy_names(), *PRETRAINED]


def is_toy_model(name: str) -> bool:
    return name in toy.toy_names()


def load_tokenizer(name: str) -> Any:
    if not is_toy_model(name):
        raise unknown("toy model", name, toy.toy_names())
    from acd_env.models.tokenizer import load_tokenizer_dir

    return load_tokenizer_dir(toy.toy_dir(name) / "tokenizer")


def toy_config(name: str) -> dict:
    if not is_toy_model(name):
        raise unknown("toy model", name, toy.toy_names())
    return toy.toy_config(name)


def load_model(name: str | Any = DEFAULT_MODEL, device: str | None = None, *, cache: bool = True) -> Any:
    """A circuit-tracer `ReplacementModel` by name, or `name` itself if it already is one.

    Toy models load offline in seconds on CPU and are cached per (name, device) unless `cache=False`
    (the model is stateless between calls: circuit-tracer installs its hooks in context managers).
    Pretrained names (`gemma-2-2b`, `llama-3.2-1b`, or `HF_MODEL::TRANSCODER_SET`) go through
    `ReplacementModel.from_pretrained`; offline they fail at once with a message that says what they need.
    """
    if not isinstance(name, str):
        if hasattr(name, "feature_intervention") and hasattr(name, "transcoders"):
            return name
        raise ACDError(f"model must be a model name or a ReplacementModel, got {type(name).__name__}")
    from acd_env.models.device import check_device

    device = check_device(device)
    key = (name, device or "cpu")
    if cache and key in _CACHE:
        return _CACHE[key]
    quiet_shutdown()
    if is_toy_model(name):
        model = toy.load_toy(name, device)
        path = toy.toy_dir(name)
        arch = toy.toy_config(name)
        _INFO[model] = ModelInfo(
            name, toy.weights_hash(path), arch["n_layers"], arch["d_transcoder"], int(model.cfg.d_vocab)
        )
    elif (pair := parse_pretrained(name)) is not None:
        model = load_pretrained(name, *pair, device)
        from acd_env.models.local import fingerprint, is_hf_dir

        if is_hf_dir(pair[0]):  # local files: identified by name and file listing, not by hashing the weights
            _INFO[model] = ModelInfo(
                name,
                fingerprint(*pair),
                int(model.cfg.n_layers),
                int(model.transcoders.d_transcoder),
                int(model.cfg.d_vocab),
            )
    else:
        raise unknown("model", name, [*available_models(), "HF_MODEL::TRANSCODER_SET"])
    if cache:
        _CACHE[key] = model
    return model


def model_info(model: Any) -> ModelInfo:
    """Name and weights hash of a loaded model (computed from its weights if it was not loaded by name)."""
    if model in _INFO:
        return _INFO[model]
    import hashlib

    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    info = ModelInfo(
        str(getattr(model.cfg, "model_name", "custom")),
        h.hexdigest()[:16],
        int(model.cfg.n_layers),
        int(model.transcoders.d_transcoder),
        int(model.cfg.d_vocab),
    )
    _INFO[model] = info
    return info
