"""Choose the circuit-track `ranker`'s, `ucb`'s and `aif`'s hyper-parameters on the TRAIN split only (never test
prompts).

ranker: 5-fold cross-validation with folds by prompt over the train tables of the given model and tasks: fit
on four folds, rank the held-out fold's prompts, score each ranking's circuit efficiency (f(C_k) on the k grid,
÷ the stored reference's) on the train env. Stage 1 compares the targets at the default tree settings, stage 2
the tree settings at the best target. ucb: it has no fit, so its settings are chosen by its zero-shot circuit
efficiency on the train prompts (memory reset before every prompt), α first, then `max_tests`. aif: likewise
zero-shot on the train prompts, one setting at a time from its defaults (info_weight, then pref, then accept,
then rank), and `aif-argmax` at the chosen setting (the planning ablation, on train prompts); then its
learning rate, in the protocols that use it: 2-fold by prompt, each fold's prompts as a stream (memory kept, seeded
order) unfitted and fitted on the other fold's tables, for learning rates 1 / 0.3 / 0.1 / 0.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/tune_circuit_agents.py --model toy-4l --tasks ioi,induction

Train-split queries missing from the query store run on the model (toy models: a few ms each) and are cached.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from acd_env.circuit import circuit_efficiency


def efficiency(env, ranking) -> float:
    """Circuit efficiency of `ranking` on the env's current prompt (the harness's evaluation)."""
    score = env.score_circuit(ranking)
    return circuit_efficiency(score.f, np.asarray(env.reference().ref_curve)[score.sizes - 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy-4l")
    ap.add_argument("--tasks", default="ioi,induction")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ucb", action="store_true")
    ap.add_argument("--skip-ranker", action="store_true")
    ap.add_argument("--skip-aif", action="store_true")
    ap.add_argument("--per-task", type=int, default=0, help="train prompts per task (0 = all)")
    args = ap.parse_args()

    from acd_env.circuit import KL_FLOOR
    from acd_env.circuit_env import CircuitSearchEnv
    from acd_env.table_store import resolve_tables, restrict_columns
    from acd_env.tables import select_prompts
    from agents.circuit.ranker import DEFAULTS, TARGETS, CircuitRankerAgent, table_training_data
    from agents.circuit.ucb import CircuitUCBAgent

    tasks = args.tasks.split(",")
    env = CircuitSearchEnv(model=args.model, task=tasks, split="train", descriptors=("graph", "atp"))
    names = list(env.settings.descriptor_names)
    tables = [restrict_columns(resolve_tables(args.model, t, "train", None), names) for t in tasks]
    ids = [c.prompt.id for t in tables for c in t.cases if int(c.n_valid) > 0]
    env_index = {p.id: i for i, p in enumerate(env.prompts)}
    keep = [j for j, pid in enumerate(ids) if float(env.backend.circuit(env_index[pid]).kl_empty) >= KL_FLOOR]
    if args.per_task > 0:
        per_task: dict[str, list[int]] = {}
        for j in keep:
            per_task.setdefault(ids[j].split("/")[0], []).append(j)
        keep = [j for js in per_task.values() for j in js[: args.per_task]]
    print(f"{args.model} {tasks} train: {len(ids)} prompts, {len(keep)} above KL_FLOOR")

    def score_prompt(j: int, ranking) -> float:
        env.reset(options={"prompt_index": env_index[ids[j]]})
        return efficiency(env, ranking)

    rng = np.random.default_rng(args.seed)
    fold_of = np.empty(len(ids), dtype=np.int64)
    fold_of[rng.permutation(len(ids))] = np.arange(len(ids)) % args.folds

    if not args.skip_ranker:
        baselines = {}
        for name, col in (("atp", "atp_kl_ablation"), ("ig", "ig")):
            effs = []
            for j in keep:
                obs, info = env.reset(options={"prompt_index": env_index[ids[j]]})
                v = obs["candidates"][: info["n_valid"], env.descriptor_names.index(col)]
                effs.append(efficiency(env, list(np.argsort(-v, kind="stable"))))
            baselines[name] = float(np.mean(effs))
        print("train-split zero-query baselines:", {k: round(v, 4) for k, v in baselines.items()})

        cache: dict[str, tuple] = {}

        def cv(target: str, params: dict) -> float:
            if target not in cache:
                cache[target] = table_training_data(tables, target)
            xs, ys, features, static = cache[target]
            effs = []
            for fold in range(args.folds):
                train = [j for j in range(len(ids)) if fold_of[j] != fold]
                agent = CircuitRankerAgent(seed=args.seed, target=target, **params)
                agent.fit_arrays(
                    np.concatenate([xs[j] for j in train]),
                    np.concatenate([ys[j] for j in train]),
                    features,
                    static,
                )
                for j in keep:
                    if fold_of[j] == fold:
                        effs.append(score_prompt(j, agent.order_by(agent.predict_features(xs[j]))))
            return float(np.mean(effs))

        tree = {k: v for k, v in DEFAULTS.items() if k != "target"}
        print("ranker stage 1 (targets at default trees", tree, ")")
        results = {}
        for target in TARGETS:
            t0 = time.time()
            results[target] = cv(target, tree)
            print(f"  target={target:9s} cv efficiency {results[target]:.4f}  ({time.time() - t0:.0f} s)")
        best_target = max(results, key=lambda k: results[k])
        grid = [
            dict(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=20),
            dict(max_iter=100, learning_rate=0.1, max_leaf_nodes=7, min_samples_leaf=50),
            dict(max_iter=200, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20),
            dict(max_iter=400, learning_rate=0.03, max_leaf_nodes=15, min_samples_leaf=40),
        ]
        print(f"ranker stage 2 (tree settings at target={best_target})")
        scored = []
        for params in grid:
            t0 = time.time()
            e = results[best_target] if params == tree else cv(best_target, params)
            scored.append((e, params))
            print(f"  {params} cv efficiency {e:.4f}  ({time.time() - t0:.0f} s)")
        best = max(scored, key=lambda s: s[0])
        print(f"ranker CHOICE: target={best_target} {best[1]} (cv efficiency {best[0]:.4f})")

    def episode(agent, j: int) -> float:
        """One episode of `agent` on train prompt `j`; the circuit efficiency of its declared circuit."""
        obs, info = env.reset(options={"prompt_index": env_index[ids[j]]})
        agent.reset(obs, info)
        while True:
            a = agent.act(obs, info)
            obs, r, term, trunc, info = env.step(a)
            agent.observe(a, r, obs, info)
            if term or trunc:
                break
        return efficiency(env, agent.circuit_ranking())

    def zero_shot(agent) -> float:
        """Mean circuit efficiency of `agent` over the kept train prompts, memory reset before each."""
        effs = []
        for j in keep:
            agent.reset_memory()
            effs.append(episode(agent, j))
        return float(np.mean(effs))

    if not args.skip_aif:
        from agents.circuit.aif import CircuitAIFAgent

        chosen: dict = {}
        grid = {
            "info_weight": (1.0, 0.0, 0.5, 2.0),
            "pref": (1.0, 0.5, 2.0),
            "accept": (0.5, 0.3, 0.7),
            "rank": ("posterior", "entry"),
        }
        print(f"aif: zero-shot on {len(keep)} train prompts, one setting at a time from the defaults")
        for name, values in grid.items():
            scores = {}
            for v in values:
                t0 = time.time()
                scores[v] = zero_shot(CircuitAIFAgent(seed=args.seed, **chosen, **{name: v}))
                print(f"  {name}={v}: efficiency {scores[v]:.4f}  ({time.time() - t0:.0f} s)")
            chosen[name] = max(scores, key=lambda k: scores[k])
        e = zero_shot(CircuitAIFAgent(seed=args.seed, **chosen))
        e_argmax = zero_shot(CircuitAIFAgent(seed=args.seed, planning="argmax", **chosen))
        print(f"aif CHOICE: {chosen} (efficiency {e:.4f}); aif-argmax at it {e_argmax:.4f}")

        fold2 = np.random.default_rng(args.seed).integers(2, size=len(ids))
        fold_of_id = dict(zip(ids, fold2.tolist(), strict=True))

        def stream(lr: float, fitted: bool) -> tuple[float, float]:
            """(mean, IQM) efficiency over both folds, each run as a stream (fitted on the other fold)."""
            effs = []
            for f in (0, 1):
                agent = CircuitAIFAgent(seed=args.seed, learning_rate=lr)
                if fitted:
                    other = [
                        select_prompts(
                            t, [r for r, c in enumerate(t.cases) if fold_of_id.get(c.prompt.id) == 1 - f]
                        )
                        for t in tables
                    ]
                    agent.fit(other)
                test = [j for j in keep if fold2[j] == f]
                effs += [episode(agent, j) for j in np.random.default_rng([args.seed, f]).permutation(test)]
            x = np.sort(effs)
            return float(np.mean(x)), float(x[len(x) // 4 : len(x) - len(x) // 4].mean())

        print("aif learning rate: streams over 2 folds of the train prompts (mean, IQM)")
        for fitted in (False, True):
            for lr in (1.0, 0.3, 0.1, 0.0):
                t0 = time.time()
                m, q = stream(lr, fitted)
                label = "fitted on the other fold" if fitted else "unfitted"
                print(
                    f"  {label:24s} learning_rate={lr}: mean {m:.4f} IQM {q:.4f}  ({time.time() - t0:.0f} s)"
                )

    if not args.skip_ucb:

        def ucb_eff(**kw) -> float:
            return zero_shot(CircuitUCBAgent(seed=args.seed, **kw))

        print("ucb stage 1 (alpha, max_tests=4), zero-shot on the train prompts")
        alphas = {}
        for alpha in (0.0, 0.1, 0.3, 1.0):
            t0 = time.time()
            alphas[alpha] = ucb_eff(alpha=alpha, max_tests=4)
            print(f"  alpha={alpha}: efficiency {alphas[alpha]:.4f}  ({time.time() - t0:.0f} s)")
        a_best = max(alphas, key=lambda k: alphas[k])
        tests = {4: alphas[a_best]}
        print(f"ucb stage 2 (max_tests at alpha={a_best})")
        for m in (2, 6):
            tests[m] = ucb_eff(alpha=a_best, max_tests=m)
            print(f"  max_tests={m}: efficiency {tests[m]:.4f}")
        m_best = max(tests, key=lambda k: tests[k])
        print(f"ucb CHOICE: alpha={a_best} max_tests={m_best} (efficiency {tests[m_best]:.4f})")


if __name__ == "__main__":
    main()
