"""Plan-step MCTS (CPL): many questions' trees advance together, one batched engine call per expansion round.

Each round selects one leaf per unfinished tree by PUCT. A terminal leaf backs up its reward again; any other
leaf is expanded: its children (5 at the root, 3 elsewhere, exact duplicates dropped) are sampled for all trees
in one `engine.generate` call. Solutions are verified (+1 / -1), malformed or too-deep children get -1, other
children get the value model's estimate when one is given; each evaluated child is backed up to the root. With
nothing to evaluate (round 1, no value model, only new steps) the leaf is backed up with 0. The value model is
queried on the zero-shot messages (no demonstrations), the state `extract` writes its training row from.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import Field

from forethought.config import StrictModel
from forethought.engines import Request
from forethought.jsonl import read_jsonl, write_jsonl
from forethought.plans import steps
from forethought.search.tree import Tree
from forethought.tasks.base import Example

# (messages, prefix) pairs -> values in [-1, 1]
ValueFn = Callable[[list[tuple[list[dict], str]]], list[float]]


class SearchConfig(StrictModel):
    """CPL's search settings (paper: 200 iterations in round 1, 100 in round 2)."""

    iterations: int = Field(200, ge=1)
    c_puct: float = Field(1.5, ge=0)
    root_children: int = Field(5, ge=1)
    children: int = Field(3, ge=1)
    temperature: float = Field(0.7, ge=0)
    max_depth: int = Field(6, ge=1)
    max_new_tokens: int = Field(256, ge=1)  # per action (a step, or the whole solution)
    demos: int = Field(0, ge=0)  # worked demonstrations in the prompt (weak models), from Task.demos
    trees_per_batch: int = Field(64, ge=1)  # trees advanced together; each batch is written when done (resume unit)
    max_tokens: int | None = Field(None, ge=1)  # budget: generated tokens of this search; no expansion round starts
    # once they are spent (the round in flight finishes: at most one engine call over). Trees searched so far are
    # kept as they are, questions not reached get no tree. A CPL run carries a round's unspent share to the next


class SearchStats(StrictModel):
    """What a search did: trees, engine calls and expansions (this process), generated tokens (all trees),
    nodes, solved questions."""

    questions: int = 0
    iterations: int = 0
    engine_calls: int = 0
    expansions: int = 0
    tokens: int = 0
    nodes: int = 0
    solved: int = 0  # trees with at least one correct solution
    seconds: float = 0.0
    tokens_in: int = 0  # prompt tokens of this process's engine calls (not of resumed trees)
    budget_spent: bool = False  # the search stopped at search.max_tokens


