"""`acd graph`: a prompt's attribution graph as circuit-tracer viewer files, annotated with measured effects.

    acd graph --prompt "when mary and john went to the store john gave a drink to" --agent greedy --out graphs/

Flow: attribute the prompt (acd_env.attribution.graph.attribute_graph) → run one episode of the agent on it with
the live backend, and the batched sweep of every candidate × intervention (`oracle_effects`) → write the graph
with `circuit_tracer.utils.create_graph_files` → annotate it:

- every candidate feature node in `<slug>.json` gets its measured effects: `clerp` (the label the viewer shows)
  reads e.g. `ablation KL 0.231 · greedy step 3`, and an extra `acd` object holds every measurement (kl,
  logit_diff, downstream, n_affected, top1_changed per intervention type) and the agent's step, if it chose it;
- `<slug>.effects.json` lists all candidates (also those pruned from the viewer graph) with the same data, the
  agent's steps and its episode metrics.

Open it in circuit-tracer's local viewer: `circuit-tracer start-server --graph_file_dir OUT` and then
http://localhost:8032/index.html?slug=SLUG (the command prints both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from acd_env.errors import ACDError, check_out_dir, output_error

VIEWER_PORT = 8032


def default_slug(text: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return f"acd-{words or 'prompt'}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _fit_if_needed(agent: Any, model_spec: str, descriptor_names: list[str]) -> str | None:
    """Fit an agent that learns offline on the model's shipped train tables (as `train-test` would)."""
    if not callable(getattr(agent, "fit", None)):
        return None
    from acd_env.models import is_toy_model
    from acd_env.table_store import resolve_tables, shipped_table_path
    from acd_env.tasks import TOY_TASKS
    from benchmarks.protocols import restrict_table

    tasks = [
        t
        for t in TOY_TASKS
        if is_toy_model(model_spec) and shipped_table_path(model_spec, t, "train").is_file()
    ]
    if not tasks:
        if getattr(agent, "learns_offline", False):
            raise ACDError(
                f"agent {agent.name if hasattr(agent, 'name') else agent!r} needs fit(tables), and model {model_spec!r} "
                "has no shipped train tables; choose another agent or build tables with `acd tables build`"
            )
        return None
    tables = [restrict_table(resolve_tables(model_spec, t, "train", None), descriptor_names) for t in tasks]
    agent.fit(tables)
    return f"{model_spec} train: {', '.join(tasks)}"


