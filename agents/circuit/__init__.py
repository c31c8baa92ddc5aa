"""Circuit-track agents (`CircuitSearch-v0`): each declares a circuit with `circuit_ranking()`.

| name | agent | queries |
|---|---|---|
| `random` | a seeded random ranking | 0 |
| `influence` | circuit-tracer's influence order (the candidate order) | 0 |
| `atp` | descending single-feature attribution-patching estimate (`atp_kl_ablation`) | 0 |
| `atp-joint` | greedy selection on the AtP-linearised model's predicted faithfulness | 0 |
| `ig` | descending integrated gradients from keep(∅) to the clean run (the EAP-IG analogue) | 0 |
| `acdc` | ACDC's pruning rule: candidates in reverse layer order, each ablated and left ablated when the change stays under a threshold | B |
| `atp-search` | greedy forward selection with keep-only queries over the top 6 candidates by AtP | B |
| `ranker` | gradient-boosted trees fitted on the train tables' reference circuits (`fit(tables)`): descriptors, IG and atp-joint → 1 / (1 + reference position); ranks by prediction | 0 |
| `ucb` | greedy forward selection with keep queries, each round's tests chosen by a marginal-gain LinUCB (shared linear model of the normalised gain f(W ∪ c) − f(W), exploration bonus), free steps back | B |
| `aif` | active inference (pymdp 1.0): per-candidate membership beliefs, a likelihood of the score change a query shows, expected free energy over toggles and query kinds; ranks by posterior | B |
| `aif-argmax` | `aif`'s planning ablation: the same model, each choice the plain argmax of its expected membership | B |
| `ppo` | a MaskablePPO set policy trained on the train split (`fit` loads the shipped one): keep queries, declares W's entry order then IG | B |
| `reference` | privileged: the stored beam-search reference (the ceiling row) | 0 |

Agents follow the same protocol as the feature track's (`agents.base`), plus `circuit_ranking()`. Zero-query
agents set `uses_queries = False`: the harness asks for their ranking without stepping the env.
"""
