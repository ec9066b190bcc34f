"""House rule: no function in kit/ takes more than six positional parameters (the rest are keyword-only)."""

from __future__ import annotations

import ast
from pathlib import Path

MAX_POSITIONAL = 6
KIT = Path(__file__).resolve().parents[1] / "kit"


def _positional(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
    return names[1:] if names and names[0] in ("self", "cls") else names


def long_signatures(root: Path = KIT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and len(_positional(node)) > MAX_POSITIONAL:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}({len(_positional(node))} positional)")
    return found


def test_no_function_takes_more_than_six_positional_parameters():
    assert long_signatures() == [], "make the parameters past the first few keyword-only (add `*,`) and update the callers"


def test_the_check_sees_a_long_signature(tmp_path):
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "m.py").write_text("def f(a, b, c, d, e, f, g):\n    pass\n\ndef ok(self, a, b, c, d, e, f, *, g):\n    pass\n")
    assert long_signatures(tmp_path / "kit") == ["kit/m.py:1 f(7 positional)"]
