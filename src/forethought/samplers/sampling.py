"""The E-step: questions advance trial by trial through reflect -> plan -> solve, batched across questions.

The four samplers differ in three choices only:
- which trials see the gold hint (`_hinted`): pps every trial, star every trial after an unhinted one failed
  (rationalization; a correct answer rejected as truncated is no failure, so the next try is unhinted again);
- whether a trial starts by reflecting on the last failure with the gold answer in view: lepa, and only when the
  latest solution was wrong (arXiv 2505.00031). After a correct solution rejected for another reason (truncated,
  hint mention...) the next trial plans afresh without the gold; a trial rejected before solving (a leaking or
  malformed plan) leaves the question where it was;
- how many trials a question draws per round (`_block`): independent trials go `max_accepted` at a time,
  LEPA's chained trials one at a time. A question starts no new round once `max_accepted` are kept. STaR and LEPA
  keep one trajectory per question (the config refuses more), so STaR's hint follows only a failed unhinted try.
Per-trial seeds come from (seed, iteration, question id, trial, stage), so a resumed run repeats an uninterrupted one.
A budget (`max_tokens`, generated tokens) is checked before every engine call: once spent, no call starts, so the
overshoot is at most the last call; trials that spent tokens but did not finish are recorded as rejected ("budget").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import IO

from forethought import plans
from forethought.engines.base import Engine, Request, request_seed
from forethought.errors import UserError
from forethought.jsonl import append, open_for_append
from forethought.plans import code
from forethought.plans.hints import mentions_hint, with_hint
from forethought.plans.leak import plan_leaks
from forethought.plans.prompts import PROMPTS_VERSION
from forethought.samplers.config import SamplerConfig
from forethought.samplers.records import read_records
from forethought.tasks.base import Example, Task


@dataclass
class SamplingStats:
    """What one iteration's sampling spent and kept (over every record, resumed ones included)."""

    questions: int
    trials: int
    accepted: int
    tokens_in: int
    tokens_out: int
    seconds: float  # engine time attributed to the records

    @property
    def acceptance_rate(self) -> float:
        """Accepted trajectories per trial."""
        return self.accepted / self.trials if self.trials else 0.0


def _hinted(kind: str, q: _Question) -> bool:
    """PPS always shows the gold; STaR only once an unhinted try has failed (a correct answer rejected for another
    reason, e.g. truncated, is no failure: the next try is unhinted again)."""
    if kind == "pps":
        return True
    return kind == "star" and any(not r["hint_used"] and not r["correct"] for r in q.done.values())


def _block(cfg: SamplerConfig) -> int:
    return 1 if cfg.kind == "lepa" else cfg.max_accepted


def _key(plan: str | None, solution: str) -> tuple[str, str]:
    return (plan or "").strip(), solution.strip()


@dataclass
class _Question:
    """One question's progress, rebuilt from its records on resume."""

    ex: Example
    done: dict[int, dict] = field(default_factory=dict)
    accepted: int = 0
    kept: set[tuple[str, str]] = field(default_factory=set)
    last: dict | None = None  # the latest trial that reached a solution (LEPA reflects on it if it was wrong)

    def add(self, rec: dict) -> None:
        self.done[rec["trial"]] = rec
        if rec["accepted"]:
            self.accepted += 1
            self.kept.add(_key(rec["plan"], rec["solution"]))
        if rec["solution"] is not None and (self.last is None or rec["trial"] > self.last["trial"]):
            self.last = rec

    @property
    def failed(self) -> dict | None:
        """The solution LEPA's next trial reflects on: the latest one, only if it was wrong (a correct one is never
        shown as wrong, even when it was rejected as truncated or for mentioning the hint)."""
        return self.last if self.last is not None and not self.last["correct"] else None

    def pending(self, cfg: SamplerConfig) -> list[int]:
        """Trials to draw next: the rest of a started block, or a new block while fewer than K are kept."""
        first = next(t for t in count() if t not in self.done)
        start = first - first % _block(cfg)
        span = range(start, min(start + _block(cfg), cfg.trials))
        if self.accepted >= cfg.max_accepted and not any(t in self.done for t in span):
            return []
        return [t for t in span if t not in self.done]


