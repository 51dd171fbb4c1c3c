"""Rules of the suite itself: a test that starts processes (the CLI in a subprocess, torchrun ranks, a reference
script) or runs a demo carries the ``slow`` marker, so ``pytest -m "not slow"`` stays a few minutes; no test
names a fixed port."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
STARTS_PROCESSES = re.compile(r"\b(run_cli|subprocess\.(run|Popen|check_call|check_output)|run_ranks|run_demo|"
                              r"run_clip_demo|run_litemedsam_reference|torch\.distributed\.run)\b")


def _marked_slow(node: ast.FunctionDef) -> bool:
    return any("slow" in ast.unparse(decorator) for decorator in node.decorator_list)


def _tests() -> list[tuple[Path, ast.FunctionDef, str]]:
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        module_slow = any(isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n) and "slow" in ast.unparse(n)
                          for n in tree.body)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and not module_slow:
                found.append((path, node, ast.get_source_segment(source, node) or ""))
    return found


def test_tests_that_start_processes_are_marked_slow():
    unmarked = [f"{path.name}::{node.name}" for path, node, body in _tests()
                if STARTS_PROCESSES.search(body) and not _marked_slow(node)]
    assert not unmarked, "start processes but are not @pytest.mark.slow:\n" + "\n".join(unmarked)


def test_no_test_names_a_fixed_port():
    fixed = [path.name for path in sorted(TESTS.glob("*.py"))
             if re.search(r"master[-_]port\W+\"?\d{4,5}", path.read_text())]
    assert not fixed, f"fixed ports in {fixed}: use conftest.free_port()"