class _WordTokenizer:
    """Just enough of a HF tokenizer for `validate_prompt`, read from a toy model's `tokenizer/` folder with the
    `tokenizers` library (milliseconds; `transformers` and torch take seconds to import)."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        names = json.loads((folder / "special_tokens_map.json").read_text())
        self.unk_token = names.get("unk_token")
        self.unk_token_id = self._tok.token_to_id(self.unk_token) if self.unk_token else None
        bos = names.get("bos_token")
        self.bos_token_id = self._tok.token_to_id(bos) if bos else None
        self.all_special_ids = [i for n in names.values() if (i := self._tok.token_to_id(str(n))) is not None]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab()

    def convert_ids_to_tokens(self, i: int) -> str:
        return self._tok.id_to_token(i)


def _toy_root(model_spec: str) -> Path | None:
    from acd_env.models.toy import toy_dir, toy_names
    from benchmarks.modelarg import is_model_dir

    if is_model_dir(model_spec):
        return Path(model_spec)
    return toy_dir(model_spec) if model_spec in toy_names() else None


def precheck(
    model_spec: str, text: object, agent_name: str, out: str | Path, seed: int = 0, device: str | None = None
) -> None:
    """Everything that can be checked before torch and the model load (a fraction of a second, not 10 s): the
    prompt (empty; for a toy model also its words, special tokens and length, against the tokenizer files),
    the agent name and seed, the device, and the output folder."""
    from acd_env.errors import check_seed
    from acd_env.tasks.prompt import Prompt
    from acd_env.tasks.validate import validate_prompt
    from agents import agent_class

    if not isinstance(text, str) or not text.strip():
        raise ACDError("--prompt must be a non-empty text")
    check_seed(seed)
    agent_class(agent_name)
    if device is not None:
        from acd_env.models.device import check_device

        check_device(device)
    check_out_dir(out, "--out")
    root = _toy_root(model_spec)
    if root is not None and (root / "tokenizer" / "tokenizer.json").is_file():
        n_ctx = int(json.loads((root / "config.json").read_text())["arch"]["n_ctx"])
        prompt = Prompt(id="graph/000", task="custom", clean=text, answer=None)
        validate_prompt(prompt, _WordTokenizer(root / "tokenizer"), n_ctx)


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of `path` that does not exist yet (what a failed run must remove), or None."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_graph(
    model_spec: str,
    text: str,
    *,
    agent_name: str = "greedy",
    out: str | Path = "graphs",
    slug: str | None = None,
    budget: int = 20,
    k: int = 64,
    seed: int = 0,
    device: str | None = None,
) -> dict:
    """Write `<slug>.json` (+ graph-metadata.json) and `<slug>.effects.json` into `out`; returns their paths.

    `out` may be relative (to the current directory); it is resolved first, as circuit-tracer's file writer
    needs an absolute path. The files are written into a hidden staging folder inside `out` and moved into
    place only when all of them are complete; a run that fails leaves nothing behind (no partial graph, no
    folder it created, graph-metadata.json unchanged).
    """
    precheck(model_spec, text, agent_name, out, seed, device)  # before the imports (seconds) and the model
    shown = Path(out)
    out = shown.resolve()  # circuit-tracer asserts that os.path.dirname(out) exists: "graphs" has none
    created = _first_missing(out)
    slug = slug or default_slug(text)
    staging, moved = None, []
    try:
        out.mkdir(parents=True, exist_ok=True)  # first, so that an unwritable --out fails at once
        m = _measure(model_spec, text, agent_name, budget, k, seed, device)
        staging = Path(tempfile.mkdtemp(prefix=f".{slug}.", suffix=".tmp", dir=out))
        sidecar, annotated = _write_files(m, slug, staging, model_spec, agent_name, budget)
        sidecar = {"prompt": text, "model": model_spec, **sidecar}
        _write_atomic(staging / f"{slug}.effects.json", json.dumps(m["clean"](sidecar), indent=1))
        metadata = json.loads((staging / "graph-metadata.json").read_text())
        entry = next(g for g in metadata["graphs"] if g["slug"] == slug)
        for name in (f"{slug}.json", f"{slug}.effects.json"):
            os.replace(staging / name, out / name)
            moved.append(out / name)
        _merge_metadata(out / "graph-metadata.json", entry)
    except BaseException as e:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        for path in moved:
            path.unlink(missing_ok=True)
        if isinstance(e, OSError) and (error := output_error(e, shown, "--out")) is not None:
            raise error from None
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return {
        "graph": shown / f"{slug}.json",
        "effects": shown / f"{slug}.effects.json",
        "slug": slug,
        "annotated": annotated,
        "out": shown,
    }


def _measure(model_spec: str, text: str, agent_name: str, budget: int, k: int, seed: int, device) -> dict:
    """Attribute the prompt, run the agent's episode and measure every candidate (the slow part)."""
    import numpy as np

    from acd_env.attribution.graph import attribute_graph
    from acd_env.case import tokenize
    from acd_env.env import CircuitDiscoveryEnv
    from acd_env.tasks.prompt import Prompt
    from agents import make_agent
    from benchmarks.modelarg import load_model_arg
    from benchmarks.runner import _clean, run_episode

    agent = make_agent(agent_name, seed=seed)
    model = load_model_arg(model_spec, device)
    tokens = tokenize(model, Prompt(id="graph/000", task="custom", clean=text, answer=None))
    graph = attribute_graph(model, tokens)
    env = CircuitDiscoveryEnv(
        model=model, prompts=[text], backend="live", n_candidates=k, budget=budget, device=device
    )
    raw = cast(CircuitDiscoveryEnv, env.unwrapped)  # Env.unwrapped is typed as the base class
    settings = raw.settings
    fitted_on = _fit_if_needed(agent, model_spec, list(settings.descriptor_names))
    if getattr(agent, "privileged", False):
        agent.attach_oracle(raw.oracle_effects)
    rows = run_episode(env, agent, 0, seed, {"agent": agent_name, "protocol": "graph", "fold": "-"}, budget)
    case = raw.case
    effects = raw.oracle_effects()
    types = list(settings.interventions)
    picked = {int(r["candidate"]): r for r in rows if r.get("kind") == "step" and not r["invalid"]}

    candidates = {}
    for c in range(case.n_valid):
        layer, pos, feat = (int(x) for x in case.features[c])
        measured = {
            kind: {
                name: _clean(np.asarray(getattr(effects, name))[c, t])
                for name in ("kl", "logit_diff", "downstream", "n_affected", "top1_changed")
            }
            for t, kind in enumerate(types)
        }
        step = picked.get(c)
        candidates[f"{layer}_{feat}_{pos}"] = {
            "candidate": c,
            "feature": case.feature_id(c),
            "layer": layer,
            "pos": pos,
            "feature_index": feat,
            "influence_rank": c + 1,
            "measured": measured,
            "agent_step": step["step"] if step else None,
            "agent_intervention": step["intervention"] if step else None,
        }
    return {
        "graph": graph,
        "candidates": candidates,
        "types": types,
        "primary": types.index("ablation") if "ablation" in types else 0,
        "n_valid": case.n_valid,
        "rows": rows,
        "fitted_on": fitted_on,
        "clean": _clean,
    }


