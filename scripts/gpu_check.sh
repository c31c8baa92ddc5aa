#!/usr/bin/env bash
# Measure the real-model figures of BENCHMARKS.md on whatever model is available here (a GPU machine):
# live step ÷ feature_intervention, batched sweep speed-up (with its equality check) and attribution time.
#
#   scripts/gpu_check.sh [MODEL] [DEVICE] [OUT_JSON]
#
# MODEL: gemma-2-2b (default; needs the hub or its files in the HF cache), llama-3.2-1b, or a local pair
#        /path/to/hf_checkpoint::/path/to/transcoders (acd_env/models/local.py; works with HF_HUB_OFFLINE=1).
# DEVICE: cuda (default) or cpu. OUT_JSON: where the figures go (default gpu_check.json).
set -euo pipefail
MODEL="${1:-gemma-2-2b}"
DEVICE="${2:-cuda}"
OUT="${3:-gpu_check.json}"
PY="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
[ -x "$PY" ] || PY=python
cd "$(dirname "$0")/.."
exec "$PY" - "$MODEL" "$DEVICE" "$OUT" <<'PYEOF'
import json, statistics, sys, time

import torch

from acd_env.models import load_model
from acd_env.tasks import load_task

model_name, device, out = sys.argv[1:4]
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
t0 = time.perf_counter()
model = load_model(model_name, device)
figures = {"model": model_name, "device": device, "load_s": time.perf_counter() - t0,
           "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None}
# the seed suite holds text prompts for the pretrained models; a model with the toy vocabulary gets toy prompts
try:
    prompts = load_task("seed-ioi", model=model, split="test")[:3]
except Exception:
    prompts = load_task("ioi", split="test", n=3)

from acd_env.attribution.graph import attribute_graph
from acd_env.backends import LiveBackend
from acd_env.case import CaseSettings
from acd_env.interventions import Intervention, run_batch


def timed(fn):
    sync(); t = time.perf_counter(); r = fn(); sync()
    return time.perf_counter() - t, r


attr = []
for p in prompts:
    tokens = model.ensure_tokenized(p.clean)
    s, graph = timed(lambda: attribute_graph(model, tokens))
    attr.append({"n_tokens": len(tokens), "attribution_s": s, "n_features": int(len(graph.selected_features))})
figures["attribution"] = attr

backend = LiveBackend(model, prompts[:1], CaseSettings())
case, clean = backend._entry(0)
rows = [Intervention(*(int(x) for x in case.features[k]), float(case.values[k, t]))
        for k in range(case.n_valid) for t in range(case.values.shape[1])]
run_batch(model, clean.tokens, rows, clean.activations)  # warm-up
batched = min(timed(lambda: run_batch(model, clean.tokens, rows, clean.activations))[0] for _ in range(3))
result = run_batch(model, clean.tokens, rows, clean.activations)
loop, max_diff, step_times = 0.0, 0.0, []
for i, row in enumerate(rows):
    s, (logits, _) = timed(lambda row=row: model.feature_intervention(clean.tokens, [tuple(row)], freeze_attention=False))
    loop += s
    max_diff = max(max_diff, float((logits[0, -1] - result.logits[i]).abs().max()))
for i in range(min(20, len(rows))):
    k, t = divmod(i, case.values.shape[1])
    s, _ = timed(lambda k=k, t=t: backend.step(0, k, t))
    step_times.append(s)
bare = statistics.median([timed(lambda row=row: model.feature_intervention(clean.tokens, [tuple(row)], freeze_attention=False))[0] for row in rows[:20]])
figures.update(sweep_rows=len(rows), batched_s=batched, loop_s=loop, batched_speedup=loop / batched,
               batched_max_abs_diff=max_diff, feature_intervention_ms=bare * 1e3,
               live_step_ms=statistics.median(step_times) * 1e3,
               live_step_over_feature_intervention=statistics.median(step_times) / bare)
if device.startswith("cuda"):
    figures["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
print(json.dumps(figures, indent=2))
open(out, "w").write(json.dumps(figures, indent=2) + "\n")
PYEOF
