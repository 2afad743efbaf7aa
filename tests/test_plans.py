"""Plan helpers: STaR hints, hint-mention check, leak (information bypassing) rules, LEPA reflection turns."""

import pytest

from forethought import plans
from forethought.plans import prompts
from forethought.plans.hints import mentions_hint, with_hint
from forethought.plans.leak import plan_leaks

CHOICES = ("oxygen", "nitrogen", "carbon dioxide")
CHOICE_Q = "Which gas do plants give off?\nA) oxygen\nB) nitrogen\nC) carbon dioxide"


def test_star_hint_tags_the_correct_option_or_appends_the_answer():
    assert with_hint(CHOICE_Q, "A", "choice") == CHOICE_Q.replace("A) oxygen", "A) oxygen (CORRECT)")
    assert with_hint("How many eggs are left?", "9", "number") == "How many eggs are left? (9)"
    assert with_hint("Is the sky blue?", "yes", "yesno") == "Is the sky blue? (yes)"


@pytest.mark.parametrize("text", [
    "Using the hint, the answer is 9.", "Option A is marked (CORRECT).", "The given answer is 9, so",
    "Hints say 9.", "The answer provided is 9.", "as the answer in parentheses shows",
])
def test_hint_mentions_are_caught(text):
    assert mentions_hint(text)


@pytest.mark.parametrize("text", ["16 - 3 - 4 = 9. The answer is 9.", "This is correct because plants photosynthesize."])
def test_ordinary_solutions_do_not_mention_the_hint(text):
    assert not mentions_hint(text)


@pytest.mark.parametrize("plan,gold,kind,leaks", [
    ("Add the two amounts: 9 in total.", "9", "number", True),
    ("The total should come to 1,250 dollars.", "1250", "number", True),
    ("Subtract 3.5 from the start.", "3.5", "number", True),
    ("Consider 19 and 0.9 and 90.", "9", "number", False),          # a whole token only
    ("Step 2: subtract.\n1. read\n2) add", "2", "number", False),    # enumerations are not quantities
    ("So the answer is 2.", "2", "number", True),
    ("Simplify to \\frac{1}{2} at the end.", "\\dfrac{1}{2}", "math", True),
    ("Use the quadratic formula.", "\\frac{1}{2}", "math", False),
    ("Then write \\boxed{x}.", "x", "math", True),
    ("Think about x and y.", "x", "math", False),                    # a short gold alone never leaks
    ("Decide whether yes or no fits.", "yes", "yesno", False),
    ("The answer is yes.", "yes", "yesno", True),
    ("Read all options, then pick.", "B", "choice", False),
    ("B is for being careful. Both matter.", "B", "choice", False),
    ("So the answer is (B).", "B", "choice", True),
    ("Pick option B.", "B", "choice", True),
    ("Plants release nitrogen during the day.", "B", "choice", True),  # the correct option's text
    ("Compare oxygen, nitrogen and carbon dioxide.", "B", "choice", False),  # every option listed: no leak
    ("Sort the words: apple banana cherry", "apple banana cherry", "exact", True),
    ("Flip the coin and track it.", "no", "exact", False),
])
def test_plan_leaks(plan, gold, kind, leaks):
    assert plan_leaks(plan, gold, kind, CHOICES if kind == "choice" else ()) is leaks


@pytest.mark.parametrize("plan,gold,leaks", [
    ("She ends up with nine eggs.", "9", True),
    ("Twelve cookies remain after the party.", "12", True),
    ("That makes twenty-four in all.", "24", True),
    ("That makes twenty four in all.", "24", True),
    ("Multiply to get one hundred.", "100", True),
    ("The total is one hundred and five dollars.", "105", True),
    ("It comes to two thousand three hundred.", "2300", True),
    ("Around a hundred people came.", "100", True),
    ("The temperature ends at negative five.", "-5", True),
    ("Then one apple is left.", "1", True),
    ("The result is Nine.", "9.0", True),
    ("That makes twenty-four in all.", "4", False),                  # part of a larger number
    ("Multiply to get one hundred.", "1", False),
    ("Multiply to get one hundred.", "101", False),
    ("First add, then subtract; second, check.", "1", False),        # ordinals are enumerations
    ("Find the twenty-first term.", "20", False),
    ("Take one-third of the total.", "1", False),
    ("Step one: add.\nStep two: subtract.\nPart three: check.", "2", False),
    ("One. Read the question.\nTwo) Add the parts.", "2", False),  # list markers written as words
    ("Count them one by one, each one once; one of them is odd.", "1", False),  # 'one' as a pronoun
    ("Someone often gets ninety percent.", "1", False),
    ("Add nine and three.", "12", False),
])
def test_number_words_equal_to_the_gold_leak(plan, gold, leaks):
    assert plan_leaks(plan, gold, "number") is leaks


@pytest.mark.parametrize("plan,leaks", [
    ("The answer is B.", True),
    ("Choose option B.", True),
    ("So we pick (B).", True),
    ("Select choice B at the end.", True),
    ("Option B is correct.", True),
    ("Therefore (B) is the right answer.", True),
    ("B is the best option.", True),
    ("The correct option is B.", True),
    ("Compare option A with option B and option C.", False),       # listing options states nothing
    ("Option A says oxygen; option B says nitrogen.", False),
    ("Eliminate option B if it is a noble gas.", False),
    ("Check whether option B is correct.", False),
    ("Option B is wrong because plants need it.", False),
    ("Choose between option A and option B.", False),
    ("Pick the option that matches photosynthesis.", False),
])
def test_only_a_stated_option_leaks(plan, leaks):
    """Gold is B; no option text appears in these plans, so only stating the letter can leak."""
    assert plan_leaks(plan, "B", "choice", ("x1", "y2", "z3")) is leaks


def test_reflection_sees_gold_and_new_plan_follows_it():
    msgs = plans.reflect_messages("Q?", "PLAN", "SOL", "42")
    assert "42" in msgs[0]["content"] and "PLAN" in msgs[0]["content"] and "SOL" in msgs[0]["content"]
    assert "42" in plans.reflect_messages("Q?", None, "SOL", "42")[0]["content"]
    new = plans.new_plan_messages(msgs, " thoughts ")
    assert new[1] == {"role": "assistant", "content": "thoughts"} and new[2]["content"] == prompts.NEW_PLAN
    retry = plans.retry_messages(msgs, "thoughts", "number")
    assert retry[-1]["content"].endswith(prompts.answer_format("number"))
