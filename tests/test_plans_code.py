"""Code-form plans: rendering and parsing, the well-formedness rules, copy and answer-leak checks (text only)."""

import pytest

from forethought import plans
from forethought.plans import code

GOOD = [
    "def solve(eggs, eaten, baked, price):\n    left = eggs - eaten - baked\n    return left * price",
    "# count what is left, then price it\nremaining = total - used\nincome = remaining * price_per_item",
    "for each friend in friends:\n    if friend.has_candy:\n        count += 1\nreturn count",
    "def plan():\n    '''Outline only.'''\n    data = read(problem)  # Janet's numbers\n    return combine(data)",
    "total = sum([a, b, c])\nprint(total)",
]
BAD = [
    ("", "empty"),
    ("   \n\n", "empty"),
    ("# just a comment\n# and another", "empty"),
    ("def solve(x:\n    return x", "unbalanced"),
    ("items = [a, b\nreturn items", "unbalanced"),
    ("values = compute(a, b))", "unbalanced"),
    ('def f():\n    """Unclosed docstring\n    return 1', "unbalanced"),
    ("def solve():\n    total = a + b\n    for item in items:", "unfinished_block"),
    ("if x > 3:\nreturn y", "unfinished_block"),
    ("First add the numbers. Then subtract the eaten eggs. Finally, multiply by the price.", "not_code"),
]


def test_render_and_parse_round_trip():
    text = code.render("  x = a + b\n  return x\n", "So the answer is 5.")
    assert text == "```python\nx = a + b\nreturn x\n```\nSo the answer is 5."
    parsed = code.parse(text)
    assert parsed == code.Parsed("x = a + b\nreturn x\n", "So the answer is 5.", True)
    assert code.render("x = 1") == "```python\nx = 1\n```\n"  # the prefix a solution continues
    assert code.parse("Here is my plan:\n```py\ny = 2\n```\nDone.") == code.Parsed("y = 2\n", "Done.", True)


def test_parse_without_a_block_or_with_an_unclosed_one():
    assert code.parse("The answer is 4.") == code.Parsed(None, "The answer is 4.", False)
    assert code.parse("```python\nfor x in xs:\n    total += x") == code.Parsed("for x in xs:\n    total += x", "", False)


@pytest.mark.parametrize("plan", GOOD)
def test_well_formed_plans_pass(plan):
    assert code.problem(plan) is None


@pytest.mark.parametrize("plan,reason", BAD)
def test_malformed_plans_are_named(plan, reason):
    assert code.problem(plan) == reason


def test_brackets_inside_strings_and_comments_do_not_count():
    assert code.problem('label = "(open"\nnote = compute(x)  # a stray ) here') is None
    assert code.problem('def f():\n    msg = "ends with:"\n    return msg') is None


RESPONSE = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
            "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh "
            "duck egg. Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day.")


def test_copy_check_tells_an_outline_from_a_copy():
    outline = "left = eggs - eaten - baked\nincome = left * price\nreturn income"
    assert not code.copies(outline, RESPONSE)
    copied = "# She eats three for breakfast every morning and bakes muffins for her friends every day with four\n" \
             "# She sells the remainder at the farmers' market daily for $2 per fresh duck egg"
    assert code.copies(copied, RESPONSE)
    assert code.copies("sells the remainder", RESPONSE)  # a short plan that is a verbatim piece
    assert not code.copies("x = 1", RESPONSE) and not code.copies("", RESPONSE)


@pytest.mark.parametrize("plan,leaks", [
    ("left = eggs - eaten - baked\nreturn left * price", False),
    ("return 18", True),
    ("answer = 18\nprint(answer)", True),
    ("income = 9 * 2  # 18 dollars", True),                     # the gold number anywhere, as plan_leaks finds it
    ("income = 9 * 2  # eighteen dollars", True),               # written as a word too
    ("eggs = 16\nleft = eggs - 3 - 4", False),                   # question numbers are fine
    ("print(180)", False),                                       # 180 is not 18
    ("# the final answer: 18", True),
])
def test_code_leaks(plan, leaks):
    assert code.leaks(plan, "18", "number", prompt="Janet's ducks lay 16 eggs; she eats 3 and bakes 4.") is leaks


def test_gold_already_in_the_prompt_leaks_only_when_stated():
    prompt = "Tom has 3 apples and gets none. How many apples does he have?"
    assert not code.leaks("apples = 3\nkeep(apples)", "3", "number", prompt=prompt)
    assert code.leaks("apples = 3\nreturn 3", "3", "number", prompt=prompt)
    assert code.leaks("# the answer is 3", "3", "number", prompt=prompt)
    assert code.leaks("apples = 3", "3", "number")  # without the prompt every mention counts


def test_message_builders_put_the_plan_in_the_reply():
    ask = plans.code_plan_messages("Q?", "number")
    assert ask[-1] == {"role": "assistant", "content": code.OPEN} and "pseudocode" in ask[0]["content"]
    solve = plans.code_solve_messages("Q?", "x = 1\n", "number")
    assert solve[0] == ask[0] and solve[1]["content"] == "```python\nx = 1\n```\n"
    new = plans.new_code_plan_messages(plans.reflect_messages("Q?", "p", "s", "4"), "R")
    assert [m["role"] for m in new] == ["user", "assistant", "user", "assistant"] and new[-1]["content"] == code.OPEN
    ann = plans.annotate_messages("P?", "R.")
    assert "P?" in ann[0]["content"] and "R." in ann[0]["content"] and ann[-1]["content"] == code.OPEN
