"""Every shipped recipe validates against the typed config and says in its header how to run it."""

from pathlib import Path

import pytest

from forethought.config import load_config
from forethought.runs.config import RunConfig
from forethought.tasks import get_task

RECIPES = sorted(p for p in (Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")
                 if not p.name.startswith(("codeplan", "cpl")))  # CodePlan: tests/test_codeplan.py; CPL: below


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"quickstart.yaml", "quickstart_rest_em.yaml", "lepa_math.yaml", "rest_em_math.yaml", "star_gsm8k.yaml",
            "pps_arc.yaml"} <= names


def test_quickstart_is_lepa_with_plans():
    cfg = load_config(RunConfig, RECIPES[0].parent / "quickstart.yaml")
    assert (cfg.method, cfg.sampler.kind, cfg.sampler.plan_format, cfg.model) == ("lepa", "lepa", "natural",
                                                                                   "smollm2-135m")
    assert cfg.task.name.startswith("synthetic/") and not cfg.eval.fewshot  # built-in task, zero-shot evaluation


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_and_documents_its_command(path):
    cfg = load_config(RunConfig, path)
    assert f"forethought run recipes/{path.name}" in path.read_text().split("\nmethod:")[0]
    task = get_task(cfg.task.name, **cfg.task.options)
    assert cfg.task.train_split in task.splits
    assert (cfg.task.eval_split or task.default_split) in task.splits


@pytest.mark.parametrize("name", ["cpl.yaml", "cpl_cpu.yaml"])
def test_cpl_recipes_validate_and_document_their_command(name):
    from forethought.cpl import CplConfig

    path = RECIPES[0].parent / name
    cfg = load_config(CplConfig, path)
    assert f"forethought cpl recipes/{name}" in path.read_text()
    get_task(cfg.task.name, **cfg.task.options)
    assert cfg.step_apo.beta == 0.3 and cfg.step_apo.alpha == 1.0 and cfg.search.c_puct == 1.5
    if name == "cpl.yaml":  # the paper's two rounds
        assert (cfg.rounds, cfg.search.iterations, cfg.round2_iterations) == (2, 200, 100)
