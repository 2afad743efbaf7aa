"""Installable like a library: the wheel ships the recipes, `forethought recipes` lists and copies them, a built-in
recipe resolves by name, `--version` prints the version, and the build raises no deprecation warnings.

The wheel is built from a copy of the sources (nothing is written into the repository) without build isolation and
installed with --no-deps into a fresh virtual environment outside the repository whose only other path is this
environment's site-packages (so torch and friends are not downloaded); no network is used.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forethought import __version__, catalog
from forethought.cli import app, main
from forethought.errors import UserError

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["forethought", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


# ------------------------------------------------------------------------------------------------ in the repository
def test_one_copy_of_the_recipes_inside_the_package():
    link = REPO / "recipes"
    assert link.is_symlink() and link.resolve() == catalog.RECIPES_DIR.resolve()
    assert catalog.RECIPES_DIR.parent == Path(catalog.__file__).resolve().parent  # inside the package
    names = sorted(p.stem for p in link.glob("*.yaml"))
    assert names == catalog.recipe_names() and "quickstart" in names


def test_every_recipe_has_a_one_line_purpose_and_a_command():
    for r in catalog.recipes():
        assert r.purpose and not r.purpose.startswith("forethought"), r.name
        assert f"forethought {r.command} recipes/{r.name}.yaml" in r.path.read_text(), r.name
    by_name = {r.name: r for r in catalog.recipes()}
    assert (by_name["quickstart"].command, by_name["cpl_cpu"].command, by_name["codeplan"].command) == (
        "run", "cpl", "codeplan")
    assert by_name["quickstart"].purpose.startswith("Quickstart (CPU")


def test_a_new_recipe_file_is_picked_up(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "RECIPES_DIR", tmp_path)
    (tmp_path / "mine.yaml").write_text("# My recipe (Smith et al. 2024): does\n# a thing. More words.\n"
                                        "#   forethought cpl recipes/mine.yaml\nmodel: x\n")
    assert catalog.recipe_names() == ["mine"]
    assert catalog.resolve_recipe("mine") == tmp_path / "mine.yaml"
    assert catalog.describe(tmp_path / "mine.yaml") == catalog.Recipe("mine", tmp_path / "mine.yaml",
                                                                       "My recipe (Smith et al. 2024): does a thing.", "cpl")


def test_resolve_prefers_an_existing_file_then_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    builtin = catalog.RECIPES_DIR / "quickstart.yaml"
    for spec in ("quickstart", "quickstart.yaml", "recipes/quickstart.yaml"):
        assert catalog.resolve_recipe(spec) == builtin
    (tmp_path / "quickstart").write_text("method: lepa\n")  # a file of that name wins over the built-in
    assert catalog.resolve_recipe("quickstart") == Path("quickstart")
    with pytest.raises(UserError, match="built-in recipes: .*cpl_cpu, .*quickstart, "):
        catalog.resolve_recipe("quikstart")
    with pytest.raises(UserError, match="recipe file not found: elsewhere/quickstart.yaml"):
        catalog.resolve_recipe("elsewhere/quickstart.yaml")  # another folder's path is not a name
    (tmp_path / "adir").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        catalog.resolve_recipe("adir")


@pytest.mark.parametrize("command", ["run", "cpl", "search", "codeplan"])
def test_unknown_recipe_name_is_one_line_exit_2(command, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, command, "no_such_recipe")
    assert code == 2 and "Traceback" not in err
    assert "no built-in recipe named 'no_such_recipe'" in err and "quickstart" in err and "cpl_cpu" in err


@pytest.mark.parametrize("command,name", [("run", "quickstart"), ("cpl", "cpl_cpu"), ("search", "cpl_cpu"),
                                          ("codeplan", "codeplan_cpu")])
def test_builtin_names_resolve_in_every_pipeline_command(command, name, monkeypatch, capsys, tmp_path):
    """An unknown key fails after the recipe was found and read: the error names the built-in file."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, command, name, "bogus_key=1", f"output={tmp_path}/o")
    assert code == 2 and "unknown key 'bogus_key'" in err
    assert f"recipes/{name}.yaml" in err
    assert not (tmp_path / "o").exists()


