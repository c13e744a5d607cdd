"""No function of the product is longer than a screen: 60 lines from its `def` to
its last line, docstring included. The benchmarks (`streams/bench/`) are scripts
and are left out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 60
EXEMPT = ROOT / "streams" / "bench"


def long_functions(source: str, where: str, limit: int = LIMIT) -> list[str]:
    """`where:line name (n lines)` for every function or method of `source` longer than `limit`."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_outside_the_benchmarks_is_longer_than_60_lines():
    found = []
    for path in sorted((ROOT / "streams").rglob("*.py")):
        if not path.is_relative_to(EXEMPT):
            found += long_functions(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def test_the_count_sees_a_long_method_and_passes_a_short_one():
    body = "\n".join(f"        x = {i}" for i in range(LIMIT - 1))
    source = f"class A:\n    def long(self):\n{body}\n        return x\n\n    def short(self):\n        return 1\n"
    assert long_functions(source, "a.py") == [f"a.py:2 long ({LIMIT + 1} lines)"]
