"""Datasets and models out: a run directory as Hugging Face datasets, and pushing datasets and checkpoints to the Hub.

`export_run(RUN, DIR)` writes one dataset folder with a configuration per kind of data the run holds, each a
parquet file under DIR/KIND/, and DIR/README.md, the dataset card (the resolved recipe, the metrics, what each
configuration holds). `datasets.load_dataset(DIR, KIND)` loads one; `load_dataset(DIR)` loads the first.

| kind | from | one row per |
|---|---|---|
| trajectories | run: iter_XXX/samples.jsonl | sampled trajectory, accepted or rejected (plan, reflection, hint used, verdict, tokens) |
| rollouts | run, GRPO learner: iter_XXX/rollouts.jsonl | GRPO rollout (optimizer step, completion, reward and its parts, tokens) |
| sft | cpl/search: r{k}/sft.jsonl | SFT path (chat messages) |
| pairs | cpl/search: r{k}/pairs.jsonl | Step-APO preference pair (prefix, chosen, rejected, their Q values) |
| value | cpl/search: r{k}/value.jsonl | value-model target (prefix, Q) |
| trees | cpl/search: r{k}/trees.jsonl | search tree (its nodes with text, prior, N, W, Q, reward, value) |
| annotated | codeplan: annotated.jsonl | kept annotation (prompt, pseudocode plan, response) |
| evaluations | every eval/records.jsonl | evaluated reply (which model, prompt, plan, output, verdict, tokens) |

Pushing reads the token from the environment (HF_TOKEN, or a saved `hf auth login`), passes it only to
`huggingface_hub`, and never prints, logs or puts it in an error message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from forethought import __version__
from forethought.errors import UserError
from forethought.jsonl import read_jsonl

CARD = "README.md"
# What the embedded models are on the Hub (for a model card's base_model).
EMBEDDED_HUB = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "qwen2.5-coder-0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ROUND = re.compile(r"^r(\d+)$")
_ITER = re.compile(r"^iter_(\d+)$")
# Columns that hold answers or ids: always strings, whatever type a task's gold happens to have.
_STRINGS = {"id", "question_id", "gold", "extracted", "prompts_version"}

KINDS: dict[str, str] = {
    "trajectories": "sampled trajectories, accepted and rejected: plan, reflection, solution, verdict "
                    "(correct, accepted, rejected_reason), hint_used, tokens_in/tokens_out (run: iter_XXX/samples.jsonl)",
    "rollouts": "GRPO rollouts: optimizer step, question_id, completion, reward and its parts, tokens "
                "(run with the GRPO learner: iter_XXX/rollouts.jsonl)",
    "sft": "CPL SFT paths: root-to-correct-solution step paths as chat messages (r{k}/sft.jsonl)",
    "pairs": "CPL Step-APO preference pairs: shared prefix, chosen and rejected step, their Q values (r{k}/pairs.jsonl)",
    "value": "CPL value-model targets: a state (prefix) and its Q value (r{k}/value.jsonl)",
    "trees": "CPL search trees: every node's text, kind, prior, N, W, Q, reward, value, children (r{k}/trees.jsonl)",
    "annotated": "CodePlan annotated corpus: prompt, pseudocode plan, response (annotated.jsonl)",
    "evaluations": "every evaluated reply: which model (`evaluated`), prompt, plan, output, extracted, gold, "
                   "correct, tokens (eval/records.jsonl)",
}


# ------------------------------------------------------------------------------------------------ reading a run
def _read(path: Path) -> Iterator[dict]:
    for _, row in read_jsonl(path):
        yield row


def _numbered(root: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), d) for d in root.iterdir() if d.is_dir() and (m := pattern.match(d.name))]
    return sorted(found)


def _per_iteration(name: str) -> Callable[[Path], list[dict]]:
    def rows(root: Path) -> list[dict]:
        out = []
        for t, d in _numbered(root, _ITER):
            if (d / f"{name}.jsonl").is_file():
                out += [{"iteration": t, **r} for r in _read(d / f"{name}.jsonl")]
        return out
    return rows


def _per_round(name: str) -> Callable[[Path], list[dict]]:
    def rows(root: Path) -> list[dict]:
        out = []
        for k, d in _numbered(root, _ROUND):
            if (d / f"{name}.jsonl").is_file():
                out += [{"round": k, **r} for r in _read(d / f"{name}.jsonl")]
        return out
    return rows


def _annotated(root: Path) -> list[dict]:
    return list(_read(root / "annotated.jsonl")) if (root / "annotated.jsonl").is_file() else []


def _evaluations(root: Path) -> list[dict]:
    rows = []
    for records in sorted(root.glob("**/eval/records.jsonl")) + sorted(root.glob("eval/*/records.jsonl")):
        d = records.parent
        label = d.parent.relative_to(root).as_posix() if d.name == "eval" else d.name
        rows += [{"evaluated": label, **r} for r in _read(records)]
    return rows


READERS: dict[str, Callable[[Path], list[dict]]] = {
    "trajectories": _per_iteration("samples"), "rollouts": _per_iteration("rollouts"), "sft": _per_round("sft"), "pairs": _per_round("pairs"),
    "value": _per_round("value"), "trees": _per_round("trees"), "annotated": _annotated,
    "evaluations": _evaluations,
}


def pipeline(root: Path) -> str:
    """Which command wrote `root`: run, cpl, search or codeplan."""
    if (root / "annotated.jsonl").exists() or (root / "code").is_dir() or (root / "none").is_dir():
        return "codeplan"
    if _numbered(root, _ROUND):
        return "cpl" if (root / "eval").is_dir() else "search"
    return "run"


def _run_root(path: Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path} holds no config.yaml: it is not a run directory (give the folder a `forethought "
                        "run/cpl/search/codeplan` command wrote)")
    return path


# ------------------------------------------------------------------------------------------------ tables
def _table(rows: list[dict]):
    """A pyarrow table from JSON rows: ids and answers as strings, a column of mixed scalar types as strings,
    an all-null column as strings (so every parquet file has a usable type)."""
    import pyarrow as pa

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    data, types = {}, {}
    for col in columns:
        values = [row.get(col) for row in rows]
        kinds = {type(v) for v in values if v is not None}
        if col in _STRINGS or (str in kinds and len(kinds) > 1):
            values = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
        elif kinds <= {int, float} and float in kinds:
            values = [None if v is None else float(v) for v in values]
        data[col] = values
        types[col] = pa.string() if not kinds or col in _STRINGS or (str in kinds and len(kinds) > 1) else None
    try:
        return pa.table({c: pa.array(v, type=types[c]) for c, v in data.items()})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise UserError(f"cannot turn these records into a table ({e}); a record has fields of mixed types") from None


# ------------------------------------------------------------------------------------------------ the card
def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""


def _pp(delta, ci) -> str:
    if delta is None:
        return ""
    return f"{100 * delta:+.1f} pp" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def metrics_markdown(root: Path) -> str:
    """The run's measured results as markdown tables (run: per iteration; cpl/codeplan: per model)."""
    lines = []
    metrics = [r for _, r in read_jsonl(root / "metrics.jsonl")] if (root / "metrics.jsonl").is_file() else []
    if metrics:
        lines += ["| iteration | held-out accuracy [95% CI] | change vs untrained [95% CI] | questions with an "
                  "accepted sample | trials | sampling tokens |", "|---|---|---|---|---|---|"]
        for m in metrics:
            lines.append(f"| {m.get('iteration')} | {_pct(m.get('accuracy'))} {_ci(m.get('ci95'))} | "
                         f"{_pp(m.get('delta_vs_base'), m.get('delta_ci95'))} | "
                         f"{_pct(m.get('acceptance_rate')) if m.get('iteration') else ''} | "
                         f"{m.get('trials', '') if m.get('iteration') else ''} | "
                         f"{m.get('tokens_generated', '') if m.get('iteration') else ''} |")
    summary = _load_json(root / "summary.json")
    if summary.get("models"):
        lines += ["| model | accuracy [95% CI] | questions | unparseable |", "|---|---|---|---|"]
        for name, m in summary["models"].items():
            lines.append(f"| {name} | {_pct(m.get('accuracy'))} {_ci(m.get('ci95'))} | {m.get('n', '')} | "
                         f"{m.get('unparseable', '')} |")
        deltas = dict(summary.get("deltas", {}))
        if summary.get("code_minus_none"):
            deltas["code_minus_none"] = summary["code_minus_none"]
        if deltas:
            lines.append("")
            lines += [f"- {name.replace('_minus_', ' − ')}: {_pp(d.get('delta'), d.get('ci95'))} (paired)"
                      for name, d in deltas.items()]
    if not lines:
        return "No evaluation has finished in this run yet."
    return "\n".join(lines)