def test_recipes_list_and_copy(tmp_path, monkeypatch, capsys):
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0, result.output
    for r in catalog.recipes():
        assert f"forethought {r.command} {r.name}" in result.output and r.purpose in result.output

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["recipes", "copy", "cpl_cpu"])  # DEST defaults to here
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cpl_cpu.yaml").read_bytes() == (catalog.RECIPES_DIR / "cpl_cpu.yaml").read_bytes()
    (tmp_path / "edit").mkdir()
    assert runner.invoke(app, ["recipes", "copy", "quickstart", "edit/mine.yaml"]).exit_code == 0
    assert (tmp_path / "edit" / "mine.yaml").read_bytes() == (catalog.RECIPES_DIR / "quickstart.yaml").read_bytes()

    (tmp_path / "edit" / "mine.yaml").write_text("edited\n")  # an edited copy is never overwritten silently
    code, _, err = run_main(monkeypatch, capsys, "recipes", "copy", "quickstart", "edit/mine.yaml")
    assert code == 2 and "already exists" in err and "--force" in err
    assert (tmp_path / "edit" / "mine.yaml").read_text() == "edited\n"
    assert runner.invoke(app, ["recipes", "copy", "quickstart", "edit/mine.yaml", "--force"]).exit_code == 0
    assert (tmp_path / "edit" / "mine.yaml").read_bytes() == (catalog.RECIPES_DIR / "quickstart.yaml").read_bytes()

    code, _, err = run_main(monkeypatch, capsys, "recipes", "copy", "nope", "x.yaml")
    assert code == 2 and "built-in recipes:" in err and not (tmp_path / "x.yaml").exists()
    code, _, err = run_main(monkeypatch, capsys, "recipes", "copy", "quickstart", "missing/x.yaml")
    assert code == 2 and "folder missing does not exist" in err


def test_version(monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"forethought {__version__}"
    text = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'attr = "forethought.__version__"' in text  # one place


# ------------------------------------------------------------------------------------------------ the wheel
def _sources(dest: Path) -> Path:
    """The files a wheel is built from, copied (the recipes folder as real files, not the top-level link)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _build(src: Path, out: Path) -> tuple[Path, str]:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return next(out.glob("forethought-*.whl")), log


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, build log, fresh venv's bin folder, a working folder outside the repository)."""
    root = tmp_path_factory.mktemp("pkg")
    wheel, log = _build(_sources(root / "src"), root / "dist")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # This environment's packages (torch, typer...) on the path after the fresh site-packages; its .pth files (the
    # editable install of this repository) are not processed, so `forethought` comes from the wheel.
    (Path(purelib) / "dev_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = root / "work"
    work.mkdir()
    return wheel, log, venv / "bin", work, Path(purelib)


def _cli(bin_dir: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(cwd), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(bin_dir / "forethought"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_wheel_ships_every_recipe_and_builds_without_warnings(installed):
    wheel, log, *_ = installed
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(Path(n).stem for n in names if n.startswith("forethought/recipes/") and n.endswith(".yaml"))
    assert shipped == catalog.recipe_names()  # a file added to the folder is shipped without listing it anywhere
    studies = sorted(Path(n).stem for n in names if n.startswith("forethought/studies/") and n.endswith(".yaml"))
    assert studies == sorted(p.stem for p in (REPO / "src" / "forethought" / "studies").glob("*.yaml"))
    assert "quickstart" in studies
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and f"Version: {__version__}" in metadata
    warnings = re.findall(r"\b[A-Z]\w*Warning\b.*", log)
    assert not warnings, warnings


def test_installed_wheel_lists_copies_and_resolves_recipes_outside_the_repository(installed):
    _, _, bin_dir, work, purelib = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import forethought, forethought.catalog as c; "
                            "import json; print(json.dumps([forethought.__file__, str(c.resolve_recipe('quickstart'))]))"],
                           cwd=work, capture_output=True, text=True, check=True)
    package, quickstart = map(Path, json.loads(where.stdout))
    assert package.is_relative_to(purelib) and quickstart == purelib / "forethought" / "recipes" / "quickstart.yaml"

    proc = _cli(bin_dir, work, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"forethought {__version__}"

    proc = _cli(bin_dir, work, "recipes")
    assert proc.returncode == 0, proc.stderr
    assert str(purelib / "forethought" / "recipes") in proc.stdout.replace("\n", "")
    for r in catalog.recipes():
        assert f"forethought {r.command} {r.name}" in proc.stdout and r.purpose in proc.stdout

    proc = _cli(bin_dir, work, "recipes", "copy", "quickstart", "mine.yaml")
    assert proc.returncode == 0, proc.stderr
    assert (work / "mine.yaml").read_bytes() == (catalog.RECIPES_DIR / "quickstart.yaml").read_bytes()

    # `forethought run quickstart` finds the installed recipe by name (and by the path its header shows): the
    # recipe is read and validated, then the bad override stops it before any model is loaded
    for spec in ("quickstart", "recipes/quickstart.yaml"):
        proc = _cli(bin_dir, work, "run", spec, "bogus_key=1")
        assert proc.returncode == 2 and "unknown key 'bogus_key'" in proc.stderr, proc.stderr
        assert str(purelib / "forethought" / "recipes" / "quickstart.yaml") in proc.stderr.replace("\n", "")
    proc = _cli(bin_dir, work, "run", "mine.yaml", "bogus_key=1")  # the edited copy, by path
    assert proc.returncode == 2 and "mine.yaml: unknown key 'bogus_key'" in proc.stderr.replace("\n", "")
    proc = _cli(bin_dir, work, "run", "nope")
    assert proc.returncode == 2 and "built-in recipes: codeplan" in proc.stderr and "Traceback" not in proc.stderr
