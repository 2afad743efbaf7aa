"""Tests for the math-verify worker pool: wall-clock limit, crash recovery, threads, batch speed."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from forethought.verify import verify, verify_batch
from forethought.verify._mathpool import MathPool

# A stand-in worker speaking the pool's protocol: it hangs on "sleep", dies on "crash", else string-compares.
FAKE_WORKER = """
import json, os, sys, time
print("ready", flush=True)
for line in sys.stdin:
    gold, pred = json.loads(line)
    if pred == "sleep":
        time.sleep(600)
    if pred == "crash":
        os._exit(3)
    print("1" if gold == pred else "0", flush=True)
"""


@pytest.fixture
def fake_pool(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(FAKE_WORKER)
    pool = MathPool(size=2, command=(sys.executable, str(script)))
    yield pool
    pool.close()


def test_hung_worker_is_killed_and_counted_false(fake_pool: MathPool) -> None:
    assert fake_pool.compare([("a", "a")], timeout=5) == [True]  # workers started
    old = {w.proc.pid for w in fake_pool._workers}
    start = time.monotonic()
    assert fake_pool.compare([("a", "sleep"), ("b", "b"), ("c", "x")], timeout=0.5) == [False, True, False]
    assert time.monotonic() - start < 3
    assert {w.proc.pid for w in fake_pool._workers} != old  # the hung one was replaced
    assert fake_pool.compare([("a", "a"), ("b", "c")], timeout=5) == [True, False]


def test_crashed_worker_is_replaced(fake_pool: MathPool) -> None:
    assert fake_pool.compare([("a", "crash"), ("b", "b"), ("c", "crash"), ("d", "d")], timeout=5) == [
        False,
        True,
        False,
        True,
    ]
    assert all(w.proc.poll() is None for w in fake_pool._workers)
    assert fake_pool.compare([("z", "z")], timeout=5) == [True]


def test_non_positive_timeout_is_rejected(fake_pool: MathPool) -> None:
    with pytest.raises(ValueError, match="positive"):
        fake_pool.compare([("a", "a")], timeout=0)


def test_close_stops_workers(fake_pool: MathPool) -> None:
    fake_pool.compare([("a", "a")], timeout=5)
    procs = [w.proc for w in fake_pool._workers]
    fake_pool.close()
    assert all(p.poll() is not None for p in procs)


def test_worker_that_cannot_start_raises(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit(1)\n")
    pool = MathPool(size=1, command=(sys.executable, str(script)))
    with pytest.raises(RuntimeError, match="failing to start"):
        pool.compare([("a", "a")], timeout=5)


def test_pathological_latex_returns_false_within_limit() -> None:
    verify("math", r"\boxed{0.5}", r"\frac12")  # start the pool so startup is not timed
    start = time.monotonic()
    assert not verify("math", r"\boxed{9^{9^{9^{9}}}}", "1", timeout=1).correct
    assert time.monotonic() - start < 4
    assert verify("math", r"\boxed{0.25}", r"\frac{1}{4}").correct  # the pool still works


def test_math_from_threads() -> None:
    results: dict[int, bool] = {}

    def work(i: int) -> None:
        results[i] = verify("math", rf"\boxed{{{i / 4}}}", rf"\frac{{{i}}}{{4}}").correct

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {1: True, 2: True, 3: True}


def test_batch_of_200_math_pairs_is_quick() -> None:
    golds = [rf"\frac{{{i}}}{{{i + 1}}}" for i in range(1, 201)]
    texts = [
        rf"so $\boxed{{{i / (i + 1):.6f}}}$" if i % 3 else rf"\boxed{{\frac{{{i + 1}}}{{{i}}}}}" for i in range(1, 201)
    ]
    verify("math", r"\boxed{0.5}", r"\frac12")  # warm pool
    start = time.monotonic()
    verdicts = verify_batch("math", texts, golds)
    assert time.monotonic() - start < 15
    assert [v.correct for v in verdicts] == [bool(i % 3) for i in range(1, 201)]
