"""Every rule of SEMANTICS.md that the port must test has a test, and docs/testing.md says where.

A test covers a rule when its name (``test_d8_...``, ``test_t21_...``, ``test_v1_...``)
or its docstring names the rule (``D8``, ``T21``, ``V1``).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = [f"D{i}" for i in range(1, 19)] + [f"T{i:02d}" for i in range(1, 28)] + ["V1", "V2"]


def covering_tests() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if not node.name.startswith("test"):
                continue
            text = f"{node.name} {ast.get_docstring(node) or ''}"
            for rule in RULES:
                by_doc = re.search(rf"(?<![A-Za-z0-9.]){rule}(?![0-9])", text)
                by_name = re.search(rf"_{rule.lower()}_", f"_{node.name}_")
                if by_doc or by_name:
                    found[rule].add(path.name)
    return found


def test_every_rule_has_a_test() -> None:
    found = covering_tests()
    missing = [rule for rule in RULES if not found.get(rule)]
    assert missing == []


def test_the_testing_guide_maps_every_rule_to_its_test_files() -> None:
    guide = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    found = covering_tests()
    for rule in RULES:
        row = re.search(rf"^\| {rule} \| (.*) \|$", guide, flags=re.MULTILINE)
        assert row, f"docs/testing.md lacks a row for {rule}"
        listed = set(re.findall(r"`tests/(test_\w+\.py)`", row.group(1)))
        assert listed, rule
        assert listed <= found[rule], (rule, listed - found[rule])
