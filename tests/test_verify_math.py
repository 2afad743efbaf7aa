"""Tests for LaTeX math answers: boxed extraction and math-verify equivalence (through the worker pool)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forethought.verify import Verdict, extract, normalize_gold, verify, verify_batch
from forethought.verify.mathexpr import last_boxed

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"first \boxed{3} then \boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{\{1, \{2\}\}}", r"\{1, \{2\}\}"),
        (r"\fbox{x^{2^{3}}}", r"x^{2^{3}}"),
        (r"$\boxed 5$", "5"),
        (r"\boxed{7} and a cut-off \boxed{\frac{1}{", "7"),
        ("No box. The answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
        ("Final Answer: The final answer is $12$. I hope it is correct.", "12"),
        ("I could not solve it.", None),
    ],
)
def test_extract_math(text: str, expected: str | None) -> None:
    assert extract("math", text) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "correct"),
    [
        (r"0.5", r"\frac{1}{2}", True),
        (r"\dfrac{1}{2}", r"\frac12", True),
        (r"\tfrac{3}{4}", r"0.75", True),
        (r"2\sqrt{2}", r"\sqrt{8}", True),
        (r"\sqrt{2}", r"\sqrt{8}", False),
        (r"(-\infty,3]", r"(-\infty, 3]", True),
        (r"(-\infty,3)", r"(-\infty, 3]", False),
        (r"(3,\frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True),
        (r"1000", r"1,000", True),
        (r"10080", r"10,080", True),
        (r"10\text{ cm}", r"10", True),
        (r"30^\circ", r"30", True),
        (r"50\%", r"50", True),
        (r"\$5", r"5", True),
        (r"(x+1)^2", r"x^2+2x+1", True),
        (r"3", r"4", False),
        (r"\text{Evelyn}", r"\text{Evelyn}", True),
    ],
)
def test_math_equivalence(pred: str, gold: str, correct: bool) -> None:
    assert verify("math", f"Thus the result is $\\boxed{{{pred}}}$.", gold).correct is correct


def test_unparseable_math_is_none_and_wrong() -> None:
    assert verify("math", "I give up.", "3") == Verdict(None, False)


def test_normalize_gold_math_takes_boxed_part_of_a_solution() -> None:
    assert normalize_gold("math", r"So we get $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert normalize_gold("math", r" \left( 3, \frac{\pi}{2} \right) ") == r"\left( 3, \frac{\pi}{2} \right)"
    assert last_boxed("no box") is None


def test_math500_reference_solutions_match_their_answers(data_dir: Path) -> None:
    lines = (data_dir / "math/math500/test.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines[:200]]
    assert len(rows) == (40 if data_dir == FIXTURES else 200)
    verdicts = verify_batch("math", [r["solution"] for r in rows], [r["answer"] for r in rows])
    assert all(v.correct for v in verdicts)
    # A solution checked against another problem's answer is wrong whenever both are different integers.
    shifted = rows[1:] + rows[:1]
    wrong = verify_batch("math", [r["solution"] for r in rows], [r["answer"] for r in shifted])
    pairs = [(r["answer"], s["answer"]) for r, s in zip(rows, shifted)]
    int_pairs = [(v, a, b) for v, (a, b) in zip(wrong, pairs) if a.isdigit() and b.isdigit()]
    assert len(int_pairs) > len(rows) // 10
    for v, a, b in int_pairs:
        assert v.correct is (int(a) == int(b))
    # and a non-integer answer (fraction, interval, expression...) against a neighbour's answer is wrong too
    other = [v for v, (a, b) in zip(wrong, pairs) if not a.isdigit() and a.replace(" ", "") != b.replace(" ", "")]
    assert other and not any(v.correct for v in other)
