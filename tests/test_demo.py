"""The scripted demo (``charivo-fsm demo``): it passes, it notices misbehaviour.

The demo does real loopback I/O against the embedded server, so this module
overrides the suite's ``anyio_backend`` fixture with *real* clocks (as
``tests/test_openai_transport.py`` does): a virtual clock would jump ahead
whenever every task waits for the network.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import struct
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from charivo_fsm.core import Core
from charivo_fsm.demo import (
    DEMO_API_KEY,
    LOCAL_TRIGGERS,
    STEPS,
    WAV_NAME,
    Inject,
    demo_session,
    local_reply,
    run_demo,
)
from charivo_fsm.demo.script import GREETING, VOICE_REPLY
from charivo_fsm.testing import LocalRealtimeServer
from charivo_fsm.transports.openai_history import ConversationHistory
from charivo_fsm.transports.openai_protocol import OpenAIRealtimeProtocol

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[ *(\d+\.\d{3})s\] ")
LAST = len(STEPS)


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real clocks for real socket I/O (overrides tests/conftest.py)."""
    return (request.param, {})


def _check_layout(text: str) -> None:
    """Every line is short; every line but wrapped continuations has a rising timestamp.

    A file path is printed whole on a continuation line of its own, whatever its length."""
    last = 0.0
    for line in text.splitlines():
        match = STAMP.match(line)
        if match is None:
            assert line.startswith(" " * 10), line  # a continuation of a wrapped event
            if line.strip().startswith(os.sep) and line.strip().endswith(".wav"):
                continue
            assert len(line) < 100, line
            continue
        assert len(line) < 100, line
        stamp = float(match.group(1))
        assert stamp >= last, line
        last = stamp


def _step_text(text: str, number: int) -> str:
    """The lines of step ``number``."""
    start = text.index(f"---- step {number}/{LAST}:")
    end = text.find(f"---- step {number + 1}/{LAST}:", start)
    return text[start : end if end >= 0 else len(text)]


def _body(line: str) -> str | None:
    """A timeline line without its timestamp (None for a continuation line)."""
    match = STAMP.match(line)
    return None if match is None else line[match.end() :]


def _kinds(text: str, kind: str) -> list[str]:
    """The texts of the lines of one kind (``order``, ``check``, ...), in order."""
    prefix = f"{kind:<9} "
    bodies = [_body(line) for line in text.splitlines()]
    return [body[len(prefix) :] for body in bodies if body and body.startswith(prefix)]


