"""The distribution: stage folders install inside our namespace, the console script works."""

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mobilesam_srw

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "mobilesam_srw", "data_prep", "eval", "viz"]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> list[str]:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)]
    if importlib.util.find_spec("setuptools") is not None:
        command.insert(4, "--no-build-isolation")
    subprocess.run(command, check=True, capture_output=True, text=True)
    (wheel,) = (work / "dist").glob("mobilesam_srw-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_has_no_top_level_stage_modules(wheel_files):
    top_level = {name.split("/")[0] for name in wheel_files}
    assert not top_level & {"eval", "viz", "data_prep", "scripts", "tests"}
    assert "mobilesam_srw" in top_level


def test_wheel_holds_every_source_module(wheel_files):
    folders = {"mobilesam_srw": "mobilesam_srw", "data_prep": "mobilesam_srw/data_prep",
               "eval": "mobilesam_srw/eval", "viz": "mobilesam_srw/viz"}
    for folder, installed in folders.items():
        for source in (REPO / folder).rglob("*.py"):
            relative = source.relative_to(REPO / folder).as_posix()
            assert f"{installed}/{relative}" in wheel_files, f"{folder}/{relative} is missing from the wheel"


def test_wheel_maps_stages_into_namespace(wheel_files):
    for stage in ("data_prep", "eval", "viz"):
        assert f"mobilesam_srw/{stage}/__init__.py" in wheel_files
    assert "mobilesam_srw/srw.py" in wheel_files
    entry_points = [name for name in wheel_files if name.endswith("entry_points.txt")]
    assert entry_points


@pytest.mark.slow
def test_installed_stages_import_from_namespace_only(tmp_path):
    code = (
        "import importlib.util, mobilesam_srw.data_prep, mobilesam_srw.eval, mobilesam_srw.viz;"
        "print([importlib.util.find_spec(m) is None for m in ('data_prep', 'viz')])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[True, True]"


@pytest.mark.slow
def test_cli_version_and_help():
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"srw-sam {mobilesam_srw.__version__}"
    help_text = run_cli("--help")
    assert help_text.returncode == 0 and "usage: srw-sam" in help_text.stdout and "--version" in help_text.stdout


@pytest.mark.slow
def test_console_script_is_installed():
    script = Path(sys.executable).parent / "srw-sam"
    assert script.exists(), "srw-sam is not installed next to this interpreter"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("srw-sam ")


@pytest.mark.slow
def test_unknown_command_exits_2():
    result = run_cli("frobnicate")
    assert result.returncode == 2


def test_a_stage_from_another_checkout_is_refused(tmp_path):
    from mobilesam_srw.checkout import MixedCheckoutError, check_same_checkout

    check_same_checkout(str(REPO / "eval" / "__init__.py"), "mobilesam_srw.eval")  # this checkout: fine
    with pytest.raises(MixedCheckoutError, match="two checkouts are mixed") as error:
        check_same_checkout(str(tmp_path / "eval" / "__init__.py"), "mobilesam_srw.eval")
    assert str(tmp_path / "eval") in str(error.value) and str(REPO / "mobilesam_srw") in str(error.value)


@pytest.mark.slow
def test_the_cli_refuses_a_second_checkout_run_with_this_environment(tmp_path):
    """A copy of the core run with this environment from its own root (python -m puts it first on the path)."""
    shutil.copytree(REPO / "mobilesam_srw", tmp_path / "mobilesam_srw", ignore=shutil.ignore_patterns("__pycache__"))
    result = run_cli("eval", "--help", cwd=tmp_path)
    assert result.returncode == 2 and "two checkouts are mixed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_each_option_says_its_default_once():
    """A help line that already says its default does not get argparse's "(default X)" a second time."""
    from mobilesam_srw.cli import PROGRAMS, build_parser, program

    for name in PROGRAMS:
        spec = program(name)
        if spec.needs is not None and importlib.util.find_spec(spec.needs[0]) is None:
            continue
        for subcommand in spec.subcommands:
            parser = build_parser(spec, [subcommand])
            chosen = next(action for action in parser._actions if action.dest == "command").choices[subcommand]
            for action in chosen._actions:
                assert (action.help or "").count("(default") <= 1, f"{name} {subcommand} {action.option_strings}"
    grid = build_parser(program("srw-sam"), ["eval"])._actions[-1].choices["eval"]._option_string_actions["--grid"]
    assert grid.help.endswith("e.g. --grid 5 16 32 (default 32)")
