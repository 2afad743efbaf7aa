"""A progress bar of completed requests with generated tokens/s, for engines that finish requests one by one."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RequestProgress:
    """Counts finished requests and their tokens on stderr; a no-op when disabled."""

    def __init__(self, total: int, *, enabled: bool, label: str = "generating") -> None:
        self.generated, self.start = 0, time.perf_counter()
        self.bar = Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("requests"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=Console(stderr=True),
        ) if enabled else None
        self.task = self.bar.add_task(label, total=total, rate="") if self.bar else None

    def __enter__(self) -> RequestProgress:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()

    def done(self, tokens: int, requests: int = 1) -> None:
        """Record `requests` finished requests that generated `tokens` tokens."""
        self.generated += tokens
        if self.bar:
            rate = self.generated / max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(self.task, advance=requests, rate=f"{self.generated} tokens, {rate:.1f} tok/s")
