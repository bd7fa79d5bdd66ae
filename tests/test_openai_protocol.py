"""The OpenAI Realtime protocol rules, without sockets.

:class:`OpenAIRealtimeProtocol` is sans-IO: these tests feed it server events
and app calls and look at what it would send and emit.  No event loop is
needed (the layer has no I/O, no clock and no tasks), so the tests are plain
functions.  Every client message the protocol produces is validated against
the ``openai`` SDK's GA models (no unknown field at any depth), and every
server event the tests feed it against the SDK's server models, so the
fixtures are shaped like the real service's events.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import math
import sys
import warnings
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from charivo_fsm import CharivoProviderError, CharivoValidationError, RealtimeSessionConfig
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AudioLipsync,
    AudioOutputDelta,
    ErrorEvent,
    RateLimitsUpdated,
    ToolCall,
    TransportEvent,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
    UserTranscriptDelta,
)
from charivo_fsm.model import TurnDetection
from charivo_fsm.transports.openai import (
    MAX_APPEND_BYTES,
    ConversationHistory,
    OpenAIRealtimeProtocol,
    build_session_update,
    g711_rms,
    pcm16_rms,
)
from charivo_fsm.transports.openai_mapping import ALAW_TO_LINEAR, ULAW_TO_LINEAR
from tests.sdk_validation import validate_client_event, validate_server_event

LOGGER = "charivo_fsm.transports.openai"
_ids = itertools.count(1)


# ------------------------------------------------------------------ harness


def sent(protocol: OpenAIRealtimeProtocol) -> list[dict[str, Any]]:
    """What the protocol would send now, each event checked against the SDK."""
    events = []
    for message in protocol.data_to_send():
        assert json.loads(message.text) == message.event
        validate_client_event(message.event)
        events.append(dict(message.event))
    return events


def types(events: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(event["type"]) for event in events]


def emitted(protocol: OpenAIRealtimeProtocol) -> list[TransportEvent]:
    return protocol.events_to_emit()


def feed(protocol: OpenAIRealtimeProtocol, *events: dict[str, Any]) -> None:
    for event in events:
        event = {"event_id": f"event_{next(_ids)}", **event}
        validate_server_event(event)
        protocol.receive_text(json.dumps(event))


def created(response_id: str) -> dict[str, Any]:
    return {
        "type": "response.created",
        "response": {"id": response_id, "object": "realtime.response", "status": "in_progress"},
    }


def message_item(item_id: str, text: str, *, audio: bool = False) -> dict[str, Any]:
    part = (
        {"type": "output_audio", "transcript": text}
        if audio
        else {
            "type": "output_text",
            "text": text,
        }
    )
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }


def call_item(call_id: str, name: str = "get_weather", arguments: str = "{}") -> dict[str, Any]:
    return {
        "id": "item_" + call_id,
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def done(
    response_id: str,
    output: list[dict[str, Any]] | None = None,
    *,
    status: str = "completed",
    reason: str | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "output": output or [],
    }
    if reason is not None:
        response["status_details"] = {"type": status, "reason": reason}
    return {"type": "response.done", "response": response}


def args_done(
    response_id: str, call_id: str, arguments: str = '{"city": "Paris"}'
) -> dict[str, Any]:
    return {
        "type": "response.function_call_arguments.done",
        "response_id": response_id,
        "item_id": "item_" + call_id,
        "output_index": 0,
        "call_id": call_id,
        "name": "get_weather",
        "arguments": arguments,
    }


def _delta(event_type: str, response_id: str, item_id: str, delta: str) -> dict[str, Any]:
    where = {"response_id": response_id, "item_id": item_id, "output_index": 0}
    return {"type": event_type, **where, "content_index": 0, "delta": delta}


def text_delta(response_id: str, item_id: str, text: str) -> dict[str, Any]:
    return _delta("response.output_text.delta", response_id, item_id, text)


def audio_delta(response_id: str, item_id: str, audio: bytes) -> dict[str, Any]:
    encoded = base64.b64encode(audio).decode("ascii")
    return _delta("response.output_audio.delta", response_id, item_id, encoded)


def said(role: str, text: str) -> dict[str, Any]:
    """The replayed message item: a user's ``input_text`` or an assistant's ``output_text``."""
    part = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def error(
    code: str | None,
    message: str = "something went wrong",
    *,
    about: str | None = None,
    error_type: str = "invalid_request_error",
    param: str | None = None,
) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": about,
        },
    }


def session_updated() -> dict[str, Any]:
    return {"type": "session.updated", "session": {"type": "realtime", "model": "gpt-realtime"}}


def transcription_completed(item_id: str, transcript: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item_id,
        "content_index": 0,
        "transcript": transcript,
        "usage": {"type": "duration", "seconds": 1.0},
    }


def committed(item_id: str) -> dict[str, Any]:
    return {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None}


def running(response_id: str = "resp_1", **options: Any) -> OpenAIRealtimeProtocol:
    """A protocol with a response in flight (started by the service itself)."""
    protocol = OpenAIRealtimeProtocol(**options)
    feed(protocol, created(response_id))
    emitted(protocol)
    return protocol


def tone(samples: int, amplitude: float, frequency: float = 440.0, rate: int = 24_000) -> list[int]:
    return [
        round(amplitude * 32767 * math.sin(2 * math.pi * frequency * n / rate))
        for n in range(samples)
    ]


def pcm(samples: list[int]) -> bytes:
    values = array("h", samples)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values.tobytes()


def exact_rms(samples: list[int]) -> float:
    return math.sqrt(math.fsum(s * s for s in samples) / len(samples)) / 32768.0


# ------------------------------------------------------------------ one response in flight


def test_send_text_when_idle_sends_the_item_then_response_create() -> None:
    protocol = OpenAIRealtimeProtocol()
    protocol.send_text("hello")
    events = sent(protocol)
    assert types(events) == ["conversation.item.create", "response.create"]
    assert events[0]["item"] == said("user", "hello")
    assert protocol.response_in_flight


def test_response_create_is_never_sent_while_a_response_is_active() -> None:
    protocol = running("resp_1")
    protocol.send_text("are you there?")
    assert types(sent(protocol)) == ["conversation.item.create"]
    assert protocol.response_queued
    feed(protocol, text_delta("resp_1", "item_a", "Hi"))
    assert sent(protocol) == []
    feed(protocol, done("resp_1"))
    assert types(sent(protocol)) == ["response.create"]
    assert not protocol.response_queued


def test_a_sent_but_not_yet_created_response_also_holds_requests() -> None:
    protocol = OpenAIRealtimeProtocol()
    protocol.send_text("one")
    protocol.send_text("two")
    assert types(sent(protocol)) == [
        "conversation.item.create",
        "response.create",
        "conversation.item.create",
    ]
    feed(protocol, created("resp_1"))
    assert sent(protocol) == []
    feed(protocol, done("resp_1"))
    assert types(sent(protocol)) == ["response.create"]


def test_requests_made_during_a_response_merge_into_one() -> None:
    protocol = running()
    protocol.send_text("a")
    protocol.send_text("b")
    protocol.commit_audio()
    assert types(sent(protocol)) == [
        "conversation.item.create",
        "conversation.item.create",
        "input_audio_buffer.commit",
    ]
    feed(protocol, done("resp_1"))
    assert types(sent(protocol)) == ["response.create"]
    feed(protocol, created("resp_2"), done("resp_2"))
    assert sent(protocol) == []


def test_active_response_conflict_is_requeued_not_surfaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    protocol = OpenAIRealtimeProtocol()
    protocol.send_text("hi")
    create = sent(protocol)[-1]
    # The service started a response of its own (turn detection) first ...
    feed(protocol, created("resp_vad"))
    # ... so it refuses ours.
    feed(
        protocol,
        error(
            "conversation_already_has_active_response",
            "Conversation already has an active response in progress: resp_vad.",
            about=create["event_id"],
        ),
    )
    assert [e for e in emitted(protocol) if isinstance(e, ErrorEvent)] == []
    assert sent(protocol) == []
    feed(protocol, done("resp_vad"))
    assert types(sent(protocol)) == ["response.create"]
    assert any("queued" in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


def test_active_response_conflict_without_an_event_id_is_requeued_too() -> None:
    protocol = OpenAIRealtimeProtocol()
    protocol.send_text("hi")
    sent(protocol)
    feed(protocol, error("conversation_already_has_active_response", about=None))
    assert emitted(protocol) == []
    assert sent(protocol) == []
    feed(protocol, created("resp_other"), done("resp_other"))
    assert types(sent(protocol)) == ["response.create"]


def test_another_error_about_our_response_create_is_surfaced_and_frees_the_slot() -> None:
    protocol = OpenAIRealtimeProtocol()
    protocol.send_text("hi")
    create = sent(protocol)[-1]
    feed(protocol, error("invalid_value", "Bad response", about=create["event_id"]))
    (event,) = emitted(protocol)
    assert isinstance(event, ErrorEvent)
    assert not protocol.response_in_flight
    protocol.send_text("again")
    assert types(sent(protocol)) == ["conversation.item.create", "response.create"]


# ------------------------------------------------------------------ interrupt


def test_interrupt_without_a_response_sends_nothing() -> None:
    protocol = OpenAIRealtimeProtocol()
    assert protocol.interrupt() is False
    assert sent(protocol) == []


def test_interrupt_cancels_the_response_in_flight_by_id() -> None:
    protocol = running("resp_7")
    assert protocol.interrupt() is True
    (cancel,) = sent(protocol)
    assert cancel == {
        "type": "response.cancel",
        "response_id": "resp_7",
        "event_id": cancel["event_id"],
    }
    feed(protocol, done("resp_7", status="cancelled", reason="client_cancelled"))
    emitted(protocol)
    assert protocol.interrupt() is False
    assert sent(protocol) == []


def test_interrupt_right_after_response_create_cancels_without_an_id() -> None:
    protocol = OpenAIRealtimeProtocol()
    protocol.send_text("talk")
    sent(protocol)
    protocol.interrupt()
    (cancel,) = sent(protocol)
    assert cancel["type"] == "response.cancel"
    assert "response_id" not in cancel


def test_a_late_cancel_not_active_error_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    protocol = running()
    protocol.interrupt()
    cancel = sent(protocol)[0]
    feed(protocol, done("resp_1"))
    emitted(protocol)
    feed(
        protocol,
        error(
            "response_cancel_not_active",
            "Cancellation failed: no active response found",
            about=cancel["event_id"],
        ),
    )
    assert emitted(protocol) == []
    assert any("cancel" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ tool turns


def test_tool_output_before_response_done_waits_for_it() -> None:
    protocol = running("resp_1")
    feed(protocol, args_done("resp_1", "call_a"))
    (call,) = [e for e in emitted(protocol) if isinstance(e, ToolCall)]
    assert (call.name, call.args, call.call_id) == ("get_weather", {"city": "Paris"}, "call_a")
    protocol.send_tool_result("call_a", {"temperature": 21})
    (item,) = sent(protocol)
    assert item["item"] == {
        "type": "function_call_output",
        "call_id": "call_a",
        "output": '{"temperature": 21}',
    }
    feed(protocol, done("resp_1", [call_item("call_a")]))
    assert types(sent(protocol)) == ["response.create"]


def test_tool_output_after_response_done_asks_at_once() -> None:
    protocol = running("resp_1")
    feed(protocol, args_done("resp_1", "call_a"), done("resp_1", [call_item("call_a")]))
    assert sent(protocol) == []
    protocol.send_tool_result("call_a", {"ok": True})
    assert types(sent(protocol)) == ["conversation.item.create", "response.create"]


def test_several_calls_of_one_response_get_one_response_create_after_the_last_output() -> None:
    protocol = running("resp_1")
    feed(
        protocol,
        args_done("resp_1", "call_a"),
        args_done("resp_1", "call_b"),
        args_done("resp_1", "call_c"),
    )
    protocol.send_tool_result("call_b", {"n": 2})
    assert types(sent(protocol)) == ["conversation.item.create"]
    feed(protocol, done("resp_1", [call_item("call_a"), call_item("call_b"), call_item("call_c")]))
    assert sent(protocol) == []  # call_a and call_c have no output yet
    protocol.send_tool_result("call_a", {"n": 1})
    assert types(sent(protocol)) == ["conversation.item.create"]
    protocol.send_tool_result("call_c", {"n": 3})
    assert types(sent(protocol)) == ["conversation.item.create", "response.create"]


def test_all_outputs_before_done_still_one_response_create() -> None:
    protocol = running("resp_1")
    feed(protocol, args_done("resp_1", "call_a"), args_done("resp_1", "call_b"))
    protocol.send_tool_result("call_a", {})
    protocol.send_tool_result("call_b", {})
    assert types(sent(protocol)) == ["conversation.item.create", "conversation.item.create"]
    feed(protocol, done("resp_1"))
    assert types(sent(protocol)) == ["response.create"]
    feed(protocol, created("resp_2"), done("resp_2"))
    assert sent(protocol) == []


def test_a_tool_turn_waits_for_another_response_in_flight() -> None:
    protocol = running("resp_1")
    feed(protocol, args_done("resp_1", "call_a"), done("resp_1"))
    feed(protocol, created("resp_vad"))  # the user spoke: the service answers that first
    protocol.send_tool_result("call_a", {"ok": True})
    assert types(sent(protocol)) == ["conversation.item.create"]
    feed(protocol, done("resp_vad"))
    assert types(sent(protocol)) == ["response.create"]


def test_an_output_for_an_unknown_call_asks_for_a_response() -> None:
    protocol = OpenAIRealtimeProtocol()
    protocol.send_tool_result("call_from_before_recover", {"ok": True})
    assert types(sent(protocol)) == ["conversation.item.create", "response.create"]


def test_invalid_arguments_get_an_error_output_and_the_turn_rule() -> None:
    protocol = running("resp_1")
    feed(protocol, args_done("resp_1", "call_bad", '{"city": "Par'))
    assert [e for e in emitted(protocol) if isinstance(e, ToolCall)] == []
    (item,) = sent(protocol)
    output = json.loads(item["item"]["output"])
    assert output["success"] is False
    assert "not valid JSON" in output["error"]
    feed(protocol, done("resp_1"))
    assert types(sent(protocol)) == ["response.create"]


def test_tool_output_that_is_not_json_is_refused_before_sending() -> None:
    protocol = running("resp_1")
    feed(protocol, args_done("resp_1", "call_a"))
    with pytest.raises(CharivoValidationError):
        protocol.send_tool_result("call_a", {"when": object()})
    assert sent(protocol) == []


# ------------------------------------------------------------------ assistant audio


def test_audio_deltas_emit_started_exact_bytes_and_levels() -> None:
    protocol = running("resp_1")
    chunk_a = pcm(tone(480, 0.5))
    chunk_b = pcm(tone(960, 0.25))
    feed(
        protocol,
        audio_delta("resp_1", "item_a", chunk_a),
        audio_delta("resp_1", "item_a", chunk_b),
    )
    events = emitted(protocol)
    assert [e.type for e in events] == [
        "audio.output.started",
        "audio.output.delta",
        "audio.lipsync",
        "audio.output.delta",
        "audio.lipsync",
    ]
    deltas = [e for e in events if isinstance(e, AudioOutputDelta)]
    assert [d.audio for d in deltas] == [chunk_a, chunk_b]
    assert {d.item_id for d in deltas} == {"item_a"}
    levels = [e.rms for e in events if isinstance(e, AudioLipsync)]
    assert levels[0] == pytest.approx(exact_rms(tone(480, 0.5)), abs=1e-3)
    assert levels[1] == pytest.approx(exact_rms(tone(960, 0.25)), abs=1e-3)
    assert protocol.audio_received_ms("item_a") == (len(chunk_a) + len(chunk_b)) // 48


def test_audio_done_and_a_cancelled_response_end_audio_once() -> None:
    protocol = running("resp_1")
    feed(protocol, audio_delta("resp_1", "item_a", b"\x00\x00" * 240))
    emitted(protocol)
    feed(protocol, done("resp_1", status="cancelled", reason="turn_detected"))
    events = emitted(protocol)
    assert [e.type for e in events] == ["audio.output.ended", "assistant.response.completed"]
    completed = events[-1]
    assert isinstance(completed, AssistantResponseCompleted)
    assert (completed.status, completed.reason) == ("cancelled", "turn_detected")
    # output_audio.done first: no second AudioOutputEnded at response.done
    feed(protocol, created("resp_2"), audio_delta("resp_2", "item_b", b"\x00\x00"))
    feed(
        protocol,
        {
            "type": "response.output_audio.done",
            "response_id": "resp_2",
            "item_id": "item_b",
            "output_index": 0,
            "content_index": 0,
        },
        done("resp_2"),
    )
    assert [e.type for e in emitted(protocol)].count("audio.output.ended") == 1


def test_response_done_reports_text_usage_status_and_reason() -> None:
    protocol = running("resp_1")
    event = done("resp_1", [message_item("item_a", "Hello there", audio=True)])
    event["response"]["usage"] = {"total_tokens": 5, "input_tokens": 2, "output_tokens": 3}
    event["response"]["status"] = "incomplete"
    event["response"]["status_details"] = {"type": "incomplete", "reason": "max_output_tokens"}
    feed(protocol, event)
    (completed,) = emitted(protocol)
    assert isinstance(completed, AssistantResponseCompleted)
    assert completed.text == "Hello there"
    assert completed.usage == {"total_tokens": 5, "input_tokens": 2, "output_tokens": 3}
    assert (completed.status, completed.reason, completed.response_id) == (
        "incomplete",
        "max_output_tokens",
        "resp_1",
    )


def test_a_failed_response_is_an_error_with_the_service_fields() -> None:
    protocol = running("resp_1")
    event = done("resp_1", status="failed")
    event["response"]["status_details"] = {
        "type": "failed",
        "error": {"type": "server_error", "code": "overloaded", "message": "Model overloaded"},
    }
    feed(protocol, event)
    failure, completed = emitted(protocol)
    assert isinstance(failure, ErrorEvent) and isinstance(completed, AssistantResponseCompleted)
    assert isinstance(failure.error, CharivoProviderError)
    assert failure.error.message == "Model overloaded"
    assert (failure.error.provider_code, failure.error.provider_type) == (
        "overloaded",
        "server_error",
    )
    assert completed.status == "failed"


# ------------------------------------------------------------------ truncation


def test_truncate_clamps_to_the_audio_received() -> None:
    protocol = running("resp_1")
    feed(protocol, audio_delta("resp_1", "item_a", b"\x00" * 48 * 250))  # 250 ms of PCM16
    protocol.truncate_audio("item_a", 100)
    protocol.truncate_audio("item_a", 10_000)
    first, second = sent(protocol)
    assert first == {
        "type": "conversation.item.truncate",
        "item_id": "item_a",
        "content_index": 0,
        "audio_end_ms": 100,
        "event_id": first["event_id"],
    }
    assert second["audio_end_ms"] == 250


def test_truncate_of_an_unknown_item_raises_before_sending() -> None:
    protocol = running("resp_1")
    feed(protocol, audio_delta("resp_1", "item_a", b"\x00\x00"))
    for bad_item, bad_ms in (("item_nope", 10), ("item_a", -1), ("item_a", 1.5), ("item_a", True)):
        with pytest.raises(CharivoValidationError):
            protocol.truncate_audio(bad_item, bad_ms)  # type: ignore[arg-type]
    assert sent(protocol) == []


def test_g711_output_counts_eight_bytes_a_millisecond() -> None:
    protocol = OpenAIRealtimeProtocol()
    protocol.session_update(RealtimeSessionConfig(output_audio_format="g711_ulaw"))
    feed(protocol, session_updated(), created("resp_1"))
    feed(protocol, audio_delta("resp_1", "item_a", bytes(range(256)) * 4))  # 1024 bytes
    assert protocol.audio_received_ms("item_a") == 128
    levels = [e.rms for e in emitted(protocol) if isinstance(e, AudioLipsync)]
    samples = [ULAW_TO_LINEAR[b] for b in bytes(range(256)) * 4]
    assert levels == [pytest.approx(exact_rms(samples), abs=1e-3)]


# ------------------------------------------------------------------ input audio


def test_push_to_talk_commit_and_clear() -> None:
    protocol = OpenAIRealtimeProtocol()
    protocol.clear_audio()
    protocol.commit_audio()
    assert types(sent(protocol)) == [
        "input_audio_buffer.clear",
        "input_audio_buffer.commit",
        "response.create",
    ]
    feed(protocol, created("resp_1"))
    protocol.commit_audio()
    assert types(sent(protocol)) == ["input_audio_buffer.commit"]
    feed(protocol, done("resp_1"))
    assert types(sent(protocol)) == ["response.create"]


def test_send_audio_refuses_half_samples_before_sending() -> None:
    protocol = OpenAIRealtimeProtocol()
    with pytest.raises(CharivoValidationError, match="16-bit"):
        protocol.send_audio(b"\x00\x01\x02")
    with pytest.raises(CharivoValidationError):
        protocol.send_audio("not bytes")  # type: ignore[arg-type]
    assert sent(protocol) == []
    protocol.session_update(RealtimeSessionConfig(input_audio_format="g711_alaw"))
    sent(protocol)
    protocol.send_audio(b"\x00\x01\x02")  # one byte a sample: fine
    (append,) = sent(protocol)
    assert base64.b64decode(append["audio"]) == b"\x00\x01\x02"


def test_send_audio_splits_into_whole_sample_appends() -> None:
    protocol = OpenAIRealtimeProtocol(max_append_bytes=1000)
    audio = bytes(range(256)) * 10  # 2560 bytes
    protocol.send_audio(audio)
    appends = sent(protocol)
    chunks = [base64.b64decode(a["audio"]) for a in appends]
    assert [len(c) for c in chunks] == [1000, 1000, 560]
    assert b"".join(chunks) == audio
    assert len({a["event_id"] for a in appends}) == 3


def test_the_default_split_keeps_each_append_far_below_15_mib() -> None:
    protocol = OpenAIRealtimeProtocol()
    audio = b"\x01\x00" * (4 * 1024 * 1024)  # 8 MiB
    protocol.send_audio(audio)
    messages = protocol.data_to_send()
    assert len(messages) == 3
    assert all(len(m.text) < 15 * 1024 * 1024 for m in messages)
    assert MAX_APPEND_BYTES % 2 == 0
    assert b"".join(base64.b64decode(m.event["audio"]) for m in messages) == audio


# ------------------------------------------------------------------ other server events


def test_speech_transcription_and_rate_limit_events() -> None:
    protocol = OpenAIRealtimeProtocol()
    limits = [
        {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06},
        {"name": "tokens", "limit": 50000, "remaining": 49000, "reset_seconds": 1.2},
    ]
    feed(
        protocol,
        {"type": "input_audio_buffer.speech_started", "item_id": "item_u", "audio_start_ms": 120},
        {"type": "input_audio_buffer.speech_stopped", "item_id": "item_u", "audio_end_ms": 980},
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": "item_u",
            "content_index": 0,
            "delta": "Hel",
        },
        transcription_completed("item_u", "Hello"),
        {"type": "rate_limits.updated", "rate_limits": limits},
    )
    assert emitted(protocol) == [
        UserSpeechStarted(item_id="item_u", audio_start_ms=120),
        UserSpeechStopped(item_id="item_u", audio_end_ms=980),
        UserTranscriptDelta(text="Hel", item_id="item_u"),
        UserTranscript("Hello"),
        RateLimitsUpdated(limits=tuple(limits)),
    ]


def test_failed_transcription_is_a_provider_error() -> None:
    protocol = OpenAIRealtimeProtocol()
    feed(
        protocol,
        {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": "item_u",
            "content_index": 0,
            "error": {
                "type": "transcription_error",
                "code": "audio_unintelligible",
                "message": "The audio could not be transcribed.",
                "param": None,
            },
        },
    )
    (event,) = emitted(protocol)
    assert isinstance(event, ErrorEvent) and isinstance(event.error, CharivoProviderError)
    assert event.error.provider_code == "audio_unintelligible"
    assert event.error.provider_type == "transcription_error"


def test_errors_carry_the_service_code_type_and_param() -> None:
    protocol = OpenAIRealtimeProtocol()
    feed(protocol, error("invalid_value", "Bad voice", param="session.audio.output.voice"))
    (event,) = emitted(protocol)
    assert isinstance(event, ErrorEvent) and isinstance(event.error, CharivoProviderError)
    assert event.error.message == "Bad voice"
    assert event.error.code == "CHARIVO_PROVIDER_ERROR"
    assert (event.error.provider_code, event.error.provider_type, event.error.param) == (
        "invalid_value",
        "invalid_request_error",
        "session.audio.output.voice",
    )


def test_session_update_is_settled_in_order_and_a_rejection_names_its_call() -> None:
    protocol = OpenAIRealtimeProtocol()
    first = protocol.session_update(RealtimeSessionConfig(instructions="one"))
    second = protocol.session_update(RealtimeSessionConfig(instructions="two"))
    assert types(sent(protocol)) == ["session.update", "session.update"]
    feed(protocol, session_updated())
    assert protocol.settled_updates() == [(first, None)]
    feed(protocol, error("invalid_value", "No", about=second))
    ((event_id, failure),) = protocol.settled_updates()
    assert event_id == second
    assert isinstance(failure, CharivoProviderError) and failure.provider_code == "invalid_value"
    assert emitted(protocol) == []


def test_a_rejected_abandoned_update_becomes_an_error_event() -> None:
    protocol = OpenAIRealtimeProtocol()
    event_id = protocol.session_update(RealtimeSessionConfig())
    protocol.abandon_update(event_id)
    feed(protocol, error("invalid_value", "Too late", about=event_id))
    (event,) = emitted(protocol)
    assert isinstance(event, ErrorEvent)


def test_malformed_and_unknown_messages_are_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    protocol = OpenAIRealtimeProtocol()
    for text in (
        "{",
        "[1, 2]",
        '{"type": 3}',
        '{"type": "response.teleported"}',
        '{"type": "response.output_audio.delta", "delta": "!!not base64!!"}',
        '{"type": "rate_limits.updated", "rate_limits": [1]}',
        '{"type": "input_audio_buffer.committed"}',
    ):
        before = len(caplog.records)
        protocol.receive_text(text)
        assert len(caplog.records) == before + 1, text
    assert emitted(protocol) == []
    protocol.send_text("still working")
    assert types(sent(protocol)) == ["conversation.item.create", "response.create"]


# ------------------------------------------------------------------ history and replay


def conversation(protocol: OpenAIRealtimeProtocol) -> None:
    """A user text turn, a spoken turn, a tool turn and the answer."""
    protocol.send_text("Hi!")
    sent(protocol)
    feed(
        protocol,
        created("resp_1"),
        audio_delta("resp_1", "item_a1", b"\x00\x00" * 10),
        done("resp_1", [message_item("item_a1", "Hello! How can I help?", audio=True)]),
        committed("item_u1"),
        created("resp_2"),  # turn detection answers the spoken turn at once
        args_done("resp_2", "call_1"),
        transcription_completed("item_u1", "What's the weather?"),  # arrives late
        done("resp_2", [call_item("call_1", arguments='{"city": "Paris"}')]),
    )
    protocol.send_tool_result("call_1", {"temperature": 21})
    feed(
        protocol,
        created("resp_3"),
        text_delta("resp_3", "item_a3", "It is 21 degrees."),
        done("resp_3", [message_item("item_a3", "It is 21 degrees.")]),
    )
    emitted(protocol)
    sent(protocol)


def replayed(history: ConversationHistory) -> list[dict[str, Any]]:
    protocol = OpenAIRealtimeProtocol(history=history)
    count = protocol.replay()
    events = sent(protocol)
    assert count == len(events)
    assert set(types(events)) <= {"conversation.item.create"}
    return [event["item"] for event in events]


def test_replay_holds_text_transcripts_and_tool_turns_in_order_and_no_audio() -> None:
    history = ConversationHistory()
    conversation(OpenAIRealtimeProtocol(history=history))
    assert replayed(history) == [
        said("user", "Hi!"),
        said("assistant", "Hello! How can I help?"),
        said("user", "What's the weather?"),
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temperature": 21}'},
        said("assistant", "It is 21 degrees."),
    ]


def test_replay_is_bounded_and_never_splits_a_call_from_its_output() -> None:
    kinds = {
        4: ["message", "function_call", "function_call_output", "message"],
        3: ["function_call", "function_call_output", "message"],
        # the 2 most recent would be the output and the answer: without its call, the
        # output goes too
        2: ["message"],
        1: ["message"],
    }
    for bound, expected in kinds.items():
        history = ConversationHistory(max_items=bound)
        conversation(OpenAIRealtimeProtocol(history=history))
        items = replayed(history)
        assert [item["type"] for item in items] == expected, bound
        assert items[-1]["content"][0]["text"] == "It is 21 degrees."


def test_max_replay_items_zero_keeps_nothing() -> None:
    history = ConversationHistory(max_items=0)
    conversation(OpenAIRealtimeProtocol(history=history))
    assert replayed(history) == []
    with pytest.raises(CharivoValidationError):
        ConversationHistory(max_items=-1)


def test_a_truncated_assistant_item_keeps_only_what_was_heard() -> None:
    history = ConversationHistory()
    protocol = OpenAIRealtimeProtocol(history=history)
    feed(protocol, created("resp_1"))
    text = "one two three four five six seven eight"
    for word in text.split(" "):
        feed(protocol, text_delta("resp_1", "item_a", word + " "))
    feed(protocol, audio_delta("resp_1", "item_a", b"\x00" * 48 * 1000))  # 1 s
    protocol.interrupt()
    protocol.truncate_audio("item_a", 500)
    feed(protocol, done("resp_1", status="cancelled", reason="client_cancelled"))
    (item,) = replayed(history)
    heard = item["content"][0]["text"]
    assert text.startswith(heard)
    assert heard == "one two three four"  # half the audio, cut back to a whole word
    protocol.truncate_audio("item_a", 0)
    assert replayed(history) == []


def test_an_unanswered_call_is_replayed_and_an_output_without_its_call_is_not() -> None:
    history = ConversationHistory()
    protocol = running("resp_1", history=history)
    feed(protocol, args_done("resp_1", "call_x"))
    protocol.send_tool_result("call_unknown", {"ok": True})
    assert [item["type"] for item in replayed(history)] == ["function_call"]


def test_connect_style_clear_empties_the_history() -> None:
    history = ConversationHistory()
    conversation(OpenAIRealtimeProtocol(history=history))
    assert len(history) == 6
    history.clear()
    assert replayed(history) == []


# ------------------------------------------------------------------ session.update shape


def test_session_update_maps_the_voice_fields_to_the_ga_shape() -> None:
    config = RealtimeSessionConfig(
        voice="marin",
        turn_detection=TurnDetection(
            mode="server_vad", threshold=0.6, prefix_padding_ms=200, silence_duration_ms=400
        ),
        input_audio_format="g711_ulaw",
        output_audio_format="pcm16",
        output_modalities=("audio",),
        input_transcription_model="gpt-4o-transcribe",
    )
    event = build_session_update(config, event_id="evt_1", transcription_model="whisper-1")
    validate_client_event(event)
    assert event["session"] == {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-transcribe"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.6,
                    "prefix_padding_ms": 200,
                    "silence_duration_ms": 400,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
        },
    }


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            RealtimeSessionConfig(turn_detection=TurnDetection(mode="manual")),
            {"audio": {"input": {"turn_detection": None}}},
        ),
        (
            RealtimeSessionConfig(
                turn_detection=TurnDetection(
                    mode="semantic_vad", eagerness="low", create_response=False
                )
            ),
            {
                "audio": {
                    "input": {
                        "turn_detection": {
                            "type": "semantic_vad",
                            "eagerness": "low",
                            "create_response": False,
                            "interrupt_response": True,
                        }
                    }
                }
            },
        ),
        (
            RealtimeSessionConfig(output_audio_format="g711_alaw", output_modalities=("text",)),
            {
                "output_modalities": ["text"],
                "audio": {"output": {"format": {"type": "audio/pcma"}}},
            },
        ),
        (
            RealtimeSessionConfig(output_modalities=("text", "audio")),
            {"output_modalities": ["audio"]},  # the service cannot do both; audio has text
        ),
        (RealtimeSessionConfig(), {}),
    ],
)
def test_session_update_variants(config: RealtimeSessionConfig, expected: dict[str, Any]) -> None:
    event = build_session_update(config, event_id="evt_1")
    validate_client_event(event)
    assert event["session"] == {"type": "realtime", **expected}


def test_the_transport_transcription_model_applies_when_the_config_has_none() -> None:
    event = build_session_update(RealtimeSessionConfig(), transcription_model="whisper-1")
    validate_client_event(event)
    assert event["session"]["audio"] == {"input": {"transcription": {"model": "whisper-1"}}}


# ------------------------------------------------------------------ levels


@pytest.mark.parametrize("amplitude", [0.0, 0.01, 0.25, 0.5, 0.99])
@pytest.mark.parametrize("frequency", [100.0, 440.0, 3000.0])
def test_pcm16_rms_matches_the_exact_rms_of_tones(amplitude: float, frequency: float) -> None:
    samples = tone(2400, amplitude, frequency)
    assert pcm16_rms(pcm(samples)) == pytest.approx(exact_rms(samples), abs=1e-3)


def test_pcm16_rms_edges() -> None:
    assert pcm16_rms(b"") == 0.0
    assert pcm16_rms(b"\x00\x00" * 10) == 0.0
    full = pcm([32767, -32768])
    assert pcm16_rms(full * 10) == pytest.approx(1.0, abs=1e-4)
    assert pcm16_rms(full * 10 + b"\x7f") == pytest.approx(1.0, abs=1e-4)  # odd byte ignored


def test_g711_tables_decode_the_standard_values() -> None:
    assert (ULAW_TO_LINEAR[0x00], ULAW_TO_LINEAR[0x80]) == (-32124, 32124)
    assert (ULAW_TO_LINEAR[0x7F], ULAW_TO_LINEAR[0xFF]) == (0, 0)
    assert (ALAW_TO_LINEAR[0xD5], ALAW_TO_LINEAR[0x55]) == (8, -8)
    assert (ALAW_TO_LINEAR[0xAA], ALAW_TO_LINEAR[0x2A]) == (32256, -32256)
    assert g711_rms(b"") == 0.0
    assert g711_rms(b"\xff" * 100, "g711_ulaw") == 0.0


def test_g711_tables_agree_with_audioop_when_available() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    codes = bytes(range(256))
    for table, decode in ((ULAW_TO_LINEAR, audioop.ulaw2lin), (ALAW_TO_LINEAR, audioop.alaw2lin)):
        linear = array("h")
        linear.frombytes(decode(codes, 2))
        assert list(linear) == list(table)


@pytest.mark.parametrize("law", ["g711_ulaw", "g711_alaw"])
@pytest.mark.parametrize("amplitude", [0.05, 0.5, 0.9])
def test_g711_rms_matches_the_exact_rms_of_the_decoded_tone(law: str, amplitude: float) -> None:
    table = ULAW_TO_LINEAR if law == "g711_ulaw" else ALAW_TO_LINEAR
    # encode a tone by picking, for each sample, the code that decodes nearest to it
    by_value = sorted(range(256), key=table.__getitem__)
    values = [table[c] for c in by_value]
    codes = bytearray()
    for sample in tone(800, amplitude, 440.0, rate=8000):
        nearest = min(range(256), key=lambda i: abs(values[i] - sample))
        codes.append(by_value[nearest])
    decoded = [table[c] for c in codes]
    assert exact_rms(decoded) == pytest.approx(amplitude / math.sqrt(2), rel=0.05)
    assert g711_rms(bytes(codes), law) == pytest.approx(exact_rms(decoded), abs=1e-3)
