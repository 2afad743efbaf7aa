"""Custom tasks from a YAML file: loading, prompt templates, choice golds, splits, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forethought.errors import UserError
from forethought.tasks import get_task


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


QUIZ = [
    {"uid": "q1", "context": "Cats purr.", "question": "Which animal purrs?", "options": ["dog", "cat", "fish"],
     "answer": 1},                                                     # gold as an index
    {"uid": "q2", "context": "Sky at noon.", "question": "What colour is it?", "options": ["green", "blue"],
     "answer": "B"},                                                   # as a letter
    {"uid": "q3", "context": "Ice.", "question": "Is it hot or cold?", "options": ["hot", "cold"],
     "answer": "cold"},                                                # as the option text
]


def test_yaml_choice_task_end_to_end(tmp_path):
    write_jsonl(tmp_path / "quiz.jsonl", QUIZ)
    spec = tmp_path / "quiz.yaml"
    spec.write_text(
        "name: my_quiz\ndata: quiz.jsonl\nquestion_field: question\ngold_field: answer\nchoices_field: options\n"
        "answer_type: choice\nprompt_template: \"Context: {context}\\nQuestion: {question}\"\nid_field: uid\n")
    task = get_task(str(spec))
    assert (task.name, task.answer_type, task.default_split) == ("my_quiz", "choice", "test")
    examples = task.load()
    assert [e.id for e in examples] == ["q1", "q2", "q3"]
    assert [e.gold for e in examples] == ["B", "B", "B"]
    assert examples[0].question == "Context: Cats purr.\nQuestion: Which animal purrs?\nA) dog\nB) cat\nC) fish"
    assert examples[0].choices == ("dog", "cat", "fish")
    assert task.load(limit=2) == examples[:2]
    verdicts = task.verify_batch(["The answer is B.", "The answer is A.", "B) cold"], examples)
    assert [v.correct for v in verdicts] == [True, False, True]


def test_yaml_splits_csv_and_json_number_task(tmp_path):
    (tmp_path / "train.csv").write_text("id,problem,result\n1,\"What is 2 + 2?\",4\n2,What is 10 * 100?,\"1,000\"\n")
    (tmp_path / "test.json").write_text(json.dumps([{"problem": "What is 3 + 4?", "result": 7}]))
    spec = tmp_path / "sums.yml"
    spec.write_text("name: sums\nsplits: {train: train.csv, test: test.json}\nquestion_field: problem\n"
                    "gold_field: result\nanswer_type: number\nfewshot: 'Q: 1+1? A: The answer is 2.'\n")
    task = get_task(str(spec))
    assert task.splits == ("train", "test") and task.fewshot() == "Q: 1+1? A: The answer is 2."
    train = task.load(split="train")
    assert [(e.id, e.question, e.gold) for e in train] == [
        ("sums/train/0", "What is 2 + 2?", "4"), ("sums/train/1", "What is 10 * 100?", "1000")]
    (test,) = task.load()
    assert (test.id, test.gold) == ("sums/test/0", "7")
    assert task.verify("So 3 + 4 = 7. The answer is 7.", test).correct
    assert task.verify("The answer is 1000.", train[1]).correct and not task.verify("The answer is 8.", test).correct
    with pytest.raises(UserError, match="has no split 'validation'.*train, test"):
        task.load(split="validation")
    (tmp_path / "test.json").write_text(json.dumps([{"problem": "What is 3 + 4?", "result": "seven"}]))
    with pytest.raises(UserError, match=r"test.json item 0: field 'result' is 'seven': not a valid number answer"):
        task.load()
    # a data path given at load time overrides the YAML's files
    other = write_jsonl(tmp_path / "other.jsonl", [{"problem": "1 + 2?", "result": 3}])
    assert task.load(other, split="train")[0].gold == "3"


def test_yaml_yesno_bool_gold(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"question": "Is water wet?", "answer": True},
                                       {"question": "Is fire cold?", "answer": "No"}])
    spec = tmp_path / "yn.yaml"
    spec.write_text("name: yn\ndata: d.jsonl\nanswer_type: yesno\n")
    examples = get_task(str(spec)).load()
    assert [e.gold for e in examples] == ["yes", "no"]


@pytest.mark.parametrize("yaml_text,message", [
    ("name: x\ndata: d.jsonl\nanswer_type: exact\nquestion_feild: q\n",
     r"unknown key 'question_feild' \(allowed keys: name, data, splits, .*question_field"),
    ("name: x\ndata: d.jsonl\nanswer_type: free_text\n",
     r"'answer_type' is 'free_text'; valid values: number, math, choice, yesno, exact"),
    ("name: x\nanswer_type: exact\n", r"give `data`"),
    ("name: x\ndata: d.jsonl\nanswer_type: choice\n", r"needs `choices_field`"),
    ("data: d.jsonl\nanswer_type: exact\n", r"key 'name' is missing"),
])
def test_yaml_config_errors(tmp_path, yaml_text, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml_text)
    with pytest.raises(UserError, match=message) as err:
        get_task(str(spec))
    assert str(spec) in str(err.value)


def test_malformed_rows_name_file_line_and_field(tmp_path):
    data = write_jsonl(tmp_path / "quiz.jsonl", [QUIZ[0], {k: v for k, v in QUIZ[1].items() if k != "answer"}])
    spec = tmp_path / "quiz.yaml"
    spec.write_text("name: q\ndata: quiz.jsonl\nchoices_field: options\nanswer_type: choice\n"
                    "prompt_template: '{context} {question}'\n")
    with pytest.raises(UserError, match=rf"{data} line 2: field 'answer' is missing"):
        get_task(str(spec)).load()
    write_jsonl(data, [{**QUIZ[0], "answer": 7}])
    with pytest.raises(UserError, match=rf"{data} line 1: field 'answer' is 7: not an option text, a letter A-C"):
        get_task(str(spec)).load()
    write_jsonl(data, [{k: v for k, v in QUIZ[0].items() if k != "context"}])
    with pytest.raises(UserError, match=rf"{data} line 1: field 'context' \(used in prompt_template\) is missing"):
        get_task(str(spec)).load()
    data.write_text(json.dumps(QUIZ[0]) + "\n{not json\n")
    with pytest.raises(UserError, match=rf"{data} line 2: not valid JSON"):
        get_task(str(spec)).load()


def test_missing_files_and_options(tmp_path):
    with pytest.raises(UserError, match="custom task file not found"):
        get_task(str(tmp_path / "nope.yaml"))
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: missing.jsonl\nanswer_type: exact\n")
    with pytest.raises(UserError, match=r"file not found: .*missing\.jsonl"):
        get_task(str(spec)).load()
    with pytest.raises(UserError, match="takes no options"):
        get_task(str(spec), seed=1)


def test_yaml_hub_id_data(tmp_path, monkeypatch):
    """`data` that is not a local file is a Hub id; `splits` then maps split names to the Hub's split names."""
    asked = []

    def fake_load_hub(hub_id, config, split):
        asked.append((hub_id, config, split))
        return [{"q": "2+2?", "a": 4}]

    monkeypatch.setattr("forethought.tasks.custom.load_hub", fake_load_hub)
    spec = tmp_path / "hub.yaml"
    spec.write_text("name: hubby\ndata: someone/sums\nhub_config: main\nsplits: {test: validation}\n"
                    "question_field: q\ngold_field: a\nanswer_type: number\n")
    (ex,) = get_task(str(spec)).load()
    assert asked == [("someone/sums", "main", "validation")] and (ex.id, ex.gold) == ("hubby/test/0", "4")
    spec.write_text(spec.read_text() + "records: examples\n")
    with pytest.raises(UserError, match=r"`records` applies to \.json files, not to the Hub dataset someone/sums"):
        get_task(str(spec)).load()


