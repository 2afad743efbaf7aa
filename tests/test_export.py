"""Datasets and models out: `forethought export` writes every kind of run data as parquet that `datasets.load_dataset`
reads back unchanged, with a card holding the recipe and the metrics; `--push-to-hub` and `forethought push` go
through huggingface_hub (mocked here: the network is never contacted) and never show the token.

Run directories are built by hand, a few rows each, in the layouts the stage runner writes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from forethought import export
from forethought.cli import main
from forethought.search.tree import Tree

TOKEN = "hf_secretTOKEN0123456789abcdefXYZ"


# ------------------------------------------------------------------------------------------------ run directories
def _jsonl(path: Path, rows: list[dict]) -> list[dict]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _eval(d: Path, accuracy: float, ci: list[float], n: int, task: str = "synthetic/arithmetic") -> list[dict]:
    records = [{"id": f"q{i}", "prompt": f"What is {i} + 1?", "plan": "Add one." if i % 2 else None,
                "output": f"The answer is {i + 1}.", "extracted": str(i + 1), "gold": str(i + 1), "correct": True,
                "tokens": 7 + i, "finish_reason": "stop"} for i in range(2)]
    _jsonl(d / "records.jsonl", records)
    _json(d / "summary.json", {"task": task, "model": "m", "n": n, "accuracy": accuracy, "ci95": ci, "correct": 0,
                               "unparseable": 1, "truncated": 0, "tokens_generated": 9, "plan_format": "natural",
                               "split": "test"})
    return records


def _sample(q: int, trial: int, accepted: bool, **kw) -> dict:
    return {"id": f"q{q}/t{trial}", "question_id": f"q{q}", "iteration": 1, "method": "lepa", "sampler": "lepa",
            "trial": trial, "question": f"Tom has {q} apples and buys 3. How many?", "gold": str(q + 3),
            "plan": "Add what he buys to what he has.", "reflection": None, "solution": f"The answer is {q + 3}.",
            "extracted": str(q + 3), "correct": accepted, "accepted": accepted,
            "rejected_reason": None if accepted else "wrong", "hint_used": False, "tokens_in": 40, "tokens_out": 12,
            "seconds": 0.25, "engine": "hf", "seed": 0, "prompts_version": "v1", **kw}


CONFIG = {"method": "lepa", "model": "smollm2-135m", "task": {"name": "synthetic/arithmetic", "eval_limit": 100},
          "sampler": {"kind": "lepa", "plan_format": "natural", "trials": 5}, "iterations": 1,
          "output": "runs/quickstart"}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    root = tmp_path / "quickstart"
    (root).mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    _eval(root / "iter_000" / "eval", 0.14, [0.085, 0.221], 100)
    _jsonl(root / "iter_001" / "samples.jsonl", [
        _sample(1, 0, False, solution="The answer is 5.", extracted="5", rejected_reason="wrong"),
        _sample(1, 1, True, reflection="I added wrong; add 3 to 1.", hint_used=True),
        _sample(2, 0, False, plan=None, solution="", extracted=None, rejected_reason="plan_leaks_answer",
                tokens_out=0, seconds=0.0),
    ])
    _eval(root / "iter_001" / "eval", 0.6, [0.502, 0.691], 100)
    _json(root / "iter_001" / "metrics.json", {"iteration": 1, "accuracy": 0.6, "delta_vs_base": 0.46,
                                               "delta_ci95": [0.337, 0.583]})
    _jsonl(root / "metrics.jsonl", [
        {"iteration": 0, "accuracy": 0.14, "ci95": [0.085, 0.221], "tokens_generated": 0},
        {"iteration": 1, "accuracy": 0.6, "ci95": [0.502, 0.691], "acceptance_rate": 0.5, "trials": 3,
         "tokens_generated": 24, "delta_vs_base": 0.46, "delta_ci95": [0.337, 0.583]},
    ])
    ckpt = root / "iter_001" / "checkpoint"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "llama"}')
    (ckpt / "model.safetensors").write_bytes(b"\0weights")
    return root


def _tree() -> Tree:
    tree = Tree("q1")
    step = tree.add(0, "step", "<step>Plan 1: add.</step>", 0.8, tokens=6)
    good = tree.add(step.id, "solution", "<solution>The answer is 4.</solution>", 0.9, tokens=8)
    bad = tree.add(0, "malformed", "oops", 0.1, tokens=2)
    good.reward, bad.reward = 1.0, -1.0
    tree.backup(good, 1.0)
    tree.backup(bad, -1.0)
    tree.iterations, tree.tokens = 2, 16
    return tree


@pytest.fixture
def cpl_dir(tmp_path) -> Path:
    root = tmp_path / "cpl"
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump({"model": "org/base-7b", "task": {"name": "gsm8k"},
                                                      "rounds": 1}, sort_keys=False))
    msgs = [{"role": "system", "content": "Plan in steps."}, {"role": "user", "content": "What is 1 + 3?"}]
    _jsonl(root / "r1" / "sft.jsonl", [{"messages": msgs + [{"role": "assistant", "content": "<plan>..."}],
                                        "question_id": "q1"}])
    _jsonl(root / "r1" / "pairs.jsonl", [
        {"messages": msgs, "prefix": "<plan>", "chosen": "<step>add</step>", "rejected": "<step>sub</step>",
         "q_chosen": 0.5, "q_rejected": -1.0, "kind": "step", "question_id": "q1"},
        {"messages": msgs, "prefix": "<plan><step>add</step>", "chosen": "<solution>4</solution>",
         "rejected": "<solution>2</solution>", "q_chosen": 0.3, "q_rejected": -0.3, "kind": "solution",
         "question_id": "q1"}])
    _jsonl(root / "r1" / "value.jsonl", [{"messages": msgs, "prefix": "<plan><step>add</step>", "q": 1.0,
                                          "question_id": "q1"}])
    _jsonl(root / "r1" / "trees.jsonl", [_tree().to_json()])
    _eval(root / "eval" / "base", 0.10, [0.055, 0.174], 100, task="gsm8k")
    _eval(root / "eval" / "r1_apo", 0.67, [0.573, 0.754], 100, task="gsm8k")
    _json(root / "summary.json", {"models": {
        "base": {"accuracy": 0.10, "ci95": [0.055, 0.174], "n": 100, "unparseable": 3},
        "r1_apo": {"accuracy": 0.67, "ci95": [0.573, 0.754], "n": 100, "unparseable": 0}},
        "deltas": {"r1_apo_minus_base": {"delta": 0.57, "ci95": [0.458, 0.682]}}})
    ckpt = root / "r1" / "apo" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    return root


@pytest.fixture
def codeplan_dir(tmp_path) -> Path:
    root = tmp_path / "codeplan"
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump({"model": "smollm2-135m", "annotator": "smollm2-135m"}))
    _jsonl(root / "annotated.jsonl", [
        {"index": 0, "prompt": "Add 2 and 3.", "plan": "def solve():\n    return a + b", "response": "5"},
        {"index": 3, "prompt": "Double 4.", "plan": "x = 4\nprint(x * 2)", "response": "8"}])
    _eval(root / "code" / "eval", 0.05, [0.022, 0.112], 100, task="gsm8k")
    _json(root / "summary.json", {"models": {"code": {"accuracy": 0.05, "ci95": [0.022, 0.112], "n": 100,
                                                      "unparseable": 8}},
                                  "code_minus_none": {"delta": 0.02, "ci95": [-0.019, 0.059]}})
    return root


def _load(folder: Path, kind: str | None, cache: Path) -> list[dict]:
    from datasets import load_dataset

    args = (str(folder), kind) if kind else (str(folder),)
    return load_dataset(*args, split="train", cache_dir=str(cache)).to_list()


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


# ------------------------------------------------------------------------------------------------ export
def test_run_trajectories_round_trip(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "ds"
    counts = export.export_run(run_dir, out)
    assert counts == {"trajectories": 3, "evaluations": 4}
    samples = [json.loads(x) for x in (run_dir / "iter_001" / "samples.jsonl").read_text().splitlines()]
    loaded = _load(out, "trajectories", tmp_path / "cache")
    assert loaded == samples  # every field: plan, reflection, hint used, verdict, reason, tokens
    assert [r["accepted"] for r in loaded] == [False, True, False] and loaded[1]["hint_used"] is True
    assert loaded[2]["plan"] is None and loaded[1]["reflection"].startswith("I added")
    assert _load(out, None, tmp_path / "cache2") == samples  # the first configuration is the default
    evals = _load(out, "evaluations", tmp_path / "cache")
    assert [r["evaluated"] for r in evals] == ["iter_000", "iter_000", "iter_001", "iter_001"]
    assert {k: v for k, v in evals[2].items() if k != "evaluated"} == json.loads(
        (run_dir / "iter_001" / "eval" / "records.jsonl").read_text().splitlines()[0])


def test_grpo_rollouts_round_trip(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (run_dir / "iter_001" / "samples.jsonl").unlink()  # a GRPO run samples inside training: rollouts only
    rollouts = _jsonl(run_dir / "iter_001" / "rollouts.jsonl", [
        {"step": 1, "question_id": "q1", "completion": "The answer is 4.", "reward": 1.0, "correct": True,
         "tokens": 6, "token_ids": [5, 6, 7, 8, 9, 2], "finish_reason": "stop"},
        {"step": 1, "question_id": "q1", "completion": "It is 5", "reward": 0.0, "correct": False,
         "tokens": 3, "token_ids": [5, 7, 3], "finish_reason": "length"}])
    assert export.export_run(run_dir, tmp_path / "ds")["rollouts"] == 2
    assert _load(tmp_path / "ds", "rollouts", tmp_path / "c") == [{"iteration": 1, **r} for r in rollouts]


def test_cpl_paths_pairs_value_and_trees_round_trip(cpl_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "ds"
    counts = export.export_run(cpl_dir, out)
    assert counts == {"sft": 1, "pairs": 2, "value": 1, "trees": 1, "evaluations": 4}
    for kind in ("sft", "pairs", "value", "trees"):
        rows = [{"round": 1, **json.loads(x)} for x in (cpl_dir / "r1" / f"{kind}.jsonl").read_text().splitlines()]
        assert _load(out, kind, tmp_path / "cache") == rows, kind
    tree = Tree.from_json(_load(out, "trees", tmp_path / "cache")[0])  # a loaded tree is a tree again
    assert tree.to_json() == _tree().to_json() and tree.nodes[1].Q == 1.0 and tree.nodes[3].reward == -1.0


def test_codeplan_annotated_corpus_round_trip(codeplan_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "ds"
    assert export.export_run(codeplan_dir, out) == {"annotated": 2, "evaluations": 2}
    rows = [json.loads(x) for x in (codeplan_dir / "annotated.jsonl").read_text().splitlines()]
    assert _load(out, "annotated", tmp_path / "cache") == rows
    assert [r["evaluated"] for r in _load(out, "evaluations", tmp_path / "cache")] == ["code", "code"]


def test_mixed_gold_types_become_strings(run_dir, tmp_path, monkeypatch):
    """A task whose gold is a number in one record and text in another still exports (as strings)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    path = run_dir / "iter_001" / "samples.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["gold"], rows[1]["gold"] = 4, "4"
    _jsonl(path, rows)
    export.export_run(run_dir, tmp_path / "ds")
    assert [r["gold"] for r in _load(tmp_path / "ds", "trajectories", tmp_path / "c")] == ["4", "4", "5"]


