"""Model zoo: embedded toy models (offline) and pretrained circuit-tracer models (hub + GPU)."""

from acd_env.models.registry import (
    DEFAULT_MODEL,
    ModelInfo,
    available_models,
    is_toy_model,
    load_model,
    load_tokenizer,
    model_info,
    toy_config,
)

__all__ = [
    "DEFAULT_MODEL",
    "ModelInfo",
    "available_models",
    "is_toy_model",
    "load_model",
    "load_tokenizer",
    "model_info",
    "toy_config",
]
