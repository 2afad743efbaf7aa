"""Synthetic tasks: deterministic by seed, harder with difficulty, disjoint splits, fast, answers that check out."""

from __future__ import annotations

import re
import time

import pytest

from forethought.errors import UserError
from forethought.tasks import get_task
from forethought.tasks.base import Example

SYNTHETIC = ["synthetic/arithmetic", "synthetic/last_letters", "synthetic/coin_flip"]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_deterministic_by_seed(name):
    a = get_task(name, seed=3, test_size=50).load()
    b = get_task(name, seed=3, test_size=50).load()
    c = get_task(name, seed=4, test_size=50).load()
    assert a == b and len(a) == 50
    assert [e.question for e in a] != [e.question for e in c]
    assert len({e.id for e in a}) == 50 and a[0].id != c[0].id


@pytest.mark.parametrize("name", SYNTHETIC)
def test_splits_are_disjoint_and_sized(name):
    task = get_task(name, train_size=300, test_size=100)
    train, test = task.load(split="train"), task.load(split="test")
    assert len(train) == 300 and len(test) == 100 and task.default_split == "test"
    assert not {e.question for e in train} & {e.question for e in test}
    assert len({e.question for e in train}) == 300
    # the test split does not depend on train_size, and `data` is ignored
    assert get_task(name, train_size=10, test_size=100).load("ignored", split="test") == test
    assert task.load(split="train", limit=7) == train[:7]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_fast_and_difficulty_changes_problems(name):
    start = time.perf_counter()
    rows = get_task(name).load(split="train")
    assert len(rows) == 1000 and time.perf_counter() - start < 1.0
    easy = get_task(name, difficulty=1, test_size=20).load()
    hard = get_task(name, difficulty=4, test_size=20).load()
    assert {e.question for e in easy}.isdisjoint(e.question for e in hard)
    assert sum(len(e.question) for e in hard) > sum(len(e.question) for e in easy)


def _operations(reference: str) -> int:
    return len(re.findall(r" [-+*/] ", reference))


@pytest.mark.parametrize("difficulty", [1, 2, 4])
def test_arithmetic_difficulty_is_number_of_operations(difficulty):
    for ex in get_task("synthetic/arithmetic", difficulty=difficulty, test_size=60).load():
        assert _operations(ex.reference) == difficulty
        last_equation = re.findall(r"= (\d+)", ex.reference)[-1]
        assert ex.gold == last_equation and ex.reference.endswith(f"The answer is {ex.gold}.")
        assert ex.question.endswith("?") and int(ex.gold) >= 0


def test_arithmetic_difficulty_one_is_small_and_varied():
    rows = get_task("synthetic/arithmetic", test_size=200).load()
    assert all(int(e.gold) <= 20 and len(re.findall(r"\d+", e.question)) == 2 for e in rows)
    assert len({re.sub(r"\d+", "N", e.question.split()[1]) for e in rows}) >= 2  # "has", "starts"...
    assert len({e.question.split()[0] for e in rows}) >= 20  # many names


def test_last_letters_gold():
    for d in (1, 3):
        for ex in get_task("synthetic/last_letters", difficulty=d, test_size=30).load():
            words = re.search(r'"([^"]+)"', ex.question).group(1).split()
            assert len(words) == d + 1 and ex.gold == "".join(w[-1] for w in words).lower()


def test_coin_flip_gold_follows_flips():
    rows = get_task("synthetic/coin_flip", difficulty=3, test_size=100).load()
    for ex in rows:
        flips = len(re.findall(r"\b(flips|turns the coin over)\b", ex.question))
        people = len(re.findall(r"\b(flips|turns the coin over|does not|leaves)\b", ex.question))
        assert people == 4 and ex.gold == ("yes" if flips % 2 == 0 else "no")
    assert {e.gold for e in rows} == {"yes", "no"}


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="difficulty"):
        get_task("synthetic/arithmetic", difficulty=0)
    with pytest.raises(UserError, match=r"'colour'.*seed, difficulty, train_size, test_size"):
        get_task("synthetic/coin_flip", colour="red")
    assert get_task("synthetic/arithmetic", difficulty="2").options.difficulty == 2  # CLI strings are fine


@pytest.mark.parametrize("name", SYNTHETIC)
def test_gold_and_reference_verify(name):
    task = get_task(name, difficulty=2, test_size=20)
    rows = task.load()
    assert all(v.correct for v in task.verify_batch([f"The answer is {e.gold}." for e in rows], rows))
    assert all(v.correct for v in task.verify_batch([e.reference for e in rows], rows))
    wrong = [f"The answer is {'no' if e.gold == 'yes' else 'yes' if e.gold == 'no' else e.gold + '1'}." for e in rows]
    assert not any(v.correct for v in task.verify_batch(wrong, rows))
    assert task.verify(f"The answer is {rows[0].gold}.", rows[0]).correct


@pytest.mark.parametrize("name", ["synthetic/arithmetic", "synthetic/last_letters", "synthetic/coin_flip"])
def test_demos_are_new_questions_with_a_plan_that_gives_nothing_away(name):
    from forethought.plans.leak import plan_leaks

    task = get_task(name, difficulty=2, train_size=50, test_size=20)
    demos = task.demos(3)
    assert len(demos) == 3 and demos == task.demos(3)  # deterministic
    seen = {ex.question for split in ("train", "test") for ex in task.load(split=split)}
    assert len({d.question for d in demos}) == 3 and not seen & {d.question for d in demos}
    for d in demos:
        gold = solve(name, d.question)  # from the question alone, not from the demonstration's own solution
        assert task.verify(d.solution, Example(id="d", question=d.question, gold=gold)).correct, (d.question, gold)
        wrong = {"yes": "no", "no": "yes"}.get(gold, gold + "1")
        assert not task.verify(d.solution, Example(id="d", question=d.question, gold=wrong)).correct
        assert d.plan.startswith("1. ") and not plan_leaks(d.plan, gold, task.answer_type)


_EVENT = re.compile(r"(?P<half>gives half of|keeping half)"
                    r"|(?:buys|gets) (?P<bags>\d+) (?:bags|packs) (?:with|of) (?P<each>\d+)"
                    r"|(?:buys|gets|finds|is given) (?P<more>\d+) more"
                    r"|(?:gives|loses|sells|eats) (?P<less>\d+)")


def solve(name: str, question: str) -> str:
    """The answer to a synthetic question, worked out from its text alone."""
    if name == "synthetic/arithmetic":  # the first number is the start; then each event in order
        x = int(re.search(r"\d+", question).group())
        for m in _EVENT.finditer(question):
            if m["half"]:
                x //= 2
            elif m["bags"]:
                x += int(m["bags"]) * int(m["each"])
            else:
                x += int(m["more"]) if m["more"] else -int(m["less"])
        return str(x)
    if name == "synthetic/last_letters":
        return "".join(w[-1] for w in re.search(r'"([^"]+)"', question).group(1).split()).lower()
    flips = len(re.findall(r"\b(flips|turns the coin over)\b", question))
    return "yes" if flips % 2 == 0 else "no"


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("difficulty", [1, 3, 6])
def test_gold_is_the_answer_worked_out_from_the_question(name, difficulty):
    rows = get_task(name, difficulty=difficulty, test_size=100).load()
    assert [e.gold for e in rows] == [solve(name, e.question) for e in rows]
