"""Annotate a corpus with code-form plans: stream prompt/response pairs, ask an annotator for pseudocode outlining
each reference response, filter, and append {index, prompt, plan, response} records to OUT.jsonl.

Files beside OUT.jsonl:
- OUT.rejected.jsonl: one line per filtered record (index, reason, plan);
- OUT.stats.json: the statistics, and the commit point a resumed run starts from, rewritten atomically per chunk;
- OUT.seen.sqlite: hashes of the pairs seen so far, for the duplicate filter (on disk, so memory stays bounded).
A chunk is appended (fsync'd) before its commit point is written; on resume both JSONL files are cut back to the
committed sizes and reading continues at the committed position, so a kill at any moment neither loses nor
repeats a record.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

from pydantic import Field

from forethought import plans
from forethought.annotation.corpus import Fields, Position, read_pairs
from forethought.annotation.filters import REASONS, final_answer, judge
from forethought.config import StrictModel
from forethought.engines.base import Engine, Request, request_seed
from forethought.errors import UserError
from forethought.jsonl import append, write_json
from forethought.plans import code
from forethought.plans.prompts import PROMPTS_VERSION


class AnnotateConfig(StrictModel):
    """What to annotate (corpus and its fields) and how (annotator sampling, batching, filters)."""

    input: str | None = None  # a JSONL file, or a Hugging Face Hub dataset id (streamed)
    prompt_field: str = "prompt"
    response_field: str = "response"
    answer_field: str | None = None  # the final answer, for the answer-leak filter (default: found in the response)
    split: str = "train"  # Hub datasets only
    hub_config: str | None = None
    limit: int | None = Field(None, ge=1)  # annotate only the first N records (a later run may raise it)
    max_new_tokens: int = Field(256, ge=1)  # per plan; a plan cut off here is filtered as truncated
    max_plan_words: int = Field(200, ge=1)  # the length the annotator is asked to stay under
    max_input_words: int = Field(2000, ge=1)  # longer prompt + response pairs are filtered (they may not fit)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    chunk_size: int = Field(64, ge=1)  # records per engine call and per commit
    copy_threshold: float = Field(0.5, gt=0, le=1)  # share of the plan's 5-grams found in the response = a copy
    dedupe: bool = True  # drop pairs whose (prompt, response) was seen earlier in the corpus

    def identity(self) -> dict:
        """The settings a resumed run must share (the limit and chunking do not change any record)."""
        return self.model_dump(exclude={"limit", "chunk_size"})


def sidecar(out: Path, name: str) -> Path:
    """OUT.jsonl -> OUT.<name>."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.{name}")