def _merge_metadata(path: Path, entry: dict) -> None:
    """Add (or replace) one graph's entry in the viewer's graph-metadata.json, written atomically."""
    doc = json.loads(path.read_text()) if path.is_file() else {"graphs": []}
    doc["graphs"] = [g for g in doc.get("graphs", []) if g.get("slug") != entry["slug"]] + [entry]
    _write_atomic(path, json.dumps(doc, indent=2))


def _write_files(
    m: dict, slug: str, folder: Path, model_spec: str, agent_name: str, budget: int
) -> tuple[dict, int]:
    """circuit-tracer's viewer files in `folder` (absolute), annotated; returns (the sidecar's body, the number
    of annotated nodes)."""
    from circuit_tracer.utils.create_graph_files import create_graph_files

    graph, candidates, types, primary, rows = m["graph"], m["candidates"], m["types"], m["primary"], m["rows"]
    scan = graph.scan if getattr(graph, "scan", None) is not None else f"acd-{Path(model_spec).name}"
    create_graph_files(graph, slug, str(folder), scan=scan)
    graph_path = folder / f"{slug}.json"
    doc = json.loads(graph_path.read_text())
    annotated = 0
    for node in doc["nodes"]:
        info = candidates.get(node.get("node_id", ""))
        if node.get("feature_type") != "cross layer transcoder" or info is None:
            continue
        kl = info["measured"][types[primary]]["kl"]
        label = f"{types[primary]} KL {kl:.3g}"
        if info["agent_step"] is not None:
            label += f" · {agent_name} step {info['agent_step']}"
        node["clerp"] = label
        node["acd"] = info
        annotated += 1
    episode = rows[-1]
    doc["metadata"]["acd"] = {
        "agent": agent_name,
        "budget": budget,
        "n_candidates": m["n_valid"],
        "annotated_nodes": annotated,
        "metrics": {k: v for k, v in episode["metrics"].items() if k != "curve"},
        "fitted_on": m["fitted_on"],
    }
    _write_atomic(graph_path, json.dumps(doc, indent=2))
    sidecar = {
        "agent": agent_name,
        "interventions": types,
        "steps": [
            {k: r.get(k) for k in ("step", "candidate", "feature", "intervention", "reward", "kl")}
            for r in rows
            if r.get("kind") == "step"
        ],
        "metrics": episode["metrics"],
        "candidates": list(candidates.values()),
    }
    return sidecar, annotated


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "graph",
        help="export a prompt's graph with measured effects for circuit-tracer's viewer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="toy-4l", help="model name or toy model directory (default: toy-4l)")
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--agent", default="greedy", help="agent whose choices are marked (default: greedy)")
    p.add_argument("--out", default="graphs", help="output directory (default: graphs/)")
    p.add_argument("--slug", help="graph name in the viewer (default: from the prompt)")
    p.add_argument("--budget", type=int, default=20, help="agent steps (default: 20)")
    p.add_argument("--k", type=int, default=64, help="candidates (default: 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="torch device")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from benchmarks.modelarg import check_model_name

    check_model_name(args.model)
    for name in ("budget", "k"):
        if getattr(args, name) <= 0:
            raise ACDError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    result = export_graph(
        args.model,
        args.prompt,
        agent_name=args.agent,
        out=args.out,
        slug=args.slug,
        budget=args.budget,
        k=args.k,
        seed=args.seed,
        device=args.device,
    )
    out, slug = result["out"], result["slug"]
    print(
        f"wrote {result['graph']} ({result['annotated']} candidate nodes annotated with measured effects) and "
        f"{result['effects']}"
    )
    print(f"view it: circuit-tracer start-server --graph_file_dir {out} --port {VIEWER_PORT}")
    print(f"    then open http://localhost:{VIEWER_PORT}/index.html?slug={slug}")
    print(
        f"    (from Python: from circuit_tracer.frontend.local_server import serve; serve('{out}', port={VIEWER_PORT}))"
    )
    return 0