# ---------------------------------------------------------------- published layouts (issue 15, part 2)


def test_records_under_a_key_and_a_dotted_path(tmp_path):
    """BBH-style {"examples": [...]} with `records: examples`; a nested list with `records: data.items`."""
    (tmp_path / "bbh.json").write_text(json.dumps({"canary": "x", "examples": [
        {"input": "Is 2 even?", "target": "Yes"}, {"input": "Is 3 even?", "target": "No"}]}))
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: bbh.json\nrecords: examples\nquestion_field: input\ngold_field: target\n"
                    "answer_type: yesno\n")
    examples = get_task(str(spec)).load()
    assert [(e.id, e.question, e.gold) for e in examples] == [("t/test/0", "Is 2 even?", "yes"),
                                                               ("t/test/1", "Is 3 even?", "no")]
    (tmp_path / "nested.json").write_text(json.dumps({"data": {"version": 2, "items": [{"q": "1+1?", "a": 2}]}}))
    spec.write_text("name: t\ndata: nested.json\nrecords: data.items\nquestion_field: q\ngold_field: a\n"
                    "answer_type: number\n")
    (ex,) = get_task(str(spec)).load()
    assert (ex.question, ex.gold) == ("1+1?", "2")


def test_records_errors_name_the_keys(tmp_path):
    (tmp_path / "bbh.json").write_text(json.dumps({"canary": "x", "examples": [{"input": "a", "target": "b"}]}))
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: bbh.json\nquestion_field: input\ngold_field: target\nanswer_type: exact\n")
    with pytest.raises(UserError, match=r"bbh\.json: a JSON object, not a list of records; set `records:` to the key "
                                        r"that holds them \(lists of objects under: examples\)"):
        get_task(str(spec)).load()
    spec.write_text("name: t\ndata: bbh.json\nrecords: examples.rows\nquestion_field: input\ngold_field: target\n"
                    "answer_type: exact\n")
    with pytest.raises(UserError, match=r"bbh\.json: records 'examples\.rows' not found \(no key 'rows' under "
                                        r"'examples'\)"):
        get_task(str(spec)).load()
    spec.write_text("name: t\ndata: bbh.json\nrecords: canary\nquestion_field: input\ngold_field: target\n"
                    "answer_type: exact\n")
    with pytest.raises(UserError, match=r"bbh\.json: records 'canary' is a str, not a list of objects"):
        get_task(str(spec)).load()