@dataclass
class _Trial:
    """One trial in flight: what it has produced so far and what it cost."""

    q: _Question
    trial: int
    hint: bool  # the question is shown with the gold hint
    reflect: list[dict] | None = None
    reflection: str | None = None
    plan: str | None = None
    solution: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    truncated: bool = False  # a plan or solution hit its token limit
    finish: str = ""  # finish reason of the latest generation (a code plan must end at its closing ```)

    @property
    def saw_gold(self) -> bool:
        return self.hint or self.reflection is not None


@dataclass
class _Run:
    cfg: SamplerConfig
    engine: Engine
    task: Task
    out: IO[str]
    iteration: int
    seed: int
    method: str
    demos: list[dict] = field(default_factory=list)  # worked demonstrations before every conversation
    spent: int = 0  # generated tokens of this iteration so far (resumed records included), against cfg.max_tokens

    @property
    def exhausted(self) -> bool:
        return self.cfg.max_tokens is not None and self.spent >= self.cfg.max_tokens

    def generate(self, items: list[_Trial], messages: list[list[dict]], stage: str, max_new_tokens: int,
                 stop: tuple[str, ...] = ()) -> list[str]:
        """One engine call, one sample per trial; its tokens and a share of its wall time go to each trial."""
        if self.exhausted:
            raise _BudgetSpent
        reqs = [
            Request(messages=self.demos + m, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                    max_new_tokens=max_new_tokens, seed=request_seed(self.seed, f"{it.q.ex.id}/t{it.trial}", f"{self.iteration}:{stage}"), stop=stop)
            for it, m in zip(items, messages)
        ]
        start = time.perf_counter()
        done = self.engine.generate(reqs, progress=False)  # run_sampler shows one bar for the whole run
        share = (time.perf_counter() - start) / len(items)
        for it, c in zip(items, done):
            it.tokens_in += c.prompt_tokens
            it.tokens_out += c.samples[0].tokens
            self.spent += c.samples[0].tokens
            it.seconds += share
            it.finish = c.samples[0].finish_reason
            it.truncated |= stage != "reflect" and c.samples[0].finish_reason == "length"  # reflections aren't trained on
        return [c.samples[0].text for c in done]

    def question(self, it: _Trial) -> str:
        ex = it.q.ex
        return with_hint(ex.question, ex.gold, self.task.answer_type) if it.hint else ex.question

    def round(self, active: list[_Question]) -> None:
        """Advance every active question by its pending trials. Once the budget is spent no engine call starts:
        trials that already spent tokens are recorded as rejected ("budget"), so their tokens count."""
        items = [_Trial(q, t, _hinted(self.cfg.kind, q)) for q in active for t in q.pending(self.cfg)]
        try:
            self._advance(items)
        except _BudgetSpent:
            append(self.out, [self.record(it, "budget") for it in items
                              if (it.tokens_in or it.tokens_out) and it.trial not in it.q.done])

    def _advance(self, items: list[_Trial]) -> None:
        """Advance trials: reflect (LEPA), plan (natural), solve."""
        at, cfg = self.task.answer_type, self.cfg

        # LEPA reflects on the last solution if it was wrong; a trial with none to reflect on (the first, one after a
        # correct but rejected solution, or one after only malformed code plans) starts afresh
        if cfg.kind == "lepa" and (refl := [it for it in items if it.q.failed is not None]):
            ctx = [plans.reflect_messages(it.q.ex.question, it.q.failed["plan"], it.q.failed["solution"],
                                          _shown_gold(it.q.ex, at)) for it in refl]
            for it, c, text in zip(refl, ctx, self.generate(refl, ctx, "reflect", cfg.plan_max_new_tokens)):
                it.reflect, it.reflection = c, text

        if cfg.plan_format in ("natural", "code"):
            msgs = [self.plan_messages(it) for it in items]
            stop = (code.CLOSE,) if cfg.plan_format == "code" else ()
            rejected = []
            for it, text in zip(items, self.generate(items, msgs, "plan", cfg.plan_max_new_tokens, stop)):
                it.plan = text
                if cfg.plan_format == "code":  # a code plan must close its block and be well formed
                    it.plan = code.clean(text)
                    if it.finish != "stop" or code.problem(text):
                        rejected.append(self.record(it, "truncated" if it.finish == "length" else "bad_plan"))
                        continue
                if it.saw_gold and self.leaks(it):
                    rejected.append(self.record(it, "leak"))
                elif it.saw_gold and mentions_hint(text):
                    rejected.append(self.record(it, "hint_mention"))
            append(self.out, rejected)
            items = [it for it in items if it.trial not in it.q.done]

        if not items:
            return
        msgs = [self.solve_messages(it) for it in items]
        solutions = self.generate(items, msgs, "solve", cfg.max_new_tokens)
        verdicts = self.task.verify_batch(solutions, [it.q.ex for it in items])
        records = []
        for it, text, v in zip(items, solutions, verdicts):
            it.solution = text
            if not v.correct:
                reason = "wrong"
            elif cfg.reject_truncated and it.truncated:
                reason = "truncated"
            elif it.saw_gold and mentions_hint(text):
                reason = "hint_mention"
            elif cfg.dedupe and _key(it.plan, text) in it.q.kept:
                reason = "duplicate"
            elif it.q.accepted >= cfg.max_accepted:
                reason = "over_budget"
            else:
                reason = None
            records.append(self.record(it, reason, v.extracted, bool(v.correct)))
        append(self.out, records)

    def plan_messages(self, it: _Trial) -> list[dict]:
        """The plan turn: after a LEPA reflection a new plan, else the plan the format asks for at test time."""
        if self.cfg.plan_format == "code":
            if it.reflection is not None:
                return plans.new_code_plan_messages(it.reflect, it.reflection)
            return plans.code_plan_messages(self.question(it), self.task.answer_type)
        if it.reflection is not None:
            return plans.new_plan_messages(it.reflect, it.reflection)
        return plans.plan_messages(self.question(it))

    def leaks(self, it: _Trial) -> bool:
        """Does a plan made with the gold in view give the answer away (each format has its own rule)?"""
        ex = it.q.ex
        if self.cfg.plan_format == "code":
            return code.leaks(it.plan, ex.gold, self.task.answer_type, ex.choices, prompt=ex.question)
        return plan_leaks(it.plan, ex.gold, self.task.answer_type, ex.choices)

    def solve_messages(self, it: _Trial) -> list[dict]:
        at = self.task.answer_type
        if self.cfg.plan_format == "code":  # the solution continues the test-time reply after the plan's block
            return plans.code_solve_messages(self.question(it), it.plan, at)
        if self.cfg.plan_format == "natural":  # LEPA's reflection went into the plan; its solve turn is hint-free
            return plans.solve_with_plan_messages(self.question(it), it.plan, at)
        if it.reflection is not None:
            return plans.retry_messages(it.reflect, it.reflection, at)
        return plans.question_messages(self.question(it), at)

    def record(self, it: _Trial, reason: str | None, extracted: str | None = None, correct: bool = False) -> dict:
        """The trial's samples.jsonl line; also counted into its question's state."""
        ex = it.q.ex
        rec = {
            "id": f"{ex.id}/t{it.trial}", "question_id": ex.id, "iteration": self.iteration, "method": self.method,
            "sampler": self.cfg.kind, "trial": it.trial, "question": ex.question, "gold": ex.gold, "plan": it.plan,
            "reflection": it.reflection, "solution": it.solution, "extracted": extracted, "correct": correct,
            "accepted": reason is None, "rejected_reason": reason, "hint_used": it.saw_gold,
            "tokens_in": it.tokens_in, "tokens_out": it.tokens_out, "seconds": round(it.seconds, 6),
            "engine": getattr(self.engine, "name", type(self.engine).__name__), "seed": self.seed,
            "prompts_version": PROMPTS_VERSION,
        }
        it.q.add(rec)
        return rec


