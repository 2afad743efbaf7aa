"""Code-form plans (CodePlan): Python-style pseudocode in a ```python block before the response, never executed.

This module renders a plan into assistant text, parses plan and response back out of a model's output, and
checks a plan as text only (brackets, strings, block bodies, copying, stated answers); nothing is run or compiled.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from forethought.plans.leak import follows, plan_leaks

OPEN = "```python\n"  # the assistant turn starts with this; generation of a plan stops at CLOSE
CLOSE = "```"
_OPEN_RE = re.compile(r"```[ \t]*(?:python|py|pseudocode|pseudo)?[ \t]*\n", re.IGNORECASE)
_PAIRS = {")": "(", "]": "[", "}": "{"}
_CODE_LINE = re.compile(
    r"^\s*(?:(?:def|class|for|while|if|elif|else|return|yield|import|from|with|try|except|print|assert|break|"
    r"continue|pass)\b|[A-Za-z_][\w.]*(?:\[[^\]]*\])?(?:\s*,\s*[A-Za-z_]\w*)*\s*(?:[-+*/%]|//)?=(?!=)\s*\S"
    r"|[A-Za-z_][\w.]*\(.*\)\s*(?:#.*)?$)"
)
_WORD = re.compile(r"[a-z0-9]+")
_STATED = re.compile(r"\breturn\b|\bprint\s*\(|\byield\b|\\boxed\{|\b(?:final_?)?(?:answer|result)\s*"
                     r"(?:=|:|is|would\s+be|will\s+be|should\s+be)", re.IGNORECASE)
_OPENERS = re.compile(r"\s*[\[$]")


@dataclass(frozen=True)
class Parsed:
    """A model output split into its plan (None when there is no ```python block) and the response after it."""

    plan: str | None
    response: str
    closed: bool  # the plan's block was closed with ```


def clean(plan: str) -> str:
    """The plan as it is stored and rendered: common indentation removed, no blank edges or trailing spaces."""
    lines = [line.rstrip() for line in textwrap.dedent(plan.replace("\t", "    ")).split("\n")]
    return "\n".join(lines).strip("\n")


def render(plan: str, response: str = "") -> str:
    """Assistant text: the plan in a ```python block, then the response (empty: the prefix a response continues)."""
    return f"{OPEN}{clean(plan)}\n{CLOSE}\n{response.strip()}"


def parse(text: str) -> Parsed:
    """Split an output at its first ```python block; text before the block is dropped, the rest is the response."""
    m = _OPEN_RE.search(text)
    if m is None:
        return Parsed(None, text.strip(), False)
    end = text.find(CLOSE, m.end())
    if end < 0:
        return Parsed(text[m.end():], "", False)
    return Parsed(text[m.end():end], text[end + len(CLOSE):].strip(), True)


def problem(plan: str) -> str | None:
    """Why `plan` is not a well-formed pseudocode plan ("empty", "unbalanced", "unfinished_block", "not_code"),
    or None. Brackets and triple-quoted strings must close; a line ending in ':' needs an indented body."""
    lines = _code_lines(plan)
    if not any(line.strip() for line in lines):
        return "empty"
    if not _balanced(plan, lines):
        return "unbalanced"
    for i, line in enumerate(lines):
        if line.rstrip().endswith(":"):
            indent = len(line) - len(line.lstrip())
            body = next((b for b in lines[i + 1:] if b.strip()), None)
            if body is None or len(body) - len(body.lstrip()) <= indent:
                return "unfinished_block"
    if not any(_CODE_LINE.match(line) for line in lines):
        return "not_code"
    return None


def _code_lines(plan: str) -> list[str]:
    """The plan's lines without comments and string contents (so ':' or brackets inside them do not count)."""
    out, current, quote, i = [], [], None, 0
    while i < len(plan):
        c = plan[i]
        if quote:
            if plan.startswith(quote, i):
                quote, i = None, i + len(quote)
                current.append('""')
                continue
            if c == "\n" and len(quote) == 1:  # an apostrophe in prose, not a string: drop it
                quote = None
                out.append("".join(current))
                current = []
            i += 1
            continue
        if c == "#":
            end = plan.find("\n", i)
            i = len(plan) if end < 0 else end
            continue
        if c in "\"'":
            quote = c * 3 if plan.startswith(c * 3, i) else c
            i += len(quote)
            continue
        if c == "\n":
            out.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    out.append("".join(current))
    return out


def _balanced(plan: str, lines: list[str]) -> bool:
    """Brackets pair up and every triple-quoted string closes (single quotes may be apostrophes in prose)."""
    if plan.count('"""') % 2 or plan.count("'''") % 2:
        return False
    stack = []
    for c in "".join(lines):
        if c in "([{":
            stack.append(c)
        elif c in _PAIRS and (not stack or stack.pop() != _PAIRS[c]):
            return False
    return not stack


def copies(plan: str, response: str, n: int = 5, threshold: float = 0.5) -> bool:
    """True when at least `threshold` of the plan's word n-grams appear verbatim in the response (a copy, not an
    outline); a plan shorter than n words copies when it is a word-for-word part of the response."""
    p, r = _WORD.findall(plan.lower()), _WORD.findall(response.lower())
    if not p or not r:
        return False
    if len(p) < n:
        return len(p) >= 3 and f" {' '.join(p)} " in f" {' '.join(r)} "
    grams = {tuple(r[i:i + n]) for i in range(len(r) - n + 1)}
    plan_grams = [tuple(p[i:i + n]) for i in range(len(p) - n + 1)]
    return sum(g in grams for g in plan_grams) / len(plan_grams) >= threshold


def leaks(plan: str, gold: str, answer_type: str, choices: Sequence[str] = (), prompt: str = "") -> bool:
    """True when the plan gives the final answer away: `return GOLD`, `answer = GOLD`, "the answer is GOLD", or
    (when the gold is not already in the prompt) the gold itself anywhere, as `leak.plan_leaks` finds it."""
    gold = gold.strip()
    if not gold:
        return False
    if any(_gold_at(plan, m.end(), gold) for m in _STATED.finditer(plan)):
        return True
    if prompt and answer_type != "choice" and plan_leaks(prompt, gold, answer_type, choices):
        return False  # the gold is already in the prompt: mentioning it is not giving it away, only stating it
    return plan_leaks(plan, gold, answer_type, choices)


def _gold_at(plan: str, pos: int, gold: str) -> bool:
    """The gold follows a stating keyword, after quotes, brackets or '$' (and is not the start of '18.5')."""
    while True:
        if follows(plan, pos, gold):
            end = plan.lower().find(gold.lower(), pos) + len(gold)
            return not (plan[end:end + 1] == "." and plan[end + 1:end + 2].isdigit())
        opener = _OPENERS.match(plan, pos)
        if opener is None:
            return False
        pos = opener.end()