def _wav_path(text: str) -> Path:
    """The WAV file the timeline names (on the ``wrote`` line or the one after it)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if "wav       wrote" in line:
            tail = line.split("wav       wrote", 1)[1].strip()
            return Path(tail or lines[index + 1].strip())
    raise AssertionError("no WAV path in the timeline")


def _check_wav(path: Path, expected_bytes: int) -> float:
    """The file is a PCM16 mono 24 kHz WAV of ``expected_bytes`` bytes of audio."""
    data = path.read_bytes()
    riff, size, form = struct.unpack("<4sI4s", data[:12])
    assert (riff, form) == (b"RIFF", b"WAVE")
    assert size == len(data) - 8
    fmt, fmt_size, tag, channels, rate, byte_rate, align, bits = struct.unpack(
        "<4sIHHIIHH", data[12:36]
    )
    assert (fmt, fmt_size, tag) == (b"fmt ", 16, 1)  # plain PCM
    assert (channels, rate, bits) == (1, 24_000, 16)
    assert (byte_rate, align) == (48_000, 2)
    chunk, length = struct.unpack("<4sI", data[36:44])
    assert chunk == b"data"
    assert length == expected_bytes == len(data) - 44
    with wave.open(str(path), "rb") as wav:
        assert wav.getnframes() * 2 == expected_bytes
        seconds = wav.getnframes() / wav.getframerate()
    assert seconds > 0
    return seconds


def _check_wav_line(text: str) -> tuple[Path, int, float]:
    """The WAV the demo wrote matches what its timeline says it received."""
    match = re.search(r"wav       (\d+) realtime:audio:delta chunks, (\d+) bytes, ([\d.]+) s", text)
    assert match is not None, text
    chunks, size, shown = int(match.group(1)), int(match.group(2)), float(match.group(3))
    path = _wav_path(text)
    seconds = _check_wav(path, size)
    assert chunks > 0
    assert round(seconds, 2) == shown
    assert size == chunks * 1920  # the local voice comes in 40 ms chunks of PCM16 24 kHz
    return path, size, seconds


async def _run(
    inject: Inject | None = None, out_dir: Path | None = None, **kwargs: Any
) -> tuple[int, str, float]:
    out = io.StringIO()
    started = time.perf_counter()
    code = await demo_session(out=out, inject=inject, out_dir=out_dir, **kwargs)
    return code, out.getvalue(), time.perf_counter() - started


@pytest.mark.anyio
async def test_demo_passes_and_narrates_every_step(tmp_path: Path) -> None:
    package = logging.getLogger("charivo_fsm")
    handlers, propagate = list(package.handlers), package.propagate
    code, text, took = await _run(out_dir=tmp_path)
    assert code == 0, text
    assert took < 10, text
    _check_layout(text)
    for number, title in enumerate(STEPS, 1):
        assert f"---- step {number}/{LAST}: {title}" in text
    for fragment in (
        # 1. start a voice session
        "tools: getWeather, setExpression, playMotion, lookAt",
        "voice: audio out (PCM16 24 kHz), turn detection server_vad",
        "session   started (session_id ",
        # 2. streamed text (the audio transcript) and audio
        "delta     'Hello! '",
        "audio     output started",
        'assistant final text: "Hello! I am Hiyori',
        # 3. the WAV file
        "s of PCM16 mono 24 kHz, byte for byte what the server sent",
        # 4. tool turns
        'tool      call getWeather({"city": "Lisbon"})',
        "tool      result sent for getWeather:",
        'assistant final text: "getWeather says:',
        "ok: the output went out at once, response.create only after response.done, once",
        "avatar    expression -> happy",
        # 5. barge-in
        "server    this answer's audio comes in real time (audio_pace=1.0)",
        "ok: realtime:user:speech:start, then tts:audio:end at once (barge-in)",
        "ok: the service cancelled the response itself (turn_detected)",
        "ok: the model answered the user's turn, heard as '(spoken audio, 0.8 s)'",
        # 6. push to talk
        "user      transcript '(spoken audio, 1.2 s)'",
        "ok: no VAD; the cleared 200 ms dropped; the model heard (spoken audio, 1.2 s)",
        "ok: commit_audio() ended the turn and a response came",
        # 7. drop, backoff with progress (exact delays: no jitter), same session, memory
        "fault: dropping the TCP connection",
        "reconnect attempt 1 in 0.30s (socket-closed) .",
        "reconnect attempt 2 in 0.60s (socket-closed) .",
        "reconnect succeeded after 2 attempt(s)",
        "ok: same engine session ",
        f'assistant final text: "You first said: "{GREETING}"."',
        "ok: after the reconnect the model still knows what was said first",
        "contrast  'What did I say first?' -> \"I don't remember anything you said before this.\"",
        "ok: without replay it would not know",
        # 8. coalesced updates
        "patch     #2 acknowledged",
        "ok: 3 update_session calls -> 2 session.update patches (#2 and #3 coalesced)",
        # 9. interrupt
        "response status interrupted",
        "ok: no mark_played: cut at the time since the first chunk",
        "no assistant:done",
        # 10. stop
        "session   ended (reason user)",
        "ok: no live connection, no task left",
        f"demo passed: all {LAST} steps",
    ):
        assert fragment in text, fragment
    assert "FAIL" not in text
    assert "patch     #3" not in text
    # The session id shown at the start is the one that survives the reconnect.
    started = re.search(r"session_id ([0-9a-f]{8})\.\.\.", text)
    assert started is not None
    assert f"ok: same engine session {started.group(1)}..." in text

    # 3. The WAV file: in --out DIR, the right header, the audio the timeline counted.
    path, _size, seconds = _check_wav_line(text)
    assert path == tmp_path / WAV_NAME
    assert 0.5 < seconds < 5

    # 4. The server's record of the tool turn: the output before the calling
    # response's response.done, the next response.create after it.
    order = _kinds(_step_text(text, 4), "order")
    assert [line.split(" (")[0] for line in order] == [
        "client  conversation.item.create",
        "client  response.create",
        "server  response.created",
        "server  response.function_call_arguments.done",
        "client  conversation.item.create",
        "server  response.done",
        "client  response.create",
        "server  response.created",
        "server  response.done",
    ]
    assert "function_call_output" in order[4]

    # 5. Barge-in: speech start, tts:audio:end right after it; the truncation at
    # the position the player reported, below the audio received.
    barge = _step_text(text, 5)
    lines = [body for body in map(_body, barge.splitlines()) if body is not None]
    speech = next(i for i, line in enumerate(lines) if line.startswith("vad       speech started"))
    assert lines[speech + 1].startswith("audio     output ended")
    played = re.search(r"mark_played\(item_\w+\.\.\., (\d+)\); (\d+) ms received", barge)
    truncated = re.search(r"conversation.item.truncate item_\w+\.\.\. at (\d+) ms", barge)
    below = re.search(r"ok: truncated at the (\d+) ms played, below the (\d+) ms received", barge)
    assert played and truncated and below, barge
    assert int(played.group(1)) == int(truncated.group(1)) == int(below.group(1)) > 0
    assert int(below.group(1)) < int(below.group(2))

    # 6. Push to talk: the client's messages in order.
    assert _kinds(_step_text(text, 6), "order") == [
        "client  session.update",
        "client  input_audio_buffer.append",
        "client  input_audio_buffer.clear",
        "client  input_audio_buffer.append x4",
        "client  input_audio_buffer.commit",
        "client  response.create",
    ]

    # 7. Replay: as many items as the history held, none of them audio.
    memory = _step_text(text, 7)
    held = re.search(r"history holds (\d+) items", memory)
    replayed = re.search(r"replay    (\d+) conversation.item.create: ", memory)
    assert held and replayed
    assert int(held.group(1)) == int(replayed.group(1)) > 0

    # 9. Interrupt: truncated below the audio received.
    cut = re.search(r"truncate at (\d+) ms of (\d+) ms received", _step_text(text, 9))
    assert cut is not None
    assert 0 < int(cut.group(1)) < int(cut.group(2))

    # The demo's log capture is undone.
    assert package.handlers == handlers
    assert package.propagate is propagate


def _reject_update(step: int, server: LocalRealtimeServer) -> None:
    if step == 8:
        server.reject_next_session_update("demo sabotage: no patches today")


def _wrong_reply(step: int, server: LocalRealtimeServer) -> None:
    if step == 2:
        server.reply = lambda text: "Something else entirely"


def _refuse_every_recover(step: int, server: LocalRealtimeServer) -> None:
    if step == 7:
        for _ in range(3):  # with the demo's own refusal: every attempt fails
            server.reject_next_session_update("demo sabotage: go away")


def _no_tool_call(step: int, server: LocalRealtimeServer) -> None:
    if step == 4:
        server.tool_triggers = ()


def _no_push_to_talk(step: int, server: LocalRealtimeServer) -> None:
    if step == 6:
        server.reject_next_session_update("demo sabotage: no push to talk")


def _silent_model(step: int, server: LocalRealtimeServer) -> None:
    if step == 3:
        assert server.last_session is not None
        server.last_session.session["output_modalities"] = ["text"]  # no voice


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("inject", "step", "reason"),
    [
        (_wrong_reply, 2, "final text 'Something else entirely'"),
        (_silent_model, 3, "no realtime:audio:delta before realtime:assistant:done"),
        (_no_tool_call, 4, "got realtime:assistant:done before a getWeather tool call"),
        (_no_push_to_talk, 6, "demo sabotage: no push to talk"),
        (_refuse_every_recover, 7, "realtime:reconnect:exhausted"),
        (_reject_update, 8, "update_session failed: demo sabotage: no patches today"),
    ],
    ids=[
        "wrong-reply",
        "no-audio",
        "no-tool-call",
        "refused-push-to-talk",
        "reconnect-exhausted",
        "rejected-update",
    ],
)
async def test_demo_reports_the_step_that_misbehaves(
    inject: Callable[[int, LocalRealtimeServer], None], step: int, reason: str, tmp_path: Path
) -> None:
    code, text, took = await _run(inject, out_dir=tmp_path)
    _check_failed_at(code, text, took, step, reason)


def _check_failed_at(
    code: int, text: str, took: float, step: int, reason: str | tuple[str, ...]
) -> None:
    assert code == 1, text
    assert took < 15, text
    _check_layout(text)
    assert f"FAIL      step {step}/{LAST} ({STEPS[step - 1]}):" in text
    reasons = (reason,) if isinstance(reason, str) else reason
    assert any(one in " ".join(text.split()) for one in reasons), text
    assert text.rstrip().endswith(f"demo FAILED at step {step}/{LAST}")
    assert "demo passed" not in text
    # Later steps never ran.
    assert f"---- step {step + 1}/{LAST}" not in text


# Misbehaviour planted in the engine or the transport (the demo must notice it).


def _eager_tool_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport asks for the tool turn's response as soon as the output is
    sent, without waiting for the calling response's response.done."""

    def output_sent(self: OpenAIRealtimeProtocol, call_id: str) -> None:
        self._calls.pop(call_id, None)
        self._queued = False
        self._requested = self._queue({"type": "response.create"})

    monkeypatch.setattr(OpenAIRealtimeProtocol, "_output_sent", output_sent)


