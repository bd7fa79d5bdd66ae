"""The embedded local realtime server behaves like the real service (GA interface).

Two layers, tested apart from our transport:

* the rules (:class:`~charivo_fsm.testing.service_rules.ServiceSession`), driven
  directly with client events, no sockets: every event they produce is
  validated against the ``openai`` SDK's server models, every client event a
  test sends (unless marked invalid) against the client models;
* the server over real sockets, through a raw WebSocket client built on
  :func:`~charivo_fsm.transports._websocket.client_handshake`, on asyncio and on
  trio with real clocks (conftest validates all its traffic after each test).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from charivo_fsm.testing import AudioFormat, LocalRealtimeServer, silence, speech
from charivo_fsm.testing.audio import (
    CHUNK_MS,
    alaw_decode,
    alaw_encode,
    frame_levels,
    ulaw_decode,
    ulaw_encode,
    voice_chunks,
)
from charivo_fsm.testing.service_rules import Script, ServiceSession, ToolTrigger
from charivo_fsm.transports._websocket import WebSocket, WebSocketError, client_handshake
from tests.sdk_validation import validate_client_event, validate_server_event

KEY = "sk-local-server-test-key"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def of(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == event_type]


def audio(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def said(events: list[dict[str, Any]]) -> str:
    """What the last response in ``events`` said (text or transcript)."""
    done = of(events, "response.done")[-1]["response"]
    message = [item for item in done["output"] if item["type"] == "message"][-1]
    part = message["content"][0]
    return str(part.get("text") or part.get("transcript") or "")


class Service:
    """Drives one :class:`ServiceSession`, validating what goes in and out."""

    def __init__(self, **script: Any) -> None:
        self.rules = ServiceSession(Script(**script))
        self.log: list[dict[str, Any]] = []
        self._count = 0
        self._record(self.rules.opening())

    def _record(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for event in events:
            validate_server_event(event)
        self.log += events
        return events

    def send(self, event_type: str, *, valid: bool = True, **fields: Any) -> list[dict[str, Any]]:
        self._count += 1
        client_event = {"type": event_type, "event_id": f"evt_{self._count}", **fields}
        if valid:
            validate_client_event(client_event)
        return self._record(self.rules.handle(client_event))

    def step(self) -> list[dict[str, Any]]:
        assert self.rules.response is not None
        events, _pause = self.rules.response.step()
        return self._record(events)

    def drain(self) -> list[dict[str, Any]]:
        """Run the active response to its end."""
        events: list[dict[str, Any]] = []
        while self.rules.response is not None:
            events += self.step()
        return events

    def update(self, *, valid: bool = True, **session: Any) -> list[dict[str, Any]]:
        return self.send("session.update", valid=valid, session={"type": "realtime", **session})

    def start(self, text: str, steps: int) -> None:
        """A user message and a response that has gone ``steps`` steps."""
        self.send("conversation.item.create", item=user(text))
        self.send("response.create")
        for _ in range(steps):
            self.step()

    def ask(self, text: str) -> list[dict[str, Any]]:
        """A user message and a response, run to its end."""
        self.send("conversation.item.create", item=user(text))
        return self.send("response.create") + self.drain()

    def error(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        assert types(events) == ["error"], types(events)
        error: dict[str, Any] = events[0]["error"]
        assert error["type"] == "invalid_request_error"
        assert error["event_id"] == f"evt_{self._count}"
        return error


def vad(**settings: Any) -> dict[str, Any]:
    return {"input": {"turn_detection": {"type": "server_vad", **settings}}}


# ------------------------------------------------------------------ messages validate


def test_every_output_item_has_ids_and_indexes_and_audio_done_names_its_item() -> None:
    service = Service(audio=True)
    events = service.ask("hello there")
    added = of(events, "response.output_item.added")[0]
    item_id, response_id = added["item"]["id"], added["response_id"]
    assert item_id.startswith("item_") and response_id.startswith("resp_")
    located = [e for e in events if "content_index" in e and e["type"].startswith("response.")]
    assert {e["type"] for e in located} >= {
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
    }
    for event in located:
        assert (event["item_id"], event["output_index"], event["content_index"]) == (item_id, 0, 0)
        assert event["response_id"] == response_id
    assert types(events)[-4:] == [
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "rate_limits.updated",
    ]
    tokens = events[-1]["rate_limits"][1]
    assert tokens["remaining"] == tokens["limit"] - events[-2]["response"]["usage"]["total_tokens"]
    assert len({e["event_id"] for e in service.log}) == len(service.log)


def test_the_session_shows_the_services_defaults() -> None:
    session = Service().log[0]["session"]
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["output_modalities"] == ["text"]
    assert Service(audio=True).log[0]["session"]["output_modalities"] == ["audio"]


# ------------------------------------------------------------------ responses


def test_response_create_while_a_response_is_active_is_refused() -> None:
    service = Service()
    service.send("conversation.item.create", item=user("hi"))
    created = service.send("response.create")
    active = created[0]["response"]["id"]
    error = service.error(service.send("response.create"))
    assert error["code"] == "conversation_already_has_active_response"
    assert error["message"] == (
        f"Conversation already has an active response in progress: {active}. "
        "Wait until the response is finished before creating a new one."
    )
    service.drain()
    assert len(of(service.log, "response.created")) == 1
    assert len(of(service.log, "response.done")) == 1
    service.send("response.create")  # accepted once the first one is done
    assert len(of(service.log, "response.created")) == 2


def test_response_cancel_without_an_active_response_is_refused() -> None:
    service = Service()
    error = service.error(service.send("response.cancel"))
    assert error["code"] == "response_cancel_not_active"
    assert error["message"] == "Cancellation failed: no active response found"


def test_response_cancel_closes_the_open_item_and_keeps_it_incomplete() -> None:
    service = Service(audio=True)
    service.start("tell me a long story now", 4)
    closing = service.send("response.cancel")
    assert types(closing) == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "rate_limits.updated",
    ]
    done = closing[-2]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    stored = service.rules.items[-1]
    assert stored["status"] == "incomplete"
    assert service.rules.audio_of(stored["id"]) == 40 * len(
        of(service.log, "response.output_audio.delta")
    )
    assert service.rules.response is None
    error = service.error(service.send("response.cancel"))
    assert error["code"] == "response_cancel_not_active"


def test_output_modalities_decide_audio_or_text() -> None:
    text = Service().ask("hi")
    assert of(text, "response.output_audio.delta") == []
    assert said(text) == "You said: hi"
    service = Service()
    service.update(output_modalities=["audio"])
    spoken = service.ask("hi")
    assert of(spoken, "response.output_text.delta") == []
    assert [e["delta"] for e in of(spoken, "response.output_audio_transcript.delta")] == [
        "You ",
        "said: ",
        "hi",
    ]
    chunks = [base64.b64decode(e["delta"]) for e in of(spoken, "response.output_audio.delta")]
    assert all(len(chunk) == CHUNK_MS * 48 for chunk in chunks)
    assert b"".join(chunks) == b"".join(
        b"".join(voice_chunks(word)) for word in ("You ", "said: ", "hi")
    )
    # one response in text, asked for
    service.send("conversation.item.create", item=user("again"))
    service.send("response.create", response={"output_modalities": ["text"]})
    assert of(service.drain(), "response.output_audio.delta") == []
    error = service.error(service.update(output_modalities=["audio", "text"]))
    assert error["code"] == "invalid_value" and error["param"] == "session.output_modalities"


def test_more_words_than_max_output_tokens_end_the_response_incomplete() -> None:
    service = Service(reply=lambda text: "one two three four five")
    service.update(max_output_tokens=3)
    events = service.ask("count")
    done = of(events, "response.done")[0]["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert said(events) == "one two three "
    assert done["usage"]["output_tokens"] == 3


def test_audio_output_follows_the_sessions_output_format() -> None:
    service = Service(audio=True)
    service.update(audio={"output": {"format": {"type": "audio/pcma"}}})
    events = service.ask("hi")
    chunks = [base64.b64decode(e["delta"]) for e in of(events, "response.output_audio.delta")]
    assert chunks and all(len(chunk) == CHUNK_MS * 8 for chunk in chunks)
    fmt = AudioFormat("audio/pcma")
    assert max(level for chunk in chunks for level in frame_levels(chunk, fmt)) > 0.1


# ------------------------------------------------------------------ tools


def test_a_tool_call_completes_its_response_and_the_output_is_answered() -> None:
    service = Service()
    service.update(tools=[WEATHER_TOOL])
    service.send("conversation.item.create", item=user("what's the weather?"))
    service.send("response.create")
    events: list[dict[str, Any]] = []
    while not of(events, "response.function_call_arguments.done"):
        events += service.step()
    done = of(events, "response.function_call_arguments.done")[0]
    assert (done["name"], json.loads(done["arguments"])) == ("get_weather", {"city": "Paris"})
    # The response is still active until its response.done: a result sent now is early.
    service.send(
        "conversation.item.create",
        item={"type": "function_call_output", "call_id": done["call_id"], "output": '{"t": 21}'},
    )
    refused = service.error(service.send("response.create"))
    assert refused["code"] == "conversation_already_has_active_response"
    rest = service.drain()
    assert types(rest) == [
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "rate_limits.updated",
    ]
    response = rest[-2]["response"]
    assert response["status"] == "completed"
    assert response["output"][0]["type"] == "function_call"
    assert response["output"][0]["call_id"] == done["call_id"]
    answer = service.send("response.create") + service.drain()
    assert said(answer) == 'get_weather says: {"t": 21}'


def test_tool_triggers_need_a_declared_tool_and_tool_choice_not_none() -> None:
    service = Service()
    assert said(service.ask("weather?")) == "You said: weather?"
    service.update(tools=[WEATHER_TOOL], tool_choice="none")
    assert said(service.ask("weather?")) == "You said: weather?"


def test_bad_tool_arguments_are_not_json() -> None:
    service = Service(bad_tool_arguments=1)
    service.update(tools=[WEATHER_TOOL])
    events = service.ask("weather")
    arguments = of(events, "response.function_call_arguments.done")[0]["arguments"]
    with pytest.raises(ValueError):
        json.loads(arguments)
    assert service.rules.script.bad_tool_arguments == 0


def test_a_function_call_output_must_name_a_call_in_the_conversation() -> None:
    service = Service()
    item = {"type": "function_call_output", "call_id": "call_nowhere", "output": "{}"}
    error = service.error(service.send("conversation.item.create", item=item))
    assert error["code"] == "invalid_tool_call_id"
    assert error["message"] == "Tool call ID 'call_nowhere' not found in conversation."


# ------------------------------------------------------------------ conversation memory


def test_the_reply_quotes_the_earliest_user_message_of_this_connection() -> None:
    service = Service()
    service.ask("My name is Ada")
    service.ask("The sea is calm")
    events = service.ask("What did I say first?")
    assert said(events) == 'You first said: "My name is Ada".'
    fresh = Service()  # a reconnect without replay: a new, empty conversation
    assert said(fresh.ask("Do you remember my name?")) == (
        "I don't remember anything you said before this."
    )


def test_two_user_messages_before_one_response_are_both_answered() -> None:
    service = Service()
    service.send("conversation.item.create", item=user("Hello there."))
    service.send("conversation.item.create", item=user("How are you?"))
    events = service.send("response.create") + service.drain()
    assert said(events) == "You said: Hello there. How are you?"
    # the next turn is only what came after the model spoke
    assert said(service.ask("Fine.")) == "You said: Fine."


def test_items_a_client_replays_make_up_the_conversation() -> None:
    service = Service()
    replay = [
        user("My name is Ada"),
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello Ada"}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "clear"}'},
    ]
    for item in replay:
        added = service.send("conversation.item.create", item=item)
        assert types(added) == ["conversation.item.added", "conversation.item.done"]
    assert [item["type"] for item in service.rules.items] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
    ]
    assert said(service.ask("Remember me?")) == 'You first said: "My name is Ada".'


def test_item_create_checks_items_as_the_service_does() -> None:
    service = Service()
    audio_item = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "Hello"}],
    }
    error = service.error(service.send("conversation.item.create", item=audio_item))
    assert error["code"] == "missing_required_parameter"
    assert error["message"] == "Missing required parameter: 'item.content[0].text'."
    first = service.send("conversation.item.create", item=user("one"))[0]["item"]["id"]
    second = service.send("conversation.item.create", item=user("two"))[0]["item"]["id"]
    front = service.send("conversation.item.create", item=user("zero"), previous_item_id="root")
    assert front[0]["previous_item_id"] is None
    middle = service.send("conversation.item.create", item=user("1.5"), previous_item_id=first)
    assert middle[0]["previous_item_id"] == first
    assert [service.rules.user_text(item) for item in service.rules.items] == [
        "zero",
        "one",
        "1.5",
        "two",
    ]
    error = service.error(
        service.send("conversation.item.create", item=user("x"), previous_item_id="item_nope")
    )
    assert error["param"] == "previous_item_id"
    assert types(service.send("conversation.item.retrieve", item_id=second)) == [
        "conversation.item.retrieved"
    ]
    assert service.send("conversation.item.delete", item_id=second)[0]["item_id"] == second
    for verb in ("delete", "retrieve"):
        error = service.error(service.send(f"conversation.item.{verb}", item_id=second))
        assert error["code"] == f"item_{verb}_invalid_item_id"


# ------------------------------------------------------------------ truncation


def _spoken(service: Service) -> str:
    events = service.ask("hello there")  # "You said: hello there": 12 chunks, 480 ms
    return str(of(events, "response.output_item.added")[0]["item"]["id"])


def test_truncate_cuts_the_audio_and_the_transcript_of_an_assistant_item() -> None:
    service = Service(audio=True)
    item_id = _spoken(service)
    assert service.rules.audio_of(item_id) == 480
    events = service.send(
        "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=250
    )
    assert events[0] == {
        "type": "conversation.item.truncated",
        "event_id": events[0]["event_id"],
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 250,
    }
    assert service.rules.audio_of(item_id) == 250
    stored = service.rules.find(item_id)
    assert stored is not None and stored["content"][0]["transcript"] == "You said: "
    error = service.error(
        service.send(
            "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=300
        )
    )
    assert error["code"] == "invalid_value" and error["param"] == "audio_end_ms"
    assert error["message"] == "Audio content of 250ms is already shorter than 300ms"


def test_truncate_refusals() -> None:
    service = Service(audio=True)
    item_id = _spoken(service)
    user_id = service.rules.items[0]["id"]

    def truncate(item: str, index: int = 0, end: int = 100) -> dict[str, Any]:
        return service.error(
            service.send(
                "conversation.item.truncate", item_id=item, content_index=index, audio_end_ms=end
            )
        )

    missing = truncate("item_missing")
    assert missing["code"] == "item_truncate_invalid_item_id"
    assert missing["message"] == (
        "Error truncating item: the item with id 'item_missing' does not exist."
    )
    assert truncate(user_id)["code"] == "unsupported_content_type"
    assert truncate(item_id, index=1)["param"] == "content_index"
    past = truncate(item_id, end=600)
    assert past["message"] == "Audio content of 480ms is already shorter than 600ms"
    assert service.rules.audio_of(item_id) == 480
    text = Service()
    text.ask("hi")  # a text reply has no audio to truncate
    text_item = text.rules.items[-1]["id"]
    error = text.error(
        text.send("conversation.item.truncate", item_id=text_item, content_index=0, audio_end_ms=0)
    )
    assert error["code"] == "unsupported_content_type"


# ------------------------------------------------------------------ input audio


def test_server_vad_detects_a_turn_commits_it_transcribes_and_answers() -> None:
    service = Service()
    service.update(audio={"input": {"transcription": {"model": "gpt-4o-transcribe"}}})
    events = service.send("input_audio_buffer.append", audio=audio(speech(400) + silence(600)))
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        *["conversation.item.input_audio_transcription.delta"] * 4,
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    started, stopped, committed = events[:3]
    item_id = started["item_id"]
    assert started["audio_start_ms"] == 0
    assert stopped == {**stopped, "audio_end_ms": 900, "item_id": item_id}
    assert committed["item_id"] == item_id
    assert events[3]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    completed = events[9]
    assert completed["transcript"] == "(spoken audio, 0.9 s)"
    assert completed["usage"] == {"type": "duration", "seconds": 0.9}
    assert "".join(e["delta"] for e in events[5:9]) == completed["transcript"]
    assert said(service.drain()) == "You said: (spoken audio, 0.9 s)"
    stored = service.rules.find(item_id)
    assert stored is not None and stored["content"][0]["transcript"] == completed["transcript"]


def test_speech_start_includes_the_prefix_padding_and_audio_can_come_in_pieces() -> None:
    service = Service(transcribe=lambda pcm: f"{len(pcm) // 48} ms")
    signal = silence(1000) + speech(300) + silence(600)
    events: list[dict[str, Any]] = []
    for start in range(0, len(signal), 1234):  # pieces that do not fall on frames
        events += service.send(
            "input_audio_buffer.append", audio=audio(signal[start : start + 1234])
        )
    started = of(events, "input_audio_buffer.speech_started")[0]
    stopped = of(events, "input_audio_buffer.speech_stopped")[0]
    assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (700, 1800)
    assert service.rules.user_text(service.rules.items[0]) == "1100 ms"
    assert of(events, "conversation.item.input_audio_transcription.completed") == []


def test_barge_in_cancels_the_active_response_with_turn_detected() -> None:
    service = Service(audio=True)
    service.start("tell me about the sea at night", 6)
    item_id = service.rules.items[-1]["id"]
    events = service.send("input_audio_buffer.append", audio=audio(speech(40)))
    assert types(events)[0] == "input_audio_buffer.speech_started"
    assert types(events)[-2:] == ["response.done", "rate_limits.updated"]
    done = events[-2]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    sent_ms = CHUNK_MS * len(of(service.log, "response.output_audio.delta"))
    assert sent_ms > 0 and service.rules.audio_of(item_id) == sent_ms
    assert service.rules.response is None


def test_interrupt_response_false_lets_the_response_go_on() -> None:
    service = Service(audio=True)
    service.update(audio=vad(interrupt_response=False, create_response=False))
    service.start("tell me about the sea at night", 1)
    events = service.send("input_audio_buffer.append", audio=audio(speech(200) + silence(600)))
    assert "response.done" not in types(events)
    assert "input_audio_buffer.committed" in types(events)
    assert service.rules.response is not None
    service.drain()
    assert len(of(service.log, "response.created")) == 1  # create_response: false


def test_the_vad_threshold_and_semantic_vad() -> None:
    quiet = audio(speech(300, amplitude=0.05) + silence(600))  # RMS about 0.024
    service = Service()
    assert service.send("input_audio_buffer.append", audio=quiet) == []
    service.update(audio=vad(threshold=0.2, silence_duration_ms=200, create_response=False))
    turn = service.send("input_audio_buffer.append", audio=quiet)
    assert types(turn)[:3] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    assert turn[1]["audio_end_ms"] - turn[0]["audio_start_ms"] < 900  # 200 ms of silence
    settings = service.rules.session["audio"]["input"]["turn_detection"]
    assert settings["prefix_padding_ms"] == 300  # completed with the defaults
    semantic = Service()
    semantic.update(
        audio={"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}
    )
    events = semantic.send("input_audio_buffer.append", audio=audio(speech(300) + silence(300)))
    assert "input_audio_buffer.committed" in types(events)


def test_input_audio_in_g711() -> None:
    ulaw = AudioFormat("audio/pcmu")
    service = Service()
    service.update(audio={"input": {"format": {"type": "audio/pcmu"}}})
    events = service.send(
        "input_audio_buffer.append", audio=audio(speech(300, ulaw) + silence(600, ulaw))
    )
    assert of(events, "input_audio_buffer.speech_stopped")[0]["audio_end_ms"] == 800


def test_push_to_talk_waits_for_commit_and_refuses_an_empty_buffer() -> None:
    service = Service()
    service.update(audio={"input": {"turn_detection": None}})
    assert service.rules.session["audio"]["input"]["turn_detection"] is None
    assert service.send("input_audio_buffer.append", audio=audio(speech(50))) == []
    error = service.error(service.send("input_audio_buffer.commit"))
    assert error["code"] == "input_audio_buffer_commit_empty"
    assert error["message"] == (
        "Error committing input audio buffer: buffer too small. "
        "Expected at least 100ms of audio, but buffer only has 50.00ms of audio."
    )
    assert types(service.send("input_audio_buffer.clear")) == ["input_audio_buffer.cleared"]
    assert service.send("input_audio_buffer.append", audio=audio(speech(400) + silence(600))) == []
    events = service.send("input_audio_buffer.commit")
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert service.rules.response is None  # a commit never starts a response
    assert service.rules.user_text(service.rules.items[0]) == "(spoken audio, 1.0 s)"
    assert said(service.send("response.create") + service.drain()) == (
        "You said: (spoken audio, 1.0 s)"
    )
    error = service.error(service.send("input_audio_buffer.commit"))
    assert "only has 0.00ms" in error["message"]


def test_bad_base64_audio_is_refused() -> None:
    service = Service()
    error = service.error(service.send("input_audio_buffer.append", audio="@@not base64@@"))
    assert (error["code"], error["param"]) == ("invalid_value", "audio")


# ------------------------------------------------------------------ session updates


def test_the_voice_cannot_change_once_the_session_has_produced_audio() -> None:
    service = Service(audio=True)
    service.update(audio={"output": {"voice": "marin"}})  # no audio yet: fine
    service.ask("hi")
    service.update(audio={"output": {"voice": "marin"}}, instructions="x")  # same voice: fine
    error = service.error(service.update(audio={"output": {"voice": "cedar"}}))
    assert error["code"] == "cannot_update_voice"
    assert error["message"] == "Cannot update a conversation's voice if assistant audio is present."
    assert service.rules.session["audio"]["output"]["voice"] == "marin"


def test_session_update_refusals() -> None:
    service = Service()
    error = service.error(service.send("session.update", valid=False, session={"voice": "x"}))
    assert error["code"] == "missing_required_parameter" and error["param"] == "session.type"
    error = service.error(service.update(valid=False, modalities=["text"]))
    assert (error["code"], error["param"]) == ("unknown_parameter", "session.modalities")
    merged = service.update(instructions="Be brief.")[0]["session"]
    assert merged["instructions"] == "Be brief." and merged["model"] == "gpt-realtime"


def test_errors_name_the_client_event_unless_told_not_to() -> None:
    service = Service(error_event_ids=False)
    events = service.send("response.cancel")
    assert events[0]["error"]["event_id"] is None
    unknown = Service()
    error = unknown.error(unknown.send("output_audio_buffer.teleport", valid=False))
    assert error["code"] == "unknown_event"


# ------------------------------------------------------------------ audio helpers


def test_g711_round_trips_within_its_quantisation() -> None:
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        for value in (-32768, -12345, -100, 0, 7, 100, 4000, 32767):
            assert abs(decode(encode(value)) - value) <= max(16, abs(value) // 16)


def test_the_synthetic_voice_varies_like_a_voice() -> None:
    levels = [level for chunk in voice_chunks("wonderful") for level in frame_levels(chunk)]
    assert len(levels) == 2 * 5  # 2 + 9 // 3 chunks of two frames
    assert levels[-1] == 0.0 and max(levels) > 0.15 and min(levels[:-1]) > 0.0
    assert voice_chunks("wonderful") is voice_chunks("wonderful")  # cached


# ------------------------------------------------------------------ over sockets


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real clocks for real socket I/O (overrides tests/conftest.py)."""
    return (request.param, {})


