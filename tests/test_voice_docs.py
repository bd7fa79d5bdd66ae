"""docs/voice.md: its code compiles, its example runs against the local server and
prints what the page says, and the README's Voice section points at it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOICE = ROOT / "docs" / "voice.md"


def _blocks(language: str) -> list[str]:
    text = VOICE.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_every_python_block_compiles() -> None:
    blocks = _blocks("python")
    assert len(blocks) >= 3
    for number, block in enumerate(blocks, 1):
        compile(block, f"docs/voice.md, python block {number}", "exec")


def test_the_example_runs_and_prints_what_the_page_says(tmp_path: Path) -> None:
    example = _blocks("python")[0]
    assert "anyio.run(main)" in example
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == _blocks("text")[0]
    # The WAV file it writes is the spoken answer: PCM16 mono 24 kHz, as printed.
    with wave.open(str(tmp_path / "hello.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24_000)
        seconds = wav.getnframes() / wav.getframerate()
    assert f"hello.wav: {seconds:.2f} s" in result.stdout
    assert seconds > 0


def test_the_other_blocks_run() -> None:
    """The push-to-talk config and the error handler are real code."""
    from charivo_fsm import CharivoProviderError, RealtimeSessionConfig
    from charivo_fsm.payloads import ErrorPayload

    namespace: dict[str, object] = {}
    for block in _blocks("python")[1:]:
        exec(compile(block, "docs/voice.md", "exec"), namespace)
    config = RealtimeSessionConfig(**namespace["push_to_talk"])  # type: ignore[arg-type]
    assert config.turn_detection is not None and config.turn_detection.mode == "manual"
    error = CharivoProviderError("too short", provider_code="input_audio_buffer_commit_empty")
    namespace["on_error"](ErrorPayload(error))  # type: ignore[operator]


def test_the_readme_has_a_voice_section_that_links_here() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Voice\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/voice.md)" in section
    assert len(section.split()) < 200  # short: the details are in docs/voice.md