def _no_barge_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine ignores speech while the model talks."""
    monkeypatch.setattr(Core, "_barge_in_enabled", lambda self: False)


def _forgetful_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay history loses its oldest item (an off-by-one in its bound)."""
    items = ConversationHistory.items
    monkeypatch.setattr(ConversationHistory, "items", lambda self: items(self)[1:])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("plant", "step", "reason"),
    [
        (_eager_tool_turn, 4, "response.create was sent before the calling response was done"),
        # Without the engine's barge-in, audio still ends when the service's
        # cancel arrives, but maybe not before the check; the truncation never comes.
        (
            _no_barge_in,
            5,
            (
                "the server got no conversation.item.truncate within 2s",
                "no tts:audio:end after realtime:user:speech:start",
            ),
        ),
        (_forgetful_history, 7, f"does not quote {GREETING!r}"),
    ],
    ids=["response-create-too-early", "no-barge-in", "history-loses-an-item"],
)
async def test_demo_notices_a_planted_engine_bug(
    plant: Callable[[pytest.MonkeyPatch], None],
    step: int,
    reason: str | tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    plant(monkeypatch)
    code, text, took = await _run(out_dir=tmp_path)
    _check_failed_at(code, text, took, step, reason)


@pytest.mark.anyio
async def test_live_mode_runs_the_same_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Live mode, pointed at the local server (the real API is out of reach here):
    the same steps run, step 7 is skipped with a note, the key comes from the
    environment, and the WAV file holds exactly the audio the server sent."""
    monkeypatch.setenv("OPENAI_API_KEY", DEMO_API_KEY)
    server = LocalRealtimeServer(
        api_key=DEMO_API_KEY, tool_triggers=LOCAL_TRIGGERS, reply=local_reply, delta_delay=0.02
    )
    async with server:
        # Let the server's listener tasks start first: the demo counts the tasks
        # running when it begins and checks that no more are left at its end.
        await anyio.sleep(0.1)
        code, text, _ = await _run(
            live=True, live_url=server.url, live_settle=0.1, out_dir=tmp_path
        )
    assert code == 0, text
    _check_layout(text)
    assert "charivo-fsm demo (live, OpenAI Realtime API)" in text
    assert "note      skipped live: a server-side drop cannot be injected" in text
    assert "reconnect attempt" not in text
    assert "ok: realtime:user:speech:start, then tts:audio:end (barge-in)" in text
    assert "ok: commit_audio() ended the turn and a response came" in text
    assert "response status interrupted" in text
    assert f"demo passed: all {LAST} steps" in text
    assert server.requests and all(request.authorized for request in server.requests)
    # The WAV file is the spoken answer, byte for byte as the server sent it.
    (item,) = [
        event["item"]["id"]
        for event in server.sent_of("response.output_item.done")
        if (event["item"].get("content") or [{}])[0].get("transcript") == VOICE_REPLY
    ]
    sent = b"".join(
        base64.b64decode(event["delta"])
        for event in server.sent_of("response.output_audio.delta")
        if event["item_id"] == item
    )
    path, size, seconds = _check_wav_line(text)
    assert path == tmp_path / WAV_NAME
    assert size == len(sent)
    with wave.open(str(path), "rb") as wav:
        assert wav.readframes(wav.getnframes()) == sent
    assert seconds == len(sent) / 48_000


def test_live_without_a_key_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert run_demo(live=True) == 2
    captured = capsys.readouterr()
    assert "OPENAI_API_KEY is not set" in captured.err
    assert captured.out == ""


def test_run_demo_in_process_on_trio(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_demo(backend="trio", out_dir=tmp_path) == 0
    captured = capsys.readouterr()
    assert f"demo passed: all {LAST} steps" in captured.out
    assert captured.err == ""
    assert (tmp_path / WAV_NAME).stat().st_size > 44


def test_cli_demo_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)
    out = tmp_path / "voice"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "charivo_fsm", "demo", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    took = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < 20
    assert f"demo passed: all {LAST} steps" in result.stdout
    assert result.stderr == ""  # logging stays off the terminal
    _check_layout(result.stdout)
    path, _size, _seconds = _check_wav_line(result.stdout)
    assert path == out / WAV_NAME


def test_cli_demo_without_out_writes_to_a_temporary_directory() -> None:
    """Without --out the WAV goes to a fresh temporary directory, named on the timeline."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "charivo_fsm", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    path, _size, _seconds = _check_wav_line(result.stdout)
    try:
        assert path.name == WAV_NAME
        assert path.parent.name.startswith("charivo-demo-")
    finally:
        path.unlink()
        path.parent.rmdir()
