import pytest

from forethought.config import StrictModel, load_config
from forethought.errors import UserError


class Learner(StrictModel):
    learning_rate: float = 1e-5
    epochs: int = 1


class Recipe(StrictModel):
    model: str
    iterations: int = 2
    learner: Learner = Learner()


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_load_with_dotted_overrides(tmp_path):
    p = write(tmp_path, "model: smollm2-135m\nlearner:\n  epochs: 3\n")
    cfg = load_config(Recipe, p, ["learner.learning_rate=3e-7", "iterations=5"])
    assert cfg.learner.learning_rate == 3e-7 and cfg.learner.epochs == 3 and cfg.iterations == 5


def test_unknown_key_names_its_path(tmp_path):
    p = write(tmp_path, "model: m\nlearner:\n  learnig_rate: 1\n")
    with pytest.raises(UserError, match=r"unknown key 'learner.learnig_rate'"):
        load_config(Recipe, p)


def test_unknown_top_level_key_lists_allowed(tmp_path):
    p = write(tmp_path, "model: m\niteratons: 3\n")
    with pytest.raises(UserError, match=r"unknown key 'iteratons'.*allowed keys: model, iterations, learner"):
        load_config(Recipe, p)


def test_bad_value_and_missing_key(tmp_path):
    with pytest.raises(UserError, match=r"'iterations'"):
        load_config(Recipe, write(tmp_path, "model: m\niterations: lots\n"))
    with pytest.raises(UserError, match=r"key 'model' is missing"):
        load_config(Recipe, write(tmp_path, "iterations: 1\n"))


def test_bad_override_and_missing_file(tmp_path):
    p = write(tmp_path, "model: m\n")
    with pytest.raises(UserError, match="must look like"):
        load_config(Recipe, p, ["iterations"])
    with pytest.raises(UserError, match="file not found"):
        load_config(Recipe, tmp_path / "nope.yaml")


def test_a_section_check_that_names_its_keys_is_not_prefixed_again(tmp_path):
    from forethought.runs.config import RunConfig

    path = tmp_path / "r.yaml"
    path.write_text("method: star\ntask: {name: synthetic/arithmetic}\nsampler: {kind: star, max_accepted: 2}\n"
                    "output: x\n")
    with pytest.raises(UserError) as err:
        load_config(RunConfig, path)
    assert str(err.value).startswith(f"{path}: sampler.max_accepted must be 1 with sampler.kind=star")
    path.write_text("method: x\ntask: {name: synthetic/arithmetic}\nsampler: {plan_format: steps}\noutput: x\n")
    with pytest.raises(UserError, match=r": 'sampler.plan_format': plan format 'steps' is not implemented"):
        load_config(RunConfig, path)
