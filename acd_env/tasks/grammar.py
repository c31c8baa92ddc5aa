"""The toy grammar: vocabulary and the four task generators the embedded models are trained on.

Each generator draws one instance with a unique correct next token, a plausible distractor (used as label
noise in training, so that the model's answer is not certain) and a same-length counterfactual whose answer
differs. Train and test prompts draw their key words from disjoint pools (`SPLIT_POOLS`), so test prompts
are unseen by anything fitted on the train split; the language model itself is trained on the whole grammar.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "niaj",
    "olivia",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
    "yvonne",
]
PLACES = ["park", "store", "school", "beach", "garden", "library", "market", "station", "museum", "office"]
OBJECTS = ["ball", "book", "apple", "drink", "gift", "key", "letter", "map", "pen", "ring"]
ADJS = ["big", "small", "red", "blue", "old", "new", "happy", "sad", "fast", "slow"]
NOUNS_SG = ["cat", "dog", "bird", "fish", "horse", "mouse"]
NOUNS_PL = ["cats", "dogs", "birds", "fishes", "horses", "mice"]
VERBS_SG = ["runs", "sleeps", "eats", "jumps", "sings"]
VERBS_PL = ["run", "sleep", "eat", "jump", "sing"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
FUNCTION_WORDS = ["when", "and", "went", "to", "the", "a", "gave", ",", ".", "then", "near", "up", "down"]
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
INDUCTION_POOL = OBJECTS + ADJS + PLACES

VOCAB: tuple[str, ...] = SPECIAL_TOKENS + tuple(
    sorted(
        set(
            NAMES
            + PLACES
            + OBJECTS
            + ADJS
            + NOUNS_SG
            + NOUNS_PL
            + VERBS_SG
            + VERBS_PL
            + NUMBERS
            + FUNCTION_WORDS
        )
    )
)
TOY_TASKS = ("ioi", "agreement", "counting", "induction")
SPLITS = ("train", "test")

# Disjoint key pools per split. "all" is what the language model is trained on.
SPLIT_POOLS = {
    "ioi": {"test": NAMES[::4] + NAMES[1::4][:2], "all": NAMES},  # 7 test names; the other 13 are train
    "agreement": {"test": [1, 4], "all": list(range(6))},  # index of the second noun (the one that agrees)
    "induction": {"test": INDUCTION_POOL[2::3], "all": INDUCTION_POOL},  # 10 test tokens, 20 train
}
for _task, _pools in SPLIT_POOLS.items():
    _pools["train"] = [x for x in _pools["all"] if x not in _pools["test"]]


@dataclass(frozen=True)
class Instance:
    words: list[str]
    answer: str
    distractor: str
    cf_words: list[str]
    cf_answer: str


def _ioi(rng: random.Random, pool: list[str]) -> Instance:
    a, b, c, d = rng.sample(pool, 4)
    place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
    abba = rng.random() < 0.5

    def make(x: str, y: str) -> tuple[list[str], str, str]:
        subject, indirect = (x, y) if abba else (y, x)
        return f"when {x} and {y} went to the {place} , {subject} gave a {obj} to".split(), indirect, subject

    words, answer, subject = make(a, b)
    cf_words, cf_answer, _ = make(c, d)
    return Instance(words, answer, subject, cf_words, cf_answer)


def _agreement(rng: random.Random, pool: list[int]) -> Instance:
    i, j, k, v = rng.randrange(6), rng.choice(pool), rng.randrange(6), rng.randrange(5)
    n1_plural, n2_plural, n3_plural = (rng.random() < 0.5 for _ in range(3))
    adj1, adj2 = rng.choice(ADJS), rng.choice(ADJS)
    n1 = NOUNS_PL[i] if n1_plural else NOUNS_SG[i]
    v1 = VERBS_PL[v] if n1_plural else VERBS_SG[v]
    n3 = NOUNS_PL[k] if n3_plural else NOUNS_SG[k]  # the attractor is always present: a unique continuation

    def make(plural: bool) -> tuple[list[str], str, str]:
        n2 = NOUNS_PL[j] if plural else NOUNS_SG[j]
        words = f"the {adj1} {n1} {v1} and the {adj2} {n2} near the {n3}".split()
        return words, (VERBS_PL[v] if plural else VERBS_SG[v]), (VERBS_SG[v] if plural else VERBS_PL[v])

    words, answer, distractor = make(n2_plural)
    cf_words, cf_answer, _ = make(not n2_plural)
    return Instance(words, answer, distractor, cf_words, cf_answer)


def _counting_is_test(start: int, length: int) -> bool:
    # The counting space is tiny (54 prompts): "unseen" means a held-out (start, length) pair, 1 in 3.
    return (start * 7 + length * 3) % 3 == 0


def _counting(rng: random.Random, split: str | None) -> Instance:
    while True:
        length = rng.randrange(2, 5)
        start = rng.randrange(0, 12 - length)
        if split is None or _counting_is_test(start, length) == (split == "test"):
            break
    up = rng.random() < 0.5

    def make(ascending: bool) -> tuple[list[str], str, str]:
        if ascending:
            seq, ans, dis = NUMBERS[start : start + length], start + length, min(start + length + 1, 11)
        else:
            seq, ans, dis = NUMBERS[start + 1 : start + length + 1][::-1], start, max(start - 1, 0)
        return ["up" if ascending else "down", *seq], NUMBERS[ans], NUMBERS[dis]

    words, answer, distractor = make(up)
    cf_words, cf_answer, _ = make(not up)
    return Instance(words, answer, distractor, cf_words, cf_answer)


def _induction(rng: random.Random, pool: list[str]) -> Instance:
    length = rng.randrange(4, 7)
    tokens = rng.sample(pool, length + 1)
    seq, spare = tokens[:length], tokens[length]
    m = rng.randrange(1, length)
    words = [*seq, "then", *seq[:m]]
    distractor = rng.choice([t for t in pool if t not in seq])
    cf_seq = list(seq)
    cf_seq[m] = spare
    return Instance(words, seq[m], distractor, [*cf_seq, "then", *cf_seq[:m]], spare)


def generate(task: str, rng: random.Random, split: str | None = None) -> Instance:
    """One instance of `task`; `split=None` draws from the whole grammar (language-model training)."""
    if task == "counting":
        return _counting(rng, split)
    pool = SPLIT_POOLS[task]["all" if split is None else split]
    return {"ioi": _ioi, "agreement": _agreement, "induction": _induction}[task](rng, pool)


def training_sentence(rng: random.Random, label_noise: float = 0.0) -> list[str]:
    """A task sentence with its answer and a full stop; the answer is the distractor with prob. `label_noise`."""
    inst = generate(rng.choice(TOY_TASKS), rng)
    answer = inst.distractor if rng.random() < label_noise else inst.answer
    return [*inst.words, answer, "."]