class _Seen:
    """The (prompt, response) hashes seen so far, in SQLite on disk; entries at or past `resume_index` are
    forgotten on open, since those records are annotated again."""

    def __init__(self, path: Path, resume_index: int):
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (key BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID")
        self.db.execute("DELETE FROM seen WHERE idx >= ?", (resume_index,))
        self.db.commit()

    def add(self, prompt: str, response: str, index: int) -> bool:
        """Record a pair; False when it was seen before."""
        text = " ".join(prompt.split()) + "\x00" + " ".join(response.split())
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        try:
            self.db.execute("INSERT INTO seen VALUES (?, ?)", (key, index))
            return True
        except sqlite3.IntegrityError:
            return False

    def commit(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class _Stats:
    """Running counts and sums (constant size), saved with the commit point in OUT.stats.json."""

    SUMS = ("prompt_words", "plan_words", "response_words", "plan_tokens", "tokens_generated", "tokens_in",
            "engine_seconds", "seconds")

    def __init__(self, saved: dict | None = None):
        resume = (saved or {}).get("resume", {})
        self.position = Position(**resume.get("position", {}))
        self.sizes = resume.get("sizes", [0, 0])
        self.kept = (saved or {}).get("kept", 0)
        self.filtered = Counter((saved or {}).get("filtered", {}))
        self.sums = dict.fromkeys(self.SUMS, 0.0) | resume.get("sums", {})
        self.exhausted = (saved or {}).get("input_exhausted", False)

    @property
    def processed(self) -> int:
        return self.kept + sum(self.filtered.values())

    def summary(self, head: dict) -> dict:
        s, k, n = self.sums, self.kept, self.processed
        return {
            **head,
            "processed": n, "kept": k, "kept_fraction": k / n if n else 0.0,
            "filtered": {r: self.filtered[r] for r in REASONS if self.filtered[r]},
            "mean_words": {f: round(s[f"{f}_words"] / k, 2) if k else 0.0 for f in ("prompt", "plan", "response")},
            "mean_plan_tokens": round(s["plan_tokens"] / k, 2) if k else 0.0,
            "tokens_generated": int(s["tokens_generated"]), "tokens_in": int(s["tokens_in"]),
            "engine_seconds": round(s["engine_seconds"], 3), "seconds": round(s["seconds"], 3),
            "records_per_second": round(n / s["seconds"], 3) if s["seconds"] else 0.0,
            "tokens_per_second": round(s["tokens_generated"] / s["engine_seconds"], 2) if s["engine_seconds"] else 0.0,
            "input_exhausted": self.exhausted,
            "resume": {"position": vars(self.position), "sizes": self.sizes, "sums": s},
        }


def _start(out: Path, stats_path: Path, head: dict) -> _Stats:
    """Load the commit point (checking it was made with the same settings) and cut the outputs back to it."""
    rejected = sidecar(out, "rejected.jsonl")
    if not stats_path.exists():
        for path in (out, rejected):
            if path.exists() and path.stat().st_size:
                raise UserError(f"{path} exists but {stats_path.name} does not, so it is not a resumable annotation; "
                                "delete it or choose another --output")
        stats = _Stats()
        write_json(stats_path, stats.summary(head))
        return stats
    try:
        saved = json.loads(stats_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{stats_path} is not valid JSON; delete OUT and its side files to start over") from None
    changed = sorted(k for k in ("input", "model", "prompts_version", "settings") if saved.get(k) != head[k])
    if changed:
        raise UserError(f"{out} was annotated with different {', '.join(changed)}; run the same command to resume "
                        "it, or choose another --output")
    stats = _Stats(saved)
    for path, size in zip((out, rejected), stats.sizes):
        have = path.stat().st_size if path.exists() else 0
        if have < size:
            raise UserError(f"{path} is shorter than {stats_path.name} records ({have} < {size} bytes): it was "
                            "changed by hand; delete OUT and its side files to start over")
        if have > size:  # records of a chunk that was not committed: they are annotated again
            os.truncate(path, size)
    return stats


def annotate(engine: Engine | Callable[[], Engine], cfg: AnnotateConfig, out: str | Path, *, model_name: str,
             progress: bool = True) -> dict:
    """Annotate `cfg.input` into `out` (resuming from its commit point) and return the statistics.

    `engine` may be a zero-argument factory: it is called only after the corpus's first record has been read and
    checked, so that a bad --input or field is said before a model loads and before anything is written."""
    if cfg.input is None:
        raise UserError("no corpus to annotate: give input (a JSONL file or a Hub dataset id)")
    fields = Fields(cfg.prompt_field, cfg.response_field, cfg.answer_field)
    if Path(cfg.input).expanduser().is_file():  # (a Hub id's shape is checked by read_pairs; its stream later)
        next(read_pairs(cfg.input, fields), None)
    else:
        read_pairs(cfg.input, fields, split=cfg.split, config=cfg.hub_config)
    if not hasattr(engine, "generate"):
        engine = engine()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stats_path = sidecar(out, "stats.json")
    head = {"input": cfg.input, "output": str(out), "model": model_name, "prompts_version": PROMPTS_VERSION,
            "settings": cfg.identity()}
    stats = _start(out, stats_path, head)
    pairs = read_pairs(cfg.input, fields, stats.position, split=cfg.split, config=cfg.hub_config)
    remaining = None if cfg.limit is None else max(0, cfg.limit - stats.position.index)
    seen = _Seen(sidecar(out, "seen.sqlite"), stats.position.index) if cfg.dedupe else None
    try:
        with open(out, "a", encoding="utf-8") as kept_f, \
                open(sidecar(out, "rejected.jsonl"), "a", encoding="utf-8") as rej_f, \
                _Bar(progress, cfg.limit, stats) as bar:
            stats.exhausted = False
            last = time.perf_counter()
            for chunk in _chunks(islice(pairs, remaining), cfg.chunk_size):
                kept, rejected = _annotate_chunk(engine, cfg, chunk, seen, stats)
                append(kept_f, kept)
                append(rej_f, rejected)
                if seen is not None:
                    seen.commit()
                now = time.perf_counter()
                stats.sums["seconds"] += now - last
                last = now
                stats.position = chunk[-1][1]
                stats.sizes = [os.fstat(kept_f.fileno()).st_size, os.fstat(rej_f.fileno()).st_size]
                write_json(stats_path, stats.summary(head))  # the commit point
                bar.update(stats)
            stats.exhausted = remaining is None or stats.position.index < (cfg.limit or 0)
    finally:
        if seen is not None:
            seen.close()  # without a commit: an unfinished chunk's hashes are dropped
    summary = stats.summary(head)
    write_json(stats_path, summary)
    return summary


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter), read lazily."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _annotate_chunk(engine: Engine, cfg: AnnotateConfig, chunk, seen: _Seen | None,
                    stats: _Stats) -> tuple[list[dict], list[dict]]:
    """Pre-filter a chunk, annotate the rest in one engine call, filter the plans; returns (kept, rejected)."""
    decided: list[tuple[int, dict, str | None]] = []  # (index, record, reason)
    todo = []
    for pair, _ in chunk:
        if not pair.prompt.strip() or not pair.response.strip():
            decided.append((pair.index, {"index": pair.index, "plan": None}, "empty_input"))
        elif len(pair.prompt.split()) + len(pair.response.split()) > cfg.max_input_words:
            decided.append((pair.index, {"index": pair.index, "plan": None}, "input_too_long"))
        elif seen is not None and not seen.add(pair.prompt, pair.response, pair.index):
            decided.append((pair.index, {"index": pair.index, "plan": None}, "duplicate"))
        else:
            todo.append(pair)
    if todo:
        requests = [
            Request(messages=plans.annotate_messages(p.prompt, p.response, cfg.max_plan_words),
                    max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                    seed=request_seed(cfg.seed, str(p.index), "annotate"), stop=(code.CLOSE,))
            for p in todo
        ]
        start = time.perf_counter()
        done = engine.generate(requests, progress=False)
        stats.sums["engine_seconds"] += time.perf_counter() - start
        for p, c in zip(todo, done):
            sample = c.samples[0]
            stats.sums["tokens_generated"] += sample.tokens
            stats.sums["tokens_in"] += c.prompt_tokens
            answer = p.answer if cfg.answer_field else final_answer(p.response)
            reason = judge(sample.text, sample.finish_reason, p.prompt, p.response, answer, cfg.copy_threshold)
            plan = code.clean(sample.text)
            if reason is None:
                record = {"index": p.index, "prompt": p.prompt, "plan": plan, "response": p.response}
                stats.sums["prompt_words"] += len(p.prompt.split())
                stats.sums["plan_words"] += len(plan.split())
                stats.sums["response_words"] += len(p.response.split())
                stats.sums["plan_tokens"] += sample.tokens
            else:
                record = {"index": p.index, "plan": sample.text}
            decided.append((p.index, record, reason))
    decided.sort(key=lambda d: d[0])
    kept, rejected = [], []
    for _, record, reason in decided:
        if reason is None:
            stats.kept += 1
            kept.append(record)
        else:
            stats.filtered[reason] += 1
            rejected.append({**record, "reason": reason})
    return kept, rejected


class _Bar:
    """One progress bar: records processed (of the limit, when set), kept, generated tokens/s."""

    def __init__(self, enabled: bool, total: int | None, stats: _Stats):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("annotating"), BarColumn(), MofNCompleteColumn(), TextColumn("records"),
            TextColumn("{task.fields[kept]} kept · {task.fields[tps]:.0f} tok/s"), TimeElapsedColumn(),
            disable=not enabled,
        )
        self.task = self.progress.add_task("annotate", total=total, completed=stats.processed, kept=stats.kept,
                                           tps=0.0)

    def update(self, stats: _Stats) -> None:
        s = stats.sums
        self.progress.update(self.task, completed=stats.processed, kept=stats.kept,
                             tps=s["tokens_generated"] / s["engine_seconds"] if s["engine_seconds"] else 0.0)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)
