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
