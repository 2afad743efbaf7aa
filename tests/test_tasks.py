"""Built-in tasks load real benchmark files: ids, gold forms, choices, questions, errors.

Each test that reads files runs on the few rows in tests/fixtures/data, and again on the full files when they are
present ($FORETHOUGHT_DATA, else ../shared/data; see tests/fixtures/SOURCES.md), where the published sizes are checked.
"""

from __future__ import annotations

import bz2
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forethought.errors import UserError
from forethought.tasks import get_task, list_tasks
from forethought.tasks.bbh import BBH_SUBTASKS
from forethought.tasks.mathtasks import last_boxed

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


def jsonl(path: Path, n: int | None = None) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n or 10**9), f)]


def ids_unique(examples) -> bool:
    return len({e.id for e in examples}) == len(examples)


def test_gsm8k_rows_gold_and_reference(data_dir):
    rows = jsonl(data_dir / "gsm8k/test.jsonl", 3)
    examples = get_task("gsm8k").load(data_dir / "gsm8k", limit=3)
    assert [e.id for e in examples] == ["gsm8k/test/0", "gsm8k/test/1", "gsm8k/test/2"]
    for row, ex in zip(rows, examples):
        final = row["answer"].split("####")[-1].strip().replace(",", "")
        assert ex.question == row["question"].strip() and ex.gold == final
        assert "<<" not in ex.reference and "####" not in ex.reference
        assert ex.reference.endswith(f"The answer is {final}.")
    # a gold with a thousands separator loses its comma; a single file works as the data path
    train = jsonl(data_dir / "gsm8k/train.jsonl")
    i = next(i for i, r in enumerate(train) if "," in r["answer"].split("####")[-1])
    ex = get_task("gsm8k").load(data_dir / "gsm8k/train.jsonl", split="train", limit=i + 1)[i]
    assert ex.id == f"gsm8k/train/{i}" and "," not in ex.gold
    assert ex.gold == train[i]["answer"].split("####")[-1].strip().replace(",", "")


def test_math500_and_full_math(data_dir):
    row = jsonl(data_dir / "math/math500/test.jsonl", 1)[0]
    (ex,) = get_task("math500").load(data_dir / "math", limit=1)
    assert ex.id == "math500/" + row["unique_id"].removesuffix(".json")
    assert (ex.question, ex.gold, ex.reference) == (row["problem"].strip(), row["answer"], row["solution"])
    assert ex.meta == {"subject": row["subject"], "level": row["level"]}
    full = get_task("math").load(data_dir / "math", limit=20)
    rows = jsonl(data_dir / "math/full_test/test.jsonl", 20)
    assert len(full) == len(rows) == (10 if data_dir == FIXTURES else 20)
    for row, ex in zip(rows, full):
        assert "\\boxed{" + ex.gold + "}" in row["solution"] and ex.reference == row["solution"]
        assert ex.meta["level"] == int(row["level"].split()[-1])
    assert [e.id for e in full[:2]] == ["math/test/0", "math/test/1"]


def test_last_boxed_matches_braces():
    assert last_boxed(r"first \boxed{1}, then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{x^{2}+\sqrt{3}} done") == r"x^{2}+\sqrt{3}"
    assert last_boxed(r"so $\boxed 5$") == "5"
    assert last_boxed("no box here") is None and last_boxed(r"\boxed{open") is None


@pytest.mark.parametrize("name,file,prefix", [
    ("arc_challenge", "arc/llm-foundry/arc_challenge.jsonl", "Question:"),
    ("arc_easy", "arc/llm-foundry/arc_easy.jsonl", "Question:"),
    ("openbookqa", "openbookqa/llm-foundry/openbook_qa.jsonl", ""),
])
def test_science_qa_test_split(name, file, prefix, data_dir):
    rows = jsonl(data_dir / file, 5)
    examples = get_task(name).load(data_dir / file.split("/")[0], limit=5)
    for i, (row, ex) in enumerate(zip(rows, examples)):
        assert ex.id == f"{name}/test/{i}"
        assert ex.choices == tuple(c.strip() for c in row["choices"]) and ex.gold == "ABCD"[row["gold"]]
        stem = row["query"].removeprefix(prefix).strip()
        assert ex.question.startswith(stem) and "Question:" not in ex.question
        assert ex.question.endswith("\nD) " + ex.choices[3])


