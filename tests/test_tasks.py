"""Task suites: valid toy prompts, deterministic generation, disjoint splits, custom prompts, clear errors.

Only the toy tokenizer is loaded here (no model), so these tests take a few seconds.
"""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from acd_env.errors import ACDError
from acd_env.models import load_tokenizer, toy_config
from acd_env.tasks import TOY_TASKS, Prompt, available_tasks, load_task
from acd_env.tasks.grammar import NOUNS_PL, NOUNS_SG, NUMBERS, VERBS_PL, VERBS_SG
from acd_env.tasks.validate import token_ids

MODEL = "toy-4l"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MODEL)


def solve(task: str, words: list[str]) -> str:
    """The unique correct next word of a toy prompt, derived from the grammar's rules (not the generator)."""
    if task == "ioi":  # when A and B went to the P , S gave a O to -> the name that is not S
        a, b, subject = words[1], words[3], words[9]
        assert a != b and subject in (a, b), words
        return b if subject == a else a
    if task == "agreement":  # the ADJ N1 V1 and the ADJ N2 near the N3 -> V1's lemma in N2's number
        v1, n2 = words[3], words[7]
        lemma = VERBS_SG.index(v1) if v1 in VERBS_SG else VERBS_PL.index(v1)
        return VERBS_PL[lemma] if n2 in NOUNS_PL else VERBS_SG[lemma]
    if task == "counting":  # up/down followed by consecutive numbers -> the next one
        step = 1 if words[0] == "up" else -1
        idx = [NUMBERS.index(w) for w in words[1:]]
        assert all(b - a == step for a, b in pairwise(idx)), words
        return NUMBERS[idx[-1] + step]
    if task == "induction":  # x1 .. xL then x1 .. xm -> x(m+1)
        cut = words.index("then")
        seq, prefix = words[:cut], words[cut + 1 :]
        assert len(set(seq)) == len(seq) and seq[: len(prefix)] == prefix, words
        return seq[len(prefix)]
    raise AssertionError(task)


def split_keys(task: str, prompts: list[Prompt]) -> set:
    """The key words a split draws from a disjoint pool (both clean and counterfactual)."""
    keys: set = set()
    for p in prompts:
        for text in (p.clean, p.counterfactual):
            w = text.split()
            if task == "ioi":
                keys |= {w[1], w[3]}
            elif task == "agreement":  # the second noun's lemma (the one the verb agrees with)
                keys.add(NOUNS_SG.index(w[7]) if w[7] in NOUNS_SG else NOUNS_PL.index(w[7]))
            elif task == "induction":
                keys |= set(w[: w.index("then")])
            elif task == "counting":  # (start, length) as in acd_env.tasks.grammar
                seq = [NUMBERS.index(x) for x in w[1:]]
                keys.add((seq[0], len(seq)) if w[0] == "up" else (seq[-1] - 1, len(seq)))
    return keys


def test_available_tasks_lists_the_toy_suites():
    assert set(TOY_TASKS) >= {"ioi", "agreement", "counting", "induction"}
    assert set(TOY_TASKS) <= set(available_tasks())


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("task", TOY_TASKS)
def test_toy_prompts_are_well_formed(task, split, tokenizer):
    prompts = load_task(task, model=MODEL, split=split)  # validated against the toy tokenizer
    assert len(prompts) >= 15
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.clean for p in prompts}) == len(prompts)
    vocab = tokenizer.get_vocab()
    for p in prompts:
        assert p.task == task and p.id.startswith(f"{task}/{split}/")
        clean, cf = token_ids(tokenizer, p.clean), token_ids(tokenizer, p.counterfactual)
        assert len(clean) == len(cf), p
        assert clean[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in clean + cf
        assert p.answer in vocab and p.counterfactual_answer in vocab
        assert p.answer == solve(task, p.clean.split()), p
        assert p.counterfactual_answer == solve(task, p.counterfactual.split()), p
        assert p.answer != p.counterfactual_answer, p


@pytest.mark.parametrize("task", TOY_TASKS)
def test_generation_is_deterministic(task):
    for split in ("train", "test"):
        assert load_task(task, split=split) == load_task(task, split=split)
        assert load_task(task, split=split, n=5) == load_task(task, split=split)[:5]


@pytest.mark.parametrize("task", TOY_TASKS)
def test_train_and_test_draw_disjoint_key_words(task):
    train = split_keys(task, load_task(task, split="train"))
    test = split_keys(task, load_task(task, split="test"))
    assert train and test
    assert not train & test, sorted(train & test, key=str)


def test_custom_prompts_from_strings_and_dicts():
    prompts = load_task(
        [
            "when alice and bob went to the park , alice gave a ball to",
            {
                "clean": "up one two",
                "answer": "three",
                "counterfactual": "down three two",
                "counterfactual_answer": "one",
                "id": "mine",
            },
            {"prompt": "red ball then red"},
        ],
        model=MODEL,
    )
    assert [p.id for p in prompts] == ["custom/000", "mine", "custom/002"]
    assert prompts[0].answer is None and prompts[0].task == "custom"
    assert prompts[1].answer == "three" and prompts[1].counterfactual == "down three two"
    assert prompts[2].clean == "red ball then red"


def test_custom_prompts_from_jsonl(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"clean": "up five six seven", "answer": "eight", "counterfactual": "down eight seven six"},
        {"clean": "the big cat runs and the old dogs near the bird", "answer": "run"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")  # a blank line is skipped
    for spec in (path, str(path)):
        prompts = load_task(spec, model=MODEL)
        assert [p.clean for p in prompts] == [r["clean"] for r in rows]
        assert [p.answer for p in prompts] == ["eight", "run"]


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(ACDError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_unknown_task_lists_the_valid_ones():
    msg = _error(load_task, "no-such-task")
    assert "no-such-task" in msg
    for name in available_tasks():
        assert name in msg


def test_bad_split():
    msg = _error(load_task, "ioi", split="dev")
    assert "'dev'" in msg and "train" in msg and "test" in msg


def test_empty_prompt_list_and_empty_prompt():
    assert "empty" in _error(load_task, [])
    assert "empty" in _error(load_task, ["   "], model=MODEL)


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"clean": "up one two"}\n{not json\n')
    msg = _error(load_task, path)
    assert f"{path}:2" in msg and "JSON" in msg


def test_missing_jsonl_file(tmp_path):
    msg = _error(load_task, tmp_path / "missing.jsonl")
    assert "missing.jsonl" in msg


def test_word_outside_the_toy_vocabulary():
    msg = _error(load_task, ["when zorro and bob went to the park"], model=MODEL)
    assert "zorro" in msg and "vocabulary" in msg
    msg = _error(load_task, [{"clean": "up one two", "counterfactual": "up one blorp"}], model=MODEL)
    assert "blorp" in msg and "counterfactual" in msg


def test_counterfactual_of_another_length():
    msg = _error(load_task, [{"clean": "up one two", "counterfactual": "up one two three"}], model=MODEL)
    assert "counterfactual" in msg and "4" in msg and "5" in msg


def test_over_long_prompt():
    n_ctx = toy_config(MODEL)["n_ctx"]
    text = " ".join(["the"] * (n_ctx + 5))
    msg = _error(load_task, [text], model=MODEL)
    assert str(n_ctx) in msg and str(n_ctx + 6) in msg  # its length with BOS and the context size