def test_run_card_has_recipe_metrics_and_configurations(run_dir, tmp_path):
    out = tmp_path / "ds"
    export.export_run(run_dir, out, repo="me/quickstart-data")
    front, body = _card(out)
    assert [c["config_name"] for c in front["configs"]] == ["trajectories", "evaluations"]
    assert front["configs"][0]["default"] is True and "default" not in front["configs"][1]
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "trajectories/*.parquet"}]
    assert {"forethought", "lepa"} <= set(front["tags"])
    recipe = body.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(recipe) == CONFIG  # the resolved recipe, as the run saved it
    assert "| 0 | 14.0% [8.5, 22.1] |" in body
    assert "| 1 | 60.0% [50.2, 69.1] | +46.0 pp [+33.7, +58.3] | 50.0% | 3 | 24 |" in body
    assert "| `trajectories` | 3 |" in body and "base model `smollm2-135m`" in body
    assert "load_dataset('me/quickstart-data', 'trajectories', split='train')" in body


def test_cpl_and_codeplan_cards_show_each_model(cpl_dir, codeplan_dir, tmp_path):
    export.export_run(cpl_dir, tmp_path / "a")
    _, body = _card(tmp_path / "a")
    assert "| r1_apo | 67.0% [57.3, 75.4] | 100 | 0 |" in body and "r1_apo − base: +57.0 pp [+45.8, +68.2]" in body
    assert "a forethought cpl run" in body
    export.export_run(codeplan_dir, tmp_path / "b")
    _, body = _card(tmp_path / "b")
    assert "| code | 5.0% [2.2, 11.2] | 100 | 8 |" in body and "code − none: +2.0 pp [-1.9, +5.9]" in body