class RawClient:
    """A bare WebSocket client: JSON events in and out, nothing else."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._count = 0

    async def send(self, event_type: str, **fields: Any) -> str:
        self._count += 1
        event_id = f"evt_raw_{self._count}"
        await self.ws.send_text(json.dumps({"type": event_type, "event_id": event_id, **fields}))
        return event_id

    async def next(self) -> dict[str, Any]:
        message = await self.ws.receive()
        assert isinstance(message, str)
        event: dict[str, Any] = json.loads(message)
        self.events.append(event)
        return event

    async def until(self, event_type: str) -> dict[str, Any]:
        while True:
            event = await self.next()
            if event["type"] == event_type:
                return event

    async def quiet_for(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever arrives within ``seconds``."""
        got: list[dict[str, Any]] = []
        with anyio.move_on_after(seconds):
            while True:
                got.append(await self.next())
        return got


@asynccontextmanager
async def connected(server: LocalRealtimeServer, key: str = KEY) -> AsyncIterator[RawClient]:
    stream = await anyio.connect_tcp("127.0.0.1", server.port)
    try:
        ws = await client_handshake(
            stream,
            host=f"127.0.0.1:{server.port}",
            target="/v1/realtime?model=gpt-realtime",
            headers=[(b"authorization", f"Bearer {key}".encode())],
            max_message_size=16 * 1024 * 1024,
        )
        client = RawClient(ws)
        assert (await client.next())["type"] == "session.created"
        yield client
        await ws.close()
    finally:
        await anyio.aclose_forcefully(stream)


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[LocalRealtimeServer]:
    with anyio.fail_after(10):
        async with LocalRealtimeServer(api_key=KEY, **options) as server:
            yield server


