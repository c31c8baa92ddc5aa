"""Tiny random-weight models with the architecture of Gemma-2 and Llama-3.2, and JumpReLU transcoders for them.

`build(kind, root)` writes, in seconds on CPU and without the network:

- `root/<kind>-tiny/`: a Hugging Face checkpoint (`save_pretrained`: config.json, model.safetensors) with the
  real config flags (Gemma-2: RMSNorm before and after attention and MLP, (1 + w) norm weights, embeddings
  scaled by √d_model, attention and final-logit soft-capping, grouped-query attention, alternating sliding-
  window / global layers, GeGLU; Llama-3.2: grouped-query attention, rotary base 500000 with llama3 rope
  scaling, SwiGLU, tied embeddings), 2 layers, d_model 64, and a word-level Hugging Face tokenizer (the
  `tokenizers` library, BOS added by its post-processor) over the toy tasks' vocabulary, so the shipped toy
  prompts run on it;
- `root/<kind>-tc/`: one JumpReLU single-layer transcoder per layer in circuit-tracer's layout
  (`config.yaml` + `layer_{i}.safetensors`; Gemma-2 reads `ln2.hook_normalized` and writes `hook_mlp_out`
  as Gemma Scope does; the Llama set reads `mlp.hook_in`, writes `mlp.hook_out` and has a skip connection),
  thresholds set from the model's own MLP inputs so that about ACTIVE_FRACTION of features fire;
- `root/<kind>-clt/`: a JumpReLU cross-layer transcoder (`W_enc_{i}` / `W_dec_{i}.safetensors`,
  `hook_resid_mid` → `hook_mlp_out`).

Soft-capping values are lowered (attention 8, logits 5; the real ones are 50 and 30) and the sliding window
is 6 tokens (real: 4096) so that random weights actually reach the non-linear parts of every flag.
"""

from __future__ import annotations

import json
from pathlib import Path

D_MODEL, N_LAYERS, D_TC = 64, 2, 256
ACTIVE_FRACTION = 0.05
CALIBRATION = [
    "when alice and bob went to the park , alice gave a ball to",
    "the cat that the dog saw was",
    "one two three four five",
]
TOY_TOKENIZER = Path(__file__).resolve().parents[1] / "acd_env/models/zoo/toy-4l/tokenizer/tokenizer.json"


