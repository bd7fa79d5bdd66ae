"""The pull API (CONTRACT §12): ``manager.events()``, on asyncio and trio, virtual time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from charivo_fsm import CharivoStateError, CharivoValidationError, create_realtime_manager
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioOutputDelta,
)
from charivo_fsm.payloads import EMITTED_EVENTS
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle

pytestmark = pytest.mark.anyio


def turn(fake: FakeTransport, words: int = 3) -> None:
    fake.emit(AssistantResponseStarted())
    for index in range(words):
        fake.emit(AssistantTextDelta(f"w{index} "))
    fake.emit(AudioOutputDelta(b"\x00\x01" * 24, "item_1"))
    fake.emit(AssistantResponseCompleted(usage={"total_tokens": 3}))


async def test_streams_see_what_the_emitter_sees_in_order() -> None:
    fake = FakeTransport()
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake)
    manager.set_event_emitter(emitter)
    seen: list[list[tuple[str, Any]]] = [[], []]
    async with manager:
        async with manager.events() as first, manager.events() as second:
            await manager.start_session()
            turn(fake)
            await manager.stop_session()
            for stream, into in ((first, seen[0]), (second, seen[1])):
                while stream.pending:
                    into.append(await stream.__anext__())
    assert seen[0] == emitter.events
    assert seen[1] == emitter.events
    names = [name for name, _ in seen[0]]
    assert names[0] == "realtime:state"
    assert "realtime:audio:delta" in names and names[-1] == "realtime:session:end"
    assert set(names) <= set(EMITTED_EVENTS)


async def test_a_reader_waits_for_events_and_ends_with_the_manager() -> None:
    fake = FakeTransport()
    got: list[str] = []
    manager = create_realtime_manager(fake)

    async def read(stream: Any) -> None:
        async for name, _payload in stream:
            got.append(name)

    async with anyio.create_task_group() as group:
        async with manager:
            stream = manager.events()
            group.start_soon(read, stream)
            await manager.start_session()
            await anyio.sleep(1)
            turn(fake, words=1)
            await settle()
        # leaving the manager ends the stream: the reader's loop finishes
    assert got[-1] == "realtime:session:end"
    assert got.count("realtime:text:delta") == 1


async def test_overflow_delivers_what_it_holds_then_raises() -> None:
    fake = FakeTransport()
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        async with manager.events(max_buffer=5) as stream:
            await manager.start_session()
            turn(fake, words=10)
            received = []
            with pytest.raises(CharivoStateError, match="overflowed: more than 5 events"):
                async for event in stream:
                    received.append(event)
            assert received == emitter.events[:5]
            # the stream no longer receives; the emitter still does
            turn(fake)
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()
    assert len(emitter.events) > 20


async def test_a_closed_stream_receives_nothing() -> None:
    fake = FakeTransport()
    manager = create_realtime_manager(fake)
    async with manager:
        stream = manager.events()
        async with stream:
            await manager.start_session()
        assert stream.pending == 0
        turn(fake)
        assert stream.pending == 0
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()


async def test_a_stream_made_after_exit_is_empty() -> None:
    manager = create_realtime_manager(FakeTransport())
    async with manager:
        pass
    async with manager.events() as stream:
        assert [event async for event in stream] == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_max_buffer_must_be_a_positive_integer(bad: Any) -> None:
    manager = create_realtime_manager(FakeTransport())
    with pytest.raises(CharivoValidationError, match="max_buffer"):
        manager.events(max_buffer=bad)


USER_CODE = """
from charivo_fsm import RealtimeManager
from charivo_fsm.payloads import AudioDeltaPayload, TextPayload


async def consume(manager: RealtimeManager) -> list[bytes]:
    audio: list[bytes] = []
    async with manager.events() as stream:
        async for event in stream:
            if event[0] == "realtime:audio:delta":
                audio.append(event[1].audio)
            elif event[0] == "realtime:assistant:done":
                print(event[1].text.upper())
            match event:
                case ("realtime:usage", usage):
                    print(usage.usage, usage.session_id)
                case ("realtime:error", failure):
                    print(failure.error.code)
            name, payload = event
            if isinstance(payload, TextPayload) and name == "realtime:text:delta":
                print(payload.text)
            if isinstance(payload, AudioDeltaPayload):
                print(payload.item_id)
    return audio
"""

BROKEN_CODE = """
from charivo_fsm import RealtimeManager


async def consume(manager: RealtimeManager) -> None:
    async with manager.events() as stream:
        async for event in stream:
            if event[0] == "realtime:assistant:done":
                print(event[1].audio)
"""


def _mypy(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "user_code.py"
    source.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )


def test_user_code_narrows_events_without_casts_under_mypy_strict(tmp_path: Path) -> None:
    result = _mypy(USER_CODE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = _mypy(BROKEN_CODE, tmp_path)
    assert broken.returncode == 1
    assert '"TextPayload" has no attribute "audio"' in broken.stdout


def test_the_embedding_guide_example_type_checks(tmp_path: Path) -> None:
    guide = (Path(__file__).resolve().parents[1] / "docs" / "embedding.md").read_text()
    blocks = [part.split("```", 1)[0] for part in guide.split("```python\n")[1:]]
    assert blocks, "docs/embedding.md has no Python example"
    for block in blocks:
        result = _mypy(block, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