class _Bar:
    """One progress bar per sampling run: questions finished, questions with an accepted sample, trials, tok/s, ETA."""

    def __init__(self, enabled: bool, questions, cfg: SamplerConfig):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.questions, self.cfg = list(questions), cfg
        self.start, self.tokens0 = time.perf_counter(), self._tokens()
        self.progress = Progress(
            TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("questions"),
            TextColumn("{task.fields[accepted]} accepted · {task.fields[trials]} trials · {task.fields[tps]:.0f} tok/s"),
            TimeRemainingColumn(), disable=not enabled,
        )
        self.task = self.progress.add_task("sampling", total=len(self.questions), accepted=0, trials=0, tps=0.0)

    def _tokens(self) -> int:
        return sum(r["tokens_out"] for q in self.questions for r in q.done.values())

    def update(self) -> None:
        seconds = time.perf_counter() - self.start
        self.progress.update(
            self.task, completed=sum(not q.pending(self.cfg) for q in self.questions),
            accepted=sum(q.accepted > 0 for q in self.questions),
            trials=sum(len(q.done) for q in self.questions),
            tps=(self._tokens() - self.tokens0) / seconds if seconds > 0 else 0.0,
        )

    def __enter__(self):
        self.progress.__enter__()
        self.update()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


class _BudgetSpent(Exception):
    """The iteration's generated-token budget is spent: no further engine call."""


