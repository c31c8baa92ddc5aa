"""The embedded toy models: their files in package data and how they become a circuit-tracer
`ReplacementModel` offline (`ReplacementModel.from_config` + the trained weights, renamed).

A zoo directory holds `config.json` (architecture, training recipe, build report), `model.safetensors`
(TransformerLens state dict), `transcoders/layer_{i}.safetensors` (one ReLU transcoder per layer,
`ln2.hook_normalized -> hook_mlp_out`) and `tokenizer/`.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
FEATURE_INPUT_HOOK = "ln2.hook_normalized"
FEATURE_OUTPUT_HOOK = "hook_mlp_out"


def toy_dir(name: str) -> Path:
    return ZOO_DIR / name


def toy_names() -> list[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


@cache
def _read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def toy_config(name: str, root: Path | None = None) -> dict:
    """The `arch` block of a toy model's config (n_layers, d_model, n_heads, d_mlp, n_ctx, ...)."""
    return _read_config(root or toy_dir(name))["arch"]


def hooked_config(arch: dict, tokenizer_dir: Path, d_vocab: int, name: str) -> Any:
    import torch
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=arch["n_layers"],
        d_model=arch["d_model"],
        n_heads=arch["n_heads"],
        d_head=arch["d_model"] // arch["n_heads"],
        d_mlp=arch["d_mlp"],
        d_vocab=d_vocab,
        n_ctx=arch["n_ctx"],
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        model_name=name,
        tokenizer_name=str(tokenizer_dir),  # a local dir: create_graph_files reloads the tokenizer from it
        original_architecture="GPT2LMHeadModel",
        default_prepend_bos=True,
        seed=arch.get("seed", 0),
        device="cpu",
        dtype=torch.float32,
    )


def weight_files(path: Path) -> list[Path]:
    return [path / "model.safetensors", *sorted((path / "transcoders").glob("layer_*.safetensors"))]


def weights_hash(path: Path) -> str:
    """sha256 over the model and transcoder weight files (what a circuit table is tied to).

    Every replay env checks its tables against this, so the digest is memoised per directory and per the
    files' sizes and modification times (a rebuilt model gets a fresh digest)."""
    files = weight_files(path)
    return _digest(Path(path), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@lru_cache(maxsize=32)
def _digest(path: Path, stats: tuple) -> str:
    h = hashlib.sha256()
    for f in weight_files(path):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def to_replacement_keys(state_dict: dict) -> dict:
    """Rename a HookedTransformer state dict to the ReplacementModel's (MLPs and unembed get wrapped)."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "blocks" and parts[2] == "mlp":
            key = ".".join([*parts[:3], "old_mlp", *parts[3:]])
        elif parts[0] == "unembed":
            key = ".".join(["unembed", "old_unembed", *parts[1:]])
        out[key] = value
    return out


def load_toy(name: str, device: str | None = None, root: Path | None = None) -> Any:
    """Load a toy model directory as a ReplacementModel (float32; CPU unless `device`)."""
    import torch
    from circuit_tracer import ReplacementModel
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
    from safetensors.torch import load_file

    from acd_env.models.device import check_device
    from acd_env.models.tokenizer import load_tokenizer_dir

    device = check_device(device)
    path = root or toy_dir(name)
    arch = toy_config(name, path)
    tokenizer = load_tokenizer_dir(path / "tokenizer")
    cfg = hooked_config(arch, path / "tokenizer", len(tokenizer), name)
    dev = torch.device(device or "cpu")
    cfg.device = str(dev)
    transcoders = load_transcoder_set(
        {
            layer: str(path / "transcoders" / f"layer_{layer}.safetensors")
            for layer in range(arch["n_layers"])
        },
        scan=f"acd-{name}",
        feature_input_hook=FEATURE_INPUT_HOOK,
        feature_output_hook=FEATURE_OUTPUT_HOOK,
        device=dev,
        dtype=torch.float32,
        lazy_encoder=False,
        lazy_decoder=False,
    )
    model = ReplacementModel.from_config(cfg, transcoders, backend="transformerlens", tokenizer=tokenizer)
    state = to_replacement_keys(load_file(str(path / "model.safetensors"), device=str(dev)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.startswith("transcoders.")]
    if missing or unexpected:
        raise RuntimeError(f"toy model {name!r} weights do not match its config: {missing=} {unexpected=}")
    model.eval()
    return model
