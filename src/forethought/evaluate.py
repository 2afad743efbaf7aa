"""Evaluate a model on a task: generate, extract, verify, and summarise with a 95% interval."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from forethought import plans
from forethought.engines.base import Engine, Request, request_seed
from forethought.errors import UserError
from forethought.jsonl import append, open_for_append, read_jsonl, write_json, write_jsonl
from forethought.plans import code, steps
from forethought.plans.prompts import PROMPTS_VERSION
from forethought.runs.stages import heartbeat
from forethought.stats import accuracy_ci, correct_by_question, group_answers, majority_index, sampled_metrics
from forethought.tasks.base import Example, Task


@dataclass
class EvalResult:
    """Per-sample records and the summary of one evaluation."""

    records: list[dict]
    summary: dict

    def write(self, directory: Path) -> None:
        """DIR/records.jsonl, then DIR/summary.json (written last: its presence marks the evaluation done); the
        chunks file of a resumable evaluation into DIR (see `partial_path`) goes once both are written."""
        write_jsonl(directory / "records.jsonl", self.records)
        write_json(directory / "summary.json", self.summary)
        partial_path(directory).unlink(missing_ok=True)


def partial_path(directory: Path) -> Path:
    """Where an evaluation into `directory` keeps its finished chunks until it is written (pass it as `partial`)."""
    return Path(directory) / "answers.partial.jsonl"


Row = tuple  # (example, prompt, plan or None, output, tokens, finish_reason): one sample, before scoring


@dataclass(frozen=True)
class _Sampling:
    """What every request of one evaluation shares, and how one is built (seeded by question and stage)."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    plan_max_new_tokens: int
    seed: int
    shots: str | None
    progress: bool

    def request(self, messages: list[dict], example_id: str, stage: str = "", *, n: int | None = None,
                max_new_tokens: int | None = None, stop: tuple[str, ...] = ()) -> Request:
        return Request(messages=messages, n=self.n if n is None else n,
                       max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens, stop=stop,
                       seed=request_seed(self.seed, example_id, stage), temperature=self.temperature, top_p=self.top_p)


def _answer_none(engine: Engine, task: Task, examples: Sequence[Example], s: _Sampling) -> list[Row]:
    """No plan: one request per question, the answer is the whole reply."""
    prompts = [plans.question_messages(ex.question, task.answer_type, s.shots) for ex in examples]
    done = engine.generate([s.request(p, ex.id) for p, ex in zip(prompts, examples)], progress=s.progress)
    return [(ex, prompts[i], None, x.text, x.tokens, x.finish_reason)
            for i, ex in enumerate(examples) for x in done[i].samples]


def _answer_natural(engine: Engine, task: Task, examples: Sequence[Example], s: _Sampling) -> list[Row]:
    """Natural-language plan: a plan turn (n plans per question), then one solution turn that follows each plan."""
    plan_reqs = [s.request(plans.plan_messages(ex.question), ex.id, "plan", max_new_tokens=s.plan_max_new_tokens)
                 for ex in examples]
    planned = engine.generate(plan_reqs, progress=s.progress)
    pairs = [(ex, p) for ex, c in zip(examples, planned) for p in c.samples]
    prompts = [plans.solve_with_plan_messages(ex.question, p.text, task.answer_type) for ex, p in pairs]
    sol_reqs = [s.request(m, ex.id, f"solve{k}", n=1) for k, (m, (ex, _)) in enumerate(zip(prompts, pairs))]
    solved = engine.generate(sol_reqs, progress=s.progress)
    return [(ex, prompts[k], p.text, c.samples[0].text, p.tokens + c.samples[0].tokens, c.samples[0].finish_reason)
            for k, ((ex, p), c) in enumerate(zip(pairs, solved))]


def _one_pass(engine: Engine, examples: Sequence[Example], prompts: list[list[dict]], prefix: list[dict],
              stop: tuple[str, ...], split, s: _Sampling) -> list[Row]:
    """One request per question whose reply holds the plan, then the answer; `split` parts them (plan, answer)."""
    reqs = [s.request(p + prefix, ex.id, max_new_tokens=s.plan_max_new_tokens + s.max_new_tokens, stop=stop)
            for p, ex in zip(prompts, examples)]
    done = engine.generate(reqs, progress=s.progress)
    return [(ex, prompts[i], *split(x.text), x.tokens, x.finish_reason)
            for i, ex in enumerate(examples) for x in done[i].samples]


def _answer_code(engine: Engine, task: Task, examples: Sequence[Example], s: _Sampling) -> list[Row]:
    """Pseudocode plan (CodePlan): the reply opens a ```python block, writes the plan, closes it, then answers; the
    answer is the text after the block (none when it never closes)."""
    def split(text: str):
        parsed = code.parse(code.OPEN + text)
        return parsed.plan, parsed.response

    prompts = [plans.code_plan_messages(ex.question, task.answer_type, s.shots) for ex in examples]
    return _one_pass(engine, examples, prompts, [], (), split, s)