def _shown_gold(ex: Example, answer_type: str) -> str:
    return f"({ex.gold})" if answer_type == "choice" else ex.gold


def run_sampler(cfg: SamplerConfig, engine: Engine, task: Task, examples: Sequence[Example], *, out_path: Path,
                iteration: int, seed: int, method: str, progress: bool = True) -> SamplingStats:
    """Sample training trajectories for `examples` into `out_path`, resuming from the records already there."""
    plans.check_plan_format(cfg.plan_format)
    questions = {ex.id: _Question(ex) for ex in examples}
    if len(questions) != len(examples):
        raise UserError(f"{task.name}: question ids must be unique to sample them (found repeated ids)")
    for rec in read_records(out_path):
        mine = (cfg.kind, method, iteration, seed)
        if (rec.get("sampler"), rec.get("method"), rec.get("iteration"), rec.get("seed")) != mine:
            raise UserError(f"{out_path} holds samples of another run (sampler {rec.get('sampler')}, method "
                            f"{rec.get('method')}, iteration {rec.get('iteration')}, seed {rec.get('seed')}); "
                            "use a fresh run directory or delete the file")
        if (q := questions.get(rec["question_id"])) is not None and rec["trial"] not in q.done:
            q.add(rec)

    demos = plans.demo_messages(task.demos(cfg.demos) if cfg.demos else [], cfg.plan_format, task.answer_type)
    with open_for_append(out_path) as out, _Bar(progress, questions.values(), cfg) as bar:
        run = _Run(cfg, engine, task, out, iteration, seed, method, demos,
                   spent=sum(r["tokens_out"] for q in questions.values() for r in q.done.values()))
        queue, active = deque(q for q in questions.values() if q.pending(cfg)), []
        while (queue or active) and not run.exhausted:
            while queue and len(active) < cfg.chunk_size:
                active.append(queue.popleft())
            run.round(active)
            active = [q for q in active if q.pending(cfg)]
            bar.update()

    recs = [r for q in questions.values() for r in q.done.values()]
    return SamplingStats(
        questions=len(questions), trials=len(recs), accepted=sum(r["accepted"] for r in recs),
        tokens_in=sum(r["tokens_in"] for r in recs), tokens_out=sum(r["tokens_out"] for r in recs),
        seconds=sum(r["seconds"] for r in recs),
    )