def _config_text(root: Path) -> str:
    return (root / "config.yaml").read_text(encoding="utf-8").rstrip()


def dataset_card(root: Path, counts: dict[str, int], repo: str | None = None) -> str:
    """README.md of an exported run: front matter with one configuration per kind, recipe, metrics, contents."""
    config = yaml.safe_load(_config_text(root)) or {}
    kinds = [k for k, n in counts.items() if n]
    front = {
        "configs": [{"config_name": k, "data_files": [{"split": "train", "path": f"{k}/*.parquet"}],
                     **({"default": True} if i == 0 else {})} for i, k in enumerate(kinds)],
        "tags": ["forethought", "self-training", *([str(config["method"])] if config.get("method") else []),
                 pipeline(root)],
    }
    where = repo or "DIR"
    model = config.get("model", "?")
    body = [
        f"# {root.name}: a forethought {pipeline(root)} run",
        "",
        f"What `forethought {pipeline(root)}` produced in `{root.name}` (base model `{model}`"
        + (f", method `{config['method']}`" if config.get("method") else "")
        + f"), exported with forethought {__version__} (`forethought export`).",
        "",
        "## Configurations",
        "",
        "| configuration | rows | what one row is |",
        "|---|---|---|",
        *[f"| `{k}` | {counts[k]} | {KINDS[k]} |" for k in kinds],
        "",
        "```python",
        "from datasets import load_dataset",
        *[f"{k} = load_dataset({where!r}, {k!r}, split='train')" for k in kinds],
        "```",
        "",
        "## Metrics",
        "",
        metrics_markdown(root),
        "",
        "## Recipe",
        "",
        f"The resolved recipe of the run (`{root.name}/config.yaml`); `forethought {pipeline(root)} config.yaml` "
        "reruns it.",
        "",
        "```yaml",
        _config_text(root),
        "```",
        "",
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body)


