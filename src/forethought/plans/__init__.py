"""Plan formats: how a prompt asks for a plan, and how plan and solution are laid out as chat turns.

`none` is a plain worked answer; `natural` is LEPA's anticipatory plan followed by a solution (two turns);
`code` is CodePlan's pseudocode plan and the solution in one assistant turn (see plans/code.py).
`steps` (CPL) is the tagged step format of plans/steps.py; `forethought eval --plan-format steps` uses it.
"""

from __future__ import annotations

from forethought.errors import UserError
from forethought.plans import code, prompts

PLAN_FORMATS = ("none", "natural", "code", "steps")
IMPLEMENTED = ("none", "natural", "code")  # what the EM samplers can use; `steps` is searched, not sampled


def check_plan_format(name: str, usable: tuple[str, ...] = IMPLEMENTED) -> str:
    """Return `name` if it is one of the `usable` plan formats, else raise a UserError naming the choices."""
    if name not in PLAN_FORMATS:
        raise UserError(f"unknown plan format '{name}'; choose one of: {', '.join(PLAN_FORMATS)}")
    if name not in usable:
        raise UserError(f"plan format '{name}' cannot be used here; usable: {', '.join(usable)} "
                        "(the steps format is for `forethought search` / `cpl` and evaluation)")
    return name


def question_messages(question: str, answer_type: str, fewshot: str | None = None) -> list[dict]:
    """Chat messages asking for a worked answer to `question` (plan format `none`)."""
    shot = prompts.FEWSHOT_HEADER.format(fewshot=fewshot.strip()) if fewshot else ""
    text = prompts.DIRECT.format(
        fewshot=shot, question=question.strip(), answer_format=prompts.answer_format(answer_type)
    )
    return [{"role": "user", "content": text}]


def demo_messages(demos, plan_format: str, answer_type: str) -> list[dict]:
    """Worked demonstrations as earlier chat turns, laid out exactly as the format's own turns (sampling only)."""
    if demos and plan_format not in ("none", "natural"):
        raise UserError(f"worked demonstrations work with plan formats none and natural, not '{plan_format}'; "
                        "set sampler.demos: 0")
    out: list[dict] = []
    for d in demos:
        ask = (solve_with_plan_messages(d.question, d.plan, answer_type) if plan_format == "natural"
               else question_messages(d.question, answer_type))
        out += ask + [{"role": "assistant", "content": d.solution.strip()}]
    return out


def plan_messages(question: str) -> list[dict]:
    """First LEPA turn: ask for an anticipatory plan."""
    return [{"role": "user", "content": prompts.PLAN.format(question=question.strip())}]


def solve_with_plan_messages(question: str, plan: str, answer_type: str) -> list[dict]:
    """Second LEPA turn: the plan as the assistant's first reply, then ask for the solution."""
    return plan_messages(question) + [
        {"role": "assistant", "content": plan.strip()},
        {"role": "user", "content": prompts.SOLVE_WITH_PLAN.format(answer_format=prompts.answer_format(answer_type))},
    ]


def reflect_messages(question: str, plan: str | None, solution: str, gold: str) -> list[dict]:
    """LEPA reflection turn: the failed plan (if any) and solution, with the correct final answer shown."""
    if plan is None:
        text = prompts.REFLECT_SOLUTION.format(question=question.strip(), solution=solution.strip(), gold=gold)
    else:
        text = prompts.REFLECT_PLAN.format(
            question=question.strip(), plan=plan.strip(), solution=solution.strip(), gold=gold
        )
    return [{"role": "user", "content": text}]


def new_plan_messages(reflect: list[dict], reflection: str) -> list[dict]:
    """LEPA new-plan turn: after the reflection, ask for a plan without the answer."""
    return reflect + [
        {"role": "assistant", "content": reflection.strip()},
        {"role": "user", "content": prompts.NEW_PLAN},
    ]


def retry_messages(reflect: list[dict], reflection: str, answer_type: str) -> list[dict]:
    """LEPA without plans: after the reflection, ask for a fresh solution."""
    return reflect + [
        {"role": "assistant", "content": reflection.strip()},
        {"role": "user", "content": prompts.RETRY.format(answer_format=prompts.answer_format(answer_type))},
    ]


def code_messages(question: str, answer_type: str, fewshot: str | None = None) -> list[dict]:
    """Plan format `code`: ask for a pseudocode plan in a ```python block, then the solution, in one reply."""
    shot = prompts.FEWSHOT_HEADER.format(fewshot=fewshot.strip()) if fewshot else ""
    text = prompts.CODE_DIRECT.format(
        fewshot=shot, question=question.strip(), answer_format=prompts.answer_format(answer_type)
    )
    return [{"role": "user", "content": text}]


def code_plan_messages(question: str, answer_type: str, fewshot: str | None = None) -> list[dict]:
    """`code_messages` with the reply opened by ```python, so the model continues with its plan (stop at ```)."""
    return code_messages(question, answer_type, fewshot) + [{"role": "assistant", "content": code.OPEN}]


def code_solve_messages(question: str, plan: str, answer_type: str) -> list[dict]:
    """`code_messages` with the reply holding the rendered plan, so the model continues with the solution."""
    return code_messages(question, answer_type) + [{"role": "assistant", "content": code.render(plan)}]


def new_code_plan_messages(reflect: list[dict], reflection: str) -> list[dict]:
    """LEPA with code plans: after the reflection, ask for a new pseudocode plan (reply opened by ```python)."""
    return reflect + [
        {"role": "assistant", "content": reflection.strip()},
        {"role": "user", "content": prompts.NEW_CODE_PLAN},
        {"role": "assistant", "content": code.OPEN},
    ]


def annotate_messages(prompt: str, response: str, max_words: int = 200) -> list[dict]:
    """CodePlan data construction: ask an annotator for pseudocode outlining `response` (reply opened by ```python)."""
    text = prompts.ANNOTATE_CODE.format(prompt=prompt.strip(), response=response.strip(), max_words=max_words)
    return [{"role": "user", "content": text}, {"role": "assistant", "content": code.OPEN}]
