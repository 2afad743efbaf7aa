"""The same recipe scaled out: 2 Ray engine replicas and 2 training processes give the same samples and a
checkpoint trained on both ranks, compared with the plain one-process run."""

from __future__ import annotations

import json

import pytest
from test_runs import read_lines, warm_model, write_recipe  # noqa: F401 (fixture)

from forethought.runs import run_recipe

pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")


def _samples(root) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_lines(root / "iter_001" / "samples.jsonl")]


def test_replicas_and_processes_run_the_same_recipe(tmp_path, warm_model, ones_task):  # noqa: F811
    import ray

    plain = run_recipe(write_recipe(tmp_path / "a.yaml", warm_model, ones_task, tmp_path / "plain", iterations=1),
                       progress=False)
    scaled_recipe = write_recipe(
        tmp_path / "b.yaml", warm_model, ones_task, tmp_path / "scaled", iterations=1,
        engine={"batch_size": 8, "replicas": 2, "chunk_size": 3},
        learner={"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "distributed": {"processes": 2}},
    )
    scaled = run_recipe(scaled_recipe, progress=False)
    assert not ray.is_initialized()  # the run shut down the Ray it started

    assert _samples(scaled) == _samples(plain)  # 2 replicas sample exactly what one engine samples
    stats = json.loads((scaled / "iter_001" / "train_stats.json").read_text())
    assert stats["processes"] == 2 and stats["steps"] == 2
    assert stats["trained_tokens"] == json.loads((plain / "iter_001" / "train_stats.json").read_text())["trained_tokens"]
    assert (scaled / "iter_001" / "checkpoint" / "model.safetensors").is_file()
    assert [m["iteration"] for m in read_lines(scaled / "metrics.jsonl")] == [0, 1]
