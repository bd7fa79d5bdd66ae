"""The engine's voice rules (CONTRACT §11) over the fake transport, on virtual time.

Audio out reaches the app byte for byte; the assistant audio item being played is
tracked so that ``interrupt()`` and barge-in truncate it at the played position
(reported by ``mark_played`` or, without reports, real-time playback from the
item's first chunk), never past the audio received; a response the service
cancelled ends ``interrupted``; push to talk goes through a voice transport; a
refused update is not re-sent by a reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from charivo_fsm import (
    CharivoProviderError,
    CharivoStateError,
    CharivoValidationError,
    RealtimeManager,
    RealtimeSessionConfig,
    ResponseStatus,
    TurnDetection,
    VoiceTransport,
    create_realtime_manager,
)
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioOutputDelta,
    AudioOutputEnded,
    ConnectionLost,
    ErrorEvent,
    RateLimitsUpdated,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscriptDelta,
)
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle
from charivo_fsm.voice import MAX_ITEMS

pytestmark = pytest.mark.anyio

MS = 48  # bytes of PCM16 24 kHz per millisecond


def pcm(ms: int) -> bytes:
    return bytes(range(256)) * (ms * MS // 256) + bytes(ms * MS % 256)


@asynccontextmanager
async def live(
    config: RealtimeSessionConfig | Mapping[str, Any] | None = None,
    *,
    fake: FakeTransport | None = None,
    **options: Any,
) -> AsyncIterator[tuple[RealtimeManager, FakeTransport, RecordingEmitter]]:
    fake = fake or FakeTransport()
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake, **options)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(config)
        yield manager, fake, emitter


async def play(fake: FakeTransport, item_id: str, *chunks_ms: int) -> None:
    fake.emit(AssistantResponseStarted())
    for ms in chunks_ms:
        fake.emit(AudioOutputDelta(pcm(ms), item_id))
    await settle()


# ----------------------------------------------------------------------------- audio out


async def test_audio_reaches_the_app_byte_for_byte_in_order() -> None:
    async with live() as (_manager, fake, emitter):
        chunks = [pcm(40), b"\x01\x02" * 7, pcm(20)]
        fake.emit(AssistantResponseStarted())
        for chunk in chunks:
            fake.emit(AudioOutputDelta(chunk, "item_a"))
        payloads = emitter.payloads("realtime:audio:delta")
        assert [p.audio for p in payloads] == chunks
        assert {p.item_id for p in payloads} == {"item_a"}
        names = emitter.names()
        assert names.count("tts:audio:start") == 1
        assert names.index("tts:audio:start") < names.index("realtime:audio:delta")


async def test_audio_between_sessions_is_dropped() -> None:
    fake = FakeTransport()
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        for event in (
            AudioOutputDelta(pcm(10), "i"),
            UserSpeechStarted("u", 0),
            UserSpeechStopped("u", 10),
            UserTranscriptDelta("he", "u"),
            RateLimitsUpdated(({"name": "requests"},)),
        ):
            fake.emit(event)
        assert emitter.names() == []
        with pytest.raises(CharivoValidationError, match="no session"):
            manager.mark_played("i", 0)


async def test_speech_transcript_and_rate_limit_events_are_emitted() -> None:
    async with live() as (_manager, fake, emitter):
        emitter.clear()
        fake.emit(UserSpeechStarted("item_u", 120))
        fake.emit(UserTranscriptDelta("hel", "item_u"))
        fake.emit(UserSpeechStopped("item_u", 900))
        fake.emit(RateLimitsUpdated(({"name": "tokens", "remaining": 10},)))
        assert emitter.names() == [
            "realtime:user:speech:start",
            "realtime:user:transcript:delta",
            "realtime:user:speech:stop",
            "realtime:rate_limits",
        ]
        start = emitter.last("realtime:user:speech:start")
        assert (start.item_id, start.audio_start_ms) == ("item_u", 120)
        assert emitter.last("realtime:user:speech:stop").audio_end_ms == 900
        assert emitter.last("realtime:user:transcript:delta").text == "hel"
        assert emitter.last("realtime:rate_limits").limits == ({"name": "tokens", "remaining": 10},)


# ----------------------------------------------------------------------------- truncation


async def test_interrupt_truncates_at_real_time_playback_without_reports() -> None:
    async with live() as (manager, fake, emitter):
        await play(fake, "item_a", 500, 500)  # one second received at once
        await anyio.sleep(0.3)  # the app has played 300 ms, if it plays in real time
        await manager.interrupt()
        await settle()
        assert fake.calls_to("truncate_audio") == [("item_a", 300)]
        assert fake.methods()[-2:] == ["interrupt", "truncate_audio"]
        assert emitter.names().count("tts:audio:end") == 1
        assert manager.state.response.status == ResponseStatus.INTERRUPTED


async def test_audio_items_are_per_manager_from_the_first_chunk() -> None:
    """A core shares one empty set of audio items until its first chunk: the audio of
    one manager is never seen by another (created before or after it)."""
    async with live() as (first, first_fake, _), live() as (second, second_fake, _):
        await play(first_fake, "item_a", 500)
        second_fake.emit(AssistantResponseStarted())
        await settle()
        with pytest.raises(CharivoValidationError):
            second.mark_played("item_a", 100)  # not an item of the second manager
        await second.interrupt()
        await settle()
        assert second_fake.calls_to("truncate_audio") == []
        async with live() as (third, third_fake, _):
            await play(third_fake, "item_c", 200)
            await third.interrupt()
            await settle()
            assert [c[0] for c in third_fake.calls_to("truncate_audio")] == ["item_c"]
        first.mark_played("item_a", 100)
        await first.interrupt()
        await settle()
        assert first_fake.calls_to("truncate_audio") == [("item_a", 100)]


async def test_interrupt_truncates_at_the_reported_position() -> None:
    async with live() as (manager, fake, _emitter):
        await play(fake, "item_a", 1000)
        await anyio.sleep(0.9)
        manager.mark_played("item_a", 250)  # the app's player lags behind
        await manager.interrupt()
        await settle()
        assert fake.calls_to("truncate_audio") == [("item_a", 250)]


async def test_truncation_never_goes_past_the_audio_received() -> None:
    async with live() as (manager, fake, _emitter):
        await play(fake, "item_a", 200)
        manager.mark_played("item_a", 150)
        manager.mark_played("item_a", 5000)  # accepted, clamped to 200 ms
        fake.emit(AudioOutputDelta(pcm(300), "item_a"))
        await settle()
        await anyio.sleep(10)
        manager.mark_played("item_a", 499)
        await manager.interrupt()
        await settle()
        assert fake.calls_to("truncate_audio") == [("item_a", 499)]


async def test_fully_played_audio_is_not_truncated() -> None:
    async with live() as (manager, fake, emitter):
        await play(fake, "item_a", 200)
        await anyio.sleep(1.0)  # all 200 ms have played
        await manager.interrupt()
        await settle()
        assert fake.count("truncate_audio") == 0
        assert emitter.names().count("tts:audio:end") == 1


async def test_interrupt_without_audio_truncates_nothing() -> None:
    async with live() as (manager, fake, emitter):
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantTextDelta("Hello"))
        await manager.interrupt()
        await settle()
        assert fake.count("interrupt") == 1
        assert fake.count("truncate_audio") == 0
        assert "tts:audio:end" not in emitter.names()


async def test_audio_without_item_id_plays_but_cannot_be_truncated() -> None:
    async with live() as (manager, fake, emitter):
        await play(fake, None, 1000)  # type: ignore[arg-type]
        await manager.interrupt()
        await settle()
        assert fake.count("truncate_audio") == 0
        assert emitter.names().count("tts:audio:end") == 1


async def test_a_truncation_failure_is_logged_not_raised(
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, records = captured
    fake = FakeTransport()
    fake.fail_always("truncate_audio", RuntimeError("item gone"))
    async with live(fake=fake, logger=logger) as (manager, _fake, emitter):
        await play(fake, "item_a", 1000)
        await manager.interrupt()
        await settle()
        assert fake.count("truncate_audio") == 1
        failures = [r for r in records if "truncation failed" in r.getMessage()]
        assert len(failures) == 1 and failures[0].levelno == logging.WARNING
        assert "item gone" in failures[0].charivo["error"]  # type: ignore[attr-defined]
        assert "realtime:error" not in emitter.names()
        assert manager.state.last_error is None


# ----------------------------------------------------------------------------- barge-in


async def test_barge_in_truncates_and_ends_audio() -> None:
    async with live() as (manager, fake, emitter):
        await play(fake, "item_a", 2000)
        await anyio.sleep(0.4)
        emitter.clear()
        fake.emit(UserSpeechStarted("item_u", 4000))
        await settle()
        assert fake.calls_to("truncate_audio") == [("item_a", 400)]
        assert emitter.names()[:3] == [
            "realtime:user:speech:start",
            "tts:lipsync:update",
            "tts:audio:end",
        ]
        # The service then cancels the response for the turn it detected.
        fake.emit(
            AssistantResponseCompleted(
                status="cancelled", reason="turn_detected", usage={"total_tokens": 9}
            )
        )
        assert manager.state.response.status == ResponseStatus.INTERRUPTED
        assert "realtime:assistant:done" not in emitter.names()
        assert len(emitter.payloads("realtime:usage")) == 1


async def test_barge_in_while_the_app_still_plays_the_tail() -> None:
    async with live() as (_manager, fake, emitter):
        await play(fake, "item_a", 3000)
        fake.emit(AudioOutputEnded())  # the service has sent everything
        await anyio.sleep(1.0)  # ... the app is one second into three
        fake.emit(UserSpeechStarted("item_u", 0))
        await settle()
        assert fake.calls_to("truncate_audio") == [("item_a", 1000)]
        assert emitter.names().count("tts:audio:start") == 1
        assert emitter.names().count("tts:audio:end") == 1


@pytest.mark.parametrize(
    "detection",
    [TurnDetection(interrupt_response=False), TurnDetection(mode="manual")],
    ids=["interrupt_response_false", "manual"],
)
async def test_no_barge_in_when_speech_does_not_interrupt(detection: TurnDetection) -> None:
    async with live({"turn_detection": detection}) as (_manager, fake, emitter):
        await play(fake, "item_a", 2000)
        fake.emit(UserSpeechStarted("item_u", 0))
        await settle()
        assert fake.count("truncate_audio") == 0
        assert "tts:audio:end" not in emitter.names()


async def test_speech_without_audio_playing_truncates_nothing() -> None:
    async with live() as (_manager, fake, emitter):
        fake.emit(UserSpeechStarted("item_u", 0))
        await settle()
        assert fake.count("truncate_audio") == 0
        assert emitter.names().count("tts:audio:end") == 0


async def test_each_item_is_truncated_at_most_once() -> None:
    async with live() as (manager, fake, _emitter):
        await play(fake, "item_a", 2000)
        fake.emit(UserSpeechStarted("u1", 0))
        fake.emit(UserSpeechStarted("u2", 10))
        await manager.interrupt()
        await settle()
        assert fake.calls_to("truncate_audio") == [("item_a", 0)]


async def test_a_new_item_is_the_one_truncated() -> None:
    async with live() as (manager, fake, _emitter):
        await play(fake, "item_a", 100)
        await anyio.sleep(1.0)
        await play(fake, "item_b", 1000)
        await anyio.sleep(0.2)
        await manager.interrupt()
        await settle()
        assert fake.calls_to("truncate_audio") == [("item_b", 200)]


async def test_a_lost_link_forgets_the_item() -> None:
    async with live(reconnect_delays=(0.1,)) as (manager, fake, _emitter):
        await play(fake, "item_a", 2000)
        fake.emit(ConnectionLost("offline"))
        await fake.wait_for_call("recover")
        await settle()
        with pytest.raises(CharivoValidationError, match="unknown"):
            manager.mark_played("item_a", 10)
        await manager.interrupt()
        await settle()
        assert fake.count("truncate_audio") == 0


async def test_an_error_ends_audio_but_the_item_can_still_be_truncated() -> None:
    async with live() as (manager, fake, emitter):
        await play(fake, "item_a", 2000)
        fake.emit(ErrorEvent(CharivoProviderError("glitch")))
        assert emitter.names().count("tts:audio:end") == 1
        await anyio.sleep(0.5)
        await manager.interrupt()
        await settle()
        assert fake.calls_to("truncate_audio") == [("item_a", 500)]
        assert emitter.names().count("tts:audio:end") == 1


# ----------------------------------------------------------------------------- mark_played


@pytest.mark.parametrize(
    ("item_id", "played_ms", "match"),
    [
        ("nope", 10, "unknown assistant audio item 'nope'"),
        ("item_a", -1, "must not be negative"),
        ("item_a", 1.5, "integer"),
        ("item_a", True, "integer"),
        ("item_a", "10", "integer"),
        ("", 10, "non-empty"),
        (None, 10, "non-empty"),
    ],
)
async def test_bad_mark_played_raises(item_id: Any, played_ms: Any, match: str) -> None:
    async with live() as (manager, fake, _emitter):
        await play(fake, "item_a", 100)
        with pytest.raises(CharivoValidationError, match=match):
            manager.mark_played(item_id, played_ms)


async def test_old_items_are_forgotten_beyond_the_bound() -> None:
    async with live() as (manager, fake, _emitter):
        for index in range(MAX_ITEMS + 1):
            fake.emit(AudioOutputDelta(pcm(10), f"item_{index}"))
        manager.mark_played(f"item_{MAX_ITEMS}", 1)
        manager.mark_played("item_1", 1)
        with pytest.raises(CharivoValidationError):
            manager.mark_played("item_0", 1)


# ----------------------------------------------------------------------------- responses


async def test_a_cancelled_response_ends_interrupted_and_still_reports_usage() -> None:
    async with live() as (manager, fake, emitter):
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantTextDelta("Half a sen"))
        fake.emit(
            AssistantResponseCompleted(
                text="",
                usage={"total_tokens": 5},
                status="cancelled",
                reason="client_cancelled",
                response_id="r1",
            )
        )
        state = manager.state
        assert state.response.status == ResponseStatus.INTERRUPTED
        assert state.response.text == "Half a sen"
        assert "realtime:assistant:done" not in emitter.names()
        assert [p.response_id for p in emitter.payloads("realtime:usage")] == ["r1"]
        # A later delta belongs to the cancelled response: dropped.
        fake.emit(AssistantTextDelta("tence"))
        assert manager.state.response.text == "Half a sen"


@pytest.mark.parametrize("status", ["completed", "incomplete", "failed"])
async def test_other_final_statuses_complete(status: str) -> None:
    async with live() as (manager, fake, emitter):
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantResponseCompleted(text="Done.", status=status))
        assert manager.state.response.status == ResponseStatus.COMPLETED
        assert emitter.last("realtime:assistant:done").text == "Done."


# ----------------------------------------------------------------------------- push to talk


async def test_commit_and_clear_go_to_a_voice_transport() -> None:
    async with live({"turn_detection": {"mode": "manual"}}) as (manager, fake, _emitter):
        assert isinstance(fake, VoiceTransport)
        await manager.send_audio_chunk(pcm(100))
        await manager.clear_audio()
        await manager.send_audio_chunk(pcm(200))
        await manager.commit_audio()
        assert fake.methods()[-4:] == ["send_audio", "clear_audio", "send_audio", "commit_audio"]


async def test_commit_needs_a_live_session() -> None:
    fake = FakeTransport()
    async with create_realtime_manager(fake) as manager:
        with pytest.raises(CharivoStateError, match="not active"):
            await manager.commit_audio()
        with pytest.raises(CharivoStateError, match="not active"):
            await manager.clear_audio()
    assert fake.count("commit_audio") == 0


class PlainTransport:
    """Only the eight RealtimeTransport methods (recorded by an inner fake)."""

    def __init__(self) -> None:
        self.fake = FakeTransport()
        for name in (
            "connect",
            "update_session",
            "recover",
            "disconnect",
            "send_text",
            "send_audio",
            "send_tool_result",
            "interrupt",
            "on_event",
        ):
            setattr(self, name, getattr(self.fake, name))


async def test_push_to_talk_needs_a_voice_transport() -> None:
    plain = PlainTransport()
    assert not isinstance(plain, VoiceTransport)
    fake = plain.fake
    emitter = RecordingEmitter()
    manager = create_realtime_manager(plain)  # type: ignore[arg-type]
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        with pytest.raises(CharivoStateError, match="voice transport"):
            await manager.commit_audio()
        with pytest.raises(CharivoStateError, match="voice transport"):
            await manager.clear_audio()
        # Audio still plays and interrupt still works, without truncation.
        await play(fake, "item_a", 1000)
        await manager.interrupt()
        await settle()
        assert emitter.names().count("tts:audio:end") == 1
        assert fake.count("interrupt") == 1


async def test_input_audio_in_the_wrong_format_raises_before_sending() -> None:
    async with live() as (manager, fake, _emitter):
        with pytest.raises(CharivoValidationError, match="PCM16"):
            await manager.send_audio_chunk(b"\x00\x01\x02")
        assert fake.count("send_audio") == 0
    async with live({"input_audio_format": "g711_ulaw"}) as (manager, fake, _emitter):
        await manager.send_audio_chunk(b"\x00\x01\x02")  # one byte per sample: fine
        assert fake.calls_to("send_audio") == [(b"\x00\x01\x02",)]


# ----------------------------------------------------------------------------- refused updates


async def test_a_refused_update_is_not_resent_by_the_next_reconnect() -> None:
    fake = FakeTransport()
    async with live({"voice": "marin"}, fake=fake, reconnect_delays=(0.1,)) as (
        manager,
        _fake,
        _emitter,
    ):
        fake.fail_once("update_session", CharivoProviderError("voice cannot change"))
        with pytest.raises(CharivoProviderError):
            await manager.update_session({"voice": "cedar", "instructions": "Be terse."})
        fake.emit(ConnectionLost("offline"))
        await fake.wait_for_call("recover")
        await settle()
        (config,) = fake.calls_to("recover")[0]
        assert config.voice == "marin"
        assert config.instructions != "Be terse."
        assert manager.state.session.config is not None
        assert manager.state.session.config.voice == "marin"


async def test_a_request_made_during_a_refused_patch_is_still_applied() -> None:
    fake = FakeTransport()
    release = anyio.Event()

    async def refuse(_config: RealtimeSessionConfig) -> None:
        await release.wait()
        raise CharivoProviderError("voice cannot change")

    fake.respond_with("update_session", refuse, once=True)
    async with live({"voice": "marin"}, fake=fake) as (manager, _fake, _emitter):

        async def refused() -> None:
            with pytest.raises(CharivoProviderError):
                await manager.update_session({"voice": "cedar"})

        async with anyio.create_task_group() as group:
            group.start_soon(refused)
            await fake.wait_for_call("update_session")
            group.start_soon(manager.update_session, {"instructions": "Be terse."})
            await settle()
            release.set()
        configs = [call[0] for call in fake.calls_to("update_session")]
        assert [c.voice for c in configs] == ["cedar", "marin"]
        assert configs[-1].instructions == "Be terse."


# ----------------------------------------------------------------------------- late audio


async def test_audio_of_a_cut_item_still_on_its_way_is_dropped() -> None:
    """The service keeps sending a few chunks until it sees the cancel: they belong to
    the item the user cut off and must not play (nor restart tts:audio)."""
    from charivo_fsm.events import AudioLipsync

    async with live() as (manager, fake, emitter):
        await play(fake, "item_a", 1000)
        await manager.interrupt()
        await settle()
        emitter.clear()
        fake.emit(AudioOutputDelta(pcm(40), "item_a"))
        fake.emit(AudioLipsync(0.4))
        fake.emit(AudioOutputDelta(pcm(40), "item_a"))
        assert emitter.names() == []
        # the next response's audio plays again
        fake.emit(AssistantResponseStarted())
        fake.emit(AudioOutputDelta(pcm(40), "item_b"))
        fake.emit(AudioLipsync(0.4))
        names = emitter.names()
        assert names.count("tts:audio:start") == 1
        assert names.count("realtime:audio:delta") == 1
        assert names.count("tts:lipsync:update") == 1


async def test_after_a_barge_in_late_chunks_are_dropped_and_another_item_plays() -> None:
    async with live() as (_manager, fake, emitter):
        await play(fake, "item_a", 2000)
        fake.emit(UserSpeechStarted("item_u", 0))
        await settle()
        emitter.clear()
        fake.emit(AudioOutputDelta(pcm(40), "item_a"))
        assert "realtime:audio:delta" not in emitter.names()
        fake.emit(AudioOutputDelta(pcm(40), "item_c"))  # another item: it plays
        assert emitter.names()[:2] == ["tts:audio:start", "realtime:audio:delta"]
