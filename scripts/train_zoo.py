"""Train one toy model of the embedded zoo and write it into the package (or --out).

    python scripts/train_zoo.py --name toy-4l            # reproduces acd_env/models/zoo/toy-4l
    python scripts/train_zoo.py --name toy-4l --quick --out /tmp/q   # seconds; used by a smoke test

Recipe: a GPT-2-style TransformerLens model trained on the toy grammar of
`acd_env.tasks.grammar` with label noise (answers are not certain) and component dropout (circuits spread
over many features), then one ReLU transcoder per layer trained on the model's own MLP inputs/outputs with an
activation x decoder-norm sparsity penalty. With one thread (the default) the build is bit-reproducible.
Files are written to a temporary directory and renamed into place, so a killed build leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import torch.nn.functional as F

from acd_env.models.tokenizer import build_tokenizer
from acd_env.models.toy import FEATURE_INPUT_HOOK, FEATURE_OUTPUT_HOOK, ZOO_DIR, hooked_config
from acd_env.tasks.grammar import VOCAB, training_sentence

BASE = dict(
    n_layers=4, d_model=128, n_heads=4, d_mlp=512, n_ctx=64, d_transcoder=1024,
    steps=2000, batch=64, seq_len=40, lr=2e-3, label_noise=0.15, p_head=0.25, p_mlp=0.10,
    tc_steps=1500, tc_batch=1024, tc_lr=3e-3, l1=1.5, tc_corpus_batches=40, seed=0,
)  # fmt: skip
RECIPES = {
    "toy-4l": dict(BASE),
    # the held-out-model partner: another seed and width. d_model 160 / 5 heads with seed 2 missed the
    # induction accuracy bar (0.925); d_model 144 with seed 2 passed every bar (BENCHMARKS.md).
    "toy-4l-w144": dict(BASE, d_model=144, n_heads=4, d_mlp=576, seed=2),
}
QUICK = dict(
    n_layers=2, d_model=32, n_heads=2, d_mlp=128, d_transcoder=64, steps=30, batch=16,
    tc_steps=30, tc_batch=256, tc_corpus_batches=4,
)  # fmt: skip


def make_batch(word_ids: dict[str, int], rng: random.Random, batch: int, seq_len: int, noise: float):
    rows = torch.full((batch, seq_len), word_ids["<pad>"], dtype=torch.long)
    for i in range(batch):
        words = ["<bos>"]
        while len(words) < seq_len:
            words += training_sentence(rng, noise)
        rows[i] = torch.tensor([word_ids[w] for w in words[:seq_len]])
    return rows


def component_dropout_hooks(n_layers: int, p_head: float, p_mlp: float):
    def drop_heads(z, hook):  # (batch, pos, head, d_head): whole heads per sequence
        keep = (torch.rand(z.shape[0], 1, z.shape[2], 1) > p_head).to(z.dtype)
        return z * keep / (1 - p_head)

    def drop_mlp(x, hook):
        return F.dropout(x, p_mlp, training=True)

    hooks = [(f"blocks.{layer}.attn.hook_z", drop_heads) for layer in range(n_layers)] if p_head > 0 else []
    hooks += [(f"blocks.{layer}.mlp.hook_post", drop_mlp) for layer in range(n_layers)] if p_mlp > 0 else []
    return hooks


def train_model(model, word_ids, hp, log):
    rng = random.Random(hp["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=hp["steps"], pct_start=0.05)
    hooks = component_dropout_hooks(hp["n_layers"], hp["p_head"], hp["p_mlp"])
    model.train()
    losses, t0 = [], time.time()
    for step in range(hp["steps"]):
        tokens = make_batch(word_ids, rng, hp["batch"], hp["seq_len"], hp["label_noise"])
        with model.hooks(fwd_hooks=hooks):
            logits = model(tokens)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)),
            tokens[:, 1:].reshape(-1),
            ignore_index=word_ids["<pad>"],
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 250 == 0 or step == hp["steps"] - 1:
            log(
                f"model step {step:5d}  loss {sum(losses[-50:]) / len(losses[-50:]):.3f}  {time.time() - t0:.0f}s"
            )
    model.eval()
    return sum(losses[-50:]) / len(losses[-50:])


@torch.no_grad()
def collect_mlp_io(model, word_ids, hp):
    rng = random.Random(hp["seed"] + 1)
    names = {
        f"blocks.{layer}.{h}"
        for layer in range(hp["n_layers"])
        for h in (FEATURE_INPUT_HOOK, FEATURE_OUTPUT_HOOK)
    }
    xs = {layer: [] for layer in range(hp["n_layers"])}
    ys = {layer: [] for layer in range(hp["n_layers"])}
    for _ in range(hp["tc_corpus_batches"]):
        tokens = make_batch(word_ids, rng, 64, hp["seq_len"], hp["label_noise"])
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        mask = tokens != word_ids["<pad>"]
        mask[:, 0] = False  # BOS: circuit-tracer zeroes position 0
        for layer in xs:
            xs[layer].append(cache[f"blocks.{layer}.{FEATURE_INPUT_HOOK}"][mask])
            ys[layer].append(cache[f"blocks.{layer}.{FEATURE_OUTPUT_HOOK}"][mask])
    return {k: torch.cat(v) for k, v in xs.items()}, {k: torch.cat(v) for k, v in ys.items()}


def train_transcoders(model, word_ids, hp, log):
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet

    xs, ys = collect_mlp_io(model, word_ids, hp)
    d_model, d_tc, steps = hp["d_model"], hp["d_transcoder"], hp["tc_steps"]
    transcoders, stats = {}, {}
    for layer in range(hp["n_layers"]):
        torch.manual_seed(hp["seed"] * 100 + layer)
        tc = SingleLayerTranscoder(
            d_model, d_tc, F.relu, layer, device=torch.device("cpu"), dtype=torch.float32
        )
        x, y = xs[layer], ys[layer]
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(d_tc, d_model) / d_model**0.5)
            tc.W_dec.copy_(tc.W_enc * 0.1)
            tc.b_enc.zero_()
            tc.b_dec.copy_(y.mean(0))
        opt = torch.optim.Adam(tc.parameters(), lr=hp["tc_lr"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for step in range(steps):
            idx = torch.randint(0, x.shape[0], (hp["tc_batch"],))
            acts = tc.encode(x[idx])
            mse = (acts @ tc.W_dec + tc.b_dec - y[idx]).pow(2).sum(-1).mean()
            sparsity = (acts * tc.W_dec.norm(dim=-1)).sum(-1).mean()
            loss = mse + hp["l1"] * min(1.0, step / (0.2 * steps)) * sparsity  # L1 ramped over the first 20 %
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            acts = tc.encode(x)
            fvu = (acts @ tc.W_dec + tc.b_dec - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
            stats[layer] = {
                "fvu": round(float(fvu), 4),
                "l0": round(float((acts > 0).float().sum(-1).mean()), 1),
                "alive": int((acts > 0).any(0).sum()),
                "n_tokens": int(x.shape[0]),
            }
        for p in tc.parameters():
            p.requires_grad_(False)
        transcoders[layer] = tc
        log(f"transcoder layer {layer}: {stats[layer]}")
    tset = TranscoderSet(
        transcoders,
        feature_input_hook=FEATURE_INPUT_HOOK,
        feature_output_hook=FEATURE_OUTPUT_HOOK,
        scan="acd",
    )
    return tset, stats


def build(name: str, hp: dict, out: Path, log=print) -> dict:
    from safetensors.torch import save_file
    from transformer_lens import HookedTransformer

    torch.manual_seed(hp["seed"])
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        t0 = time.time()
        tokenizer = build_tokenizer(VOCAB, tmp / "tokenizer")
        word_ids = tokenizer.get_vocab()
        model = HookedTransformer(hooked_config(hp, tmp / "tokenizer", len(VOCAB), name), tokenizer=tokenizer)
        final_loss = train_model(model, word_ids, hp, log)
        t1 = time.time()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        tset, stats = train_transcoders(model, word_ids, hp, log)
        tset.to_safetensors(str(tmp / "transcoders"))
        arch_keys = ("n_layers", "d_model", "n_heads", "d_mlp", "n_ctx", "d_transcoder", "seed")
        config = {
            "name": name,
            "arch": {k: hp[k] for k in arch_keys},
            "recipe": hp,
            "build": {
                "final_loss": round(final_loss, 4),
                "model_train_s": round(t1 - t0, 1),
                "transcoder_train_s": round(time.time() - t1, 1),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "transcoders": stats,
            },
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="toy-4l", choices=sorted(RECIPES))
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: the package zoo)")
    ap.add_argument("--quick", action="store_true", help="a tiny model in seconds (smoke test)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = bit-reproducible)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    hp = dict(RECIPES[args.name], **(QUICK if args.quick else {}))
    out = args.out or ZOO_DIR / args.name
    config = build(args.name, hp, out, log=lambda s: print(s, flush=True))
    print(json.dumps(config["build"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