@pytest.mark.anyio
async def test_a_text_turn_over_a_raw_socket() -> None:
    async with serving() as server, connected(server) as client:
        await client.send("session.update", session={"type": "realtime", "instructions": "Hi."})
        assert (await client.until("session.updated"))["session"]["instructions"] == "Hi."
        await client.send("conversation.item.create", item=user("hello"))
        await client.send("response.create")
        done = await client.until("response.done")
        assert said([done]) == "You said: hello"
        assert server.conversation()[0]["content"][0]["text"] == "hello"
        assert server.received_types() == [
            "session.update",
            "conversation.item.create",
            "response.create",
        ]


@pytest.mark.anyio
async def test_a_second_response_create_over_a_socket_is_refused_and_nothing_starts() -> None:
    async with serving(delta_delay=0.01) as server, connected(server) as client:
        await client.send("conversation.item.create", item=user("one two three four"))
        await client.send("response.create")
        await client.until("response.output_text.delta")
        second = await client.send("response.create")
        error = await client.until("error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert error["error"]["event_id"] == second
        await client.until("response.done")
        await client.until("rate_limits.updated")
        assert await client.quiet_for(0.1) == []
        assert len(server.sent_of("response.created")) == 1


@pytest.mark.anyio
async def test_audio_streams_at_the_requested_pace_and_barge_in_stops_it() -> None:
    long = " ".join(["word"] * 20)  # 20 words × 120 ms = 2.4 s of audio
    async with (
        serving(audio=True, audio_pace=1.0, reply=lambda text: long) as server,
        connected(server) as client,
    ):
        await client.send("conversation.item.create", item=user("go"))
        await client.send("response.create")
        first = await client.until("response.output_audio.delta")
        started = anyio.current_time()
        for _ in range(9):
            await client.until("response.output_audio.delta")
        elapsed = anyio.current_time() - started
        assert 0.3 <= elapsed < 1.5  # 9 more chunks of 40 ms, in real time
        await client.send("input_audio_buffer.append", audio=audio(speech(100)))
        done = await client.until("response.done")
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        assert [e["type"] for e in await client.quiet_for(0.2)] == ["rate_limits.updated"]
        produced = server.sent_of("response.output_audio.delta")
        assert len(produced) < 60 and all(e["item_id"] == first["item_id"] for e in produced)
        assert server.last_session is not None
        assert server.last_session.audio_of(first["item_id"]) == 40 * len(produced)


@pytest.mark.anyio
async def test_a_voice_turn_with_barge_in_truncation_over_a_socket() -> None:
    async with serving(audio=True) as server, connected(server) as client:
        await client.send(
            "session.update",
            session={
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
            },
        )
        await client.send("input_audio_buffer.append", audio=audio(speech(300) + silence(600)))
        transcript = await client.until("conversation.item.input_audio_transcription.completed")
        assert transcript["transcript"] == "(spoken audio, 0.8 s)"
        done = await client.until("response.done")
        item_id = done["response"]["output"][0]["id"]
        await client.send(
            "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=200
        )
        truncated = await client.until("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 200
        assert server.conversation()[-1]["content"][0]["transcript"] == "You "


@pytest.mark.anyio
async def test_injected_messages_are_recorded_apart_from_the_servers_own() -> None:
    async with serving() as server, connected(server) as client:
        await server.send_event({"type": "error", "error": {"message": "not a real error"}})
        await server.send_raw_text("{")
        await server.send_garbage("binary")
        assert (await client.next())["error"] == {"message": "not a real error"}
        assert await client.ws.receive() == "{"
        await client.ws.receive()  # the binary message, reported as dropped
        assert [injection.kind for injection in server.injected] == ["event", "raw-text", "binary"]
        assert server.injected[0].payload["type"] == "error"  # type: ignore[index]
        assert server.sent_types() == ["session.created"]


@pytest.mark.anyio
async def test_invalid_client_events_are_answered_with_errors() -> None:
    async with serving(expects_invalid_client_events=True) as server, connected(server) as client:
        await client.ws.send_text("not json")
        assert (await client.next())["error"]["code"] == "invalid_json"
        bogus = await client.send("response.teleport")
        error = (await client.next())["error"]
        assert (error["code"], error["event_id"]) == ("unknown_event", bogus)
        assert server.received_types() == ["response.teleport"]


@pytest.mark.anyio
async def test_session_update_faults_still_work() -> None:
    async with serving() as server, connected(server) as client:
        server.reject_next_session_update("No thanks")
        rejected = await client.send("session.update", session={"type": "realtime"})
        error = (await client.until("error"))["error"]
        assert (error["message"], error["event_id"], error["param"]) == (
            "No thanks",
            rejected,
            "session",
        )
        server.delay_next_session_update(0.2)
        started = anyio.current_time()
        await client.send("session.update", session={"type": "realtime"})
        await client.until("session.updated")
        assert anyio.current_time() - started >= 0.15
        await server.wait_for_sent("session.updated")


@pytest.mark.anyio
async def test_each_connection_has_its_own_conversation() -> None:
    async with serving() as server:
        async with connected(server) as client:
            await client.send("conversation.item.create", item=user("I am Ada"))
            await client.until("conversation.item.done")
        async with connected(server) as client:
            await client.send("conversation.item.create", item=user("Do you remember me?"))
            await client.send("response.create")
            done = await client.until("response.done")
            assert said([done]) == "I don't remember anything you said before this."
        assert server.connections == 2
        assert len(server.conversation()) == 2


@pytest.mark.anyio
async def test_a_wrong_key_is_refused_at_the_handshake() -> None:
    async with serving() as server:
        with pytest.raises(WebSocketError):
            async with connected(server, key="sk-wrong-key-123"):
                pass
        assert [record.authorized for record in server.requests] == [False]


def test_the_server_validates_its_options() -> None:
    with pytest.raises(ValueError):
        LocalRealtimeServer(audio_pace=0)
    server = LocalRealtimeServer(tool_triggers=[ToolTrigger("x", "y")])
    assert server.tool_triggers == (ToolTrigger("x", "y"),)
    assert math.isclose(server.delta_delay, 0.0) and server.audio_pace is None
