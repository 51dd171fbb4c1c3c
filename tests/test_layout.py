"""The import rules of the layout.

- Stages (``data_prep``, ``eval``, ``viz``) import the core; the core never imports a stage, except the
  CLI's wiring (``cli.py``, ``commands/``) and the tasks' ``__main__`` (which only call the CLI).
- No task (``sam``, ``cls``, ``clip``) imports another task: not in the core's task packages, not in the
  stages' task folders, not in the CLI's task packages. What two tasks share lives in the core.
- A stage's shared machinery (its modules outside the task folders) imports no task at all, and the core's
  shared modules (``srw.py``, ``engine/``, ...) import no task.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
CORE = REPO / "mobilesam_srw"
TASKS = ("sam", "cls", "clip")
STAGE_FOLDERS = {"data_prep": "mobilesam_srw.data_prep", "eval": "mobilesam_srw.eval", "viz": "mobilesam_srw.viz"}
WIRING = ("cli.py", "commands")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _task_of_module(name: str) -> str | None:
    """The task a dotted module name belongs to (core task package, stage task folder or CLI task package)."""
    parts = name.split(".")
    if parts[0] != "mobilesam_srw" or len(parts) < 2:
        return None
    if parts[1] in TASKS:
        return parts[1]
    if parts[1] in ("data_prep", "eval", "viz", "commands") and len(parts) > 2 and parts[2] in TASKS:
        return parts[2]
    return None


def _sources() -> list[tuple[Path, str]]:
    """Every source file with its installed module name."""
    found = [(path, "mobilesam_srw." + ".".join(path.relative_to(CORE).with_suffix("").parts))
             for path in CORE.rglob("*.py")]
    for folder, package in STAGE_FOLDERS.items():
        found += [(path, package + "." + ".".join(path.relative_to(REPO / folder).with_suffix("").parts))
                  for path in (REPO / folder).rglob("*.py")]
    return [(path, name.removesuffix(".__init__")) for path, name in sorted(found)]


def _task_of_file(module: str) -> str | None:
    task = _task_of_module(module)
    if task is None and module.split(".")[-1] in TASKS and module.count(".") == 2:
        return module.split(".")[-1]  # a stage's task module, e.g. mobilesam_srw.viz.cls
    return task


def test_the_core_imports_no_stage():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        relative = path.relative_to(CORE)
        if relative.parts[0] in WIRING or relative.name == "__main__.py":
            continue
        for name in imported_modules(path):
            if name.startswith(tuple(STAGE_FOLDERS.values())):
                offenders.append(f"{relative}: {name}")
    assert not offenders, "the core imports a stage:\n" + "\n".join(offenders)


def test_no_task_imports_another_and_shared_code_imports_no_task():
    offenders = []
    for path, module in _sources():
        own = _task_of_file(module)
        wiring = module.startswith(("mobilesam_srw.cli", "mobilesam_srw.commands")) and own is None
        if path.name == "__main__.py" or wiring:
            continue  # the programs' tables and entry points name every task
        for name in imported_modules(path):
            task = _task_of_file(name) if name.count(".") == 2 else _task_of_module(name)
            if task is not None and task != own:
                offenders.append(f"{path.relative_to(REPO)} ({own or 'shared'}): {name}")
    assert not offenders, "a task imports another, or shared code imports a task:\n" + "\n".join(offenders)


def test_every_stage_and_the_cli_have_a_place_per_task():
    for folder, tasks in (("data_prep", ("sam", "clip")), ("eval", TASKS), ("viz", TASKS)):
        for task in tasks:
            assert (REPO / folder / task).is_dir() or (REPO / folder / f"{task}.py").is_file(), f"{folder}/{task}"
    for task in TASKS:
        assert (CORE / "commands" / task / "__init__.py").is_file()
        assert (CORE / task / "__main__.py").is_file()
        assert (CORE / task / "train.py").is_file()


@pytest.mark.parametrize("source, expected", [
    ("from mobilesam_srw.eval.report import write_report\n", "mobilesam_srw.eval.report"),
    ("import mobilesam_srw.cls.models\n", "mobilesam_srw.cls.models"),
])
def test_the_rules_see_a_violation(tmp_path, source, expected):
    offender = tmp_path / "bad.py"
    offender.write_text(f"def f():\n    {source}")
    assert expected in imported_modules(offender)
    assert _task_of_module("mobilesam_srw.cls.models") == "cls"
    assert _task_of_module("mobilesam_srw.eval.clip.evaluate") == "clip"
    assert _task_of_file("mobilesam_srw.viz.cls") == "cls"
    assert _task_of_module("mobilesam_srw.metrics") is None
