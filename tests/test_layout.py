"""The import rule: stages (data_prep, eval, viz) import the core; the core never imports a stage,
except the CLI's wiring (``cli.py`` and ``commands/``)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).parents[1] / "mobilesam_srw"
STAGES = ("mobilesam_srw.data_prep", "mobilesam_srw.eval", "mobilesam_srw.viz")
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


def test_the_core_imports_no_stage():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        relative = path.relative_to(CORE)
        if relative.parts[0] in WIRING:
            continue
        for name in imported_modules(path):
            if name.startswith(STAGES):
                offenders.append(f"{relative}: {name}")
    assert not offenders, "the core imports a stage:\n" + "\n".join(offenders)


def test_the_rule_sees_a_violation(tmp_path):
    offender = tmp_path / "bad.py"
    offender.write_text("def f():\n    from mobilesam_srw.eval.sam.report import write_report\n")
    assert "mobilesam_srw.eval.sam.report" in imported_modules(offender)
