"""Evaluate a model on a task: generate, extract, verify, and summarise with a 95% interval."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from forethought import plans
from forethought.engines.base import Engine, Request, request_seed
from forethought.jsonl import write_json, write_jsonl
from forethought.plans import code
from forethought.plans.prompts import PROMPTS_VERSION
from forethought.stats import accuracy_ci, correct_by_question, group_answers, majority_index, sampled_metrics
from forethought.tasks.base import Example, Task

@dataclass
class EvalResult:
    """Per-sample records and the summary of one evaluation."""

    records: list[dict]
    summary: dict

    def write(self, directory: Path) -> None:
        """DIR/records.jsonl, then DIR/summary.json (written last: its presence marks the evaluation done)."""
        write_jsonl(directory / "records.jsonl", self.records)
        write_json(directory / "summary.json", self.summary)


def _one_pass(plan_format: str, task: Task, examples: Sequence[Example], shots):
    """For the one-pass formats: the prompts, an assistant prefix to continue, stop strings, and how a reply splits
    into (plan, answer). `code`: the reply opens a ```python block, writes the plan, closes it, answers. `steps`
    (CPL): <plan><step>..</step>..</plan><solution>..</solution>; no <solution> means no plan, all answer."""
    if plan_format == "code":
        def split(text: str):
            parsed = code.parse(code.OPEN + text)
            return parsed.plan, parsed.response

        return [plans.code_plan_messages(ex.question, task.answer_type, shots) for ex in examples], [], (), split
    from forethought.plans import steps

    def split(text: str):
        plan, tag, solution = text.partition(steps.SOLUTION_OPEN)
        return (plan, solution) if tag else (None, text)

    prompts = [steps.messages(ex.question, task.answer_type) for ex in examples]
    return prompts, [{"role": "assistant", "content": steps.root_prefix()}], (steps.SOLUTION_CLOSE,), split


def evaluate(
    engine: Engine,
    task: Task,
    examples: Sequence[Example],
    *,
    model_name: str,
    plan_format: str = "none",
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    plan_max_new_tokens: int = 256,
    fewshot: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Answer every example `n` times with `engine` and score the answers with the task's verifier.

    With plan format `code` the verifier reads only the response after the plan's block (none if it never closes);
    with `steps` (CPL) it reads the text after <solution>, or the whole reply when the model never opened one.
    """
    plans.check_plan_format(plan_format, plans.PLAN_FORMATS)
    shots = task.fewshot() if fewshot else None
    sampling = dict(temperature=temperature, top_p=top_p)
    start = time.perf_counter()

    if plan_format == "none":
        prompts = [plans.question_messages(ex.question, task.answer_type, shots) for ex in examples]
        reqs = [
            Request(messages=p, n=n, max_new_tokens=max_new_tokens, seed=request_seed(seed, ex.id), **sampling)
            for p, ex in zip(prompts, examples)
        ]
        done = engine.generate(reqs, progress=progress)
        rows = [
            (ex, prompts[i], None, s.text, s.tokens, s.finish_reason)
            for i, ex in enumerate(examples)
            for s in done[i].samples
        ]
    elif plan_format in ("code", "steps"):  # one pass: the reply holds the plan, then the answer
        prompts, prefix, stop, split = _one_pass(plan_format, task, examples, shots)
        reqs = [
            Request(messages=p + prefix, n=n, max_new_tokens=plan_max_new_tokens + max_new_tokens, stop=stop,
                    seed=request_seed(seed, ex.id), **sampling)
            for p, ex in zip(prompts, examples)
        ]
        done = engine.generate(reqs, progress=progress)
        rows = [
            (ex, prompts[i], *split(s.text), s.tokens, s.finish_reason)
            for i, ex in enumerate(examples)
            for s in done[i].samples
        ]
    else:  # natural: plan turn, then a solution turn that follows each plan
        plan_reqs = [
            Request(messages=plans.plan_messages(ex.question), n=n, max_new_tokens=plan_max_new_tokens,
                    seed=request_seed(seed, ex.id, "plan"), **sampling)
            for ex in examples
        ]
        planned = engine.generate(plan_reqs, progress=progress)
        pairs = [(ex, s) for ex, c in zip(examples, planned) for s in c.samples]
        prompts = [plans.solve_with_plan_messages(ex.question, p.text, task.answer_type) for ex, p in pairs]
        sol_reqs = [
            Request(messages=m, n=1, max_new_tokens=max_new_tokens,
                    seed=request_seed(seed, ex.id, f"solve{k}"), **sampling)
            for k, (m, (ex, _)) in enumerate(zip(prompts, pairs))
        ]
        solved = engine.generate(sol_reqs, progress=progress)
        rows = [
            (ex, prompts[k], p.text, c.samples[0].text, p.tokens + c.samples[0].tokens, c.samples[0].finish_reason)
            for k, ((ex, p), c) in enumerate(zip(pairs, solved))
        ]
    seconds = time.perf_counter() - start

    verdicts = task.verify_batch([r[3] for r in rows], [r[0] for r in rows])
    records, seen = [], {}
    for (ex, prompt, plan, output, tokens, finish), v in zip(rows, verdicts):
        seen[ex.id] = sample = seen.get(ex.id, -1) + 1
        records.append({
            "id": ex.id, "sample": sample, "prompt": prompt, "plan": plan, "output": output,
            "extracted": v.extracted, "gold": ex.gold, "correct": v.correct,
            "tokens": tokens, "finish_reason": finish,
        })

    per_question = correct_by_question(records)
    accuracy, ci = accuracy_ci(list(per_question.values()))
    tokens = sum(r["tokens"] for r in records)
    summary = {
        "task": task.name, "model": model_name, "n": len(per_question), "samples_per_question": n,
        "accuracy": accuracy, "ci95": [ci[0], ci[1]], "correct": sum(r["correct"] for r in records),
        "unparseable": sum(r["extracted"] is None for r in records),
        "truncated": sum(r["finish_reason"] == "length" for r in records),
        "tokens_generated": tokens, "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "seconds": seconds, "plan_format": plan_format, "temperature": temperature, "top_p": top_p,
        "max_new_tokens": max_new_tokens, "plan_max_new_tokens": plan_max_new_tokens if plan_format != "none" else None,
        "fewshot": bool(shots), "seed": seed,
        "engine": getattr(engine, "name", type(engine).__name__), "prompts_version": PROMPTS_VERSION,
    }
    if n > 1:
        summary["sampled"] = _sampled(task, records, per_question)
    return EvalResult(records=records, summary=summary)


def _sampled(task: Task, records: list[dict], per_question: dict[str, list[bool]]) -> dict:
    """pass@k, maj@K and mean@K with intervals over questions (stats.sampled_metrics). The majority answer
    groups a question's extracted answers by the task's own equivalence (math-verify for math: "0.5" and "\\frac12"
    vote together); unparseable answers do not vote; a tie goes to the group answered first; the majority is right
    when its group's first answer was verified right."""
    from forethought.verify import equivalent_many

    by_q: dict[str, list[dict]] = {}
    for r in records:
        by_q.setdefault(r["id"], []).append(r)
    groups = group_answers({q: [r["extracted"] for r in rs] for q, rs in by_q.items()},
                           lambda pairs: equivalent_many(task.answer_type, pairs))
    majority = {q: majority_index(g) for q, g in groups.items()}
    out = sampled_metrics(per_question, {q: i is not None and bool(by_q[q][i]["correct"]) for q, i in majority.items()})
    out["majority_ties"] = sum(_tied(g) for g in groups.values())
    out["majority_no_answer"] = sum(i is None for i in majority.values())
    return out


def _tied(groups: list[int | None]) -> bool:
    """Whether two or more answer groups share the most votes."""
    votes = [groups.count(g) for g in set(groups) - {None}]
    return votes.count(max(votes, default=0)) > 1