def test_arc_and_openbookqa_train_parse_instruction_options(data_dir):
    data = json.loads((data_dir / "arc/llm-adapters/ARC-Easy/train.json").read_text())
    i = next(i for i, r in enumerate(data) if r["answer"] == "answer5")
    ex = get_task("arc_easy").load(data_dir / "arc", split="train", limit=i + 1)[i]
    assert len(ex.choices) == 5 and ex.gold == "E" and ex.id == f"arc_easy/train/{i}"
    assert f"Answer5: {ex.choices[4]}" in data[i]["instruction"]
    assert not ex.question.startswith("Please choose") and "Answer format" not in ex.question
    assert ex.question.split("\n")[0] in data[i]["instruction"]
    obqa = json.loads((data_dir / "openbookqa/llm-adapters/train.json").read_text())[0]
    (ex,) = get_task("openbookqa").load(data_dir / "openbookqa", split="train", limit=1)
    assert ex.gold == "ABCD"[int(obqa["answer"][-1]) - 1] and len(ex.choices) == 4
    assert f"Answer1: {ex.choices[0]} Answer2: {ex.choices[1]}" in obqa["instruction"]


def test_mmlu_csv_splits_and_subjects(data_dir):
    with (data_dir / "mmlu/test/abstract_algebra_test.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[:3]
    examples = get_task("mmlu").load(data_dir / "mmlu", limit=3)
    for i, (row, ex) in enumerate(zip(rows, examples)):
        assert ex.id == f"mmlu/test/abstract_algebra/{i}" and ex.meta["subject"] == "abstract_algebra"
        assert ex.question.startswith(row[0].strip()) and ex.choices == tuple(c.strip() for c in row[1:5])
        assert ex.gold == row[5]
    dev = get_task("mmlu").load(data_dir / "mmlu", split="dev")
    n_dev = sum(1 for p in (data_dir / "mmlu/dev").glob("*.csv")
                for _ in csv.reader(p.open(newline="", encoding="utf-8")))
    subjects = {p.name.removesuffix("_dev.csv") for p in (data_dir / "mmlu/dev").glob("*.csv")}
    assert len(subjects) == (3 if data_dir == FIXTURES else 57)
    assert len(dev) == n_dev == 5 * len(subjects) and {e.meta["subject"] for e in dev} == subjects and ids_unique(dev)
    val = get_task("mmlu").load(data_dir / "mmlu", split="val", limit=2)  # alias of "validation"
    assert val[0].id == "mmlu/validation/abstract_algebra/0"


def test_mmlu_stem(data_dir):
    rows = jsonl(data_dir / "mmlu/mmlu_stem/test.jsonl", 3)
    examples = get_task("mmlu_stem").load(data_dir / "mmlu", limit=3)
    for i, (row, ex) in enumerate(zip(rows, examples)):
        assert ex.id == f"mmlu_stem/test/{i}" and ex.meta["subject"] == row["type"]
        assert ex.gold == "ABCD"[row["answer"]] and ex.choices == tuple(c.strip() for c in row["choices"])
        assert ex.question.startswith(row["question"].strip())


def test_piqa_labels_align_and_default_split_is_validation(data_dir):
    rows = jsonl(data_dir / "piqa/valid.jsonl", 6)
    labels = (data_dir / "piqa/valid-labels.lst").read_text().split()[:6]
    task = get_task("piqa")
    examples = task.load(data_dir / "piqa", limit=6)
    assert task.default_split == "validation"
    for i, (row, label, ex) in enumerate(zip(rows, labels, examples)):
        assert ex.id == f"piqa/validation/{i}" and ex.gold == "AB"[int(label)]
        assert ex.choices == (row["sol1"].strip(), row["sol2"].strip()) and row["goal"].strip() in ex.question


def test_hellaswag_six_line_items(data_dir):
    with bz2.open(data_dir / "hellaswag/hellaswag_val_full.txt.bz2", "rt", encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(12)]
    examples = get_task("hellaswag").load(data_dir / "hellaswag", limit=2)
    for i, ex in enumerate(examples):
        context, label, *endings = lines[6 * i: 6 * i + 6]
        assert ex.id == f"hellaswag/validation/{i}" and context in ex.question
        assert ex.choices == tuple(e.strip() for e in endings) and ex.gold == "ABCD"[int(label)]


def test_commonsenseqa(data_dir):
    row = jsonl(data_dir / "commonsenseqa/dev_rand_split.jsonl", 1)[0]
    (ex,) = get_task("commonsenseqa").load(data_dir / "commonsenseqa", limit=1)
    assert ex.id == "commonsenseqa/validation/0" and ex.meta["source_id"] == row["id"]
    assert ex.choices == tuple(c["text"] for c in row["question"]["choices"]) and len(ex.choices) == 5
    assert ex.gold == row["answerKey"] and ex.question.startswith(row["question"]["stem"])
    (tr,) = get_task("commonsenseqa").load(data_dir / "commonsenseqa", split="train", limit=1)
    assert tr.id == "commonsenseqa/train/0"
    assert tr.meta["source_id"] == jsonl(data_dir / "commonsenseqa/train_rand_split.jsonl", 1)[0]["id"]


def test_boolq_keeps_passage_and_gold_is_yes_no(data_dir):
    rows = jsonl(data_dir / "boolq/llm-foundry/boolq.jsonl", 8)
    examples = get_task("boolq").load(data_dir / "boolq", limit=8)
    for i, (row, ex) in enumerate(zip(rows, examples)):
        assert ex.id == f"boolq/validation/{i}" and ex.gold == row["choices"][row["gold"]]
        assert ex.question == row["query"].strip() and ex.question.startswith("Passage:")
    assert {e.gold for e in examples} <= {"yes", "no"}


def test_all_bbh_subtasks_load_with_fewshot(data_dir):
    assert len(BBH_SUBTASKS) == 27
    for sub in BBH_SUBTASKS:
        task = get_task(f"bbh/{sub}")
        examples = task.load(data_dir / "bbh")
        file = json.loads((data_dir / f"bbh/bbh/{sub}.json").read_text())["examples"]
        assert len(examples) == len(file) and examples[3].id == f"bbh/{sub}/3"
        assert (examples[3].question, examples[3].gold) == (file[3]["input"].strip(), file[3]["target"].strip())
        shots = task.fewshot()
        assert shots and shots.count("Q:") >= 3 and "canary" not in shots and "BENCHMARK DATA" not in shots
        assert shots.startswith((data_dir / f"bbh/cot-prompts/{sub}.txt").read_text().split("-----\n", 1)[1][:40])
    # the inner folder works too, and `bbh` alone concatenates all 27 keeping the subtask in the id
    assert get_task("bbh/navigate").load(data_dir / "bbh" / "bbh", limit=1)[0].id == "bbh/navigate/0"
    everything = get_task("bbh").load(data_dir / "bbh")
    assert len(everything) == (27 * 6 if data_dir == FIXTURES else 6511) and ids_unique(everything)
    assert {e.meta["subtask"] for e in everything} == set(BBH_SUBTASKS)


def test_ids_are_stable_and_unique(data_dir):
    for name, path in [("gsm8k", "gsm8k"), ("arc_challenge", "arc"), ("commonsenseqa", "commonsenseqa")]:
        a = get_task(name).load(data_dir / path)
        b = get_task(name).load(data_dir / path)
        assert [e.id for e in a] == [e.id for e in b] and ids_unique(a)


def test_registry_lists_every_family():
    names = list_tasks()
    for name in ["gsm8k", "math", "math500", "arc_challenge", "arc_easy", "openbookqa", "mmlu", "mmlu_stem", "piqa",
                 "hellaswag", "commonsenseqa", "boolq", "bbh", "bbh/navigate", "synthetic/arithmetic",
                 "synthetic/last_letters", "synthetic/coin_flip"]:
        assert name in names and get_task(name).name == name


def test_unknown_task_suggests_near_matches():
    with pytest.raises(UserError, match=r"unknown task 'gsm8kk'.*gsm8k.*forethought tasks"):
        get_task("gsm8kk")
    with pytest.raises(UserError, match="takes no options"):
        get_task("gsm8k", difficulty=2)


def test_missing_split_path_and_malformed_rows(tmp_path, data_dir):
    with pytest.raises(UserError, match=r"piqa: split 'train' not found.*splits present there: validation"):
        get_task("piqa").load(data_dir / "piqa", split="train")
    with pytest.raises(UserError, match="has no split 'dev'.*train, test"):
        get_task("gsm8k").load(data_dir / "gsm8k", split="dev")
    with pytest.raises(UserError, match="data path not found"):
        get_task("gsm8k").load(tmp_path / "nowhere")
    bad = tmp_path / "test.jsonl"
    good, missing = {"question": "q", "answer": "1 + 1 = 2\n#### 2"}, {"answer": "#### 3"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(missing))
    with pytest.raises(UserError, match=rf"{bad} line 2: field 'question' is missing"):
        get_task("gsm8k").load(tmp_path)
    bad.write_text(json.dumps({"question": "q", "answer": "the answer is 2"}))
    with pytest.raises(UserError, match=rf"{bad} line 1: field 'answer' does not end with '#### <number>'"):
        get_task("gsm8k").load(bad)


def test_hub_fails_fast_when_offline(tmp_path):
    """With HF_HUB_OFFLINE=1 and an empty cache, loading from the Hub is one clear UserError within seconds."""
    script = ("from forethought.errors import UserError\nfrom forethought.tasks import get_task\n"
              "try:\n    get_task('gsm8k').load()\nexcept UserError as e:\n    print('USERERROR', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), HF_DATASETS_CACHE=str(tmp_path / "ds"))
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 30
    assert "USERERROR could not load openai/gsm8k from the Hugging Face Hub (offline?); pass --data PATH" in out.stdout


def test_hub_unreachable_fails_before_datasets_retries(monkeypatch):
    """When the Hub cannot be reached, the short probe answers; datasets' slow retrying download never starts."""
    import datasets
    import huggingface_hub
    from huggingface_hub import constants

    def unreachable(self, repo_id, **kwargs):
        assert kwargs.get("timeout") and kwargs["timeout"] <= 10
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not be called"))
    with pytest.raises(UserError, match=r"could not load allenai/ai2_arc from the Hugging Face Hub \(offline\?\)"):
        get_task("arc_challenge").load()


@pytest.mark.parametrize("name,path", [
    ("gsm8k", "gsm8k"), ("math500", "math"), ("arc_challenge", "arc"), ("openbookqa", "openbookqa"), ("mmlu", "mmlu"),
    ("mmlu_stem", "mmlu"), ("piqa", "piqa"), ("hellaswag", "hellaswag"), ("commonsenseqa", "commonsenseqa"),
    ("boolq", "boolq"), ("bbh/ruin_names", "bbh"), ("bbh/dyck_languages", "bbh"), ("bbh/word_sorting", "bbh"),
    ("bbh/multistep_arithmetic_two", "bbh"), ("bbh/formal_fallacies", "bbh"),
])
def test_gold_verifies_in_the_tasks_answer_phrasing(name, path, data_dir):
    task = get_task(name)
    examples = task.load(data_dir / path, limit=6)
    say = (lambda g: f"So the final answer is $\\boxed{{{g}}}$.") if task.answer_type == "math" else \
        (lambda g: f"Let's think step by step. So the answer is {g}.")
    assert all(v.correct for v in task.verify_batch([say(e.gold) for e in examples], examples))
    assert task.verify(say(examples[0].gold), examples[0]).correct
    # an answer that differs from the gold (another option, another number, the other yes/no) is wrong
    wrong = {"number": lambda g: g + "1", "math": lambda g: "98765", "exact": lambda g: "zzz",
             "yesno": lambda g: "no" if g == "yes" else "yes", "choice": lambda g: "B" if g == "A" else "A"}
    others = [wrong[task.answer_type](e.gold) for e in examples]
    assert not any(v.correct for v in task.verify_batch([say(o) for o in others], examples))
    if examples[0].reference:  # worked solutions end in the task's own answer form
        assert all(v.correct for v in task.verify_batch([e.reference for e in examples], examples))


HUB_ROWS = {  # one row per Hub dataset, in that dataset's own schema
    "openai/gsm8k": {"question": "Q?", "answer": "2 * 3 = <<2*3=6>>6\n#### 1,006"},
    "HuggingFaceH4/MATH-500": {"problem": "P", "solution": r"so \boxed{7}", "answer": "7", "subject": "Algebra",
                               "level": 1, "unique_id": "test/algebra/1.json"},
    "allenai/ai2_arc": {"id": "Mercury_1", "question": "Which?", "answerKey": "2",
                        "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}},
    "allenai/openbookqa": {"id": "7-1", "question_stem": "Stem", "answerKey": "D",
                           "choices": {"text": ["a", "b", "c", "d"], "label": ["A", "B", "C", "D"]}},
    "cais/mmlu": {"question": "M?", "subject": "anatomy", "choices": ["w", "x", "y", "z"], "answer": 3},
    "baber/piqa": {"goal": "G", "sol1": "s1", "sol2": "s2", "label": 1},
    "Rowan/hellaswag": {"activity_label": "Baking", "ctx_a": "A man mixes flour.", "ctx_b": "he",
                        "endings": ["e0", "e1 [title] x", "e2", "e3"], "label": "1"},
    "tau/commonsense_qa": {"id": "abc", "question": "Where?", "question_concept": "c", "answerKey": "C",
                           "choices": {"label": list("ABCDE"), "text": list("vwxyz")}},
    "google/boolq": {"question": "is it", "answer": True, "passage": "Text."},
    "lukaemon/bbh": {"input": "not True is", "target": "False"},
}


def test_hub_rows_become_examples(monkeypatch):
    """Without network: the Hub schemas of every family turn into the same Examples as the local files."""
    import forethought.tasks.base as base

    asked = []

    def fake_load_hub(hub_id, config, split):
        asked.append((hub_id, config, split))
        return [HUB_ROWS[hub_id]]

    for module in ("gsm8k", "mathtasks", "choice", "boolq", "bbh"):
        monkeypatch.setattr(f"forethought.tasks.{module}.load_hub", fake_load_hub)
    assert base.load_hub is not fake_load_hub
    (g,) = get_task("gsm8k").load(split="train")
    assert (g.id, g.gold, g.reference) == ("gsm8k/train/0", "1006", "2 * 3 = 6\nThe answer is 1006.")
    (m,) = get_task("math500").load()
    assert (m.id, m.gold, m.meta) == ("math500/test/algebra/1", "7", {"subject": "Algebra", "level": 1})
    (a,) = get_task("arc_challenge").load()
    assert (a.gold, a.choices, a.question) == ("B", ("a", "b", "c"), "Which?\nA) a\nB) b\nC) c")
    assert get_task("openbookqa").load()[0].question.startswith("Stem\nA) a")
    (mm,) = get_task("mmlu").load()
    assert (mm.id, mm.gold, mm.meta["subject"]) == ("mmlu/test/anatomy/0", "D", "anatomy")
    assert get_task("mmlu_stem").load() == []  # anatomy is not a STEM subject
    (p,) = get_task("piqa").load()
    assert (p.gold, p.choices) == ("B", ("s1", "s2")) and "Goal: G" in p.question
    (h,) = get_task("hellaswag").load()
    assert "Baking: A man mixes flour. He ..." in h.question and h.choices[1] == "e1. x" and h.gold == "B"
    (c,) = get_task("commonsenseqa").load()
    assert (c.gold, len(c.choices), c.meta["source_id"]) == ("C", 5, "abc")
    (b,) = get_task("boolq").load()
    assert (b.question, b.gold) == ("Passage: Text.\nQuestion: is it?", "yes")
    (s,) = get_task("bbh/navigate").load()
    assert (s.id, s.gold) == ("bbh/navigate/0", "False") and get_task("bbh/navigate").fewshot() is None
    assert ("openai/gsm8k", "main", "train") in asked and ("lukaemon/bbh", "navigate", "test") in asked
    assert ("allenai/ai2_arc", "ARC-Challenge", "test") in asked


def test_hellaswag_corrupt_or_truncated_bz2_is_a_user_error(tmp_path):
    good = bz2.compress(("context\n0\na\nb\nc\nd\n" * 200).encode())
    for name, data in (("garbage", b"not bz2 at all" * 10), ("truncated", good[: len(good) // 2])):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "hellaswag_val_full.txt.bz2").write_bytes(data)
        with pytest.raises(UserError, match=r"hellaswag_val_full.txt.bz2: not a complete bz2 file"):
            get_task("hellaswag").load(folder)
