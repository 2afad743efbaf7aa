"""Tests for yes/no answers, BBH exact-match targets and the shared API rules (unknown types)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from forethought.errors import UserError
from forethought.verify import ANSWER_TYPES, Verdict, equivalent, extract, normalize_gold, verify, verify_batch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The passage says it does. The answer is yes.", "yes"),
        ("Yes, no doubt... so the answer is No", "no"),
        ("I am not sure, but probably yes", "yes"),
        ("That statement is False.", "no"),
        ("The answer is: TRUE", "yes"),
        ("Answer: no", "no"),
    ],
)
def test_extract_yesno(text: str, expected: str) -> None:
    assert extract("yesno", text) == expected


def test_yesno_verdicts() -> None:
    assert verify("yesno", "the answer is yes", "Yes") == Verdict("yes", True)
    assert verify("yesno", "the answer is yes", "no") == Verdict("yes", False)
    assert verify("yesno", "It depends on the weather.", "no") == Verdict(None, False)
    assert verify("yesno", "The answer is True.", "true").correct
    assert normalize_gold("yesno", "True") == "yes"
    with pytest.raises(UserError, match="maybe"):
        normalize_gold("yesno", "maybe")


def test_normalize_gold_exact_keeps_options() -> None:
    assert normalize_gold("exact", " (B) ") == "(B)"
    assert normalize_gold("exact", "apple  banana cherry") == "apple banana cherry"


@pytest.mark.parametrize(
    ("text", "gold", "correct"),
    [
        ("Let's think. So the answer is (B).", "(B)", True),
        ("So the answer is B.", "(B)", True),
        ("So the answer is (C) 04/12/2021.", "(C)", True),
        ("So the answer is (C).", "(B)", False),
        ("So the answer is Cat.", "(C)", False),
        ("So the answer is **valid**.", "valid", True),
        ("So the answer is invalid.", "valid", False),
        ("So the answer is 24.", "24", True),
        ("So the answer is -11,520.", "-11520", True),
        ("So the answer is 24.0", "24", True),
        ("So the answer is ] ) ).", "] ) )", True),
        ("So the answer is ]]>", "] ] >", True),
        ("So the answer is ] ).", "] ) )", False),
        ('So the answer is "apple banana cherry".', "apple banana cherry", True),
        ("So the answer is apple, banana, cherry.", "apple banana cherry", True),
        ("So the answer is banana apple cherry.", "apple banana cherry", False),
        ("So the answer is Monsters, Inc.", "Monsters, Inc", True),
        ("So the answer is yes.", "Yes", True),
        ("The answer is\n  False\n", "False", True),
        ("I have no idea", "True", False),
    ],
)
def test_exact_equivalence(text: str, gold: str, correct: bool) -> None:
    assert verify("exact", text, gold).correct is correct


def test_exact_extraction_is_last_statement_to_end_of_line() -> None:
    text = "The answer is (A) at first.\nChecking again, the answer is **(D)**.\nDone."
    assert extract("exact", text) == "(D)"
    assert extract("exact", "No statement here") is None


def _bbh_targets(bbh: Path) -> dict[str, list[str]]:
    return {
        f.stem: [e["target"] for e in json.loads(f.read_text(encoding="utf-8"))["examples"]]
        for f in sorted((bbh / "bbh").glob("*.json"))
    }


def test_real_bbh_targets_of_every_subtask(data_dir: Path) -> None:
    targets = _bbh_targets(data_dir / "bbh")
    assert len(targets) == 27
    assert sum(map(len, targets.values())) == (27 * 6 if data_dir == FIXTURES else 6511)
    checked_other = 0
    rng = random.Random(0)
    for task, golds in targets.items():
        for gold in rng.sample(golds, 5):
            text = f"Let's think step by step.\nStep one.\nSo the answer is {gold}."
            assert verify("exact", text, gold).correct, (task, gold)
            others = [g for g in set(golds) if g.casefold() != gold.casefold()]
            if others:
                other = rng.choice(others)
                assert not verify("exact", text, other).correct, (task, gold, other)
                checked_other += 1
    assert checked_other == 27 * 5  # every sampled target was also told apart from another target


def test_bbh_cot_prompt_answers_extract_cleanly(data_dir: Path) -> None:
    prompts = sorted((data_dir / "bbh/cot-prompts").glob("*.txt"))
    assert len(prompts) == 27
    for prompt in prompts:
        for answer in re.split(r"\nQ: ", prompt.read_text(encoding="utf-8"))[1:]:
            answer = answer.split("\nA: ", 1)[1]
            stated = re.findall(r"So the answer is (.*)\.\s*$", answer.strip())
            assert stated, prompt.name
            assert extract("exact", answer) == stated[0].strip(), prompt.name
            assert verify("exact", answer, stated[0]).correct


@pytest.mark.parametrize("answer_type", ["Number", "bool", ""])
def test_unknown_answer_type_names_valid_ones(answer_type: str) -> None:
    for call in (
        lambda: extract(answer_type, "x"),
        lambda: equivalent(answer_type, "x", "x"),
        lambda: verify(answer_type, "x", "x"),
        lambda: verify_batch(answer_type, ["x"], ["x"]),
    ):
        with pytest.raises(UserError) as err:
            call()
        assert all(t in str(err.value) for t in ANSWER_TYPES)
