"""Run (or resume) a study: every arm x seed is an ordinary run or CPL directory, STUDY/arms/NAME/seed_S, made by
the existing pipelines with the study's budget passed down as overrides; the study directory itself is a stage
runner directory (config snapshot, manifest), so a killed study resumes each arm where its own manifest stopped
and never reruns a finished one.

The budget B (generated tokens per arm and seed) is split into equal shares over an arm's iterations (CPL: its
rounds): `sampler.max_tokens` (EM samplers), `learner.max_tokens` (GRPO rollouts) or `search.max_tokens` (CPL)
= B // T. A run carries what an iteration leaves unspent, or overshot, to the next, so an arm generates at most B
plus one engine call. An arm with no iterations (no training) spends nothing.

Every run arm evaluates the untrained model as its iteration 0; an arm whose iteration-0 evaluation has the same
inputs as one another arm (or seed) of the study has finished gets a copy of it instead (study/reuse.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from forethought.catalog import resolve_recipe
from forethought.config import load_config, load_yaml, set_dotted, validate
from forethought.errors import UserError
from forethought.runs.stages import StageRunner, read_manifest
from forethought.study.config import ArmConfig, StudyConfig
from forethought.study.reuse import EVAL_STAGE, eval_key, finished_eval, reuse_eval

STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"


# ---------------------------------------------------------------- finding study files


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def resolve_study(spec: str | Path) -> Path:
    """An existing file as it is; otherwise the built-in study of that name (quickstart, quickstart.yaml,
    studies/quickstart.yaml); otherwise one error listing the built-in studies."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"study '{spec}' is a directory; give a study .yaml file or a built-in study name")
    name = str(spec).removeprefix("studies/")
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if "/" not in name and "\\" not in name and (STUDIES_DIR / f"{name}.yaml").is_file():
        return STUDIES_DIR / f"{name}.yaml"
    raise UserError(f"no study file '{spec}' and no built-in study named '{name}'; built-in studies: "
                    f"{', '.join(study_names())}")


def load_study(spec: str | Path, overrides: list[str] = ()) -> tuple[StudyConfig, Path]:
    path = resolve_study(spec)
    return load_config(StudyConfig, path, list(overrides)), path


# ---------------------------------------------------------------- arm configs


def _set(data: dict, key: str, value: Any, where: str) -> None:
    set_dotted(data, key, value, f"{where}: override '{key}'")


def arm_kind(arm: ArmConfig, recipe: dict) -> str:
    return arm.kind or ("run" if "method" in recipe else "cpl")


def iterations_of(cfg) -> int:
    """How many budget shares an arm's config has: a run's iterations, a CPL run's rounds."""
    return cfg.rounds if hasattr(cfg, "rounds") else cfg.iterations


def budget_key(cfg) -> str:
    """The setting that carries an arm's per-iteration budget."""
    if hasattr(cfg, "rounds"):
        return "search.max_tokens"
    return "learner.max_tokens" if getattr(cfg.learner, "kind", "sft") == "grpo" else "sampler.max_tokens"


def max_call_tokens(cfg) -> int:
    """The most tokens one engine call of an arm's training-time generation can produce (the allowed overshoot)."""
    if hasattr(cfg, "rounds"):
        s = cfg.search
        return s.trees_per_batch * max(s.root_children, s.children) * s.max_new_tokens
    if getattr(cfg.learner, "kind", "sft") == "grpo":
        g = cfg.learner
        return g.questions_per_step * g.num_generations * g.max_completion_length
    s = cfg.sampler
    block = 1 if s.kind == "lepa" else s.max_accepted
    return s.chunk_size * block * max(s.max_new_tokens, s.plan_max_new_tokens)


