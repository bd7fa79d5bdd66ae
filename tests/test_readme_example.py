"""The README's usage example is examples/quickstart.py, and it runs as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_readme_example_is_the_quickstart_file() -> None:
    example = (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")
    assert example in _blocks("python")


def test_quickstart_runs_and_prints_what_the_readme_says() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    printed = [block for block in _blocks("text") if "alloy Hello" in block]
    assert printed, "README shows the example's output"
    assert result.stdout == printed[0]


def test_quickstart_is_short() -> None:
    example = (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")
    body = [line for line in example.splitlines() if line.strip()]
    assert len(body) <= 24
