"""Accuracy with a 95% interval: Wilson for one sample per question, normal over per-question means otherwise."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there is no data."""
    if total <= 0:
        return (0.0, 1.0)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def correct_by_question(records: Sequence[dict]) -> dict[str, list[bool]]:
    """Group eval records ({"id", "correct", ...}) into each question's list of verdicts, in record order."""
    out: dict[str, list[bool]] = {}
    for r in records:
        out.setdefault(r["id"], []).append(bool(r["correct"]))
    return out


def accuracy_ci(per_question: Sequence[Sequence[bool]]) -> tuple[float, tuple[float, float]]:
    """Mean accuracy over all samples and its 95% interval, treating questions as the unit of sampling."""
    flat = [c for q in per_question for c in q]
    if not flat:
        return 0.0, (0.0, 1.0)
    acc = sum(flat) / len(flat)
    if all(len(q) == 1 for q in per_question):
        return acc, wilson_interval(sum(flat), len(flat))
    means = [sum(q) / len(q) for q in per_question if q]
    k = len(means)
    if k < 2:
        return acc, (0.0, 1.0)
    var = sum((m - acc) ** 2 for m in means) / (k - 1)
    half = Z95 * math.sqrt(var / k)
    return acc, (max(0.0, acc - half), min(1.0, acc + half))


def paired_delta_ci(before: dict[str, Sequence[bool]], after: dict[str, Sequence[bool]]) -> tuple[float, tuple[float, float]]:
    """Change in accuracy on the same questions (after - before) and its 95% interval, over shared question ids."""
    ids = sorted(set(before) & set(after))
    diffs = [sum(after[i]) / len(after[i]) - sum(before[i]) / len(before[i]) for i in ids if after[i] and before[i]]
    k = len(diffs)
    if k < 2:
        return (diffs[0] if diffs else 0.0), (-1.0, 1.0)
    mean = sum(diffs) / k
    var = sum((d - mean) ** 2 for d in diffs) / (k - 1)
    half = Z95 * math.sqrt(var / k)
    return mean, (max(-1.0, mean - half), min(1.0, mean + half))
