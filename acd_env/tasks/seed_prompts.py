"""Prompt suites for pretrained models (Gemma-2-2B, Llama-3.2-1B), from the seed notebook and its study.

Counterfactuals swap single-token names or entities so that clean and counterfactual have the same token
length under the usual BPE tokenizers; the length is checked against the real tokenizer when the suite is
loaded for a model, so a mismatch is an error, never a silent truncation.
"""

from __future__ import annotations

# (clean, answer, counterfactual, counterfactual answer)
SEED_IOI = [
    (
        "When John and Mary went to the store, John gave the bag to",
        " Mary",
        "When David and Sarah went to the store, David gave the bag to",
        " Sarah",
    ),
    (
        "When Tom and Anna went to the park, Tom gave a ball to",
        " Anna",
        "When Mark and Lisa went to the park, Mark gave a ball to",
        " Lisa",
    ),
    (
        "After Paul and Emma left the office, Emma handed the keys to",
        " Paul",
        "After James and Kate left the office, Kate handed the keys to",
        " James",
    ),
    (
        "When Mike and Laura arrived at the party, Mike gave a gift to",
        " Laura",
        "When Steve and Alice arrived at the party, Steve gave a gift to",
        " Alice",
    ),
    (
        "While Peter and Susan were at school, Susan passed the note to",
        " Peter",
        "While Brian and Helen were at school, Helen passed the note to",
        " Brian",
    ),
]

SEED_MULTISTEP = [
    (
        "Fact: the capital of the state containing Dallas is",
        " Austin",
        "Fact: the capital of the state containing Chicago is",
        " Springfield",
    ),
    (
        "Fact: the currency of the country whose capital is Tokyo is the",
        " yen",
        "Fact: the currency of the country whose capital is London is the",
        " pound",
    ),
    (
        "Fact: the language spoken in the country whose capital is Paris is",
        " French",
        "Fact: the language spoken in the country whose capital is Berlin is",
        " German",
    ),
]

SEED_SUITES = {"seed-ioi": SEED_IOI, "seed-multistep": SEED_MULTISTEP}
