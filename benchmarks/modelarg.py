"""The `--model` argument of the CLI: a zoo or pretrained name (`HF_MODEL::TRANSCODER_SET`, either side a hub
name or a local directory), or a toy model directory (with config.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acd_env.errors import ACDError


def is_model_dir(spec: str) -> bool:
    """A toy model directory (its config.json has an `arch` block; a Hugging Face checkpoint's does not)."""
    config = Path(spec) / "config.json"
    if not (Path(spec).is_dir() and config.is_file()):
        return False
    import json

    try:
        return "arch" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def check_model_name(spec: str) -> None:
    """Raise ACDError unless `spec` names a known model or a toy model directory."""
    from acd_env.models import available_models
    from acd_env.models.pretrained import parse_pretrained

    if is_model_dir(spec) or spec in available_models() or parse_pretrained(spec) is not None:
        return
    raise ACDError(
        f"unknown model {spec!r}; valid models: {', '.join(available_models())}, 'HF_MODEL::TRANSCODER_SET' "
        "(each a hub name or a local directory), or a toy model directory (holding config.json)"
    )


def load_model_arg(spec: str, device: str | None = None) -> Any:
    """A ReplacementModel for a name (acd_env.models.load_model) or a toy model directory."""
    check_model_name(spec)
    if is_model_dir(spec):
        from acd_env.models.toy import load_toy

        path = Path(spec)
        return load_toy(path.name, device, root=path)
    from acd_env.models import load_model

    return load_model(spec, device)
