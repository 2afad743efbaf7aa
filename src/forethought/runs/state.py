"""A run directory's bookkeeping: the manifest of finished stages and per-iteration paths and metrics."""

from __future__ import annotations

import json
from pathlib import Path

from forethought.jsonl import write_json, write_jsonl


class RunState:
    """Which stages of which iteration are done; saved to manifest.json after every change."""

    def __init__(self, root: Path):
        self.root = root
        self.path = root / "manifest.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}, "seconds": {}}

    def iter_dir(self, iteration: int) -> Path:
        return self.root / f"iter_{iteration:03d}"

    def key(self, iteration: int, stage: str) -> str:
        return f"iter_{iteration:03d}/{stage}"

    def status(self, iteration: int, stage: str) -> str | None:
        return self.data["stages"].get(self.key(iteration, stage))

    def done(self, iteration: int, stage: str) -> bool:
        return self.status(iteration, stage) in ("done", "skipped")

    def add_seconds(self, iteration: int, stage: str, seconds: float) -> None:
        """Wall time spent on a stage, summed over interrupted attempts."""
        k = self.key(iteration, stage)
        self.data["seconds"][k] = self.data["seconds"].get(k, 0.0) + seconds
        self.save()

    def seconds(self, iteration: int) -> float:
        prefix = f"iter_{iteration:03d}/"
        return sum(v for k, v in self.data["seconds"].items() if k.startswith(prefix))

    def mark(self, iteration: int, stage: str, status: str = "done") -> None:
        self.data["stages"][self.key(iteration, stage)] = status
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)

    def write_metrics(self, iteration: int, metrics: dict) -> None:
        """Write iter_XXX/metrics.json and rebuild metrics.jsonl from every finished iteration."""
        write_json(self.iter_dir(iteration) / "metrics.json", metrics)
        rows = []
        for p in sorted(self.root.glob("iter_*/metrics.json")):
            rows.append(json.loads(p.read_text()))
        write_jsonl(self.root / "metrics.jsonl", sorted(rows, key=lambda r: r["iteration"]))
