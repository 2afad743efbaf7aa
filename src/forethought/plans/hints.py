"""Gold-answer hints (STaR rationalization, PPS) and a check that a text does not lean on the hint it was shown."""

from __future__ import annotations

import re

from forethought.plans import prompts

# Phrases a hinted sample uses when it cites the hint instead of reasoning; such a sample is not kept.
_MENTION = re.compile(
    r"\bhint(?:s|ed)?\b|\(correct\)|\b(?:marked|labell?ed|tagged)\s+(?:as\s+)?correct\b"
    r"|\b(?:given|provided|stated|suggested|supplied)\s+(?:final\s+|correct\s+)?answer\b"
    r"|\banswer\s+(?:was\s+|is\s+)?(?:given|provided|supplied)\b|\banswer\s+in\s+(?:the\s+)?parenthes",
    re.IGNORECASE,
)


def with_hint(question: str, gold: str, answer_type: str) -> str:
    """`question` with STaR's hint: the correct option's line tagged "(CORRECT)", else "(gold)" appended."""
    if answer_type == "choice":
        lines = question.split("\n")
        for i in range(len(lines) - 1, -1, -1):
            if lines[i].startswith(f"{gold}) "):
                lines[i] += prompts.HINT_CHOICE_TAG
                return "\n".join(lines)
    return prompts.HINT_ANSWER.format(question=question.rstrip(), gold=gold)


def mentions_hint(text: str) -> bool:
    """True when `text` refers to the hint ("the hint", "(CORRECT)", "the given answer"...)."""
    return _MENTION.search(text) is not None