def _vocab() -> list[str]:
    vocab = json.loads(TOY_TOKENIZER.read_text())["model"]["vocab"]
    return [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def _hf_config(kind: str, vocab: list[str]):
    ids = {w: i for i, w in enumerate(vocab)}
    common = dict(
        vocab_size=len(vocab), hidden_size=D_MODEL, intermediate_size=128, num_hidden_layers=N_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"], pad_token_id=ids["<pad>"],
        tie_word_embeddings=True, attn_implementation="eager",
    )  # fmt: skip
    if kind == "gemma2":
        from transformers import Gemma2Config

        return Gemma2Config(
            **common, architectures=["Gemma2ForCausalLM"], hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=16, attn_logit_softcapping=8.0, final_logit_softcapping=5.0,
            sliding_window=6, rms_norm_eps=1e-6, rope_theta=10000.0,
        )  # fmt: skip
    from transformers import LlamaConfig

    return LlamaConfig(
        **common, architectures=["LlamaForCausalLM"], hidden_act="silu", rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    )  # fmt: skip


def build(kind: str, root: Path, seed: int = 0) -> dict[str, Path]:
    """Write the checkpoint, tokenizer and transcoders of `kind` ("gemma2" or "llama") under `root`."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from acd_env.models.tokenizer import build_tokenizer

    torch.manual_seed(seed)
    root = Path(root)
    hf_dir, tc_dir, clt_dir = root / f"{kind}-tiny", root / f"{kind}-tc", root / f"{kind}-clt"
    vocab = _vocab()
    model = AutoModelForCausalLM.from_config(_hf_config(kind, vocab))
    with torch.no_grad():  # weights large enough that soft-capping and the norms' gains matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (0.0 if kind == "gemma2" else 1.0))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5 * (3.0 if "embed" in name else 1.0))
    model.save_pretrained(str(hf_dir))
    build_tokenizer(vocab, hf_dir)

    gen = torch.Generator().manual_seed(seed + 1)
    in_hook, out_hook = (
        ("ln2.hook_normalized", "hook_mlp_out") if kind == "gemma2" else ("mlp.hook_in", "mlp.hook_out")
    )
    inputs = _mlp_inputs(hf_dir, ["blocks.{}.ln2.hook_normalized"] * N_LAYERS)
    tc_dir.mkdir(parents=True, exist_ok=True)
    for layer in range(N_LAYERS):
        x = inputs[layer]
        w_enc = torch.randn(D_TC, D_MODEL, generator=gen) / D_MODEL**0.5
        b_enc = torch.randn(D_TC, generator=gen) * 0.1
        pre = x @ w_enc.T + b_enc
        tensors = {
            "W_enc": w_enc,
            "W_dec": torch.randn(D_TC, D_MODEL, generator=gen) * 0.3,
            "b_enc": b_enc,
            "b_dec": torch.randn(D_MODEL, generator=gen) * 0.05,
            "activation_function.threshold": torch.quantile(pre, 1 - ACTIVE_FRACTION, dim=0).clamp(min=1e-3),
        }
        if kind == "llama":
            tensors["W_skip"] = torch.randn(D_MODEL, D_MODEL, generator=gen) * 0.02
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tc_dir / f"layer_{layer}.safetensors"))
    _write_yaml(tc_dir, "transcoder_set", in_hook, out_hook, f"{kind}-tiny-tc")

    clt_dir.mkdir(parents=True, exist_ok=True)
    resid_mid = _mlp_inputs(hf_dir, ["blocks.{}.hook_resid_mid"] * N_LAYERS)
    for layer in range(N_LAYERS):
        w_enc = torch.randn(D_TC, D_MODEL, generator=gen) / D_MODEL**0.5
        b_enc = torch.randn(D_TC, generator=gen) * 0.1
        pre = resid_mid[layer] @ w_enc.T + b_enc
        thr = torch.quantile(pre, 1 - ACTIVE_FRACTION, dim=0).clamp(min=1e-3)
        save_file({f"W_enc_{layer}": w_enc, f"b_enc_{layer}": b_enc,
                   f"b_dec_{layer}": torch.randn(D_MODEL, generator=gen) * 0.05, f"threshold_{layer}": thr},
                  str(clt_dir / f"W_enc_{layer}.safetensors"))  # fmt: skip
        w_dec = torch.randn(D_TC, N_LAYERS - layer, D_MODEL, generator=gen) * 0.2
        save_file({f"W_dec_{layer}": w_dec}, str(clt_dir / f"W_dec_{layer}.safetensors"))
    _write_yaml(clt_dir, "cross_layer_transcoder", "hook_resid_mid", "hook_mlp_out", f"{kind}-tiny-clt")
    return {"model": hf_dir, "transcoders": tc_dir, "clt": clt_dir}


def _write_yaml(path: Path, kind: str, in_hook: str, out_hook: str, scan: str) -> None:
    (path / "config.yaml").write_text(
        f"model_kind: {kind}\nfeature_input_hook: {in_hook}\nfeature_output_hook: {out_hook}\nscan: {scan}\n"
    )


def _mlp_inputs(hf_dir: Path, names: list[str]):
    """(n_tokens, d_model) activations at each layer's hook over the calibration prompts (plain
    HookedTransformer, same config and weights as the ReplacementModel will have)."""
    import torch
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict
    from transformers import AutoModelForCausalLM

    from acd_env.models.local import hooked_config
    from acd_env.models.tokenizer import load_tokenizer_dir

    cfg = hooked_config(hf_dir)
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True, dtype=torch.float32)
    tl = HookedTransformer(cfg, load_tokenizer_dir(hf_dir))
    tl.load_state_dict(get_pretrained_state_dict(str(hf_dir.resolve()), cfg, hf), strict=False)
    out: list[list] = [[] for _ in names]
    with torch.no_grad():
        for text in CALIBRATION:
            _, cache = tl.run_with_cache(text)
            for layer, name in enumerate(names):
                out[layer].append(cache[name.format(layer)][0, 1:])
    return [torch.cat(x) for x in out]


def load_float64(model_spec: str):
    """A fresh float64 ReplacementModel of `model_spec`, in which the batched engines and `feature_intervention`
    agree exactly (in float32 they differ by kernel rounding that depends on the batch size).

    Not `copy.deepcopy(model).to(torch.float64)`: a deep copy keeps the closures of circuit-tracer's permanent
    skip-connection hooks, which still call the original's `hook_out_grad` hook points and transcoders, so on the
    copy every intervention (the engine's and `feature_intervention`'s alike) silently does nothing, and a skip
    transcoder's weights stay float32.
    """
    import torch

    from acd_env.models import load_model

    model = load_model(model_spec, cache=False).to(torch.float64)
    model.cfg.dtype = torch.float64
    return model
