"""Analysis: what stopping generation at the first complete answer sentence would save, from recorded evaluations.

Reads evaluation records (records.jsonl of any run) and, for each reply, cuts it after the first "The answer is
... N." sentence. Prints how many replies have one, the share of generated characters after it (what an early stop
would save), and how many extracted answers would change (the verifiers take the *last* answer sentence). No model
runs: the figures come from outputs already generated.

    python bench/bench_answer_stop.py runs/quickstart/iter_*/eval/records.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter

from forethought.verify import extract

# "The answer is 12." / "The final answer is $12$.": a number, then the sentence's end (". ", end of line or text)
ANSWER_SENTENCE = re.compile(r"[Tt]he (?:final )?answer is[^\n]*?\d[^\n]*?(?:\.(?:\s|$)|\n)")


def analyse(rows: list[dict], answer_type: str = "number") -> dict:
    """Counts for one file: replies, replies with an answer sentence, characters after it, changed answers."""
    found = changed = saved = total = 0
    for r in rows:
        out = r["output"]
        total += len(out)
        m = ANSWER_SENTENCE.search(out)
        if m:
            found += 1
            saved += len(out) - m.end()
            changed += extract(answer_type, out[: m.end()]) != extract(answer_type, out)
    finish = Counter(r.get("finish_reason") for r in rows)
    return {"replies": len(rows), "with_answer_sentence": found, "chars_after": saved, "chars": total,
            "saved_share": saved / max(1, total), "answers_changed": changed, "hit_token_limit": finish["length"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", help="records.jsonl files of evaluations")
    parser.add_argument("--answer-type", default="number")
    args = parser.parse_args()
    print("| records | replies | with an answer sentence | hit the token limit | characters after it | answers changed |")
    print("|---|---|---|---|---|---|")
    for path in args.records:
        with open(path, encoding="utf-8") as f:
            a = analyse([json.loads(line) for line in f if line.strip()], args.answer_type)
        print(f"| {path} | {a['replies']} | {a['with_answer_sentence']} | {a['hit_token_limit']} | "
              f"{a['chars_after']:,} / {a['chars']:,} ({a['saved_share']:.1%}) | {a['answers_changed']} |")


if __name__ == "__main__":
    main()