def _main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["forethought", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_cli_and_its_errors(run_dir, tmp_path, monkeypatch, capsys):
    code, out, err = _main(monkeypatch, capsys, "export", str(run_dir), "--to", str(tmp_path / "ds"))
    assert code == 0, err
    assert "trajectories" in out and (tmp_path / "ds" / "trajectories").is_dir()
    # nothing already written is overwritten
    before = (tmp_path / "ds" / "README.md").read_text()
    code, _, err = _main(monkeypatch, capsys, "export", str(run_dir), "--to", str(tmp_path / "ds"))
    assert code == 2 and "already exists" in err and (tmp_path / "ds" / "README.md").read_text() == before
    code, _, err = _main(monkeypatch, capsys, "export", str(tmp_path / "nowhere"), "--to", str(tmp_path / "x"))
    assert code == 2 and "run directory not found" in err and not (tmp_path / "x").exists()
    (tmp_path / "plain").mkdir()
    code, _, err = _main(monkeypatch, capsys, "export", str(tmp_path / "plain"), "--to", str(tmp_path / "x"))
    assert code == 2 and "not a run directory" in err
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.yaml").write_text("model: m\n")
    code, _, err = _main(monkeypatch, capsys, "export", str(tmp_path / "fresh"), "--to", str(tmp_path / "x"))
    assert code == 2 and "no data to export" in err and not (tmp_path / "x").exists()
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------------ the model card
def test_model_card_names_recipe_base_model_and_accuracy(run_dir, cpl_dir):
    card = export.model_card(run_dir / "iter_001" / "checkpoint", "me/lepa-135m")
    front, body = card.split("---\n", 2)[1:]
    front = yaml.safe_load(front)
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "lepa" in front["tags"]
    assert "from the base model `smollm2-135m` (HuggingFaceTB/SmolLM2-135M-Instruct) by lepa" in body
    assert "| this checkpoint (iter_001) | synthetic/arithmetic | 60.0% [50.2, 69.1] | 100 |" in body
    assert "| base model (untrained) | synthetic/arithmetic | 14.0% [8.5, 22.1] | 100 |" in body
    assert "+46.0 pp [+33.7, +58.3]" in body
    assert yaml.safe_load(body.split("```yaml\n")[1].split("```")[0]) == CONFIG
    assert "from_pretrained('me/lepa-135m')" in body

    card = export.model_card(cpl_dir / "r1" / "apo" / "checkpoint", "me/cpl")
    assert "base_model: org/base-7b" in card and "| this checkpoint (r1_apo) | gsm8k | 67.0% [57.3, 75.4]" in card
    assert "| base model (untrained) | gsm8k | 10.0% [5.5, 17.4]" in card


# ------------------------------------------------------------------------------------------------ the Hub, mocked
class FakeHub:
    """Stands in for huggingface_hub.HfApi's create_repo / create_commit; records what would be sent."""

    def __init__(self, monkeypatch, error: Exception | None = None):
        import huggingface_hub

        self.repos, self.commits, self.error = [], [], error
        hub = self

        def create_repo(api, repo_id, **kw):
            hub.repos.append((repo_id, kw))
            if hub.error:
                raise hub.error
            return f"https://huggingface.co/{repo_id}"

        def create_commit(api, repo_id, operations, **kw):
            files = {}
            for op in operations:
                src = op.path_or_fileobj
                files[op.path_in_repo] = Path(src).read_bytes() if isinstance(src, str) else bytes(src)
            hub.commits.append((repo_id, files, kw))

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)

        def no_network(*a, **k):
            raise AssertionError("the network was contacted")

        for name in ("upload_folder", "upload_file", "whoami", "repo_info"):
            monkeypatch.setattr(huggingface_hub.HfApi, name, no_network)


