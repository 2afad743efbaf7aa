"""Studies: the token budget is enforced where tokens are spent (EM samplers, CPL search, GRPO rollouts; scripted
engines: never more than one engine call over), arm configs get the study's task, seed and budget share, a killed
study resumes every arm where it stopped (a finished arm is not rerun), the paired-difference table on hand-made
results, and bad study files are one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forethought.engines.base import Completion, Sample
from forethought.errors import UserError
from forethought.samplers import SamplerConfig, read_records, run_sampler
from forethought.search import SearchConfig, run_search
from forethought.stats import correct_by_question, paired_delta_ci
from forethought.study import Study, load_study, resolve_study
from forethought.study.results import COLOURS, markdown_table, study_plot, summarize
from forethought.tasks import get_task
from forethought.tasks.base import Example
from test_samplers import ScriptedEngine
from test_search import StepEngine

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- budget where tokens are spent


class CountingEngine(ScriptedEngine):
    """ScriptedEngine that records the tokens each call generated."""

    def __init__(self, examples, answer):
        super().__init__(examples, answer)
        self.call_tokens: list[int] = []

    def generate(self, requests, *, progress=True):
        out = super().generate(requests, progress=progress)
        self.call_tokens.append(sum(c.samples[0].tokens for c in out))
        return out


def _check_one_call_over(call_tokens: list[int], budget: int) -> None:
    """No call started once the budget was spent, so the total exceeds it by at most the last call."""
    before = 0
    for tokens in call_tokens:
        assert before < budget, f"a call started with {before} of {budget} tokens spent"
        before += tokens
    assert budget <= before <= budget + call_tokens[-1]


@pytest.mark.parametrize("kind,plan_format", [("rejection", "none"), ("star", "none"), ("pps", "none"),
                                              ("lepa", "natural"), ("lepa", "code")])
def test_samplers_stop_at_the_budget_one_call_over_at_most(tmp_path, kind, plan_format):
    examples = get_task("synthetic/arithmetic", train_size=12, test_size=1).load(split="train")
    task = get_task("synthetic/arithmetic", train_size=12, test_size=1)

    def answer(stage, i, attempt, req):  # always wrong: every question would use all its trials without a budget
        if plan_format == "code" and stage in ("plan", "newplan"):
            return "```python\ndef solve(items):\n    return total(items)\n```"
        return f"Step {attempt} of the work on question {i}. The answer is -1."

    budget = 150
    cfg = SamplerConfig(kind=kind, plan_format=plan_format, trials=5, chunk_size=4, max_tokens=budget)
    out = tmp_path / "samples.jsonl"
    engine = CountingEngine(examples, answer)
    run_sampler(cfg, engine, task, examples, out_path=out, iteration=1, seed=0, method=kind, progress=False)
    records = read_records(out)
    _check_one_call_over(engine.call_tokens, budget)
    assert sum(r["tokens_out"] for r in records) == sum(engine.call_tokens)  # every spent token is recorded
    assert len(records) < 12 * 5  # it stopped early
    if kind == "lepa":  # trials cut between reflect/plan and solve are recorded, so their tokens count
        assert all(r["solution"] is None for r in records if r["rejected_reason"] == "budget")
    # resumed: the budget is already spent, nothing more is generated
    again = CountingEngine(examples, answer)
    run_sampler(cfg, again, task, examples, out_path=out, iteration=1, seed=0, method=kind, progress=False)
    assert again.calls == [] and read_records(out) == records
    # without a budget the same sampling spends more
    free = CountingEngine(examples, answer)
    run_sampler(cfg.model_copy(update={"max_tokens": None}), free, task, examples, out_path=tmp_path / "free.jsonl",
                iteration=1, seed=0, method=kind, progress=False)
    assert sum(free.call_tokens) > budget + engine.call_tokens[-1]


def test_search_stops_expanding_at_the_budget(tmp_path):
    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = [Example(f"q{i}", f"Question {i}?", "7") for i in range(6)]
    cfg = SearchConfig(iterations=5, root_children=3, children=2, trees_per_batch=2, max_tokens=100)
    engine = StepEngine()
    trees, stats = run_search(engine, task, examples, cfg, out=tmp_path / "trees.jsonl")
    call_tokens = [5 * sum(r.n for r in call) for call in engine.calls]  # StepEngine: 5 tokens per sample
    _check_one_call_over(call_tokens, 100)
    assert stats.tokens == sum(t.tokens for t in trees) == sum(call_tokens) and stats.budget_spent
    assert stats.tokens_in == 10 * sum(len(call) for call in engine.calls)
    assert 0 < len(trees) < len(examples)  # questions never reached have no tree
    again = StepEngine()
    trees2, stats2 = run_search(again, task, examples, cfg, out=tmp_path / "trees.jsonl")
    assert again.calls == [] and [t.to_json() for t in trees2] == [t.to_json() for t in trees]
    free, _ = run_search(StepEngine(), task, examples, cfg.model_copy(update={"max_tokens": None}))
    assert sum(t.tokens for t in free) > 100 + call_tokens[-1]


def test_grpo_stops_rolling_out_at_the_budget_and_carries_the_rest(tmp_path, warm_model, ones_task):
    """Two GRPO iterations of at most 3 steps with a 100-token share each: every iteration ends after the step whose
    rollouts crossed its cap (the share plus what the previous one left, minus its overshoot), saves there, and the
    next resumes from that step; the run spends at most 2 x 100 tokens plus one step's rollouts."""
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", steps_per_iteration=3,
                          max_tokens=100)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-m", "forethought.cli", "run", str(recipe), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "run"
    spent, steps_before = 0, 0
    for t in (1, 2):
        rows = [json.loads(x) for x in (root / f"iter_{t:03d}" / "rollouts.jsonl").read_text().splitlines()]
        by_step: dict[int, int] = {}
        for r in rows:
            by_step[r["step"]] = by_step.get(r["step"], 0) + r["tokens"]
        cap = t * 100 - spent
        _check_one_call_over([by_step[s] for s in sorted(by_step)], cap)  # one rollout call per step
        stats = json.loads((root / f"iter_{t:03d}" / "train_stats.json").read_text())
        assert stats["resumed_from"] == steps_before and stats["steps"] == max(by_step) < 3 * t
        spent += sum(by_step.values())
        steps_before = stats["steps"]
    metrics = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["cumulative_tokens"] == spent <= 200 + max(by_step.values())
    assert [p.name for p in (root / "grpo_trainer").glob("checkpoint-*")] == [f"checkpoint-{steps_before}"]


