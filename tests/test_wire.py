"""charivo_fsm.wire: camelCase wire shapes, event parsing and config structuring."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charivo_fsm.errors import (
    CharivoError,
    CharivoProviderError,
    CharivoStateError,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
)
from charivo_fsm.events import (
    EVENT_TYPES,
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputDelta,
    AudioOutputEnded,
    AudioOutputStarted,
    ConnectionLost,
    ErrorEvent,
    RateLimitsUpdated,
    SessionEnded,
    SessionStarted,
    StateUpdate,
    ToolCall,
    ToolResult,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
    UserTranscriptDelta,
)
from charivo_fsm.model import (
    Character,
    CharacterVoice,
    ConnectionState,
    RealtimeSessionConfig,
    RealtimeState,
    RealtimeTool,
    ResponseState,
    ResponseStatus,
    SessionState,
    SessionStatus,
)
from charivo_fsm.payloads import (
    EMITTED_EVENTS,
    AssistantStartPayload,
    AudioDeltaPayload,
    EmptyPayload,
    ErrorPayload,
    LipsyncPayload,
    RateLimitsPayload,
    ReconnectAttemptPayload,
    ReconnectExhaustedPayload,
    ReconnectSuccessPayload,
    SessionBoundaryPayload,
    SpeechStartPayload,
    SpeechStopPayload,
    StatePayload,
    TextPayload,
    ToolCallPayload,
    ToolErrorPayload,
    ToolResultPayload,
    TranscriptDeltaPayload,
    UsagePayload,
)
from charivo_fsm.wire import (
    character_from_wire,
    config_from_wire,
    event_from_wire,
    structure_character,
    structure_config,
    to_wire,
)

WEATHER = RealtimeTool(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
CONFIG = RealtimeSessionConfig(
    provider="openai",
    transport="websocket",
    voice="alloy",
    model="gpt-realtime",
    instructions="Be brief.",
    temperature=0.7,
    max_tokens=256,
    tools=(WEATHER,),
    tool_choice="auto",
)
ACTIVE_STATE = RealtimeState(
    connection=ConnectionState.CONNECTED,
    session=SessionState(status=SessionStatus.ACTIVE, config=CONFIG, character_id="hiyori"),
    response=ResponseState(status=ResponseStatus.RESPONDING, text="Hel"),
    last_error=None,
)

# At least one instance of every transport event class.
EVENTS: list[Any] = [
    SessionStarted(),
    SessionEnded(),
    ConnectionLost(cause="offline"),
    ConnectionLost(cause="socket-closed", error=CharivoTransportError("socket closed")),
    UserTranscript(text="hello"),
    AssistantResponseStarted(),
    AssistantTextDelta(text="Hi"),
    AssistantResponseCompleted(),
    AssistantResponseCompleted(
        text="Hi there",
        usage={"total_tokens": 12, "input_token_details": {"cached": 0}},
        model="gpt-realtime",
        response_id="resp_1",
    ),
    AudioOutputStarted(),
    AudioOutputEnded(),
    AudioLipsync(rms=0.25),
    ToolCall(name="get_weather", args={"city": "Paris", "days": [1, 2]}, call_id="call_1"),
    ToolCall(name="get_weather", args={}, call_id=None),
    ToolResult(name="get_weather", output={"temp": 21.5, "ok": True, "note": None}, call_id="c"),
    StateUpdate(response_status=ResponseStatus.RESPONDING, response_text="partial"),
    StateUpdate(response_status=ResponseStatus.COMPLETED),
    StateUpdate(),
    ErrorEvent(error=CharivoProviderError("rate limited")),
    ErrorEvent(
        error=CharivoProviderError(
            "rate limited",
            provider_code="rate_limit_exceeded",
            provider_type="rate_limit_error",
            param="session.voice",
        )
    ),
    AssistantResponseCompleted(status="cancelled", reason="turn_detected", response_id="r2"),
    AudioOutputDelta(audio=b"\x00\x01\xff\x7f", item_id="item_1"),
    AudioOutputDelta(audio=b""),
    UserSpeechStarted(item_id="item_2", audio_start_ms=120),
    UserSpeechStopped(item_id="item_2", audio_end_ms=900),
    UserSpeechStarted(),
    UserTranscriptDelta(text="hel", item_id="item_2"),
    RateLimitsUpdated(limits=({"name": "requests", "limit": 100, "remaining": 99},)),
]

PAYLOADS: list[Any] = [
    StatePayload(ACTIVE_STATE),
    SessionBoundaryPayload(state=ACTIVE_STATE, reason="user"),
    AssistantStartPayload(state=ACTIVE_STATE),
    TextPayload(text="delta"),
    ToolCallPayload(name="get_weather", args={"city": "Paris"}, call_id="call_1"),
    ToolResultPayload(name="get_weather", output={"temp": 21}, call_id=None),
    ToolErrorPayload(name="get_weather", error=CharivoTimeoutError("too slow"), call_id="c"),
    UsagePayload(usage={"total_tokens": 3}, model=None, response_id="r", session_id="s"),
    ReconnectAttemptPayload(attempt=1, delay_ms=500, cause="offline"),
    ReconnectSuccessPayload(attempts=2, total_ms=1500, cause="offline"),
    ReconnectExhaustedPayload(
        attempts=5, total_ms=12500, cause="offline", last_error=CharivoTransportError("down")
    ),
    ErrorPayload(error=CharivoStateError("no session")),
    EmptyPayload(),
    LipsyncPayload(rms=0.5),
    AudioDeltaPayload(audio=b"\x01\x02", item_id="item_1"),
    SpeechStartPayload(item_id="item_2", audio_start_ms=0),
    SpeechStopPayload(item_id=None, audio_end_ms=None),
    TranscriptDeltaPayload(text="hel", item_id="item_2"),
    RateLimitsPayload(limits=({"name": "tokens", "limit": 1000},)),
]

OTHERS: list[Any] = [
    ACTIVE_STATE,
    RealtimeState(),
    ACTIVE_STATE.session,
    ACTIVE_STATE.response,
    CONFIG,
    RealtimeSessionConfig(),
    WEATHER,
    Character(id="hiyori", name="Hiyori", voice=CharacterVoice(voice_id="v1", rate=1.1)),
    CharacterVoice(voice_id="v1"),
    CharivoValidationError("bad"),
    KeyError("missing"),
]


def _same_error(a: object, b: object) -> bool:
    fields = ("provider_code", "provider_type", "param")
    return (
        type(a) is type(b)
        and str(a) == str(b)
        and all(getattr(a, f, None) == getattr(b, f, None) for f in fields)
    )


def test_bytes_travel_as_base64_and_provider_fields_as_camel_case() -> None:
    assert to_wire(AudioOutputDelta(audio=b"\x00\x01", item_id="i")) == {
        "type": "audio.output.delta",
        "audio": "AAE=",
        "itemId": "i",
    }
    assert to_wire(AudioDeltaPayload(audio=b"\xff", item_id=None)) == {
        "audio": "/w==",
        "itemId": None,
    }
    error = to_wire(CharivoProviderError("slow down", provider_code="rate_limit_exceeded"))
    assert error == {
        "name": "CharivoProviderError",
        "message": "slow down",
        "code": "CHARIVO_PROVIDER_ERROR",
        "providerCode": "rate_limit_exceeded",
        "providerType": None,
        "param": None,
    }
    message = _validation_message({"type": "audio.output.delta", "audio": "not base64!"})
    assert "audio" in message and "base64" in message


def _assert_events_equal(parsed: object, original: object) -> None:
    """Events compare by value; errors (compared by identity in Python) by class and message."""
    assert type(parsed) is type(original)
    if isinstance(original, (ErrorEvent, ConnectionLost)):
        assert isinstance(parsed, (ErrorEvent, ConnectionLost))
        if original.error is None:
            assert parsed.error is None
        else:
            assert _same_error(parsed.error, original.error)
        if isinstance(original, ConnectionLost):
            assert isinstance(parsed, ConnectionLost)
            assert parsed.cause == original.cause
    else:
        assert parsed == original


def _validation_message(data: object) -> str:
    with pytest.raises(CharivoValidationError) as info:
        event_from_wire(data)
    return info.value.message


# --------------------------------------------------------------------------
# to_wire / event_from_wire round trips
# --------------------------------------------------------------------------


def test_every_event_class_is_covered() -> None:
    assert {type(e) for e in EVENTS} == set(EVENT_TYPES.values())
    assert {type(p) for p in PAYLOADS} == set(EMITTED_EVENTS.values())


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trip(event: Any) -> None:
    wire = to_wire(event)
    assert next(iter(wire)) == "type"
    assert wire["type"] == type(event).type
    _assert_events_equal(event_from_wire(wire), event)
    # and through real JSON text
    _assert_events_equal(event_from_wire(json.loads(json.dumps(wire))), event)


@pytest.mark.parametrize("obj", EVENTS + PAYLOADS + OTHERS, ids=lambda o: type(o).__name__)
def test_every_wire_dict_is_json_dumpable(obj: Any) -> None:
    wire = to_wire(obj)
    assert isinstance(wire, dict)
    text = json.dumps(wire, allow_nan=False)
    assert json.loads(text) == wire  # only plain JSON types: nothing is lost by a dump/load


# --------------------------------------------------------------------------
# Exact wire shapes
# --------------------------------------------------------------------------


def test_tool_call_payload_shape() -> None:
    payload = ToolCallPayload(name="get_weather", args={"city": "Paris"}, call_id="call_1")
    wire = to_wire(payload)
    assert wire == {"name": "get_weather", "args": {"city": "Paris"}, "callId": "call_1"}


def test_tool_payloads_keep_null_call_id_and_copy_mappings() -> None:
    args = MappingProxyType({"nested": MappingProxyType({"list": (1, 2)})})
    wire = to_wire(ToolResultPayload(name="t", output=args, call_id=None))
    assert wire == {"name": "t", "output": {"nested": {"list": [1, 2]}}, "callId": None}
    assert type(wire["output"]) is dict
    assert type(wire["output"]["nested"]) is dict
    assert type(wire["output"]["nested"]["list"]) is list


def test_reconnect_payload_shapes() -> None:
    assert to_wire(ReconnectAttemptPayload(attempt=1, delay_ms=500, cause="offline")) == {
        "attempt": 1,
        "delayMs": 500,
        "cause": "offline",
    }
    assert to_wire(ReconnectSuccessPayload(attempts=2, total_ms=1500, cause="online")) == {
        "attempts": 2,
        "totalMs": 1500,
        "cause": "online",
    }
    exhausted = ReconnectExhaustedPayload(
        attempts=5, total_ms=12500, cause="offline", last_error=CharivoTransportError("down")
    )
    assert to_wire(exhausted) == {
        "attempts": 5,
        "totalMs": 12500,
        "cause": "offline",
        "lastError": {
            "name": "CharivoTransportError",
            "message": "down",
            "code": "CHARIVO_TRANSPORT_ERROR",
        },
    }


def test_usage_payload_shape() -> None:
    payload = UsagePayload(
        usage={"total_tokens": 12}, model="gpt-realtime", response_id=None, session_id="s-1"
    )
    assert to_wire(payload) == {
        "usage": {"total_tokens": 12},
        "model": "gpt-realtime",
        "responseId": None,
        "sessionId": "s-1",
    }


def test_error_payload_with_charivo_error() -> None:
    wire = to_wire(ErrorPayload(error=CharivoTransportError("socket closed")))
    assert wire == {
        "error": {
            "name": "CharivoTransportError",
            "message": "socket closed",
            "code": "CHARIVO_TRANSPORT_ERROR",
        }
    }


def test_error_payload_with_plain_exception_has_null_code() -> None:
    wire = to_wire(ErrorPayload(error=ValueError("bad value")))  # type: ignore[arg-type]
    assert wire == {"error": {"name": "ValueError", "message": "bad value", "code": None}}


def test_error_with_custom_code_and_to_wire_of_an_error() -> None:
    error = CharivoError("custom", code="MY_CODE")
    assert to_wire(error) == {"name": "CharivoError", "message": "custom", "code": "MY_CODE"}
    assert to_wire(RuntimeError("x")) == {"name": "RuntimeError", "message": "x", "code": None}


def test_realtime_state_shape() -> None:
    wire = to_wire(ACTIVE_STATE)
    assert wire == {
        "connection": "connected",
        "session": {
            "status": "active",
            "config": {
                "provider": "openai",
                "transport": "websocket",
                "voice": "alloy",
                "model": "gpt-realtime",
                "instructions": "Be brief.",
                "temperature": 0.7,
                "maxTokens": 256,
                "tools": [
                    {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                        "type": "function",
                    }
                ],
                "toolChoice": "auto",
                "turnDetection": None,
                "inputAudioFormat": None,
                "outputAudioFormat": None,
                "outputModalities": None,
                "inputTranscriptionModel": None,
            },
            "characterId": "hiyori",
        },
        "response": {"status": "responding", "text": "Hel"},
        "lastError": None,
    }
    # enums become plain strings, not StrEnum members
    assert type(wire["connection"]) is str
    assert type(wire["session"]["status"]) is str
    assert type(wire["response"]["status"]) is str


def test_realtime_state_with_last_error() -> None:
    state = RealtimeState(connection=ConnectionState.ERROR, last_error=CharivoTimeoutError("t"))
    wire = to_wire(state)
    assert wire["connection"] == "error"
    assert wire["session"] == {"status": "idle", "config": None, "characterId": None}
    assert wire["lastError"] == {
        "name": "CharivoTimeoutError",
        "message": "t",
        "code": "CHARIVO_TIMEOUT_ERROR",
    }


def test_state_payload_shape_including_lazy_state() -> None:
    assert to_wire(StatePayload(ACTIVE_STATE)) == {"state": to_wire(ACTIVE_STATE)}
    assert to_wire(StatePayload(lambda: RealtimeState())) == {"state": to_wire(RealtimeState())}


def test_session_boundary_payload_shape() -> None:
    wire = to_wire(SessionBoundaryPayload(state=RealtimeState(), reason="remote"))
    assert wire == {"state": to_wire(RealtimeState()), "reason": "remote"}


def test_empty_and_simple_payloads() -> None:
    assert to_wire(EmptyPayload()) == {}
    assert to_wire(LipsyncPayload(rms=0.5)) == {"rms": 0.5}
    assert to_wire(TextPayload(text="hi")) == {"text": "hi"}


def test_state_update_nested_shape() -> None:
    full = StateUpdate(response_status=ResponseStatus.RESPONDING, response_text="x")
    assert to_wire(full) == {
        "type": "state",
        "state": {"response": {"status": "responding", "text": "x"}},
    }
    only_status = StateUpdate(response_status=ResponseStatus.INTERRUPTED)
    assert to_wire(only_status) == {
        "type": "state",
        "state": {"response": {"status": "interrupted"}},
    }
    only_text = StateUpdate(response_text="")
    assert to_wire(only_text) == {"type": "state", "state": {"response": {"text": ""}}}


def test_state_update_from_wire() -> None:
    event = event_from_wire(
        {"type": "state", "state": {"response": {"status": "responding", "text": "x"}}}
    )
    assert event == StateUpdate(response_status=ResponseStatus.RESPONDING, response_text="x")
    assert isinstance(event, StateUpdate)
    assert event.response_status is ResponseStatus.RESPONDING
    assert event_from_wire({"type": "state", "state": {}}) == StateUpdate()


def test_event_shapes() -> None:
    assert to_wire(ConnectionLost(cause="offline")) == {
        "type": "connection.lost",
        "cause": "offline",
        "error": None,
    }
    assert to_wire(AssistantResponseCompleted(text="t", response_id="r")) == {
        "type": "assistant.response.completed",
        "text": "t",
        "usage": None,
        "model": None,
        "responseId": "r",
        "status": "completed",
        "reason": None,
    }
    assert to_wire(ErrorEvent(error=OSError("io"))) == {
        "type": "error",
        "error": {"name": "OSError", "message": "io", "code": None},
    }
    assert to_wire(SessionStarted()) == {"type": "session.started"}


def test_character_shape() -> None:
    character = Character(
        id="hiyori", name="Hiyori", voice=CharacterVoice(voice_id="v1", rate=1.1, volume=0.5)
    )
    assert to_wire(character) == {
        "id": "hiyori",
        "name": "Hiyori",
        "description": None,
        "personality": None,
        "avatar": None,
        "voice": {"voiceId": "v1", "rate": 1.1, "pitch": None, "volume": 0.5},
    }


# --------------------------------------------------------------------------
# to_wire failures
# --------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [object(), {"a": 1}, "text", 3, None, [1]])
def test_to_wire_rejects_unsupported_objects(obj: object) -> None:
    with pytest.raises(CharivoValidationError, match="unsupported object"):
        to_wire(obj)


def test_to_wire_rejects_non_json_values_naming_the_path() -> None:
    payload = ToolResultPayload(name="t", output={"data": [1, {"bad": {1, 2}}]}, call_id=None)
    with pytest.raises(CharivoValidationError, match=r"output\.data\[1\]\.bad"):
        to_wire(payload)
    with pytest.raises(CharivoValidationError, match="str keys"):
        to_wire(ToolCallPayload(name="t", args={1: "x"}, call_id=None))  # type: ignore[dict-item]


def test_to_wire_rejects_cycles_with_validation_error() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(CharivoValidationError, match="usage"):
        to_wire(UsagePayload(usage=cyclic, model=None, response_id=None, session_id=None))


# --------------------------------------------------------------------------
# event_from_wire: errors on the wire
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [
        CharivoError,
        CharivoStateError,
        CharivoTimeoutError,
        CharivoTransportError,
        CharivoProviderError,
        CharivoValidationError,
    ],
)
def test_wire_errors_of_charivo_classes_keep_their_class(cls: type[CharivoError]) -> None:
    error = cls("boom")
    event = event_from_wire(to_wire(ErrorEvent(error=error)))
    assert isinstance(event, ErrorEvent)
    assert type(event.error) is cls
    assert isinstance(event.error, CharivoError)
    assert event.error.message == "boom"
    assert event.error.code == error.code


def test_wire_error_of_unknown_class_becomes_charivo_error() -> None:
    event = event_from_wire(
        {"type": "error", "error": {"name": "ValueError", "message": "bad", "code": None}}
    )
    assert isinstance(event, ErrorEvent)
    assert type(event.error) is CharivoError
    assert event.error.message == "bad"
    assert event.error.code == "CHARIVO_ERROR"

    coded = event_from_wire(
        {"type": "connection.lost", "cause": "x", "error": {"message": "m", "code": "E_X"}}
    )
    assert isinstance(coded, ConnectionLost)
    assert type(coded.error) is CharivoError
    assert coded.error.code == "E_X"


def test_wire_error_as_string() -> None:
    event = event_from_wire({"type": "error", "error": "plain message"})
    assert isinstance(event, ErrorEvent)
    assert type(event.error) is CharivoError
    assert str(event.error) == "plain message"


def test_fixed_code_class_ignores_a_foreign_code() -> None:
    event = event_from_wire(
        {"type": "error", "error": {"name": "CharivoStateError", "message": "m", "code": "X"}}
    )
    assert isinstance(event, ErrorEvent)
    assert type(event.error) is CharivoStateError
    assert event.error.code == "CHARIVO_STATE_ERROR"


def test_event_from_wire_accepts_any_mapping_and_copies_it() -> None:
    args = {"city": "Paris", "nested": {"k": [1]}}
    event = event_from_wire(
        MappingProxyType({"type": "tool.call", "name": "n", "args": args, "callId": "c"})
    )
    assert event == ToolCall(name="n", args=args, call_id="c")
    assert isinstance(event, ToolCall)
    args["nested"]["k"].append(2)
    assert event.args == {"city": "Paris", "nested": {"k": [1]}}


def test_lipsync_accepts_int_as_number() -> None:
    event = event_from_wire({"type": "audio.lipsync", "rms": 1})
    assert isinstance(event, AudioLipsync)
    assert event.rms == 1.0
    assert type(event.rms) is float


# --------------------------------------------------------------------------
# event_from_wire: malformed input
# --------------------------------------------------------------------------

MALFORMED: list[tuple[str, object, list[str]]] = [
    ("not a mapping", ["type", "session.started"], ["mapping", "list"]),
    ("none", None, ["mapping"]),
    ("missing type", {"text": "x"}, ['"type"']),
    ("type not str", {"type": 3}, ['"type"', "str"]),
    ("unknown type", {"type": "nope.nope"}, ["unknown type", "nope.nope"]),
    ("missing field", {"type": "user.transcript"}, ['"text"', "missing"]),
    ("text not str", {"type": "user.transcript", "text": 5}, ['field "text" must be str']),
    ("rms bool", {"type": "audio.lipsync", "rms": True}, ['"rms"', "number"]),
    ("rms str", {"type": "audio.lipsync", "rms": "0.5"}, ['"rms"', "number"]),
    ("rms nan", {"type": "audio.lipsync", "rms": math.nan}, ['"rms"', "finite"]),
    ("rms inf", {"type": "audio.lipsync", "rms": math.inf}, ['"rms"', "finite"]),
    ("rms huge int", {"type": "audio.lipsync", "rms": 10**400}, ['"rms"', "finite"]),
    ("args list", {"type": "tool.call", "name": "n", "args": []}, ['"args"', "mapping"]),
    ("args str", {"type": "tool.call", "name": "n", "args": "{}"}, ['"args"', "mapping"]),
    (
        "callId int",
        {"type": "tool.call", "name": "n", "args": {}, "callId": 7},
        ['event "tool.call": field "callId" must be str or null'],
    ),
    ("output none", {"type": "tool.result", "name": "n", "output": None}, ['"output"']),
    (
        "usage list",
        {"type": "assistant.response.completed", "usage": [1]},
        ['"usage"', "mapping"],
    ),
    (
        "snake case key",
        {"type": "tool.call", "name": "n", "args": {}, "call_id": "c"},
        ['unknown field "call_id"'],
    ),
    ("extra key", {"type": "session.started", "foo": 1}, ['unknown field "foo"']),
    ("non-str extra key", {"type": "session.ended", 5: 1}, ['unknown field "5"']),
    (
        "non-str key in args",
        {"type": "tool.call", "name": "n", "args": {"a": {1: "x"}}},
        ['"args.a"', "str keys"],
    ),
    (
        "non-json value in args",
        {"type": "tool.call", "name": "n", "args": {"a": [object()]}},
        ['"args.a[0]"', "JSON"],
    ),
    ("cause missing", {"type": "connection.lost"}, ['"cause"']),
    ("error missing", {"type": "error"}, ['"error"']),
    ("error int", {"type": "error", "error": 3}, ['"error"']),
    ("error without message", {"type": "error", "error": {"name": "X"}}, ['"error.message"']),
    (
        "error message not str",
        {"type": "error", "error": {"message": 1}},
        ['"error.message"', "str"],
    ),
    (
        "error extra key",
        {"type": "error", "error": {"message": "m", "stack": "..."}},
        ['"error.stack"'],
    ),
    ("state missing", {"type": "state"}, ['"state"']),
    ("state not mapping", {"type": "state", "state": "x"}, ['"state"', "mapping"]),
    (
        "bad response status",
        {"type": "state", "state": {"response": {"status": "thinking"}}},
        ['"state.response.status"', "responding"],
    ),
    (
        "response text not str",
        {"type": "state", "state": {"response": {"text": 1}}},
        ['"state.response.text"'],
    ),
    (
        "unknown response key",
        {"type": "state", "state": {"response": {"status": "idle", "extra": 1}}},
        ['"state.response.extra"'],
    ),
    (
        "D9 connection",
        {"type": "state", "state": {"connection": "connected"}},
        ['"state.connection"', "transport"],
    ),
    (
        "D9 session",
        {"type": "state", "state": {"session": {"status": "active"}, "response": {}}},
        ['"state.session"'],
    ),
    (
        "D9 lastError",
        {"type": "state", "state": {"lastError": None}},
        ['"state.lastError"'],
    ),
]


@pytest.mark.parametrize(
    ("data", "fragments"), [(d, f) for _, d, f in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_events_raise_validation_error_naming_the_field(
    data: object, fragments: list[str]
) -> None:
    message = _validation_message(data)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_all_problems_are_reported_and_bounded() -> None:
    message = _validation_message({"type": "tool.call", "name": 1, "args": 2, "callId": 3})
    assert '"name"' in message and '"args"' in message and '"callId"' in message
    many = {"type": "session.started", **{f"k{i}": i for i in range(1000)}}
    message = _validation_message(many)
    assert "more problem" in message
    assert len(message) < 1000


def test_deeply_nested_input_is_rejected_cleanly() -> None:
    nested: dict[str, Any] = {}
    cursor = nested
    for _ in range(50_000):
        cursor["a"] = {}
        cursor = cursor["a"]
    message = _validation_message({"type": "tool.call", "name": "n", "args": nested})
    assert "args" in message and "deep" in message
    assert len(message) < 500

    deep_list: list[Any] = []
    items = deep_list
    for _ in range(50_000):
        items.append([])
        items = items[0]
    message = _validation_message({"type": "tool.result", "name": "n", "output": {"x": deep_list}})
    assert "output.x" in message


def test_moderately_nested_input_is_accepted() -> None:
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(100):
        nested = {"a": nested}
    event = event_from_wire({"type": "tool.call", "name": "n", "args": nested})
    assert isinstance(event, ToolCall)
    assert event.args == nested


def test_huge_input_is_accepted() -> None:
    args = {"items": list(range(200_000)), "text": "x" * 1_000_000}
    event = event_from_wire({"type": "tool.call", "name": "n", "args": args})
    assert isinstance(event, ToolCall)
    assert event.args == args


class _BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("broken")

    def __iter__(self) -> Any:
        raise RuntimeError("broken")

    def __len__(self) -> int:
        return 1

    def __contains__(self, key: object) -> bool:
        raise RuntimeError("broken")


def test_misbehaving_mapping_still_raises_validation_error() -> None:
    with pytest.raises(CharivoValidationError):
        event_from_wire(_BrokenMapping())


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from([*sorted(EVENT_TYPES), "text", "name", "args", "callId", "rms", "state"])
)
WIRE_KEYS = "type text name args output callId rms cause error state response status message"
WIRE_KEYS += " code usage x"
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(WIRE_KEYS.split()) | st.text(max_size=4) | st.integers(),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)
EVENTISH = st.builds(
    lambda kind, body: {"type": kind, **body} if isinstance(body, dict) else body,
    st.sampled_from(sorted(EVENT_TYPES)),
    JSON_VALUES,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON_VALUES, EVENTISH))
def test_arbitrary_json_like_input_only_raises_validation_error(data: object) -> None:
    try:
        event = event_from_wire(data)
    except CharivoValidationError as error:
        assert error.message.startswith("event")
    else:
        assert type(event) in EVENT_TYPES.values()
        json.dumps(to_wire(event))


# --------------------------------------------------------------------------
# structure_config / structure_character / config_from_wire
# --------------------------------------------------------------------------


def test_structure_config_passes_objects_and_none_through() -> None:
    assert structure_config(CONFIG) is CONFIG
    assert structure_config(None) is None
    assert structure_config({}) == RealtimeSessionConfig()


def test_structure_config_from_snake_case_mapping() -> None:
    config = structure_config(
        {
            "provider": "openai",
            "transport": "websocket",
            "voice": "alloy",
            "model": "gpt-realtime",
            "instructions": "Be brief.",
            "temperature": 0.7,
            "max_tokens": 256,
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ],
            "tool_choice": "auto",
        }
    )
    assert config == CONFIG
    assert isinstance(config.tools, tuple)


def test_structure_config_nested_tools_mix_objects_and_mappings() -> None:
    config = structure_config(
        {"tools": (WEATHER, {"name": "noop"}, {"name": "t", "type": "function"})}
    )
    assert config.tools == (
        WEATHER,
        RealtimeTool(name="noop"),
        RealtimeTool(name="t"),
    )
    assert config.tools is not None
    assert config.tools[0] is WEATHER
    assert config.tools[1].parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ({"voicee": "alloy"}, ['config: unknown key "voicee"']),
        ({"maxTokens": 3}, ['unknown key "maxTokens"']),
        ({"temperature": "hot"}, ['config: "temperature" must be a number']),
        ({"temperature": True}, ['"temperature"', "number"]),
        ({"temperature": math.nan}, ['"temperature"', "finite"]),
        ({"max_tokens": False}, ['"max_tokens"', "integer"]),
        ({"max_tokens": 1.5}, ['"max_tokens"', "integer"]),
        ({"max_tokens": "10"}, ['"max_tokens"']),
        ({"voice": 1}, ['"voice" must be str']),
        ({"transport": "pigeon"}, ['"transport"', "webrtc", "websocket"]),
        ({"tool_choice": "sometimes"}, ['"tool_choice"', "required"]),
        ({"tools": "get_weather"}, ['"tools"', "list"]),
        ({"tools": {"name": "x"}}, ['"tools"', "list"]),
        ({"tools": [5]}, ['"tools[0]"', "mapping"]),
        ({"tools": [{"description": "no name"}]}, ['"tools[0].name"']),
        ({"tools": [WEATHER, {"name": 3}]}, ['"tools[1].name"', "str"]),
        ({"tools": [{"name": ""}]}, ['"tools[0]"', "non-empty"]),
        ({"tools": [{"name": "t", "parameters": []}]}, ['"tools[0].parameters"', "mapping"]),
        ({"tools": [{"name": "t", "type": "mcp"}]}, ['"tools[0].type"', "function"]),
        ({"tools": [{"name": "t", "strict": True}]}, ['unknown key "tools[0].strict"']),
        (["provider"], ["mapping", "list"]),
        ("openai", ["mapping", "str"]),
        ({1: "x"}, ["unknown key"]),
    ],
)
def test_structure_config_rejects_bad_input(value: Any, fragments: list[str]) -> None:
    with pytest.raises(CharivoValidationError) as info:
        structure_config(value)
    for fragment in fragments:
        assert fragment in info.value.message, (fragment, info.value.message)
    assert info.value.message.startswith("config")


def test_structure_character() -> None:
    character = Character(
        id="hiyori", name="Hiyori", voice=CharacterVoice(voice_id="v1", rate=1.2, pitch=0.9)
    )
    assert structure_character(character) is character
    assert structure_character(None) is None
    assert (
        structure_character(
            {
                "id": "hiyori",
                "name": "Hiyori",
                "voice": {"voice_id": "v1", "rate": 1.2, "pitch": 0.9},
            }
        )
        == character
    )
    voice = CharacterVoice(voice_id="v2")
    assert structure_character({"voice": voice}).voice is voice


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ({"nickname": "x"}, ['character: unknown key "nickname"']),
        ({"name": 3}, ['"name" must be str']),
        ({"voice": "alloy"}, ['"voice"', "mapping"]),
        ({"voice": {"voiceId": "v"}}, ['unknown key "voice.voiceId"']),
        ({"voice": {"rate": True}}, ['"voice.rate"', "number"]),
        (42, ["mapping", "int"]),
    ],
)
def test_structure_character_rejects_bad_input(value: Any, fragments: list[str]) -> None:
    with pytest.raises(CharivoValidationError) as info:
        structure_character(value)
    for fragment in fragments:
        assert fragment in info.value.message, (fragment, info.value.message)


@pytest.mark.parametrize(
    "config",
    [CONFIG, RealtimeSessionConfig(), RealtimeSessionConfig(max_tokens=5, tool_choice="none")],
)
def test_config_from_wire_is_the_inverse_of_to_wire(config: RealtimeSessionConfig) -> None:
    assert config_from_wire(to_wire(config)) == config
    assert config_from_wire(json.loads(json.dumps(to_wire(config)))) == config


def test_config_from_wire_uses_camel_case_keys() -> None:
    config = config_from_wire({"maxTokens": 10, "toolChoice": "required"})
    assert config == RealtimeSessionConfig(max_tokens=10, tool_choice="required")
    with pytest.raises(CharivoValidationError, match='unknown key "max_tokens"'):
        config_from_wire({"max_tokens": 10})
    with pytest.raises(CharivoValidationError, match='"maxTokens" must be an integer'):
        config_from_wire({"maxTokens": True})
    with pytest.raises(CharivoValidationError, match="mapping"):
        config_from_wire(None)


def test_character_from_wire_is_the_inverse_of_to_wire() -> None:
    character = Character(id="a", avatar="a.png", voice=CharacterVoice(voice_id="v", volume=0.3))
    assert character_from_wire(to_wire(character)) == character
    with pytest.raises(CharivoValidationError, match=r'unknown key "voice\.voice_id"'):
        character_from_wire({"voice": {"voice_id": "v"}})