def _answer_steps(engine: Engine, task: Task, examples: Sequence[Example], s: _Sampling) -> list[Row]:
    """Tagged plan steps (CPL), continued from <plan>: <step>..</step>..</plan><solution>..</solution>; the answer is
    the text after <solution>, or the whole reply (and no plan) when the model never opens one."""
    def split(text: str):
        plan, tag, solution = text.partition(steps.SOLUTION_OPEN)
        return (plan, solution) if tag else (None, text)

    prompts = [steps.messages(ex.question, task.answer_type) for ex in examples]
    prefix = [{"role": "assistant", "content": steps.root_prefix()}]
    return _one_pass(engine, examples, prompts, prefix, (steps.SOLUTION_CLOSE,), split, s)


_ANSWER = {"none": _answer_none, "natural": _answer_natural, "code": _answer_code, "steps": _answer_steps}


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
    partial: Path | None = None,
) -> EvalResult:
    """Answer every example `n` times with `engine` and score the answers with the task's verifier.

    With `partial` (a JSON Lines file) the questions are answered in chunks of the engine's batch size, each
    appended there as it ends, so that a killed evaluation resumes at its first unfinished chunk; seconds then
    count every attempt's chunks.

    With plan format `code` the verifier reads only the response after the plan's block (none if it never closes);
    with `steps` (CPL) it reads the text after <solution>, or the whole reply when the model never opened one.
    """
    plans.check_plan_format(plan_format, plans.PLAN_FORMATS)
    shots = task.fewshot() if fewshot else None
    if fewshot and plan_format not in ("none", "code"):  # a setting that is accepted is honoured, or refused
        raise UserError(f"few-shot prompts go with plan formats none and code, not '{plan_format}' (its prompts "
                        "are zero-shot); turn fewshot off")
    if fewshot and shots is None:
        raise UserError(f"task '{task.name}' has no few-shot prompt; turn fewshot off")
    s = _Sampling(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                  plan_max_new_tokens=plan_max_new_tokens, seed=seed, shots=shots, progress=progress)
    if partial is None:
        rows, seconds = _timed(lambda: _ANSWER[plan_format](engine, task, examples, s))
    else:
        settings = {k: v for k, v in asdict(s).items() if k != "progress"}
        key = json.dumps([model_name, plan_format, settings, PROMPTS_VERSION, task.name], sort_keys=True)
        key = hashlib.sha256(key.encode()).hexdigest()[:16]
        rows, seconds = _in_chunks(_ANSWER[plan_format], engine, task, examples, s, Path(partial), key)
    return _score(task, rows, s, seconds=seconds, model_name=model_name, plan_format=plan_format,
                  engine_name=getattr(engine, "name", type(engine).__name__))


def _timed(fn: Callable):
    """fn()'s result and the seconds it ran, leaving out time the process was stopped (a stage's Stopwatch)."""
    with heartbeat(lambda watch: None) as watch:
        out = fn()
    return out, watch.seconds


def _in_chunks(answer: Callable, engine: Engine, task: Task, examples: Sequence[Example], s: _Sampling, path: Path,
               key: str) -> tuple[list[Row], float]:
    """`answer` over consecutive chunks of examples, reusing the chunks `path` already holds for the same
    questions and settings (`key`); returns the rows in order and the seconds the chunks took."""
    size = max(1, int(getattr(engine, "batch_size", None) or 64))
    done = {}
    if path.is_file():
        done = {tuple(r["ids"]): r for _, r in read_jsonl(path) if r.get("key") == key}
    by_id = {ex.id: ex for ex in examples}
    rows, seconds = [], 0.0
    with open_for_append(path) as f:
        for k in range(0, len(examples), size):
            chunk = examples[k: k + size]
            ids = tuple(ex.id for ex in chunk)
            record = done.get(ids)
            if record is None:
                got, took = _timed(lambda: answer(engine, task, chunk, s))
                record = {"key": key, "ids": list(ids), "seconds": round(took, 3),
                          "rows": [[ex.id, *rest] for ex, *rest in got]}
                append(f, [record])
            rows += [(by_id[r[0]], *r[1:]) for r in record["rows"]]
            seconds += record["seconds"]
    return rows, seconds


def _score(task: Task, rows: list[Row], s: _Sampling, *, seconds: float, model_name: str, plan_format: str,
           engine_name: str) -> EvalResult:
    """Verify every sample, then summarise: accuracy with its 95% interval over questions, tokens, settings."""
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
        "task": task.name, "model": model_name, "n": len(per_question), "samples_per_question": s.n,
        "accuracy": accuracy, "ci95": [ci[0], ci[1]], "correct": sum(r["correct"] for r in records),
        "unparseable": sum(r["extracted"] is None for r in records),
        "truncated": sum(r["finish_reason"] == "length" for r in records),
        "tokens_generated": tokens, "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "seconds": seconds, "plan_format": plan_format, "temperature": s.temperature, "top_p": s.top_p,
        "max_new_tokens": s.max_new_tokens,
        "plan_max_new_tokens": s.plan_max_new_tokens if plan_format != "none" else None,
        "fewshot": bool(s.shots), "seed": s.seed, "engine": engine_name, "prompts_version": PROMPTS_VERSION,
    }
    if s.n > 1:
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
