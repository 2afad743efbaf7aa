"""Bad input through the real command line: each case exits 2 with one line naming what to fix, never a traceback.

Every case runs `python -m forethought.cli` in a subprocess (so `main()`'s UserError handling is what is tested),
offline (HF_HUB_OFFLINE=1) and under a timeout, and fails before any model is loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
CPL = REPO / "recipes" / "cpl_cpu.yaml"
CODEPLAN = REPO / "recipes" / "codeplan_cpu.yaml"
BINARY = b"\xff\xfe\x00\x81 not utf-8 \xc3\x28\n"  # invalid UTF-8 from the first byte

# (id, argv with {d} = the scratch folder and {unwritable} = a folder nothing can be written in, what stderr must name)
CASES = [
    # recipes: malformed YAML, wrong types, unknown keys, missing fields, not a mapping, not UTF-8
    ("recipe-bad-yaml", ["run", "{d}/bad.yaml"], "not valid YAML"),
    ("recipe-not-mapping", ["run", "{d}/list.yaml"], "expected a mapping"),
    ("recipe-binary", ["run", "{d}/binary.yaml"], "not UTF-8"),
    ("recipe-empty", ["run", "{d}/empty.yaml"], "key 'method' is missing"),
    ("recipe-missing-field", ["run", "{d}/no_task.yaml"], "key 'task' is missing"),
    ("recipe-wrong-type", ["run", str(QUICKSTART), "iterations=many", "output={d}/r"], "'iterations'"),
    ("recipe-unknown-key", ["run", str(QUICKSTART), "bogus=1", "output={d}/r"], "unknown key 'bogus'"),
    ("recipe-unknown-nested-key", ["run", str(QUICKSTART), "sampler.bogus=1", "output={d}/r"], "sampler.bogus"),
    ("recipe-bad-override", ["run", str(QUICKSTART), "iterations"], "key=value"),
    ("cpl-bad-yaml", ["cpl", "{d}/bad.yaml"], "not valid YAML"),
    ("codeplan-binary", ["codeplan", "{d}/binary.yaml"], "not UTF-8"),
    ("search-unknown-key", ["search", str(CPL), "search.bogus=1", "output={d}/s"], "search.bogus"),
    # data files: empty, not UTF-8, wrong types
    ("eval-empty-data", ["eval", "-t", "gsm8k", "--data", "{d}/empty.jsonl", "-o", "{d}/out"], "empty.jsonl"),
    ("eval-binary-jsonl", ["eval", "-t", "gsm8k", "--data", "{d}/binary.jsonl", "-o", "{d}/out"], "not UTF-8"),
    ("eval-binary-json", ["eval", "-t", "bbh/navigate", "--data", "{d}/binary.json", "-o", "{d}/out"], "not UTF-8"),
    ("eval-binary-csv", ["eval", "-t", "mmlu", "--data", "{d}/binary.csv", "-o", "{d}/out"], "not UTF-8"),
    ("eval-empty-json", ["eval", "-t", "bbh/navigate", "--data", "{d}/empty.json", "-o", "{d}/out"], "not valid JSON"),
    ("eval-wrong-type-row", ["eval", "-t", "gsm8k", "--data", "{d}/list_row.jsonl", "-o", "{d}/out"], "line 1"),
    ("score-binary", ["score", "-t", "gsm8k", "-i", "{d}/binary.jsonl", "-o", "{d}/s.jsonl"], "not UTF-8"),
    ("score-empty", ["score", "-t", "gsm8k", "-i", "{d}/empty.jsonl", "-o", "{d}/s.jsonl"], "no predictions"),
    ("score-wrong-type", ["score", "-t", "gsm8k", "-i", "{d}/list_pred.jsonl", "-o", "{d}/s.jsonl"], "'prediction'"),
    ("score-missing-field", ["score", "-t", "gsm8k", "-i", "{d}/no_gold.jsonl", "-o", "{d}/s.jsonl"], "'gold'"),
    # custom tasks: the YAML file and the data it names
    ("custom-bad-yaml", ["eval", "-t", "{d}/bad.yaml", "-o", "{d}/out"], "not valid YAML"),
    ("custom-binary-yaml", ["eval", "-t", "{d}/binary.yaml", "-o", "{d}/out"], "not UTF-8"),
    ("custom-unknown-key", ["eval", "-t", "{d}/task_unknown.yaml", "-o", "{d}/out"], "unknown key 'bogus'"),
    ("custom-missing-field", ["eval", "-t", "{d}/task_missing.yaml", "-o", "{d}/out"], "answer_type"),
    ("custom-wrong-type", ["eval", "-t", "{d}/task_type.yaml", "-o", "{d}/out"], "answer_type"),
    ("custom-binary-data", ["eval", "-t", "{d}/task_binary.yaml", "-o", "{d}/out"], "not UTF-8"),
    ("custom-binary-csv", ["eval", "-t", "{d}/task_binary_csv.yaml", "-o", "{d}/out"], "not UTF-8"),
    ("custom-empty-data", ["eval", "-t", "{d}/task_empty.yaml", "-o", "{d}/out"], "no questions"),
    # output paths: existing files, paths under a file, folders nothing can be written in
    ("eval-output-is-file", ["eval", "-t", "synthetic/arithmetic", "-o", "{d}/file.txt"], "file.txt"),
    ("eval-output-under-file", ["eval", "-t", "synthetic/arithmetic", "-o", "{d}/file.txt/sub"], "file.txt"),
    ("eval-output-unwritable", ["eval", "-t", "synthetic/arithmetic", "-o", "{unwritable}/out"], "{unwritable}"),
    ("score-output-is-dir", ["score", "-t", "gsm8k", "-i", "{d}/preds.jsonl", "-o", "{d}"], "is a directory"),
    ("score-output-unwritable", ["score", "-t", "gsm8k", "-i", "{d}/preds.jsonl", "-o", "{unwritable}/s.jsonl"],
     "{unwritable}"),
    ("report-output-is-dir", ["report", "{d}/run", "-o", "{d}"], "is a directory"),
    ("report-output-unwritable", ["report", "{d}/run", "-o", "{unwritable}/r.html"], "{unwritable}"),
    ("run-output-is-file", ["run", str(QUICKSTART), "output={d}/file.txt"], "file.txt"),
    ("run-output-unwritable", ["run", str(QUICKSTART), "output={unwritable}/run"], "{unwritable}"),
    ("cpl-output-is-file", ["cpl", str(CPL), "output={d}/file.txt"], "file.txt"),
    ("search-output-is-file", ["search", str(CPL), "output={d}/file.txt"], "file.txt"),
    ("codeplan-output-is-file", ["codeplan", str(CODEPLAN), "output={d}/file.txt"], "file.txt"),
    ("annotate-output-is-dir", ["annotate", "-i", "{d}/preds.jsonl", "-o", "{d}"], "is a directory"),
    # a bad corpus is said before the annotator loads (the missing model would be the error otherwise)
    ("annotate-bad-input-before-model", ["annotate", "-i", "{d}/list_row.jsonl", "-m", "{d}/nope.gguf", "-o",
                                         "{d}/ann.jsonl"], "list_row.jsonl line 1"),
    # models: missing paths, not checkpoints, offline hub ids; data from an offline hub
    ("model-missing-gguf", ["eval", "-t", "synthetic/arithmetic", "-m", "{d}/nope.gguf", "-o", "{d}/out"], "nope.gguf"),
    ("model-missing-dir", ["eval", "-t", "synthetic/arithmetic", "-m", "{d}/nope/", "-o", "{d}/out"], "nope"),
    ("model-not-checkpoint", ["eval", "-t", "synthetic/arithmetic", "-m", "{d}", "-o", "{d}/out"], "config.json"),
    ("model-offline-hub", ["eval", "-t", "synthetic/arithmetic", "-m", "no-such-org/no-such-model", "-o", "{d}/out"],
     "no-such-org/no-such-model"),
    ("data-offline-hub", ["eval", "-t", "gsm8k", "-o", "{d}/out"], "openai/gsm8k"),
    # compare and report on folders that are not run directories
    ("compare-empty-dir", ["compare", "{d}/notrun"], "metrics.jsonl"),
    ("compare-missing-dir", ["compare", "{d}/absent"], "absent"),
    ("compare-file", ["compare", "{d}/file.txt"], "file.txt: not a directory"),
    ("compare-binary-metrics", ["compare", "{d}/binary_run"], "not UTF-8"),
    ("compare-binary-config", ["compare", "{d}/binary_config_run"], "not UTF-8"),
    ("report-empty-dir", ["report", "{d}/notrun"], "metrics.jsonl"),
    ("report-binary-samples", ["report", "{d}/binary_samples_run"], "not UTF-8"),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict[str, str]:
    """The files and folders the cases point at."""
    d = tmp_path_factory.mktemp("bad_inputs")
    text = {
        "bad.yaml": "method: lepa\ntask: [unclosed\n",
        "list.yaml": "- method\n- lepa\n",
        "empty.yaml": "",
        "no_task.yaml": "method: lepa\noutput: x\n",
        "empty.jsonl": "",
        "empty.json": "",
        "list_row.jsonl": "[1, 2]\n",
        "list_pred.jsonl": '{"prediction": [1], "gold": "1"}\n',
        "no_gold.jsonl": '{"prediction": "1"}\n',
        "preds.jsonl": '{"prediction": "1", "gold": "1"}\n',
        "file.txt": "an ordinary file\n",
        "task_unknown.yaml": "name: t\ndata: rows.jsonl\nanswer_type: number\nbogus: 1\n",
        "task_missing.yaml": "name: t\ndata: rows.jsonl\n",
        "task_type.yaml": "name: t\ndata: rows.jsonl\nanswer_type: [number]\n",
        "task_binary.yaml": "name: t\ndata: binary.jsonl\nanswer_type: number\n",
        "task_binary_csv.yaml": "name: t\ndata: binary.csv\nanswer_type: number\n",
        "task_empty.yaml": "name: t\ndata: empty.jsonl\nanswer_type: number\n",
    }
    for name, content in text.items():
        (d / name).write_text(content, encoding="utf-8")
    for name in ("binary.yaml", "binary.jsonl", "binary.json", "binary.csv"):
        (d / name).write_bytes(BINARY)
    (d / "notrun").mkdir()
    run = d / "run"  # a real (if tiny) run directory, for the report output cases
    run.mkdir()
    (run / "config.yaml").write_text("method: lepa\ntask: {name: gsm8k}\noutput: run\n", encoding="utf-8")
    (run / "metrics.jsonl").write_text('{"iteration": 0, "accuracy": 0.5, "ci95": [0.1, 0.9]}\n', encoding="utf-8")
    for name, binary_file in (("binary_run", "metrics.jsonl"), ("binary_config_run", "config.yaml"),
                              ("binary_samples_run", "iter_001/samples.jsonl")):
        other = d / name
        (other / "iter_001").mkdir(parents=True)
        for f in ("config.yaml", "metrics.jsonl"):
            (other / f).write_bytes((run / f).read_bytes())
        (other / binary_file).write_bytes(BINARY)
    if os.geteuid() == 0:  # root writes through permission bits: use a folder of a filesystem that refuses files
        unwritable = next((p for p in ("/sys", "/proc") if _refuses_files(p)), None)
        if unwritable is None:
            pytest.skip("no folder refuses files to root here")
    else:
        (d / "readonly").mkdir()
        (d / "readonly").chmod(0o555)
        unwritable = str(d / "readonly")
    return {"d": str(d), "unwritable": unwritable}


def _refuses_files(folder: str) -> bool:
    import tempfile

    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return True
    return False


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "forethought.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(args, names, scratch, tmp_path):
    args = [a.format(**scratch) for a in args]
    names = names.format(**scratch)
    before = sorted(p.name for p in Path(scratch["d"]).iterdir())
    proc = run_cli(args, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert names in lines[0], proc.stderr
    assert sorted(p.name for p in Path(scratch["d"]).iterdir()) == before  # a failed command leaves nothing behind