class Study:
    """One study directory: its arms' configs (all validated before anything runs), then arm after arm."""

    def __init__(self, cfg: StudyConfig, source: str | Path, *, progress: bool = True):
        self.cfg, self.source, self.progress = cfg, Path(source), progress
        self.root = Path(cfg.output)
        self.arms: dict[tuple[str, int], Any] = {}
        self.kinds: dict[str, str] = {}
        for arm in cfg.arms:
            for seed in cfg.seeds:
                self.kinds[arm.name], self.arms[arm.name, seed] = self.arm_config(arm, seed)
        self.stages = StageRunner(self.root, cfg, progress=progress)

    def arm_dir(self, name: str, seed: int) -> Path:
        return self.root / "arms" / name / f"seed_{seed}"

    def _recipe_path(self, spec: str) -> Path:
        """A recipe file as given, or beside the study file, or a built-in recipe's name."""
        beside = self.source.parent / spec
        if not Path(spec).expanduser().is_file() and beside.is_file():
            return beside
        return resolve_recipe(spec)

    def arm_config(self, arm: ArmConfig, seed: int):
        """The arm's recipe with its overrides, then what the study fixes for every arm: task, model, evaluation,
        seed, output and the budget share."""
        from forethought.cpl import CplConfig
        from forethought.runs.config import RunConfig

        where = f"{self.source} arm '{arm.name}'"
        path = self._recipe_path(arm.recipe)
        data = load_yaml(path)
        kind = arm_kind(arm, data)
        fixed = {"task": "task", "seed": "seeds", "output": "output"}
        if self.cfg.model is not None:
            fixed["model"] = "model"
        if self.cfg.eval is not None:
            fixed["eval"] = "eval"
        for key, value in arm.overrides.items():
            head = key.split(".")[0]
            if head in fixed:
                raise UserError(f"{where}: '{key}' is set by the study for every arm (its `{fixed[head]}`); "
                                "remove it from the arm's overrides")
            if key in ("sampler.max_tokens", "search.max_tokens", "learner.max_tokens"):
                raise UserError(f"{where}: '{key}' is set from the study's budget; remove it from the arm's overrides")
            _set(data, key, value, where)
        data["task"] = self.cfg.task.model_dump()
        if self.cfg.model is not None:
            data["model"] = self.cfg.model
        if self.cfg.eval is not None:
            data["eval"] = self.cfg.eval.model_dump()
        data["seed"], data["output"] = seed, str(self.arm_dir(arm.name, seed))
        if self.cfg.report_to:
            data["report_to"] = list(self.cfg.report_to)
        model = RunConfig if kind == "run" else CplConfig
        cfg = validate(model, data, f"{where} ({path})")
        shares = iterations_of(cfg)
        if shares:
            share = self.cfg.budget // shares
            if share < 1:
                raise UserError(f"{self.source}: budget {self.cfg.budget} is less than one token per iteration of "
                                f"arm '{arm.name}' ({shares} iterations); raise the budget")
            _set(data, budget_key(cfg), share, where)
            cfg = validate(model, data, f"{where} ({path})")
        return kind, cfg

    # ---------------------------------------------------------------- running
    def run(self) -> dict:
        from forethought.study.results import write_results

        planned = self.planned()
        with self.stages:
            if self.cfg.parallel > 1 or self.cfg.ray_address is not None:
                from forethought.study.parallel import run_parallel

                run_parallel(self, planned, after_stage=lambda: write_results(self))
            else:
                for k, (name, fn) in enumerate(planned):
                    if self.stages.stage(name, fn) and k < len(planned) - 1:
                        write_results(self)  # the results so far, readable (forethought report) while it runs
        return write_results(self)

    def say(self, message: str) -> None:
        if self.progress:
            print(f"study: {message}", flush=True)

    def planned(self) -> list[tuple[str, Callable[[], None]]]:
        """Every stage of the study with its function, in the order they run."""
        return [(name, fn) for arm in self.cfg.arms for seed in self.cfg.seeds for name, fn in
                [(f"arms/{arm.name}/seed_{seed}", partial(self.run_arm, arm.name, seed))]
                + [(f"transfer/{arm.name}/seed_{seed}/{label}", partial(self.transfer, arm.name, seed, label))
                   for label in self.cfg.transfer]]

    def waits_for(self, stage: str) -> list[Callable[[StageRunner], bool]]:
        """What stage `stage` should wait for when stages run in parallel: a transfer evaluation for its arm; an arm
        for the first earlier arm (or seed) whose iteration-0 evaluation it can copy (study/reuse.py)."""
        parts = stage.split("/")
        if parts[0] == "transfer":
            arm = f"arms/{parts[1]}/{parts[2]}"
            return [lambda stages: stages.done(arm)]
        arm = parts[1], int(parts[2].removeprefix("seed_"))
        peers, order = self.same_eval(*arm), list(self.arms)
        if not peers or order.index(peers[0]) > order.index(arm):
            return []
        source = self.arm_dir(*peers[0])
        return [lambda stages: finished_eval(source)]

    def run_arm(self, name: str, seed: int) -> None:
        """The arm's own pipeline; it resumes from its own manifest when a killed study runs again."""
        cfg = self.arms[name, seed]
        if self.kinds[name] == "run":
            from forethought.runs.loop import Runner

            runner = Runner(cfg, progress=self.progress)
            source = self.reusable_eval(name, seed)
            with runner.stages:
                if source is not None:  # an identical evaluation of the untrained model is done: copied, not rerun
                    runner.stages.stage(EVAL_STAGE, lambda: reuse_eval(runner, source, self.root, eval_key(cfg)))
                runner.run()
        else:
            from forethought.cpl import CplRun

            CplRun(cfg, progress=self.progress).run()

    def reusable_eval(self, name: str, seed: int) -> Path | None:
        """The directory of another arm (or seed) of this study whose iteration-0 evaluation is finished and has the
        same inputs as this one's (study/reuse.py), in study order; None when there is none."""
        return next((self.arm_dir(*o) for o in self.same_eval(name, seed) if finished_eval(self.arm_dir(*o))), None)

    def same_eval(self, name: str, seed: int) -> list[tuple[str, int]]:
        """The other arms (and seeds), in study order, whose iteration-0 evaluation has the same inputs as this one's
        (none for a CPL arm)."""
        key = eval_key(self.arms[name, seed])
        return [] if key is None else [o for o, cfg in self.arms.items()
                                       if o != (name, seed) and eval_key(cfg) == key]

    def final_model(self, name: str, seed: int) -> tuple[str, str]:
        """(model, plan format) of the arm's final model: the last trained iteration's checkpoint, CPL's last
        Step-APO policy; the base model when nothing was trained."""
        cfg, d = self.arms[name, seed], self.arm_dir(name, seed)
        if self.kinds[name] == "cpl":
            k = cfg.rounds
            ckpt = d / f"r{k}" / "apo" / "checkpoint"
            return (str(ckpt) if ckpt.is_dir() else cfg.model), "steps"
        grpo = getattr(cfg.learner, "kind", "sft") == "grpo"
        fmt = cfg.learner.plan_format if grpo else cfg.sampler.plan_format
        manifest = read_manifest(d)["stages"]
        for t in range(cfg.iterations, 0, -1):
            if manifest.get(f"iter_{t:03d}/train") == "done":
                return str(d / f"iter_{t:03d}" / "checkpoint"), fmt
        return cfg.model, fmt

    def transfer_dir(self, name: str, seed: int, label: str) -> Path:
        return self.root / "transfer" / label / name / f"seed_{seed}"

    def transfer(self, name: str, seed: int, label: str) -> None:
        """Evaluate the arm's final model on transfer task `label` with the arm's own evaluation settings."""
        from forethought.engines import close_engine, get_engine
        from forethought.evaluate import evaluate, partial_path
        from forethought.tasks import get_task

        t, cfg = self.cfg.transfer[label], self.arms[name, seed]
        task = get_task(t.name, **t.options)
        questions = task.load(t.data, split=t.split, limit=t.limit)
        if not questions:
            raise UserError(f"{self.source}: transfer task '{label}' ({t.name}) has no questions; check its "
                            "data/split")
        model, fmt = self.final_model(name, seed)
        e = cfg.eval
        engine = get_engine(cfg.engine.kind, model, **cfg.engine.options())
        try:
            result = evaluate(engine, task, questions, model_name=model, plan_format=fmt, n=e.n,
                              temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens,
                              plan_max_new_tokens=e.plan_max_new_tokens, fewshot=e.fewshot, seed=seed,
                              progress=self.progress, partial=partial_path(self.transfer_dir(name, seed, label)))
        finally:
            close_engine(engine)
        result.write(self.transfer_dir(name, seed, label))


def run_study(spec: str | Path, overrides: list[str] = (), *, progress: bool = True) -> dict:
    """Load a study file (or built-in study name) with dotted overrides and run or resume it; returns study.json."""
    cfg, path = load_study(spec, overrides)
    return Study(cfg, path, progress=progress).run()