def _seed(seed: int, question_id: str, node_id: int) -> int:
    digest = hashlib.sha256(f"{seed}:{question_id}:{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def advance(engine, task, batch: Sequence[tuple[Example, Tree]], cfg: SearchConfig, stats: SearchStats,
            value_fn: ValueFn | None = None, demos=(), seed: int = 0) -> None:
    """One MCTS iteration for every tree in `batch` that has iterations left, with one engine call.

    The policy sees `demos` before the question; `value_fn` gets the zero-shot messages, as in its training rows."""
    expand, requests = [], []
    for example, tree in batch:
        if tree.iterations >= cfg.iterations:
            continue
        leaf = tree.select(cfg.c_puct)
        if leaf.terminal:
            tree.backup(leaf, leaf.reward)
            tree.iterations += 1
            continue
        prefix = tree.prefix(leaf, steps.root_prefix())
        expand.append((example, tree, leaf, steps.messages(example.question, task.answer_type)))
        requests.append(Request(
            messages=steps.messages(example.question, task.answer_type, demos) + [
                {"role": "assistant", "content": prefix}],
            n=cfg.root_children if leaf.parent is None else cfg.children, temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens, stop=steps.STOP, seed=_seed(seed, tree.question_id, leaf.id),
            logprobs=True))
    if not requests:
        return
    completions = engine.generate(requests, progress=False)
    stats.engine_calls += 1
    stats.tokens_in += sum(c.prompt_tokens for c in completions)
    stats.expansions += len(requests)
    solutions, to_value, evaluated = [], [], []
    for (example, tree, leaf, messages), completion in zip(expand, completions):
        seen, children = set(), []
        for sample in completion.samples:
            stats.tokens += sample.tokens
            tree.tokens += sample.tokens
            action = steps.parse(sample.text, sample.finish_reason)
            if action.text in seen:
                continue
            seen.add(action.text)
            prior = math.exp(sample.logprob_mean) if sample.logprob_mean is not None else 1.0
            child = tree.add(leaf.id, action.kind, action.text, prior, sample.tokens)
            if child.kind == "step" and child.depth > cfg.max_depth:
                child.kind = "malformed"
            if child.kind == "solution":
                solutions.append((example, tree, child))
            elif child.kind == "malformed":
                child.reward = -1.0
            elif value_fn is not None:
                to_value.append((tree, child, messages))
            children.append(child)
        evaluated.append((tree, leaf, children))
    if solutions:
        verdicts = task.verify_batch([steps.solution_text(c.text) for _, _, c in solutions],
                                     [e for e, _, _ in solutions])
        for (_, _, child), verdict in zip(solutions, verdicts):
            child.reward = 1.0 if verdict.correct else -1.0
    if to_value:
        values = value_fn([(m, t.prefix(c, steps.root_prefix())) for t, c, m in to_value])
        for (_, child, _), value in zip(to_value, values):
            child.value = float(value)
    for tree, leaf, children in evaluated:
        scored = [(c, c.reward if c.terminal else c.value) for c in children]
        scored = [(c, v) for c, v in scored if v is not None]
        for child, value in scored:
            tree.backup(child, value)
        if not scored:
            tree.backup(leaf, 0.0)
        tree.iterations += 1


def run_search(engine, task, examples: Sequence[Example], cfg: SearchConfig, *, out: Path | None = None,
               value_fn: ValueFn | None = None, batched: bool = True, seed: int = 0) -> tuple[list[Tree], SearchStats]:
    """Search every question; trees go to `out` (JSONL, one tree per line) after each batch of trees.

    `seed` (the run's seed) and each (question, node) give every expansion's sampling seed. A killed search resumes
    from `out`: finished trees are read back and their questions skipped (a half-done batch is redone). `batched=False`
    advances one tree at a time (same engine, one call per iteration): the baseline of bench/bench_search.py.
    """
    start, stats = time.perf_counter(), SearchStats()
    done = {t["question_id"]: Tree.from_json(t) for _, t in read_jsonl(out)} if out and out.exists() else {}
    demos = task.demos(cfg.demos) if cfg.demos else ()
    todo = [e for e in examples if e.id not in done]
    size = cfg.trees_per_batch if batched else 1
    spent = sum(t.tokens for t in done.values())

    def exhausted(batch=()) -> bool:
        return cfg.max_tokens is not None and spent + sum(t.tokens for _, t in batch) >= cfg.max_tokens

    for i in range(0, len(todo), size):
        if exhausted():
            break
        batch = [(e, Tree(e.id)) for e in todo[i: i + size]]
        while any(t.iterations < cfg.iterations for _, t in batch) and not exhausted(batch):
            advance(engine, task, batch, cfg, stats, value_fn, demos, seed)
        spent += sum(t.tokens for _, t in batch)
        done.update((tree.question_id, tree) for _, tree in batch)
        if out is not None:  # replaced atomically: a kill leaves the previous batches intact
            write_jsonl(out, (t.to_json() for t in done.values()))
    stats.budget_spent = exhausted()
    trees = [done[e.id] for e in examples if e.id in done]  # with a budget, questions never reached have no tree
    stats.questions, stats.nodes = len(trees), sum(len(t.nodes) for t in trees)
    stats.iterations = sum(t.iterations for t in trees)
    stats.solved = sum(any(n.reward == 1.0 for n in t.nodes) for t in trees)
    stats.tokens = sum(t.tokens for t in trees)  # resumed trees included
    stats.seconds = time.perf_counter() - start
    return trees, stats
