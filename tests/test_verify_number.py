"""Tests for GSM8K-style number answers: strict/flexible extraction and numeric equality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forethought.errors import UserError
from forethought.verify import Verdict, extract, normalize_gold, verify, verify_batch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 18.", "18"),
        ("She pays $1,234 in total. The answer is $1,234.", "1234"),
        ("16 - 3 - 4 = 9 eggs, so she makes 9 * 2 = 18 dollars", "18"),
        ("The answer is: **18**", "18"),
        ("#### -3", "-3"),
        ("The temperature drops to -7 degrees.", "-7"),
        ("That is 3/4 of the cake.", "0.75"),
        ("The discount is 50%.", "50"),
        ("It costs $18.00.", "18"),
        ("The answer is 5 apples. Then she buys 7 more.", "5"),  # strict wins over the last number
        ("The final answer is 42 because 40 + 2", "42"),
        ("I computed 10 - 12 wrong", "12"),  # a binary minus is not a sign
        ("x = 1/3", "1/3"),
    ],
)
def test_extract_number(text: str, expected: str) -> None:
    assert extract("number", text) == expected


def test_unparseable_number_is_none_and_wrong() -> None:
    assert verify("number", "I do not know.", "18") == Verdict(None, False)


@pytest.mark.parametrize(
    ("text", "gold", "correct"),
    [
        ("The answer is 18.00", "18", True),
        ("The answer is $1,234.", "1,234", True),
        ("The answer is 3/4", "0.75", True),
        ("The answer is 0.75", "3/4", True),
        ("The answer is 17", "18", False),
        ("The answer is -5", "5", False),
        ("The answer is 0.3333", "1/3", False),  # tolerance is tiny, not loose
    ],
)
def test_number_equivalence(text: str, gold: str, correct: bool) -> None:
    assert verify("number", text, gold).correct is correct


def test_normalize_gold_number() -> None:
    assert normalize_gold("number", "1,234") == "1234"
    assert normalize_gold("number", "He earns 6 + 12 = <<6+12=18>>18 dollars.\n#### 18") == "18"
    with pytest.raises(UserError, match="eighteen"):
        normalize_gold("number", "eighteen")


def test_gsm8k_reference_solutions_verify_against_their_own_gold(data_dir: Path) -> None:
    lines = (data_dir / "gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines[:300]]
    assert len(rows) == (30 if data_dir == FIXTURES else 300)
    golds = [r["answer"].split("####")[-1].strip() for r in rows]
    verdicts = verify_batch("number", [r["answer"] for r in rows], golds)
    assert all(v.correct for v in verdicts)
    shifted = verify_batch("number", [r["answer"] for r in rows], golds[1:] + golds[:1])
    for v, gold, other in zip(shifted, golds, golds[1:] + golds[:1]):
        assert v.correct is (gold.replace(",", "") == other.replace(",", ""))
    assert sum(not v.correct for v in shifted) > len(rows) // 2
