"""Tests for option-letter extraction in generative multiple choice."""

from __future__ import annotations

import pytest

from forethought.verify import Verdict, extract, normalize_gold, verify, verify_batch


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris is in France. The answer is (B)", "B"),
        ("the answer is B.", "B"),
        ("Answer: C", "C"),
        ("After checking each option, **D**", "D"),
        ("The correct option is b) because it floats.", "B"),
        ("(A) Paris is the capital", "A"),
        ("Let me think step by step.\nBoth are wrong except one.\nB", "B"),
        ("I choose option C.", "C"),
        ("A cat sat there. Hence the answer is D.", "D"),
        ("So the answer is (C). Wait, no: the answer is (A).", "A"),
        ("Final answer: **(D)**", "D"),
        ("I think B is correct because water boils.", "B"),
        ("The answer is option c.", "C"),
        ("The answer is:\n\n(C)", "C"),
    ],
)
def test_extract_choice(text: str, expected: str) -> None:
    assert extract("choice", text, num_choices=4) == expected


def test_article_a_is_not_an_answer() -> None:
    assert extract("choice", "A cat is an animal that I like.", num_choices=4) is None
    assert extract("choice", "The answer is a dog.", num_choices=4) is None


def test_num_choices_restricts_letters() -> None:
    text = "The answer is E. No wait, (B) is the one."
    assert extract("choice", text, num_choices=4) == "B"
    assert extract("choice", "The answer is (E)", num_choices=5) == "E"
    assert extract("choice", "The answer is (E)", num_choices=4) is None
    assert extract("choice", "The answer is (J)") == "J"  # A..J without num_choices


def test_choice_verdicts_and_gold_forms() -> None:
    assert normalize_gold("choice", "(b)") == "B"
    assert verify("choice", "The answer is (B).", "(B)") == Verdict("B", True)
    assert verify("choice", "The answer is (B).", "C") == Verdict("B", False)
    assert verify("choice", "no idea", "C") == Verdict(None, False)
    verdicts = verify_batch("choice", ["Answer: E", "Answer: E"], ["E", "E"], num_choices=[5, 4])
    assert [v.correct for v in verdicts] == [True, False]
