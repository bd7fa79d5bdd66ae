"""Every code block of the README is checked: executed, type-checked or compared.

* ``python`` blocks pass ``mypy --strict`` (each block is a module of its own); a block
  that is a file of ``examples/`` is that file, and the examples that talk to the
  OpenAI Realtime API run against the local server, printing what the README's next
  ``text`` block shows;
* ``sh`` blocks name only commands that exist: ``make`` targets, ``charivo-fsm``
  subcommands (their ``--help`` runs), extras of the distribution, example files;
* ``mermaid`` blocks are the diagrams generated from the machine declarations;
* relative links point at files of the repository.

(``tests/test_readme_example.py`` runs the FakeTransport example.)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import anyio
import pytest

from charivo_fsm import diagrams
from charivo_fsm.cli import main as cli_main
from charivo_fsm.machines import MACHINES
from charivo_fsm.testing import LocalRealtimeServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LANGUAGES = {"python", "sh", "text", "mermaid"}


def blocks() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def examples_by_text() -> dict[str, Path]:
    return {path.read_text(encoding="utf-8"): path for path in (ROOT / "examples").glob("*.py")}


def test_every_block_says_its_language() -> None:
    languages = [language for language, _ in blocks()]
    assert languages, "the README has code blocks"
    assert set(languages) <= LANGUAGES, languages


def test_python_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for index, (language, code) in enumerate(blocks()):
        if language == "python":
            path = tmp_path / f"readme_block_{index}.py"
            path.write_text(code, encoding="utf-8")
            files.append(str(path))
    assert files
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _shown_examples() -> list[tuple[Path, str | None]]:
    """(example file, the first text block after it, before the next Python block, or
    None) for each example the README shows."""
    known = examples_by_text()
    found = []
    items = blocks()
    for index, (language, code) in enumerate(items):
        if language == "python" and code in known:
            output = None
            for later_language, later_code in items[index + 1 :]:
                if later_language == "python":
                    break
                if later_language == "text":
                    output = later_code
                    break
            found.append((known[code], output))
    return found


def test_the_readme_shows_the_examples() -> None:
    shown = {path.name for path, _ in _shown_examples()}
    assert {"first_session.py", "weather_tool.py", "quickstart.py"} <= shown


async def _run_against_local_server(example: Path) -> subprocess.CompletedProcess[bytes]:
    async with LocalRealtimeServer(api_key="sk-local-test-key") as server:
        env = dict(
            os.environ,
            CHARIVO_REALTIME_URL=server.url,
            OPENAI_API_KEY="sk-local-test-key",
            PYTHONPATH=str(ROOT),
        )
        with anyio.fail_after(60):
            return await anyio.run_process(
                [sys.executable, str(example)], env=env, cwd=ROOT, check=False
            )


@pytest.mark.parametrize("example", ["first_session.py", "weather_tool.py"])
def test_realtime_examples_run_against_the_local_server_as_shown(example: str) -> None:
    shown = dict(_shown_examples())
    path = ROOT / "examples" / example
    assert path in shown, f"the README shows {example}"
    result = anyio.run(_run_against_local_server, path)
    assert result.returncode == 0, result.stderr.decode()
    expected = shown[path]
    assert expected is not None, f"the README shows what {example} prints"
    assert result.stdout.decode() == expected


def _commands(code: str) -> list[list[str]]:
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words.pop(0)  # VAR=value prefixes
        commands.append(words)
    return commands


def test_shell_blocks_name_commands_that_exist(capsys: pytest.CaptureFixture[str]) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = set(project["optional-dependencies"])
    seen = set()
    for language, code in blocks():
        if language != "sh":
            continue
        for words in _commands(code):
            program = words[0]
            seen.add(program)
            if program == "make":
                assert set(words[1:]) <= targets, words
            elif program == "charivo-fsm":
                with pytest.raises(SystemExit) as exit_info:
                    cli_main([words[1], "--help"])
                assert exit_info.value.code == 0, words
            elif program == "pip":
                assert words[1] == "install", words
                for word in words[2:]:
                    named = re.search(r"\[([\w,-]+)\]", word)
                    if named:
                        assert set(named.group(1).split(",")) <= extras, word
            elif program in {"python", "python3"}:
                if words[1] == "-m":
                    assert words[2] in {"build", "charivo_fsm", "venv"}, words
                else:
                    assert (ROOT / words[1]).is_file(), words
            else:
                pytest.fail(f"unexpected command in the README: {' '.join(words)}")
    capsys.readouterr()
    assert {"make", "pip", "charivo-fsm"} <= seen


def test_mermaid_blocks_are_the_generated_diagrams() -> None:
    generated = {diagrams.mermaid(spec): name for name, spec in MACHINES.items()}
    shown = [code for language, code in blocks() if language == "mermaid"]
    assert shown
    names = [generated.get(code) for code in shown]
    assert None not in names, "a Mermaid block differs from the generated diagram"
    assert {"session", "connection"} <= set(names)


def test_relative_links_point_at_files_of_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (ROOT / target.split("#", 1)[0]).exists(), target