# ------------------------------------------------------------------------------------------------ export
def export_run(run_dir: str | Path, to: str | Path, *, repo: str | None = None) -> dict[str, int]:
    """Write every kind of data `run_dir` holds as a dataset under `to` (which must be new or empty), plus the
    card; returns the row count of each kind found. `repo` only changes the load commands the card shows."""
    root = _run_root(Path(run_dir))
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UserError(f"{to} already exists and is not an empty folder; choose a new --to folder")
    if to.resolve().is_relative_to(root.resolve()):
        raise UserError(f"--to {to} is inside the run directory {root}; choose a folder outside it")
    tables = {kind: rows for kind, read in READERS.items() if (rows := read(root))}
    if not tables:
        raise UserError(f"{root} holds no data to export yet (no iter_XXX/samples.jsonl or rollouts.jsonl, "
                        "r{{k}}/*.jsonl, annotated.jsonl or eval/records.jsonl); run it first")
    import pyarrow.parquet as pq

    counts = {kind: len(rows) for kind, rows in tables.items()}
    staging = to.parent / f".{to.name}.partial-{os.getpid()}"
    try:
        for kind, rows in tables.items():
            (staging / kind).mkdir(parents=True, exist_ok=True)
            pq.write_table(_table(rows), staging / kind / "train-00000-of-00001.parquet")
        (staging / CARD).write_text(dataset_card(root, counts, repo), encoding="utf-8")
        if to.exists():
            to.rmdir()
        staging.replace(to)
    except OSError as e:
        raise UserError(f"cannot write {to}: {e.strerror or e}") from None
    finally:
        if staging.exists():
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return counts


