"""A pool of math-verify worker processes with a hard wall-clock limit on every comparison.

math-verify's own timeouts use signals (main thread only) and sympy can hang on odd LaTeX, so each
comparison runs in a separate process; one that overruns or dies is killed, replaced and counted False.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path

WORKER_COMMAND = (sys.executable, str(Path(__file__).with_name("_mathworker.py")))
_START_LIMIT = 120.0  # seconds a new worker may take to import math-verify (slow on a busy machine)
_MAX_START_FAILURES = 3


class _Worker:
    """One worker process, the comparison it is running (if any) and its partial output."""

    def __init__(self, command: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the caller, not the workers
        )
        self.fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        self.started = time.monotonic()
        self.ready = False
        self.job: int | None = None
        self.deadline = 0.0
        self.buf = b""

    def send(self, index: int, gold: str, pred: str, timeout: float) -> bool:
        """Start one comparison; False if the worker is gone."""
        try:
            self.proc.stdin.write(json.dumps([gold, pred]).encode() + b"\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            return False
        self.job, self.deadline = index, time.monotonic() + timeout
        return True

    def kill(self) -> None:
        """Stop the process at once and reap it."""
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass


class MathPool:
    """Worker processes reused across calls; `compare` is thread-safe and never hangs."""

    def __init__(self, size: int | None = None, command: Sequence[str] = WORKER_COMMAND) -> None:
        self.size = max(1, size or min(4, os.cpu_count() or 1))
        self.command = tuple(command)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def compare(self, pairs: Sequence[tuple[str, str]], timeout: float) -> list[bool]:
        """math-verify equivalence of each (gold, pred); False where it fails or exceeds `timeout` seconds."""
        if timeout <= 0:
            raise ValueError(f"math-verify timeout must be positive, got {timeout}")
        results = [False] * len(pairs)
        if pairs:
            with self._lock:
                try:
                    self._run(pairs, timeout, results)
                except BaseException:  # e.g. Ctrl-C: drop workers that may still answer old requests
                    self.close()
                    raise
        return results

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self.command)

    def _run(self, pairs: Sequence[tuple[str, str]], timeout: float, results: list[bool]) -> None:
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self.command))
        pending = deque(range(len(pairs)))
        start_failures = 0
        while pending or any(w.job is not None for w in self._workers):
            for w in list(self._workers):
                if w.ready and w.job is None and pending:
                    index = pending.popleft()
                    if not w.send(index, *pairs[index], timeout):
                        pending.appendleft(index)
                        self._replace(w)
            now = time.monotonic()
            due = [w.deadline for w in self._workers if w.job is not None]
            due += [w.started + _START_LIMIT for w in self._workers if not w.ready]
            readable = wait([w.proc.stdout for w in self._workers], max(0.0, min(due, default=now + 1) - now))
            for w in [w for w in self._workers if w.proc.stdout in readable]:
                data = os.read(w.fd, 65536)
                if not data:  # the worker died: its comparison (if any) counts False
                    start_failures += not w.ready
                    self._replace(w)
                    continue
                w.buf += data
                while b"\n" in w.buf:
                    line, w.buf = w.buf.split(b"\n", 1)
                    if not w.ready:
                        w.ready, start_failures = line == b"ready", 0
                    elif w.job is not None:
                        results[w.job], w.job = line == b"1", None
            now = time.monotonic()
            for w in list(self._workers):
                if w.job is not None and now >= w.deadline:
                    self._replace(w)  # overran: result stays False
                elif not w.ready and now >= w.started + _START_LIMIT:
                    start_failures += 1
                    self._replace(w)
            if start_failures >= _MAX_START_FAILURES:
                self.close()
                raise RuntimeError(f"math-verify workers keep failing to start: {' '.join(self.command)}")

    def close(self) -> None:
        """Stop all workers (idle ones exit when their input closes)."""
        if os.getpid() != self._pid:  # a forked child must not stop its parent's workers
            return
        workers, self._workers = self._workers, []
        for w in workers:
            try:
                w.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        for w in workers:
            try:
                w.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            w.kill()


_POOL: MathPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool() -> MathPool:
    """The process-wide pool, created on first use and stopped at interpreter exit."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._pid != os.getpid():
            _POOL = MathPool()
            atexit.register(_POOL.close)
        return _POOL