def test_json_file_holding_json_lines(tmp_path):
    rows = [{"question": "What is 2 + 2?", "answer": 4}, {"question": "What is 5 - 1?", "answer": 4}]
    (tmp_path / "d.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: d.json\nanswer_type: number\n")
    assert [e.question for e in get_task(str(spec)).load()] == ["What is 2 + 2?", "What is 5 - 1?"]
    # a bad line in it is named by its line number, as in a .jsonl file
    (tmp_path / "d.json").write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n{oops\n")
    with pytest.raises(UserError, match=r"d\.json line 3: not valid JSON"):
        get_task(str(spec)).load()


def test_fields_by_dotted_path(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [
        {"meta": {"uid": "a1"}, "body": {"text": "Pick the cat.", "context": "Zoo"},
         "opts": {"list": ["dog", "cat"]}, "answer": {"value": "cat", "source": "human"}}])
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: d.jsonl\nquestion_field: body.text\ngold_field: answer.value\n"
                    "choices_field: opts.list\nid_field: meta.uid\nanswer_type: choice\n")
    (ex,) = get_task(str(spec)).load()
    assert (ex.id, ex.question, ex.gold, ex.choices) == ("a1", "Pick the cat.\nA) dog\nB) cat", "B", ("dog", "cat"))
    # prompt_template may name dotted fields too
    spec.write_text("name: t\ndata: d.jsonl\nprompt_template: '[{body.context}] {body.text}'\n"
                    "gold_field: answer.value\nchoices_field: opts.list\nanswer_type: choice\n")
    assert get_task(str(spec)).load()[0].question == "[Zoo] Pick the cat.\nA) dog\nB) cat"
    spec.write_text("name: t\ndata: d.jsonl\nquestion_field: body.text\ngold_field: answer.score\n"
                    "choices_field: opts.list\nanswer_type: choice\n")
    with pytest.raises(UserError, match=r"d\.jsonl line 1: field 'answer\.score' is missing"):
        get_task(str(spec)).load()