# ------------------------------------------------------------------------------------------------ model card
def _checkpoint_run(checkpoint: Path) -> Path:
    for parent in list(checkpoint.resolve().parents)[:4]:
        if (parent / "config.yaml").is_file():
            return parent
    raise UserError(f"{checkpoint} is not inside a forethought run directory (no config.yaml above it); give a "
                    "checkpoint such as runs/NAME/iter_002/checkpoint")


def _eval_summary(root: Path, checkpoint: Path) -> tuple[str | None, dict, dict]:
    """(label, this checkpoint's eval summary, the untrained model's) as the run directory records them."""
    stage, group = checkpoint.parent, checkpoint.parent.parent
    candidates = [(stage.name, stage / "eval")]
    if _ROUND.match(group.name):  # cpl: r1/apo/checkpoint -> eval/r1_apo
        candidates.append((f"{group.name}_{stage.name}", root / "eval" / f"{group.name}_{stage.name}"))
    label, mine = next(((n, s) for n, d in candidates if (s := _load_json(d / "summary.json"))), (None, {}))
    base = next((s for d in (root / "iter_000" / "eval", root / "eval" / "base", root / f"base_{stage.name}" / "eval")
                 if (s := _load_json(d / "summary.json"))), {})
    return label, mine, base


def base_model_id(model: str) -> str | None:
    """The Hub id a card's base_model can name (embedded models map to their origin), or None for a local path."""
    if model in EMBEDDED_HUB:
        return EMBEDDED_HUB[model]
    return model if _HUB_ID.match(model) and not Path(model).exists() else None


def model_card(checkpoint: str | Path, repo: str) -> str:
    """README.md for a pushed checkpoint: the recipe, the base model and the accuracy its run measured."""
    checkpoint = Path(checkpoint)
    root = _checkpoint_run(checkpoint)
    config = yaml.safe_load(_config_text(root)) or {}
    model = str(config.get("model", "?"))
    label, mine, base = _eval_summary(root, checkpoint)
    metrics = _load_json(checkpoint.parent / "metrics.json")
    front = {"library_name": "transformers", "tags": ["forethought", "self-training",
                                                       *([str(config["method"])] if config.get("method") else [])]}
    if hub := base_model_id(model):
        front["base_model"] = hub
    where = checkpoint.resolve().relative_to(root.resolve()).as_posix()
    lines = [
        f"# {repo.split('/')[-1]}",
        "",
        f"Trained with forethought {__version__} (`forethought {pipeline(root)}`) from the base model `{model}`"
        + (f" ({hub})" if hub and hub != model else "")
        + (f" by {config['method']}" if config.get("method") else "") + f": `{root.name}/{where}`.",
        "",
        "## Measured accuracy",
        "",
    ]
    if mine:
        task = mine.get("task", (config.get("task") or {}).get("name", "?"))
        lines += ["| model | task | accuracy [95% CI] | questions |", "|---|---|---|---|",
                  f"| this checkpoint ({label}) | {task} | {_pct(mine.get('accuracy'))} {_ci(mine.get('ci95'))} | "
                  f"{mine.get('n', '')} |"]
        if base:
            lines.append(f"| base model (untrained) | {base.get('task', task)} | {_pct(base.get('accuracy'))} "
                         f"{_ci(base.get('ci95'))} | {base.get('n', '')} |")
        if metrics.get("delta_vs_base") is not None:
            lines += ["", f"Change vs the untrained model, paired over the same questions: "
                          f"{_pp(metrics['delta_vs_base'], metrics.get('delta_ci95'))}."]
        settings = ", ".join(f"{k} {mine[k]}" for k in ("plan_format", "split") if mine.get(k) is not None)
        if settings:
            lines += ["", f"Evaluation settings: {settings}."]
    else:
        lines.append("This checkpoint has no evaluation in its run directory.")
    lines += [
        "",
        "## Recipe",
        "",
        f"The resolved recipe of the run (`{root.name}/config.yaml`):",
        "",
        "```yaml",
        _config_text(root),
        "```",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained({repo!r})",
        f"tokenizer = AutoTokenizer.from_pretrained({repo!r})",
        "```",
        "",
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the Hub
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_token() -> str:
    """The token from the environment (HF_TOKEN) or a saved login; one error if offline or there is none."""
    if _offline():
        raise UserError("cannot push: HF_HUB_OFFLINE is set, so the Hugging Face Hub is not contacted; unset it on a "
                        "machine with network access (the export folder itself is written without --push-to-hub)")
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise UserError("cannot push: no Hugging Face token; set HF_TOKEN to a token with write access "
                        "(https://huggingface.co/settings/tokens) or run `hf auth login`")
    return token


def _scrub(text: str, token: str) -> str:
    text = text.replace(token, "***") if token else text
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def _hub_error(e: Exception, repo: str, token: str) -> UserError:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(e, OfflineModeIsEnabled):
        return UserError("cannot push: the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE); unset it on a "
                         "machine with network access")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, HfHubHTTPError) and status in (401, 403):
        return UserError(f"the Hugging Face Hub refused the token for {repo} (HTTP {status}); check that HF_TOKEN is "
                         "valid and may write to that repository")
    first = _scrub(str(e).strip().splitlines()[0] if str(e).strip() else "", token)
    if isinstance(e, HfHubHTTPError):
        return UserError(f"pushing to {repo} failed (HTTP {status}): {first}")
    if isinstance(e, (OSError, ConnectionError)) or "connect" in type(e).__name__.lower():
        return UserError(f"cannot reach the Hugging Face Hub to push {repo} ({type(e).__name__}); check the network")
    return UserError(f"pushing to {repo} failed ({type(e).__name__}: {first})")