from test_grpo import warm_model, write_recipe  # noqa: E402,F401  (module fixtures of the GRPO test)


# ---------------------------------------------------------------- study files and arm configs


def write_study(path: Path, output: Path, **over) -> Path:
    study = {
        "budget": 300, "seeds": [0],
        "task": {"name": "synthetic/arithmetic", "options": {"train_size": 16, "test_size": 8}, "train_limit": 16,
                 "eval_limit": 8},
        "baseline": "none",
        "arms": [
            {"name": "none", "recipe": "quickstart_rest_em", "overrides": {"iterations": 0}},
            {"name": "rest", "recipe": "quickstart_rest_em", "overrides": {"sampler.chunk_size": 4}},
            {"name": "grpo", "recipe": "quickstart_grpo", "overrides": {"iterations": 3}},
            {"name": "cpl", "recipe": "cpl_cpu"},
        ],
        "output": str(output),
        **over,
    }
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_each_arm_gets_the_study_task_seed_output_and_its_budget_share(tmp_path):
    cfg, path = load_study(write_study(tmp_path / "s.yaml", tmp_path / "out"), ["seeds=[0, 3]"])
    study = Study(cfg, path, progress=False)
    assert study.kinds == {"none": "run", "rest": "run", "grpo": "run", "cpl": "cpl"}
    for (name, seed), c in study.arms.items():
        assert c.task == cfg.task and c.seed == seed and c.output == str(tmp_path / "out" / "arms" / name / f"seed_{seed}")
    rest, grpo, cpl, none = (study.arms[n, 3] for n in ("rest", "grpo", "cpl", "none"))
    assert (rest.sampler.max_tokens, rest.iterations, rest.sampler.chunk_size) == (150, 2, 4)
    assert (grpo.learner.max_tokens, grpo.iterations) == (100, 3)
    assert (cpl.search.max_tokens, cpl.rounds) == (300, 1)
    assert none.sampler.max_tokens is None and none.iterations == 0
    assert (tmp_path / "out" / "config.yaml").is_file()  # the study's own snapshot (runs.stages)


