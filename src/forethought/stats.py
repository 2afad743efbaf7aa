"""Accuracy with a 95% interval: Wilson for one sample per question, normal over per-question means otherwise."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Z95 = 1.959963984540054


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there is no data."""
    if total <= 0:
        return (0.0, 1.0)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # at p = 0 or 1 the bound equals p exactly; rounding would leave it a hair outside (5.6e-17 for 0 of 3)
    return (0.0 if successes <= 0 else max(0.0, centre - half), 1.0 if successes >= total else min(1.0, centre + half))


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


# ---------------------------------------------------------------- sampled metrics (eval --n K)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one question with `c` correct among `n` samples (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), the chance that k samples drawn without replacement hold a correct one."""
    if not (1 <= k <= n and 0 <= c <= n):
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def sample_ks(n: int) -> list[int]:
    """The k reported for n samples per question: 1, 2, 4, ... and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


def mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float], str]:
    """Mean of per-question values with a 95% interval over questions and its kind: Wilson's when every value is
    0 or 1 (a proportion of questions), else normal (mean +- 1.96 s / sqrt(q), clipped to [0, 1])."""
    q = len(values)
    if not q:
        return 0.0, (0.0, 1.0), "none"
    mean = sum(values) / q
    if all(v in (0, 1) for v in values):
        return mean, wilson_interval(round(sum(values)), q), "wilson"
    if q < 2:
        return mean, (0.0, 1.0), "normal"
    var = sum((v - mean) ** 2 for v in values) / (q - 1)
    half = Z95 * math.sqrt(var / q)
    return mean, (max(0.0, mean - half), min(1.0, mean + half)), "normal"


def majority_index(groups: Sequence[int | None]) -> int | None:
    """Which sample holds the majority answer, given each sample's answer group (None: no answer, no vote): the
    first sample of the group with the most votes; a tie goes to the group whose first answer came earliest."""
    votes: dict[int, int] = {}
    first: dict[int, int] = {}
    for i, g in enumerate(groups):
        if g is not None:
            votes[g] = votes.get(g, 0) + 1
            first.setdefault(g, i)
    if not votes:
        return None
    return first[min(votes, key=lambda g: (-votes[g], first[g]))]


def group_answers(
    answers: dict[str, Sequence[str | None]], same_many: Callable[[list[tuple[str, str]]], list[bool]]
) -> dict[str, list[int | None]]:
    """Each question's answers grouped by equivalence: a group number per answer (None for no answer).

    A new answer string is compared with each group's representative (its first answer), `same_many((new, rep)
    pairs)` answering in one batch per round over all questions; it joins the earliest group it equals, else opens
    one. A string seen before reuses its group without a comparison. Cost: at most distinct x groups comparisons
    per question (28 for 8 distinct answers), never all pairs of samples.
    """
    out = {q: [None] * len(a) for q, a in answers.items()}
    reps: dict[str, list[str]] = {q: [] for q in answers}
    known: dict[str, dict[str, int]] = {q: {} for q in answers}
    todo = {q: [a for a in dict.fromkeys(x for x in answers[q] if x is not None)] for q in answers}
    while any(todo.values()):
        batch, asks = [], []
        for q, pending in todo.items():
            if not pending:
                continue
            new = pending.pop(0)
            if not reps[q]:  # the first answer opens group 0
                known[q][new] = 0
                reps[q].append(new)
                continue
            asks.append((q, new, len(reps[q])))
            batch += [(new, rep) for rep in reps[q]]
        verdicts = iter(same_many(batch) if batch else [])
        for q, new, n_reps in asks:
            equal = [next(verdicts) for _ in range(n_reps)]
            known[q][new] = equal.index(True) if any(equal) else len(reps[q])
            if not any(equal):
                reps[q].append(new)
    for q, a in answers.items():
        out[q] = [None if x is None else known[q][x] for x in a]
    return out


def sampled_metrics(correct: dict[str, Sequence[bool]], majority_correct: dict[str, bool]) -> dict:
    """pass@k (unbiased, k = 1, 2, 4, ..., K), maj@K and mean@K over questions with K samples each, each as
    {"value", "ci95", "interval"}: the interval is over questions (see mean_ci for its kind)."""
    sizes = {len(v) for v in correct.values()}
    if len(sizes) > 1:
        raise ValueError(f"sampled metrics need the same number of samples per question, got {sorted(sizes)}")
    n = sizes.pop() if sizes else 1
    ids = list(correct)

    def metric(values: list[float]) -> dict:
        value, ci, kind = mean_ci(values)
        return {"value": value, "ci95": [ci[0], ci[1]], "interval": kind}

    out: dict = {"k": n}
    for k in sample_ks(n):
        out[f"pass@{k}"] = metric([pass_at_k(n, sum(correct[q]), k) for q in ids])
    out[f"maj@{n}"] = metric([float(bool(majority_correct[q])) for q in ids])
    out[f"mean@{n}"] = metric([sum(correct[q]) / n for q in ids])
    return out