def upload(repo: str, repo_type: str, files: dict[str, Path | bytes], message: str, *, token: str,
           private: bool = False) -> str:
    """Create `repo` if needed and add `files` ({path in repo: local file or bytes}) in one commit; returns its URL.
    Every failure becomes one UserError that never contains the token."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    if not _HUB_ID.match(repo):
        raise UserError(f"repository '{repo}' is not a Hub id of the form 'user/name'")
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(src) if isinstance(src, Path) else src)
           for name, src in sorted(files.items())]
    api = HfApi()
    try:
        api.create_repo(repo, token=token, repo_type=repo_type, private=private, exist_ok=True)
        api.create_commit(repo, ops, commit_message=message, token=token, repo_type=repo_type)
    except Exception as e:  # noqa: BLE001 - every failure is reported as one line, without the token
        raise _hub_error(e, repo, token) from None
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return f"{constants.ENDPOINT}/{prefix}{repo}"


def push_dataset(folder: str | Path, repo: str, *, token: str, private: bool = False) -> str:
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return upload(repo, "dataset", files, "forethought export", token=token, private=private)


def push_checkpoint(checkpoint: str | Path, repo: str, *, private: bool = False) -> str:
    """Push a checkpoint folder with a model card (recipe, base model, measured accuracy) in one commit."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise UserError(f"checkpoint folder not found: {checkpoint}")
    if not (checkpoint / "config.json").is_file():
        raise UserError(f"{checkpoint} holds no config.json: give a trained model's folder, such as "
                        "runs/NAME/iter_002/checkpoint")
    card = model_card(checkpoint, repo)  # checks the run directory before the token is read
    token = hub_token()
    files: dict[str, Path | bytes] = {p.relative_to(checkpoint).as_posix(): p for p in sorted(checkpoint.rglob("*"))
                                      if p.is_file() and p.name != CARD}
    files[CARD] = card.encode("utf-8")
    return upload(repo, "model", files, "forethought push", token=token, private=private)