@pytest.mark.parametrize("over,message", [
    ({"parallel": 3, "devices": ["0", "1"]}, "parallel is 3 but devices lists 2"),
    ({"parallel": 0}, "parallel"),
    ({"stage_gpus": 1}, "stage_cpus and stage_gpus are the resources of a stage run on Ray: set ray_address"),
    ({"ray_address": "auto", "devices": ["0"]}, "on Ray .* remove devices"),
    ({"baseline": "nope"}, "baseline 'nope' is not an arm"),
    ({"budget": 0}, "budget"),
    ({"seeds": [1, 1]}, "repeat a seed"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"arms": [{"name": "a", "recipe": "quickstart", "overrides": {"task.eval_limit": 3}}], "baseline": "a"},
     "'task.eval_limit' is set by the study for every arm"),
    ({"arms": [{"name": "a", "recipe": "quickstart", "overrides": {"sampler.max_tokens": 3}}], "baseline": "a"},
     "'sampler.max_tokens' is set from the study's budget"),
    ({"arms": [{"name": "a", "recipe": "quickstart", "overrides": {"sampler.colour": 3}}], "baseline": "a"},
     "arm 'a'.*unknown key 'sampler.colour'"),
    ({"arms": [{"name": "a", "recipe": "nosuchrecipe"}], "baseline": "a"}, "no built-in recipe named 'nosuchrecipe'"),
    ({"arms": [{"name": "a", "recipe": "quickstart"}, {"name": "a", "recipe": "quickstart"}], "baseline": "a"},
     "arm names repeat: a"),
    ({"budget": 1}, "budget 1 is less than one token per iteration"),
])
def test_bad_study_files_are_one_clear_error(tmp_path, over, message):
    path = write_study(tmp_path / "s.yaml", tmp_path / "out", **over)
    with pytest.raises(UserError, match=message):
        cfg, source = load_study(path)
        Study(cfg, source, progress=False)
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_study_through_the_cli_exits_2_with_one_line(tmp_path):
    path = write_study(tmp_path / "s.yaml", tmp_path / "out", parallel=4, devices=["0"])
    done = subprocess.run([sys.executable, "-m", "forethought.cli", "study", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "parallel is 4" in done.stderr and len(done.stderr.strip().splitlines()) <= 3


def test_study_files_ship_in_the_package_and_resolve_by_name(tmp_path, monkeypatch):
    link = REPO / "studies"
    assert link.is_symlink() and (link / "quickstart.yaml").is_file() and (link / "gsm8k.yaml").is_file()
    monkeypatch.chdir(tmp_path)
    for spec in ("quickstart", "quickstart.yaml", "studies/quickstart.yaml"):
        assert resolve_study(spec).resolve() == (link / "quickstart.yaml").resolve()
    with pytest.raises(UserError, match="built-in studies: gsm8k, quickstart"):
        resolve_study("nosuch")
    for name in ("quickstart", "gsm8k"):  # every shipped study validates, with every arm's config
        cfg, path = load_study(name, [f"output={tmp_path / ('out_' + name)}"])
        study = Study(cfg, path, progress=False)
        assert len(study.arms) == len(cfg.arms) * len(cfg.seeds)
        header = path.read_text().splitlines()[0]
        assert header.startswith("# ") and f"forethought study studies/{name}.yaml" in path.read_text()


# ---------------------------------------------------------------- the paired-difference table on hand-made results


def _hand_run(d: Path, verdicts: list[int], iterations: list[tuple[int, float, int]]) -> None:
    """A run directory with metrics.jsonl and, per iteration, eval records (the last one gets `verdicts`)."""
    d.mkdir(parents=True)
    lines = []
    for k, (it, acc, tokens) in enumerate(iterations):
        ev = d / f"iter_{it:03d}" / "eval"
        ev.mkdir(parents=True)
        v = verdicts if k == len(iterations) - 1 else [0] * len(verdicts)
        ev.joinpath("records.jsonl").write_text(
            "".join(json.dumps({"id": f"q{i}", "correct": bool(c)}) + "\n" for i, c in enumerate(v)))
        lines.append(json.dumps({"iteration": it, "accuracy": acc, "ci95": [0.0, 1.0], "cumulative_tokens": tokens,
                                 "seconds": 10.0}))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_paired_difference_to_the_baseline_pooled_over_seeds(tmp_path):
    base = {0: [1, 0, 0, 0], 1: [1, 0, 1, 0]}
    arm = {0: [1, 1, 0, 1], 1: [1, 1, 0, 1]}
    for seed in (0, 1):
        _hand_run(tmp_path / "arms" / "base" / f"seed_{seed}", base[seed], [(0, 0.25, 0)])
        _hand_run(tmp_path / "arms" / "arm" / f"seed_{seed}", arm[seed], [(0, 0.0, 0), (1, 0.75, 900 + seed)])
        for name, v in (("base", [0, 0, 1, 1]), ("arm", [1, 1, 1, 1])):
            t = tmp_path / "transfer" / "other" / name / f"seed_{seed}"
            t.mkdir(parents=True)
            t.joinpath("records.jsonl").write_text(
                "".join(json.dumps({"id": f"t{i}", "correct": bool(c)}) + "\n" for i, c in enumerate(v)))
    arms = [{"name": "base", "kind": "run"}, {"name": "arm", "kind": "run", "max_call_tokens": 50}]
    study = summarize(tmp_path, arms, [0, 1], "base", ["other"], budget=880)
    # per question means: base 1, 0, .5, 0; arm 1, 1, 0, 1 -> differences 0, 1, -.5, 1: mean .375, s = .75
    d = study["arms"]["arm"]["final"]["delta_vs_baseline"]
    half = 1.959963984540054 * 0.75 / 2
    assert d["delta"] == pytest.approx(0.375) and d["questions"] == 4
    assert d["ci95"] == pytest.approx([0.375 - half, 1.0])
    final = study["arms"]["arm"]["final"]
    assert final["accuracy"] == pytest.approx(0.75) and final["tokens"] == pytest.approx(900.5)
    assert study["arms"]["base"]["final"]["accuracy"] == pytest.approx(0.375)
    assert [p["iteration"] for p in study["arms"]["arm"]["pooled"]] == [0, 1]
    assert study["arms"]["arm"]["pooled"][1]["tokens"] == pytest.approx(900.5)
    assert study["arms"]["arm"]["seeds"]["1"]["over_budget"] == 21
    assert study["arms"]["arm"]["seeds"]["1"]["within_budget"] is True
    # transfer: base .5, arm 1 on every question -> per question differences 1, 1, 0, 0
    assert study["arms"]["arm"]["transfer"]["other"]["delta_vs_baseline"]["delta"] == pytest.approx(0.5)
    table = markdown_table(study)
    lines = table.splitlines()
    assert lines[0] == ("| arm | final accuracy [95% CI] | vs base [95% CI] | generated tokens | prompt tokens | "
                        "seconds | other [95% CI] | other vs base |")
    assert lines[3].startswith(f"| arm | 75.0% [") and f"| +37.5 pp [{100 * (0.375 - half):+.1f}, +100.0] |" \
        .replace("-", "−") in lines[3]
    assert lines[2].startswith("| base (baseline) | 37.5% [") and "| 900 |" not in lines[2]
    assert "Budget 880 generated tokens" in table


def test_the_table_says_which_machines_measured_the_seconds(tmp_path):
    for name, kinds in (("base", ["AMD EPYC, AVX2, 2 CPUs"]), ("arm", ["AMD EPYC, AVX2, 2 CPUs", "Xeon, AVX-512"])):
        d = tmp_path / "arms" / name / "seed_0"
        _hand_run(d, [1, 0], [(0, 0.5, 0)])
        stages = {f"s{k}": kind for k, kind in enumerate(kinds)}
        (d / "manifest.json").write_text(json.dumps({"stages": {}, "seconds": {}, "machine": stages}))
    arms = [{"name": "base", "kind": "run"}, {"name": "arm", "kind": "run"}]
    study = summarize(tmp_path, arms, [0], "base")
    assert study["arms"]["arm"]["seeds"]["0"]["machines"] == ["AMD EPYC, AVX2, 2 CPUs", "Xeon, AVX-512"]
    assert ("Seconds measured on more than one kind of machine: base: AMD EPYC, AVX2, 2 CPUs; arm: AMD EPYC, AVX2, "
            "2 CPUs and Xeon, AVX-512.") in markdown_table(study)
    (tmp_path / "arms" / "arm" / "seed_0" / "manifest.json").write_text(
        json.dumps({"stages": {}, "seconds": {}, "machine": {"s0": "AMD EPYC, AVX2, 2 CPUs"}}))
    assert "Seconds measured on AMD EPYC, AVX2, 2 CPUs." in markdown_table(summarize(tmp_path, arms, [0], "base"))


def test_an_arms_seconds_are_its_stages_seconds_which_leave_out_stops(tmp_path):
    d = tmp_path / "arms" / "arm" / "seed_0"
    _hand_run(d, [1, 0], [(0, 0.5, 0), (1, 0.5, 10)])  # metrics say 10 s per iteration (an evaluation's own clock)
    stages = {"iter_000/eval": 7.0, "iter_001/sample": 3.0, "iter_001/train": 4.0}  # iteration 1's eval: running
    (d / "manifest.json").write_text(json.dumps({"stages": {}, "seconds": stages, "paused_seconds": {"x": 900.0}}))
    study = summarize(tmp_path, [{"name": "arm", "kind": "run"}], [0], "arm")
    assert [p["seconds"] for p in study["arms"]["arm"]["seeds"]["0"]["iterations"]] == [7.0, 17.0]


def test_a_baseline_without_training_is_a_line_with_its_interval_as_a_band(tmp_path):
    _hand_run(tmp_path / "arms" / "base" / "seed_0", [1, 0, 0, 0], [(0, 0.25, 0)])
    _hand_run(tmp_path / "arms" / "arm" / "seed_0", [1, 1, 0, 0], [(0, 0.25, 0), (1, 0.5, 900)])
    study = summarize(tmp_path, [{"name": "base", "kind": "run"}, {"name": "arm", "kind": "run"}], [0], "base")
    lo, hi = study["arms"]["base"]["final"]["ci95"]
    for x in ("tokens", "seconds"):
        ax = study_plot(study, x).axes[0]
        line = next(line for line in ax.lines if line.get_label() == "base")
        assert list(line.get_ydata()) == [0.25, 0.25] and list(line.get_xdata()) == [0, 1]  # across the whole axis
        assert line.get_linestyle() == "--"
        (band,) = ax.patches
        ys = band.get_transform().transform(band.get_path().vertices)[:, 1]
        assert ax.transData.inverted().transform([[0, min(ys)], [0, max(ys)]])[:, 1] == pytest.approx([lo, hi])
        assert [c.get_label() for c in ax.containers] == ["arm"]  # the trained arm keeps its points and bars


def test_study_page_renders_both_plots_in_chromium(tmp_path):
    from forethought.report.html import BLUE, write_report
    from test_report_screenshot import CHROMIUM, screenshot

    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    import numpy as np

    root = tmp_path / "study"
    for seed in (0,):
        _hand_run(root / "arms" / "base" / f"seed_{seed}", [1, 0, 0, 0, 1, 0], [(0, 0.33, 0)])
        _hand_run(root / "arms" / "lepa" / f"seed_{seed}", [1, 1, 0, 1, 1, 0],
                  [(0, 0.3, 0), (1, 0.5, 4000), (2, 0.67, 8100)])
    arms = [{"name": "base", "kind": "run"}, {"name": "lepa", "kind": "run"}]
    study = {"task": {"name": "synthetic/arithmetic"}, "stages": {"arms/base/seed_0": "done"},
             **summarize(root, arms, [0], "base", [], budget=8000)}
    (root / "study.json").write_text(json.dumps(study))
    html = write_report(root)
    text = html.read_text()
    assert text.count("<img") == 2 and "accuracy against generated tokens" in text and "+33.3 pp" in text
    img = screenshot(html, tmp_path / "study.png", tmp_path, size=(1200, 1400))
    pixels = np.asarray(img).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels, axis=0)) > 200, "screenshot looks blank: too few distinct colours"
    for colour, least in ((BLUE, 150), (COLOURS[1], 600)):  # each arm's points and bars, in both plots
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).max(axis=1) <= 12).sum() > least, f"the plots did not render ({colour})"


