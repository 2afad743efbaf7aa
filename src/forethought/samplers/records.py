"""samples.jsonl: one JSON line per trial, appended and fsync'd as produced; read back for resume and training.

A line cut short by a kill is not a record: readers skip it and `jsonl.open_for_append` truncates it away.
"""

from __future__ import annotations

import json
from pathlib import Path

from forethought import plans
from forethought.plans import code
from forethought.errors import UserError


def read_records(path: str | Path) -> list[dict]:
    """Every complete record in `path` ([] if it does not exist); a trailing partial line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records = []
    for lineno, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {lineno}: not valid JSON ({e.msg}); fix or delete the line to resume") from None
    return records


def training_rows(records: list[dict], plan_format: str, answer_type: str) -> list[dict]:
    """Accepted trajectories as hint-free chats whose user turns are exactly what evaluate() sends at test time."""
    plans.check_plan_format(plan_format)
    rows = []
    for r in records:
        if not r.get("accepted"):
            continue
        if plan_format != "none" and not r.get("plan"):
            raise UserError(f"record {r['id']} has no plan; was it sampled with plan_format '{plan_format}'?")
        if plan_format == "none":
            messages = plans.question_messages(r["question"], answer_type)
        elif plan_format == "code":  # one reply: the plan's ```python block, then the solution
            messages = plans.code_messages(r["question"], answer_type)
        else:
            messages = plans.solve_with_plan_messages(r["question"], r["plan"], answer_type)
        solution = code.render(r["plan"], r["solution"]) if plan_format == "code" else r["solution"].strip()
        messages.append({"role": "assistant", "content": solution})
        rows.append({"id": r["id"], "question_id": r["question_id"], "messages": messages})
    return rows
