"""Pretrained-architecture models from local files: `HF_MODEL::TRANSCODER_SET` where either side is a directory.

- HF_MODEL as a directory: a Hugging Face checkpoint written by `save_pretrained` (config.json with
  `architectures`, weights, tokenizer files). Supported architectures are those circuit-tracer ships
  transcoders for on the TransformerLens backend: `Gemma2ForCausalLM` and `LlamaForCausalLM`.
  TransformerLens 3.2.1 only accepts its official names in `HookedTransformer.from_pretrained`, and for
  Gemma-2 it hard-codes each official size, so the TransformerLens config is built here from the official
  model's own config (`google/gemma-2-2b`, `meta-llama/Llama-3.2-1B`: every flag — RMSNorm before and after
  each block, soft-capping, grouped-query attention, rotary settings, gated MLP) with the sizes, rotary base,
  soft-capping values, window and layer pattern read from the local config.json. The weights go through
  TransformerLens's own converters (`get_pretrained_state_dict`), as `from_pretrained` does, processed as
  circuit-tracer loads them (no LayerNorm folding, no centring).
- TRANSCODER_SET as a directory: circuit-tracer's cache layout — `config.yaml` (`model_kind:
  transcoder_set` with `layer_{i}.safetensors`, or `cross_layer_transcoder` with `W_enc_{i}` /
  `W_dec_{i}.safetensors`; `feature_input_hook`, `feature_output_hook`), read by circuit-tracer's
  `load_transcoders_from_cache`. A hub name (e.g. `gemma`) is loaded as circuit-tracer does.

Nothing here touches the network when both sides are local.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from acd_env.errors import ACDError

# architecture -> the official TransformerLens model whose config flags a local checkpoint inherits
TEMPLATES = {
    "Gemma2ForCausalLM": "google/gemma-2-2b",
    "LlamaForCausalLM": "meta-llama/Llama-3.2-1B",
}


def is_hf_dir(spec: str) -> bool:
    return Path(spec).is_dir() and (Path(spec) / "config.json").is_file()


def is_transcoder_dir(spec: str) -> bool:
    return Path(spec).is_dir() and (Path(spec) / "config.yaml").is_file()


def hooked_config(hf_dir: str | Path, device: str = "cpu", dtype: Any = None) -> Any:
    """The TransformerLens config of a local Gemma-2 / Llama checkpoint (see the module docstring)."""
    import torch
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config
    from transformers import AutoConfig

    hf_dir = Path(hf_dir)
    hf = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    arch = (getattr(hf, "architectures", None) or [None])[0]
    if arch not in TEMPLATES:
        raise ACDError(
            f"{hf_dir}: architecture {arch!r} is not supported for local checkpoints; supported: "
            f"{', '.join(TEMPLATES)} (the architectures circuit-tracer has transcoders for)"
        )
    d = get_pretrained_model_config(TEMPLATES[arch], device=device, dtype=dtype or torch.float32).to_dict()
    n_heads, n_kv = hf.num_attention_heads, getattr(hf, "num_key_value_heads", None)
    d_head = getattr(hf, "head_dim", None) or hf.hidden_size // n_heads
    d.update(
        d_model=hf.hidden_size,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=hf.intermediate_size,
        n_layers=hf.num_hidden_layers,
        n_ctx=min(int(hf.max_position_embeddings), int(d["n_ctx"])),
        eps=hf.rms_norm_eps,
        d_vocab=hf.vocab_size,
        d_vocab_out=hf.vocab_size,
        n_key_value_heads=n_kv if n_kv not in (None, n_heads) else None,
        rotary_dim=d_head,
        rotary_base=float(getattr(hf, "rope_theta", d["rotary_base"])),
        model_name=hf_dir.name,
        tokenizer_name=str(hf_dir),  # local: TransformerLens and create_graph_files reload it from here
        original_architecture=arch,
        init_weights=False,
    )
    if arch == "Gemma2ForCausalLM":
        d["act_fn"] = hf.hidden_activation or hf.hidden_act
        d["attn_scale"] = float(hf.query_pre_attn_scalar) ** 0.5
        d["attn_scores_soft_cap"] = float(hf.attn_logit_softcapping or -1.0)
        d["output_logits_soft_cap"] = float(hf.final_logit_softcapping or -1.0)
        d["window_size"] = int(hf.sliding_window)
        # from the checkpoint's own layer pattern (HF: layer 0 slides); TransformerLens 3.2.1 hard-codes the
        # opposite order for the official Gemma-2 names, which only matters beyond the 4096-token window
        d["attn_types"] = ["local" if t == "sliding_attention" else "global" for t in hf.layer_types]
    else:
        d["act_fn"] = hf.hidden_act
        d["attn_scale"] = float(d_head) ** 0.5
        scaling = getattr(hf, "rope_scaling", None) or {}
        if scaling.get("rope_type", scaling.get("type")) == "llama3":
            d.update(
                use_NTK_by_parts_rope=True,
                NTK_by_parts_factor=float(scaling["factor"]),
                NTK_by_parts_low_freq_factor=float(scaling["low_freq_factor"]),
                NTK_by_parts_high_freq_factor=float(scaling["high_freq_factor"]),
                NTK_original_ctx_len=int(scaling["original_max_position_embeddings"]),
            )
        else:
            d["use_NTK_by_parts_rope"] = False
    d.pop("n_params", None)
    return HookedTransformerConfig.from_dict(d)


def load_transcoders(spec: str, device: Any, dtype: Any) -> Any:
    """A TranscoderSet or CrossLayerTranscoder from a local directory (circuit-tracer's cache layout) or,
    for any other string, circuit-tracer's hub loader (`gemma`, `llama`, a repo id)."""
    if is_transcoder_dir(spec):
        from circuit_tracer.utils.caching import load_transcoders_from_cache

        path = Path(spec).resolve()
        transcoders, _ = load_transcoders_from_cache(
            path.name,
            cache_dir=path.parent,
            device=device,
            dtype=dtype,
            lazy_encoder=False,
            lazy_decoder=False,
        )
        return transcoders
    from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

    transcoders, _ = load_transcoder_from_hub(spec, device=device, dtype=dtype)
    return transcoders


def load_local_model(hf_dir: str, transcoders: Any, device: str) -> Any:
    """A circuit-tracer ReplacementModel (TransformerLens backend) from a local Hugging Face checkpoint."""
    import torch
    from circuit_tracer import ReplacementModel
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict
    from transformers import AutoModelForCausalLM

    from acd_env.models.tokenizer import load_tokenizer_dir
    from acd_env.models.toy import to_replacement_keys

    cfg = hooked_config(hf_dir, device=device, dtype=torch.float32)
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True, dtype=torch.float32)
    state = get_pretrained_state_dict(str(Path(hf_dir).resolve()), cfg, hf_model, dtype=torch.float32)
    del hf_model
    tokenizer = load_tokenizer_dir(Path(hf_dir))
    model = ReplacementModel.from_config(cfg, transcoders, backend="transformerlens", tokenizer=tokenizer)
    missing, unexpected = model.load_state_dict(to_replacement_keys(state), strict=False)
    params = {name for name, _ in model.named_parameters()}  # buffers (masks, rotary tables) are built
    missing = [m for m in missing if m in params and not m.startswith("transcoders.")]
    if missing or unexpected:
        raise ACDError(f"{hf_dir}: converted weights do not match the config: {missing=} {unexpected=}")
    model.to(torch.device(device))
    model.eval()
    return model


def fingerprint(hf_model: str, transcoder_set: str) -> str:
    """A cheap identity of a local model pair: config files and the names and sizes of the weight files
    (reading gigabytes of weights to hash them would cost minutes on a real model)."""
    h = hashlib.sha256()
    for spec in (hf_model, transcoder_set):
        path = Path(spec)
        if not path.is_dir():
            h.update(spec.encode())
            continue
        for f in sorted(path.rglob("*")):
            if f.is_file():
                h.update(f.relative_to(path).as_posix().encode())
                if f.suffix in {".json", ".yaml"}:
                    h.update(f.read_bytes())
                else:
                    h.update(json.dumps(f.stat().st_size).encode())
    return h.hexdigest()[:16]