def test_gold_as_a_mapping_of_answer_to_score(tmp_path):
    """BIG-bench's target_scores: the highest-scored key is the gold; as choices, the keys are the options."""
    write_jsonl(tmp_path / "d.jsonl", [
        {"input": "Is ice cold?", "target_scores": {"Yes": 1, "No": 0}},
        {"input": "Is fire cold?", "target_scores": {"Yes": 0, "No": 1}}])
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: d.jsonl\nquestion_field: input\ngold_field: target_scores\nanswer_type: yesno\n")
    assert [e.gold for e in get_task(str(spec)).load()] == ["yes", "no"]
    spec.write_text("name: t\ndata: d.jsonl\nquestion_field: input\ngold_field: target_scores\n"
                    "choices_field: target_scores\nanswer_type: choice\n")
    examples = get_task(str(spec)).load()
    assert [(e.gold, e.choices) for e in examples] == [("A", ("Yes", "No")), ("B", ("Yes", "No"))]
    assert examples[0].question == "Is ice cold?\nA) Yes\nB) No"
    write_jsonl(tmp_path / "d.jsonl", [{"input": "?", "target_scores": {"Yes": 1, "No": 1}}])
    with pytest.raises(UserError, match=r"d\.jsonl line 1: field 'target_scores' gives the highest score \(1\) to "
                                        r"more than one answer: 'Yes', 'No'"):
        get_task(str(spec)).load()
    write_jsonl(tmp_path / "d.jsonl", [{"input": "?", "target_scores": {"Yes": "high", "No": 0}}])
    with pytest.raises(UserError, match=r"d\.jsonl line 1: field 'target_scores' maps 'Yes' to 'high'; scores must "
                                        r"be numbers"):
        get_task(str(spec)).load()


@pytest.mark.parametrize("options", [
    ["A)5", "B)7", "C)9"], ["(A) 5", "(B) 7", "(C) 9"], ["A) 5", "B) 7", "C) 9"], ["A. 5", "B. 7", "C. 9"],
    ["a) 5", "b) 7", "c) 9"], ["A: 5", "B: 7", "C: 9"]])
def test_options_that_carry_their_letters_are_shown_once(tmp_path, options):
    write_jsonl(tmp_path / "d.jsonl", [{"question": "Which is odd and > 8?", "options": options, "answer": "C"},
                                       {"question": "Which is 7?", "options": options, "answer": options[1]},
                                       {"question": "Which is 5?", "options": options, "answer": "5"}])
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: d.jsonl\nchoices_field: options\nanswer_type: choice\n")
    examples = get_task(str(spec)).load()
    assert examples[0].question == "Which is odd and > 8?\nA) 5\nB) 7\nC) 9"
    assert examples[0].choices == ("5", "7", "9")
    assert [e.gold for e in examples] == ["C", "B", "A"]


def test_options_whose_text_only_starts_like_a_letter_are_kept(tmp_path):
    """Letters are stripped only when every option carries its own letter in order."""
    opts = ["A) yes", "C) no"], ["A. Lincoln", "George Washington"], ["I) one", "II) two"]
    write_jsonl(tmp_path / "d.jsonl", [{"question": "?", "options": list(o), "answer": 0} for o in opts])
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: d.jsonl\nchoices_field: options\nanswer_type: choice\n")
    assert [e.choices for e in get_task(str(spec)).load()] == [tuple(o) for o in opts]


def test_prompt_template_field_missing_names_field_and_row(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"question": "2+2?", "context": "sums", "answer": 4},
                                       {"question": "3+3?", "answer": 6}])
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\ndata: d.jsonl\nprompt_template: '{context}: {question}'\nanswer_type: number\n")
    with pytest.raises(UserError) as err:
        get_task(str(spec)).load()
    message = str(err.value)
    assert message == (f"{tmp_path / 'd.jsonl'} line 2: field 'context' (used in prompt_template) is missing; "
                       "the row has: question, answer")
    assert "\n" not in message
    write_jsonl(tmp_path / "d.jsonl", [{"question": "2+2?", "context": None, "answer": 4}])
    with pytest.raises(UserError, match=r"line 1: field 'context' \(used in prompt_template\) is missing"):
        get_task(str(spec)).load()