@pytest.fixture
def hub_env(monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    caplog.set_level(logging.DEBUG)
    return caplog


def _no_token_anywhere(out: str, err: str, caplog, *paths: Path) -> None:
    assert TOKEN not in out and TOKEN not in err
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    for root in paths:
        for f in root.rglob("*"):
            assert not f.is_file() or TOKEN.encode() not in f.read_bytes(), f


def test_export_push_to_hub_sends_the_folder_with_the_env_token(run_dir, tmp_path, monkeypatch, capsys, hub_env):
    hub = FakeHub(monkeypatch)
    out_dir = tmp_path / "ds"
    code, out, err = _main(monkeypatch, capsys, "export", str(run_dir), "--to", str(out_dir),
                           "--push-to-hub", "me/quickstart-data", "--private")
    assert code == 0, err
    assert hub.repos == [("me/quickstart-data", {"token": TOKEN, "repo_type": "dataset", "private": True,
                                                 "exist_ok": True})]
    (repo, files, kw), = hub.commits
    assert repo == "me/quickstart-data" and kw["repo_type"] == "dataset" and kw["token"] == TOKEN
    local = {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    assert files == local and "README.md" in files and "trajectories/train-00000-of-00001.parquet" in files
    assert "https://huggingface.co/datasets/me/quickstart-data" in out
    _no_token_anywhere(out, err, hub_env, out_dir, run_dir)


def test_push_checkpoint_with_model_card(run_dir, monkeypatch, capsys, hub_env):
    hub = FakeHub(monkeypatch)
    ckpt = run_dir / "iter_001" / "checkpoint"
    code, out, err = _main(monkeypatch, capsys, "push", str(ckpt), "me/lepa-135m")
    assert code == 0, err
    assert hub.repos[0][1]["repo_type"] == "model" and hub.repos[0][1]["token"] == TOKEN
    (repo, files, kw), = hub.commits
    assert set(files) == {"config.json", "model.safetensors", "README.md"} and kw["repo_type"] == "model"
    assert files["model.safetensors"] == b"\0weights"
    assert files["README.md"].decode() == export.model_card(ckpt, "me/lepa-135m")
    assert not (ckpt / "README.md").exists()  # the run directory is not changed
    assert "https://huggingface.co/me/lepa-135m" in out
    _no_token_anywhere(out, err, hub_env, run_dir)


def test_offline_is_one_clear_error_before_anything_is_written(run_dir, tmp_path, monkeypatch, capsys, hub_env):
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = _main(monkeypatch, capsys, "export", str(run_dir), "--to", str(tmp_path / "ds"),
                           "--push-to-hub", "me/data")
    assert code == 2 and "HF_HUB_OFFLINE" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists() and not hub.repos
    code, out2, err2 = _main(monkeypatch, capsys, "push", str(run_dir / "iter_001" / "checkpoint"), "me/model")
    assert code == 2 and "HF_HUB_OFFLINE" in err2 and len(err2.strip().splitlines()) == 1 and not hub.repos
    _no_token_anywhere(out + out2, err + err2, hub_env)


def test_no_token_is_one_clear_error(run_dir, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    FakeHub(monkeypatch)
    code, _, err = _main(monkeypatch, capsys, "push", str(run_dir / "iter_001" / "checkpoint"), "me/model")
    assert code == 2 and "no Hugging Face token" in err and "HF_TOKEN" in err


class _Response:
    def __init__(self, status):
        self.status_code, self.headers, self.request = status, {}, None


def _http_error(status: int):
    from huggingface_hub.errors import HfHubHTTPError

    return HfHubHTTPError(f"{status} Client Error for url https://huggingface.co/api/repos/create "
                          f"(Authorization: Bearer {TOKEN})", response=_Response(status))


@pytest.mark.parametrize("error,expect", [
    (lambda: _http_error(401), "refused the token"),
    (lambda: _http_error(500), "failed (HTTP 500)"),
    (lambda: ConnectionError(f"cannot connect with token={TOKEN}"), "cannot reach the Hugging Face Hub"),
    (lambda: RuntimeError(f"unexpected: headers {{'authorization': 'Bearer {TOKEN}'}}"), "failed (RuntimeError"),
])
def test_hub_failures_never_show_the_token(error, expect, run_dir, tmp_path, monkeypatch, capsys, hub_env):
    FakeHub(monkeypatch, error=error())
    code, out, err = _main(monkeypatch, capsys, "push", str(run_dir / "iter_001" / "checkpoint"), "me/model")
    assert code == 2 and expect in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, out2, err2 = _main(monkeypatch, capsys, "export", str(run_dir), "--to", str(tmp_path / "ds"),
                             "--push-to-hub", "me/data")
    assert code == 2 and expect in err2
    _no_token_anywhere(out + out2, err + err2, hub_env, tmp_path)


def test_push_errors_name_what_to_fix(run_dir, tmp_path, monkeypatch, capsys, hub_env):
    hub = FakeHub(monkeypatch)
    code, _, err = _main(monkeypatch, capsys, "push", str(tmp_path / "none"), "me/m")
    assert code == 2 and "checkpoint folder not found" in err
    code, _, err = _main(monkeypatch, capsys, "push", str(run_dir / "iter_001"), "me/m")
    assert code == 2 and "holds no config.json" in err
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "config.json").write_text("{}")
    code, _, err = _main(monkeypatch, capsys, "push", str(lone), "me/m")
    assert code == 2 and "not inside a forethought run directory" in err
    code, _, err = _main(monkeypatch, capsys, "push", str(run_dir / "iter_001" / "checkpoint"), "not a repo")
    assert code == 2 and "not a Hub id" in err
    assert not hub.commits
