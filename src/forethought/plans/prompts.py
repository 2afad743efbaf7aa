"""Every prompt template Forethought sends to a model, in one place and versioned.

A run records `PROMPTS_VERSION`; change wording only by adding a new version, so results stay comparable.
Templates are `str.format` strings; model output is inserted as data, never evaluated.
"""

from __future__ import annotations

PROMPTS_VERSION = "v1"

# How each answer type asks the model to finish, so the verifiers can find the answer.
ANSWER_FORMAT = {
    "number": 'Solve the problem step by step. End with "The answer is N." where N is the final number.',
    "math": "Solve the problem step by step. Put the final answer in \\boxed{}.",
    "choice": 'Think step by step, then end with "The answer is (X)." where X is the letter of the correct option.',
    "yesno": 'Think step by step, then end with "The answer is yes." or "The answer is no."',
    "exact": 'Think step by step, then end with "So the answer is X." where X is the final answer.',
}

# Plain question -> worked answer (plan format "none").
DIRECT = "{fewshot}{question}\n\n{answer_format}"

FEWSHOT_HEADER = "Here are solved examples.\n\n{fewshot}\n\nNow the problem to solve.\n\n"

# LEPA (plan format "natural"): anticipatory plan, then a solution that follows it.
PLAN = (
    "{question}\n\n"
    "Before solving, write an anticipatory plan for this kind of problem: the general steps and knowledge "
    "needed to solve it. Keep it general and reusable. Do not solve the problem and do not state an answer "
    "or any problem-specific numbers."
)
SOLVE_WITH_PLAN = "Now solve the problem by following your plan. {answer_format}"


def answer_format(answer_type: str) -> str:
    """The closing instruction for an answer type."""
    return ANSWER_FORMAT[answer_type]

# Gold-answer hints (STaR rationalization, PPS). Shown to the model while sampling, never kept in training text.
# STaR's official forms: the answer in parentheses after the question; for multiple choice, the correct option tagged.
HINT_ANSWER = "{question} ({gold})"
HINT_CHOICE_TAG = " (CORRECT)"

# LEPA self-reflection: it sees the failed attempt and the correct final answer (the only place the gold is shown).
REFLECT_PLAN = (
    "{question}\n\n"
    "A plan for this problem was:\n{plan}\n\n"
    "A solution that followed the plan was:\n{solution}\n\n"
    "This solution is wrong: the correct final answer is {gold}. Reflect on why the plan failed: what did it "
    "miss or get wrong, and what general knowledge and steps should a better plan for this kind of problem "
    "contain? Do not solve the problem."
)
REFLECT_SOLUTION = (
    "{question}\n\n"
    "A solution to this problem was:\n{solution}\n\n"
    "This solution is wrong: the correct final answer is {gold}. Reflect on why it failed: what did it miss or "
    "get wrong, and what general knowledge and steps does a correct solution of this kind of problem need? "
    "Do not solve the problem."
)
NEW_PLAN = (
    "Using your reflection, write a new anticipatory plan for the problem: the general steps and knowledge needed "
    "to solve it. Keep it general and reusable. Do not solve the problem, and do not state the answer, any "
    "problem-specific numbers, or anything about the reflection or the correct answer."
)
# Plan format "none" with LEPA: a fresh solution informed by the reflection (which is then dropped).
RETRY = (
    "Now solve the problem again from the start, using what you learned, as if for the first time: do not "
    "mention the reflection or that the correct answer was given. {answer_format}"
)

# CodePlan (plan format "code"): the assistant turn opens with Python-style pseudocode in a ```python block, then
# the response follows in the same turn (one pass). The pseudocode is never run.
CODE_DIRECT = (
    "{fewshot}{question}\n\n"
    "First write a plan as short Python-style pseudocode (functions, loops, conditionals) in a ```python block; "
    "it outlines the reasoning and is never run. Then solve the problem by following the plan. {answer_format}"
)
# LEPA with code plans: after the reflection, a new pseudocode plan (the assistant reply opens the ```python block).
NEW_CODE_PLAN = (
    "Using your reflection, write a new plan for the problem as short Python-style pseudocode (functions, loops, "
    "conditionals) in a ```python block: the general steps and knowledge needed to solve it. Do not solve the "
    "problem, and do not state the answer, any result, or anything about the reflection or the correct answer."
)
# CodePlan data construction: the annotator sees a prompt and its reference response and outlines the response.
ANNOTATE_CODE = (
    "Below is a prompt and a reference response to it.\n\n"
    "### Prompt\n{prompt}\n\n### Reference response\n{response}\n\n"
    "Write Python-style pseudocode (functions, loops, conditionals) that outlines the high-level logic of the "
    "reference response: the steps it takes, in order. Keep it concise and high-level, under {max_words} words; "
    "do not copy the response's sentences or calculations, and do not state its final answer. Reply with only "
    "the pseudocode in one ```python block; it will never be run."
)

# CPL (plan format "steps"): a plan written as tagged steps, then a tagged solution; tree search runs over the steps.
STEPS = (
    "{question}\n\n"
    "First write a plan as a few short general steps, each as <step>Plan k: ...</step>, inside <plan>...</plan>. "
    "Do not compute the answer in the plan. Then write the solution inside <solution>...</solution>. "
    "{answer_format}"
)
