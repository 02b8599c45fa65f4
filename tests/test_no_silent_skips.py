"""No test may ``importorskip`` the project's own modules.

``pytest.importorskip("ansm.cli")`` turns an import error in our own code into a *skip*: the suite stays green
while a whole command is broken. Third-party optional dependencies (``onnxruntime``) may be skipped; ``ansm``
must simply be imported. The scan reads every test file's syntax tree, so comments and strings that merely
mention the call do not count, and a non-literal argument (which could name an ``ansm`` module) is refused too.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def silent_skips(source: str) -> list[tuple[int, str]]:
    """(line, argument) of every ``importorskip`` call whose module is ``ansm``/``ansm.*`` or not a literal."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name != "importorskip":
            continue
        arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "modname"), None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            if arg.value == "ansm" or arg.value.startswith("ansm."):
                found.append((node.lineno, arg.value))
        else:
            found.append((node.lineno, ast.unparse(arg) if arg is not None else "<no argument>"))
    return found


def test_the_scan_flags_what_it_should() -> None:
    bad = 'import pytest\ncli = pytest.importorskip("ansm.cli")\nm = importorskip(name)\nx = pytest.importorskip(modname="ansm")\n'
    assert silent_skips(bad) == [(2, "ansm.cli"), (3, "name"), (4, "ansm")]
    ok = 'import pytest\nort = pytest.importorskip("onnxruntime")\n# pytest.importorskip("ansm.cli")\ns = "importorskip(\'ansm\')"\n'
    assert silent_skips(ok) == []


def test_no_test_importorskips_an_ansm_module() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 10  # the scan found the suite
    offenders = [f"{path.relative_to(TESTS)}:{line}: importorskip({arg})"
                 for path in files for line, arg in silent_skips(path.read_text(encoding="utf-8"))]
    assert not offenders, "import the project's modules plainly (an import error must fail):\n" + "\n".join(offenders)