# ---------------------------------------------------------------- a killed study resumes


class AnswerEngine:
    """Answers every request from the question it contains: right for even-numbered questions, else wrong; steps
    for the search. Deterministic per request, so a redone call gives the same text; raises on call `fail_at`."""

    name = "scripted-answers"

    def __init__(self, golds: dict[str, str], fail_at: int | None = None, log: list | None = None):
        self.golds, self.fail_at, self.log = golds, fail_at, log if log is not None else []

    def generate(self, requests, *, progress=True):
        if self.fail_at is not None and len(self.log) == self.fail_at:
            raise RuntimeError("killed")
        self.log.append(len(requests))
        out = []
        for r in requests:
            text = " ".join(m["content"] for m in r.messages)
            gold = next((g for q, g in self.golds.items() if q in text), None)
            right = gold is not None and len(text) % 2 == 0
            answer = f"I add the numbers. The answer is {gold if right else -1}."
            out.append(Completion([Sample(answer, 9, "stop") for _ in range(r.n)], prompt_tokens=20))
        return out


def test_a_killed_study_resumes_every_arm_where_it_stopped(tmp_path, tiny_model_dir, monkeypatch):
    task = get_task("synthetic/arithmetic", train_size=16, test_size=8)
    golds = {e.question: e.gold for split in ("train", "test") for e in task.load(split=split)}
    engines: list = []

    def run(output: Path, fail_at=None):
        log: list = []

        def fake(kind, model, **options):
            engines.append(model)
            return AnswerEngine(golds, fail_at, log)

        monkeypatch.setattr("forethought.runs.stages.get_engine", fake)
        monkeypatch.setattr("forethought.engines.get_engine", fake)
        path = write_study(tmp_path / f"{output.name}.yaml", output, budget=240, model=str(tiny_model_dir),
                           arms=[{"name": "none", "recipe": "quickstart_rest_em", "overrides": {"iterations": 0}},
                                 {"name": "rest", "recipe": "quickstart_rest_em",
                                  "overrides": {"sampler.chunk_size": 4, "learner.max_steps": 1,
                                                "learner.lora": None, "learner.batch_size": 4}}],
                           transfer={"harder": {"name": "synthetic/arithmetic",
                                                "options": {"difficulty": 2, "test_size": 4}}})
        cfg, source = load_study(path)
        return Study(cfg, source, progress=False).run(), log

    reference, _ = run(tmp_path / "ref")
    out = tmp_path / "killed"
    # calls: none eval, none transfer, (rest's iteration 0 is a copy of none's), then sampling of iteration 1 in
    # calls of 4 questions
    with pytest.raises(RuntimeError, match="killed"):
        run(out, fail_at=5)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert stages == {"arms/none/seed_0": "done", "transfer/none/seed_0/harder": "done"}
    # the results so far are written as each arm ends: none's, and rest as not finished (no final accuracy), so
    # `forethought report` can show a study while it runs
    partial = json.loads((out / "study.json").read_text())
    assert not partial["complete"] and partial["stages"]["arms/rest/seed_0"] == "pending"
    assert partial["arms"]["none"]["finished"] and partial["arms"]["none"]["final"]["accuracy"] is not None
    assert not partial["arms"]["rest"]["finished"] and partial["arms"]["rest"]["final"]["accuracy"] is None
    assert "rest (not finished)" in (out / "table.md").read_text()
    none_manifest = (out / "arms" / "none" / "seed_0" / "manifest.json").read_text()
    samples = read_records(out / "arms" / "rest" / "seed_0" / "iter_001" / "samples.jsonl")
    assert samples and not (out / "arms" / "rest" / "seed_0" / "iter_001" / "checkpoint").exists()

    resumed, log = run(out)
    assert (out / "arms" / "none" / "seed_0" / "manifest.json").read_text() == none_manifest  # not rerun
    rest = json.loads((out / "arms" / "rest" / "seed_0" / "manifest.json").read_text())["stages"]
    assert rest["iter_000/eval"] == "done" and all(v in ("done", "skipped") for v in rest.values())
    assert log and len(log) < 60  # only what was left: sampling from iteration 1 on, training, evaluations

    def strip(study):
        drop = {"seconds", "source", "output"}
        if isinstance(study, dict):
            return {k: strip(v) for k, v in study.items() if k not in drop and k != "table_markdown"}
        if isinstance(study, list):
            return [strip(v) for v in study]
        return study.replace(str(tmp_path / "ref"), "").replace(str(out), "") if isinstance(study, str) else study

    assert strip(resumed) == strip(reference)
    # rest's iteration 0 is none's evaluation, and its later iterations' paired deltas read those records
    rest_dir = out / "arms" / "rest" / "seed_0"
    reused = json.loads((rest_dir / "manifest.json").read_text())["reused"]["iter_000/eval"]
    assert reused["from"] == "arms/none/seed_0"
    records = {d: [json.loads(x) for x in (d / "eval" / "records.jsonl").read_text().splitlines()]
               for d in (out / "arms" / "none" / "seed_0" / "iter_000", rest_dir / "iter_000", rest_dir / "iter_002")}
    base, copied, last = records.values()
    assert copied == base
    final = json.loads((rest_dir / "iter_002" / "metrics.json").read_text())
    delta, ci = paired_delta_ci(correct_by_question(base), correct_by_question(last))
    assert final["delta_vs_base"] == delta and final["delta_ci95"] == list(ci)
    spent = resumed["arms"]["rest"]["seeds"]["0"]
    assert spent["tokens"] > 0 and spent["within_budget"]
    for name in ("study.json", "table.md", "accuracy_vs_tokens.png", "accuracy_vs_seconds.png"):
        assert (out / name).is_file()
    assert resumed["complete"] and all(a["finished"] for a in resumed["arms"].values())
