"""The OpenAI Realtime transport against the embedded local server, over real sockets.

Every test runs on asyncio and on trio.  These tests do real loopback I/O, so
they override the suite's ``anyio_backend`` fixture with *real* clocks: a
virtual clock (looptime, trio's autojumping ``MockClock``) jumps ahead whenever
every task waits, and a task waiting for the network looks exactly like that.
Each test is bounded by :data:`TEST_BOUND` seconds of wall time.

After each test, every client event the transport sent is validated against the
``openai`` SDK's ``RealtimeClientEvent`` models, with no unknown fields and a
lossless round trip; every event the local server sent is validated against
``RealtimeServerEvent``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import ssl
import sys
import time
from array import array
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import attrs
import pytest
import trustme

from charivo_fsm import (
    CharivoError,
    CharivoProviderError,
    CharivoStateError,
    CharivoTransportError,
    CharivoValidationError,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolRegistration,
    RealtimeTransport,
    TurnDetection,
    VoiceTransport,
    create_realtime_manager,
)
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputDelta,
    AudioOutputEnded,
    ConnectionLost,
    ErrorEvent,
    RateLimitsUpdated,
    SessionStarted,
    ToolCall,
    TransportEvent,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
    UserTranscriptDelta,
)
from charivo_fsm.testing import LocalRealtimeServer, RecordingEmitter, ToolTrigger, silence, speech
from charivo_fsm.testing.audio import frame_levels
from charivo_fsm.testing.server import GARBAGE_KINDS
from charivo_fsm.transports.openai import (
    CLIENT_ROUTES,
    IGNORED_SERVER_EVENTS,
    MAX_APPEND_BYTES,
    SERVER_ROUTES,
    OpenAIRealtimeTransport,
    build_session_update,
    g711_rms,
    mapping_table_markdown,
    pcm16_rms,
)
from tests.sdk_validation import validate_client_event, validate_server_event

pytestmark = pytest.mark.anyio

KEY = "sk-proj-Secr3tTestKey-0123456789abcdefXYZ"
TEST_BOUND = 8.0
LOGGER = "charivo_fsm.transports.openai"

WEATHER = RealtimeTool(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)
CONFIG = RealtimeSessionConfig(
    instructions="Be brief.",
    voice="marin",
    tools=(WEATHER,),
    tool_choice="auto",
    max_tokens=256,
    temperature=0.7,
)

E = TypeVar("E")


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real clocks for real socket I/O (overrides tests/conftest.py)."""
    return (request.param, {})


# ------------------------------------------------------------------ harness


class Recorder:
    """Collects transport events; lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[TransportEvent] = []
        self._changed: anyio.Event | None = None

    def __call__(self, event: TransportEvent) -> None:
        self.events.append(event)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def of(self, cls: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, cls)]

    def types(self) -> list[str]:
        return [event.type for event in self.events]

    async def wait_for(self, cls: type[E], count: int = 1, *, timeout: float = 3.0) -> E:
        with anyio.fail_after(timeout):
            while len(self.of(cls)) < count:
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()
        return self.of(cls)[count - 1]


@attrs.define
class Harness:
    server: LocalRealtimeServer
    transport: OpenAIRealtimeTransport
    events: Recorder


@asynccontextmanager
async def running(
    server_options: Mapping[str, Any] | None = None, **transport_options: Any
) -> AsyncIterator[Harness]:
    """A local server and an entered transport pointed at it (not yet connected)."""
    with anyio.fail_after(TEST_BOUND):
        async with LocalRealtimeServer(api_key=KEY, **(server_options or {})) as server:
            options: dict[str, Any] = {"api_key": KEY, "url": server.url, "close_timeout": 1.0}
            options.update(transport_options)
            transport = OpenAIRealtimeTransport(**options)
            recorder = Recorder()
            transport.on_event(recorder)
            async with transport:
                yield Harness(server, transport, recorder)
            for event in server.received:
                validate_client_event(event)
            for event in server.sent:
                validate_server_event(event)


async def until(check: Callable[[], bool], *, timeout: float = 3.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.005)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


# ------------------------------------------------------------------ connect


async def test_connect_sends_ga_session_update_and_emits_session_started() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        assert h.transport.connected
        assert h.events.types() == ["session.started"]
        assert h.server.received_types() == ["session.update"]
        update = h.server.received[0]
        assert update["event_id"].startswith("evt_")
        assert update["session"] == {
            "type": "realtime",
            "instructions": "Be brief.",
            "audio": {"output": {"voice": "marin"}},
            "tools": [
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                }
            ],
            "tool_choice": "auto",
            "max_output_tokens": 256,
        }
        record = h.server.requests[0]
        assert record.authorized
        assert record.path == "/v1/realtime"
        assert record.query == {"model": "gpt-realtime"}
        assert h.server.sent_types()[:2] == ["session.created", "session.updated"]


async def test_config_model_and_constructor_model_go_to_the_query() -> None:
    async with running(model="gpt-realtime-mini") as h:
        await h.transport.connect(RealtimeSessionConfig())
        await h.transport.recover(RealtimeSessionConfig(model="gpt-realtime-2"))
        assert [r.query["model"] for r in h.server.requests] == [
            "gpt-realtime-mini",
            "gpt-realtime-2",
        ]
        assert h.server.received[0]["session"] == {"type": "realtime"}


async def test_transcription_model_switches_input_transcription_on() -> None:
    async with running(transcription_model="gpt-4o-mini-transcribe") as h:
        await h.transport.connect(RealtimeSessionConfig(voice="alloy"))
        assert h.server.received[0]["session"]["audio"] == {
            "input": {"transcription": {"model": "gpt-4o-mini-transcribe"}},
            "output": {"voice": "alloy"},
        }


async def test_connect_requires_the_transport_to_be_entered() -> None:
    transport = OpenAIRealtimeTransport(api_key=KEY, url="ws://127.0.0.1:9/v1/realtime")
    with pytest.raises(CharivoStateError, match="async with"):
        await transport.connect(CONFIG)


async def test_sending_before_connect_is_a_state_error() -> None:
    async with running() as h:
        with pytest.raises(CharivoStateError):
            await h.transport.send_text("hi")


async def test_rejected_session_update_fails_connect() -> None:
    async with running() as h:
        h.server.reject_next_session_update("Invalid voice")
        with pytest.raises(CharivoProviderError, match="Invalid voice"):
            await h.transport.connect(CONFIG)
        assert not h.transport.connected
        assert h.events.events == []
        await until(lambda: h.server.active_connections == 0)


async def test_socket_lost_while_connecting_fails_connect_without_connection_lost() -> None:
    async with running() as h:
        h.server.delay_next_session_update(5.0)

        async def drop_when_asked() -> None:
            await h.server.wait_for_event("session.update")
            await h.server.drop_connection()

        async with anyio.create_task_group() as tg:
            tg.start_soon(drop_when_asked)
            with pytest.raises(CharivoTransportError):
                await h.transport.connect(CONFIG)
        assert h.events.events == []


# ------------------------------------------------------------------ auth, urls


async def test_wrong_key_gets_401_without_leaking_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-proj-WrongKeyValue-9876543210fedcba"
    async with running(api_key=wrong) as h:
        with pytest.raises(CharivoProviderError, match="HTTP 401") as info:
            await h.transport.connect(CONFIG)
        assert h.server.requests[0].authorized is False
        assert h.server.connections == 0
        assert wrong not in str(info.value)
        assert wrong[:12] not in str(info.value)
        assert "Incorrect API key" in str(info.value)
        assert all(wrong not in r.getMessage() for r in caplog.records)


async def test_server_answers_a_missing_authorization_header_with_401() -> None:
    async with LocalRealtimeServer(api_key=KEY) as server:
        with anyio.fail_after(TEST_BOUND):
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            async with stream:
                await stream.send(
                    b"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\n"
                    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                answer = b""
                while b"}}" not in answer:
                    answer += await stream.receive()
        assert answer.startswith(b"HTTP/1.1 401")
        assert b"invalid_api_key" in answer
        assert [r.authorized for r in server.requests] == [False]
        assert server.connections == 0


async def test_api_key_comes_from_the_environment_at_connect_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with running(api_key=None) as h:
        with pytest.raises(CharivoValidationError, match="OPENAI_API_KEY"):
            await h.transport.connect(CONFIG)
        assert h.server.requests == []
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        await h.transport.connect(CONFIG)
        assert h.transport.connected


@pytest.mark.parametrize(
    "url",
    [
        "ws://example.com/v1/realtime",
        "ws://10.0.0.1/v1/realtime",
        "ws://[2001:db8::1]/v1/realtime",
        "ws://localhost.example.com/",
        "http://127.0.0.1/v1/realtime",
        "https://api.openai.com/v1/realtime",
        "wss://user:pw@api.openai.com/v1/realtime",
        "wss:///v1/realtime",
    ],
)
async def test_unsafe_or_invalid_urls_are_refused(url: str) -> None:
    with pytest.raises(CharivoValidationError):
        OpenAIRealtimeTransport(api_key=KEY, url=url)


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8000/v1/realtime",
        "ws://127.8.9.10/x",
        "ws://localhost:1234/",
        "ws://LOCALHOST./",
        "ws://[::1]:8000/v1/realtime",
        "wss://api.openai.com/v1/realtime",
    ],
)
async def test_loopback_ws_and_any_wss_are_accepted(url: str) -> None:
    transport = OpenAIRealtimeTransport(api_key=KEY, url=url)
    assert KEY not in repr(transport)


def test_constructor_validates_its_options() -> None:
    with pytest.raises(CharivoValidationError):
        OpenAIRealtimeTransport(close_timeout=0)
    with pytest.raises(CharivoValidationError):
        OpenAIRealtimeTransport(model="")
    with pytest.raises(CharivoValidationError):
        OpenAIRealtimeTransport(api_key="")
    with pytest.raises(CharivoValidationError):
        OpenAIRealtimeTransport(max_message_size=0)
    with pytest.raises(CharivoValidationError):
        OpenAIRealtimeTransport(ping_interval=-1)
    assert isinstance(OpenAIRealtimeTransport(), RealtimeTransport)


async def test_wss_with_tls_against_a_trusted_local_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with running({"ssl_context": server_context}, ssl_context=client_context) as h:
        assert h.server.url.startswith("wss://")
        await h.transport.connect(CONFIG)
        await h.transport.send_text("over tls")
        done = await h.events.wait_for(AssistantResponseCompleted)
        assert done.text == "You said: over tls"
    # Without trusting the CA the certificate check fails.
    async with running({"ssl_context": server_context}) as h:
        with pytest.raises(CharivoTransportError):
            await h.transport.connect(CONFIG)


# ------------------------------------------------------------------ client → server


async def test_send_text_streams_a_text_response() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("hello there")
        done = await h.events.wait_for(AssistantResponseCompleted)
        assert h.server.received_types() == [
            "session.update",
            "conversation.item.create",
            "response.create",
        ]
        assert h.server.received[1]["item"] == {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hello there"}],
        }
        deltas = [e.text for e in h.events.of(AssistantTextDelta)]
        assert deltas == ["You ", "said: ", "hello ", "there"]
        types = h.events.types()
        # rate_limits.updated follows response.done at once: it may have been read
        # before this task ran again
        assert types[: types.index("assistant.response.completed") + 1] == [
            "session.started",
            "assistant.response.started",
            *["assistant.text.delta"] * 4,
            "assistant.response.completed",
        ]
        assert done.text == "You said: hello there"
        assert done.model == "gpt-realtime"
        assert done.response_id is not None and done.response_id.startswith("resp_")
        assert done.usage is not None
        assert done.usage["output_tokens"] == 4
        assert done.usage["input_token_details"]["cached_tokens"] == 0


async def test_audio_response_maps_audio_events_and_lipsync() -> None:
    async with running({"audio": True}) as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("sing")
        done = await h.events.wait_for(AssistantResponseCompleted)
        types = h.events.types()
        assert types.count("audio.output.started") == 1
        assert types.count("audio.output.ended") == 1
        assert types.index("audio.output.started") < types.index("audio.lipsync")
        assert types.index("audio.output.ended") < types.index("assistant.response.completed")
        levels = [e.rms for e in h.events.of(AudioLipsync)]
        # one level per 40 ms chunk of the server's synthetic voice, its RMS over the chunk
        chunks = [
            base64.b64decode(e["delta"]) for e in h.server.sent_of("response.output_audio.delta")
        ]
        assert len(levels) == len(chunks) == 9
        for level, chunk in zip(levels, chunks, strict=True):
            frames = frame_levels(chunk)
            assert abs(level - math.sqrt(sum(f * f for f in frames) / len(frames))) < 0.01
        assert len(set(levels)) > 1
        assert "".join(e.text for e in h.events.of(AssistantTextDelta)) == "You said: sing"
        assert done.text == "You said: sing"


async def test_send_audio_appends_base64_pcm16_and_maps_the_transcript() -> None:
    # 400 ms of voice then 600 ms of silence: the server's VAD ends the turn and,
    # with transcription on, transcribes it
    pcm = speech(400) + silence(600)
    server = {"transcribe": lambda audio: f"heard {len(audio)} bytes of audio"}
    async with running(server, transcription_model="gpt-4o-transcribe") as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_audio(pcm)
        transcript = await h.events.wait_for(UserTranscript)
        appended = h.server.received_of("input_audio_buffer.append")
        assert b"".join(base64.b64decode(event["audio"]) for event in appended) == pcm
        stopped = h.server.sent_of("input_audio_buffer.speech_stopped")[0]
        # the turn: the voice, 300 ms of prefix padding before it (none here), the silence
        assert transcript.text == f"heard {stopped['audio_end_ms'] * 48} bytes of audio"


async def test_tool_call_round_trip() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("What's the weather like?")
        call = await h.events.wait_for(ToolCall)
        assert call.name == "get_weather"
        assert call.args == {"city": "Paris"}
        assert call.call_id is not None and call.call_id.startswith("call_")
        await h.events.wait_for(AssistantResponseCompleted)
        await h.transport.send_tool_result(call.call_id, {"temperature": 21, "sky": "clear"})
        done = await h.events.wait_for(AssistantResponseCompleted, 2)
        item = h.server.received_of("conversation.item.create")[-1]["item"]
        assert item == {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": json.dumps({"temperature": 21, "sky": "clear"}, ensure_ascii=False),
        }
        assert h.server.received_types()[-2:] == ["conversation.item.create", "response.create"]
        assert done.text == 'get_weather says: {"temperature": 21, "sky": "clear"}'


async def test_custom_tool_trigger() -> None:
    wave = RealtimeTool(name="wave", parameters={"type": "object", "properties": {}})
    triggers = [ToolTrigger("hello", "wave", {"hand": "left"})]
    async with running({"tool_triggers": triggers}) as h:
        await h.transport.connect(RealtimeSessionConfig(tools=(wave,)))
        await h.transport.send_text("Hello!")
        call = await h.events.wait_for(ToolCall)
        assert (call.name, call.args) == ("wave", {"hand": "left"})


async def test_invalid_tool_arguments_send_a_tool_error_and_no_tool_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with running() as h:
        await h.transport.connect(CONFIG)
        h.server.send_bad_tool_arguments()
        await h.transport.send_text("weather?")
        await h.server.wait_for_event("response.create", 2)
        item = (await h.server.wait_for_event("conversation.item.create", 2))["item"]
        assert item["type"] == "function_call_output"
        output = json.loads(item["output"])
        assert output["success"] is False
        assert "not valid JSON" in output["error"]
        assert 'Realtime tool "get_weather"' in output["error"]
        await h.events.wait_for(AssistantResponseCompleted, 2)
        assert h.events.of(ToolCall) == []
        assert any("invalid arguments" in m for m in warnings_of(caplog))


async def test_interrupt_sends_response_cancel() -> None:
    long_reply = " ".join(f"word{n}" for n in range(200))
    async with running({"delta_delay": 0.01, "reply": lambda _text: long_reply}) as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("talk")
        await h.events.wait_for(AssistantTextDelta)
        await h.transport.interrupt()
        done = await h.events.wait_for(AssistantResponseCompleted)
        cancel = h.server.received[-1]
        assert cancel["type"] == "response.cancel"
        assert cancel["response_id"] == done.response_id
        assert len(h.events.of(AssistantTextDelta)) < 200
        assert done.text == "".join(e.text for e in h.events.of(AssistantTextDelta))
        assert h.server.sent_of("response.done")[-1]["response"]["status"] == "cancelled"


async def test_interrupt_without_a_response_sends_nothing() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.transport.interrupt()
        await h.transport.send_text("hi")
        await h.events.wait_for(AssistantResponseCompleted)
        await h.transport.interrupt()  # after response.done: nothing in flight again
        await h.transport.send_text("again")
        await h.events.wait_for(AssistantResponseCompleted, 2)
        assert "response.cancel" not in h.server.received_types()
        assert h.events.of(ErrorEvent) == []
        assert h.server.sent_of("error") == []


async def test_interrupt_during_audio_ends_audio_and_truncates_at_the_played_position() -> None:
    long_reply = " ".join(f"w{n}" for n in range(100))
    server = {"audio": True, "delta_delay": 0.01, "reply": lambda _t: long_reply}
    async with running(server) as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("talk")
        delta = await h.events.wait_for(AudioOutputDelta, 3)  # 3 chunks of 40 ms at least
        assert delta.item_id is not None
        await h.transport.interrupt()
        await h.transport.truncate_audio(delta.item_id, 60)
        done = await h.events.wait_for(AssistantResponseCompleted)
        assert (done.status, done.reason) == ("cancelled", "client_cancelled")
        assert len(h.events.of(AudioOutputEnded)) == 1
        truncated = await h.server.wait_for_sent("conversation.item.truncated")
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (delta.item_id, 60)
        assert h.events.of(ErrorEvent) == []


# ------------------------------------------------------------------ session updates


async def test_update_session_completes_on_session_updated() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        h.server.delay_next_session_update(0.3)
        started = time.monotonic()
        new = attrs.evolve(CONFIG, instructions="Be verbose.")
        await h.transport.update_session(new)
        assert time.monotonic() - started >= 0.25
        assert h.transport.config == new
        update = h.server.received_of("session.update")[1]
        assert update["session"]["instructions"] == "Be verbose."
        assert update["event_id"] != h.server.received[0]["event_id"]
        assert h.events.types() == ["session.started"]


async def test_rejected_update_raises_the_server_message_and_keeps_the_link() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        h.server.reject_next_session_update("Cannot update a conversation's voice")
        with pytest.raises(CharivoProviderError) as info:
            await h.transport.update_session(attrs.evolve(CONFIG, voice="cedar"))
        assert info.value.message == "Cannot update a conversation's voice"
        assert h.events.of(ErrorEvent) == []
        assert h.transport.config == CONFIG
        await h.transport.send_text("still there?")
        await h.events.wait_for(AssistantResponseCompleted)


async def test_an_abandoned_update_does_not_complete_the_next_one_early() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        h.server.delay_next_session_update(0.3)
        with anyio.move_on_after(0.05) as scope:
            await h.transport.update_session(attrs.evolve(CONFIG, instructions="one"))
        assert scope.cancelled_caught
        await h.transport.update_session(attrs.evolve(CONFIG, instructions="two"))
        assert len(h.server.sent_of("session.updated")) == 3
        assert h.transport.config is not None and h.transport.config.instructions == "two"


async def test_a_rejected_abandoned_update_is_reported_as_an_error_event() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        h.server.delay_next_session_update(0.2)
        h.server.reject_next_session_update("Too late and wrong")
        with anyio.move_on_after(0.05):
            await h.transport.update_session(attrs.evolve(CONFIG, instructions="x"))
        error = await h.events.wait_for(ErrorEvent)
        assert error.error.args == ("Too late and wrong",)
        await h.transport.update_session(attrs.evolve(CONFIG, instructions="y"))


async def test_the_session_model_reported_by_the_server_is_used() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.server.send_event(
            {"type": "session.created", "session": {"type": "realtime", "model": "gpt-realtime-2"}}
        )
        await h.transport.send_text("hi")
        done = await h.events.wait_for(AssistantResponseCompleted)
        assert done.model == "gpt-realtime-2"


async def test_error_event_not_tied_to_an_update_becomes_an_error_event() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.server.send_event(
            {
                "type": "error",
                "error": {
                    "type": "server_error",
                    "code": "internal",
                    "message": "The server had an error",
                    "param": None,
                    "event_id": None,
                },
            }
        )
        error = await h.events.wait_for(ErrorEvent)
        assert isinstance(error.error, CharivoProviderError)
        assert error.error.message == "The server had an error"


async def test_failed_response_reports_an_error_then_completes() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.server.send_event(
            {
                "type": "response.done",
                "response": {
                    "id": "resp_failed",
                    "object": "realtime.response",
                    "status": "failed",
                    "status_details": {
                        "type": "failed",
                        "error": {"type": "server_error", "message": "Model overloaded"},
                    },
                    "output": [],
                    "usage": None,
                },
            }
        )
        done = await h.events.wait_for(AssistantResponseCompleted)
        error = h.events.of(ErrorEvent)[0]
        assert error.error.args == ("Model overloaded",)
        assert (done.response_id, done.text, done.usage) == ("resp_failed", "", None)


# ------------------------------------------------------------------ link loss, recovery, close


async def test_dropped_socket_emits_connection_lost() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.server.drop_connection()
        lost = await h.events.wait_for(ConnectionLost)
        assert lost.cause == "socket-closed"
        assert isinstance(lost.error, CharivoTransportError)
        assert not h.transport.connected
        with pytest.raises(CharivoStateError):
            await h.transport.send_text("anyone?")


async def test_server_close_frame_emits_connection_lost() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.server.close_connection(1011, "keepalive ping timeout")
        lost = await h.events.wait_for(ConnectionLost)
        assert lost.cause == "socket-closed"
        assert "1011" in str(lost.error)
        assert "keepalive ping timeout" in str(lost.error)


async def test_unanswered_ping_emits_connection_lost() -> None:
    async with running(ping_interval=0.05, ping_timeout=0.1) as h:
        await h.transport.connect(CONFIG)
        h.server.ignore_pings()
        lost = await h.events.wait_for(ConnectionLost)
        assert lost.cause == "socket-closed"
        assert "no pong" in str(lost.error)


async def test_answered_pings_keep_the_connection() -> None:
    async with running(ping_interval=0.02, ping_timeout=0.5) as h:
        await h.transport.connect(CONFIG)
        await anyio.sleep(0.2)
        assert h.transport.connected
        assert h.events.of(ConnectionLost) == []


async def test_recover_opens_a_new_socket_and_resends_the_config() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.server.drop_connection()
        await h.events.wait_for(ConnectionLost)
        latest = attrs.evolve(CONFIG, instructions="Welcome back.")
        await h.transport.recover(latest)
        assert h.server.connections == 2
        first, second = h.server.received_of("session.update")
        assert second["session"] == {**first["session"], "instructions": "Welcome back."}
        assert len(h.events.of(SessionStarted)) == 2
        await h.transport.send_text("again")
        await h.events.wait_for(AssistantResponseCompleted)


async def test_disconnect_sends_a_close_frame_and_is_idempotent() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.transport.disconnect()
        await h.server.wait_for_close_frames(1)
        await h.transport.disconnect()
        await anyio.sleep(0.05)
        assert h.events.of(ConnectionLost) == []
        assert not h.transport.connected
        with pytest.raises(CharivoStateError):
            await h.transport.send_audio(b"\x00\x00")


async def test_disconnect_is_bounded_when_the_server_never_answers_the_close_frame() -> None:
    async with running(close_timeout=0.3) as h:
        await h.transport.connect(CONFIG)
        h.server.never_answer_close()
        started = time.monotonic()
        await h.transport.disconnect()
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 2.0
        assert h.server.close_frames == 1
        await anyio.sleep(0.05)
        assert h.events.of(ConnectionLost) == []


async def test_leaving_the_transport_block_closes_the_connection() -> None:
    async with LocalRealtimeServer(api_key=KEY) as server:
        transport = OpenAIRealtimeTransport(api_key=KEY, url=server.url)
        recorder = Recorder()
        transport.on_event(recorder)
        with anyio.fail_after(TEST_BOUND):
            async with transport:
                await transport.connect(CONFIG)
            await server.wait_for_close_frames(1)
        assert recorder.of(ConnectionLost) == []
        with pytest.raises(CharivoStateError):
            await transport.connect(CONFIG)


# ------------------------------------------------------------------ bad input from the server


@pytest.mark.parametrize("kind", GARBAGE_KINDS)
async def test_bad_server_input_is_logged_and_dropped(
    kind: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with running(max_message_size=64 * 1024) as h:
        await h.transport.connect(CONFIG)
        await h.server.send_garbage(kind, size=200 * 1024)
        await h.transport.send_text("still fine?")
        done = await h.events.wait_for(AssistantResponseCompleted)
        assert done.text == "You said: still fine?"
        assert h.events.types()[:2] == ["session.started", "assistant.response.started"]
        assert h.events.of(ConnectionLost) == []
        assert len(warnings_of(caplog)) == 1, warnings_of(caplog)


async def test_the_default_limit_drops_a_message_above_16_mib(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.server.send_garbage("oversized")
        await h.transport.send_text("ok")
        await h.events.wait_for(AssistantResponseCompleted)
        assert h.events.of(AssistantTextDelta)[0].text == "You "
        assert any("oversized" in m for m in warnings_of(caplog))


async def test_deeply_nested_json_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.server.send_raw_text("[" * 100_000 + "]" * 100_000)
        await h.transport.send_text("ok")
        await h.events.wait_for(AssistantResponseCompleted)
        assert h.events.of(ConnectionLost) == []
        assert warnings_of(caplog)


async def test_known_but_unmapped_events_are_ignored_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("hi")
        await h.events.wait_for(AssistantResponseCompleted)
        assert "conversation.item.added" in h.server.sent_types()
        assert "response.output_text.done" in h.server.sent_types()
        assert warnings_of(caplog) == []


async def test_a_raising_callback_does_not_break_the_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as h:

        def explode(event: TransportEvent) -> None:
            raise RuntimeError("listener bug")

        h.transport.on_event(explode)
        await h.transport.connect(CONFIG)
        await h.transport.send_text("hi")
        await h.events.wait_for(AssistantResponseCompleted)
        assert any("callback raised" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ secrets


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


async def test_the_api_key_never_appears_in_logs_errors_or_reprs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    texts: list[str] = []
    async with running(
        {"audio": True}, ping_interval=0.05, transcription_model="gpt-4o-transcribe"
    ) as h:
        texts.append(repr(h.transport))
        texts.append(repr(vars(h.transport)) if hasattr(h.transport, "__dict__") else "")
        await h.transport.connect(CONFIG)
        texts.append(repr(h.transport))
        texts.append(repr(vars(h.transport)))
        await h.transport.send_text("weather please")
        call = await h.events.wait_for(ToolCall)
        assert call.call_id is not None
        await h.transport.send_tool_result(call.call_id, {"ok": True})
        await h.events.wait_for(AssistantResponseCompleted, 2)
        await h.transport.send_audio(speech(300) + silence(600))
        await h.events.wait_for(UserTranscript)
        # a server that echoes the key back in an error message
        await h.server.send_event(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": "bad",
                    "message": f"Key {KEY} is weird",
                    "param": None,
                    "event_id": None,
                },
            }
        )
        echoed = await h.events.wait_for(ErrorEvent)
        errors.append(echoed.error)
        h.server.reject_next_session_update(f"Rejected for {KEY}")
        try:
            await h.transport.update_session(CONFIG)
        except CharivoError as error:
            errors.append(error)
        await h.server.send_garbage("invalid-json")
        await h.server.drop_connection()
        lost = await h.events.wait_for(ConnectionLost)
        assert lost.error is not None
        errors.append(lost.error)
        await h.transport.recover(CONFIG)
        await h.transport.disconnect()
        texts.append(repr(h.transport))
    bad = OpenAIRealtimeTransport(api_key=KEY, url="ws://127.0.0.1:9/v1/realtime")
    async with bad:
        try:
            await bad.connect(CONFIG)
        except CharivoError as error:
            errors.append(error)
    assert len(errors) == 4
    for caught in errors:
        for link in _chain(caught):
            texts += [str(link), repr(link), *map(str, link.args)]
    for record in caplog.records:
        texts += [record.getMessage(), str(record.args), record.exc_text or ""]
        if record.exc_info and record.exc_info[1] is not None:
            texts += [str(e) for e in _chain(record.exc_info[1])]
    leaked = [text for text in texts if KEY in text]
    assert leaked == []
    assert any("[redacted]" in str(caught) for caught in errors)


# ------------------------------------------------------------------ helpers and docs


def test_every_session_update_shape_validates_against_the_sdk() -> None:
    for config in (
        RealtimeSessionConfig(),
        CONFIG,
        RealtimeSessionConfig(tools=(), tool_choice="none", instructions=""),
        RealtimeSessionConfig(voice="verse", max_tokens=1),
    ):
        validate_client_event(build_session_update(config, event_id="evt_1"))
        validate_client_event(build_session_update(config, transcription_model="whisper-1"))


def test_the_validator_rejects_unknown_fields() -> None:
    event = build_session_update(CONFIG, event_id="evt_1")
    event["session"]["temperature"] = 0.7  # a beta-interface field, not GA
    with pytest.raises(AssertionError, match="unknown fields"):
        validate_client_event(event)
    with pytest.raises(AssertionError, match="unknown fields"):
        validate_client_event({"type": "response.cancel", "reason": "x"})
    with pytest.raises(ValueError):
        validate_client_event({"type": "response.teleport"})


def test_the_mapping_table_is_complete_and_documented() -> None:
    assert [r.source for r in CLIENT_ROUTES] == [
        "connect(config)",
        "update_session(config)",
        "recover(config)",
        "disconnect()",
        "send_text(text)",
        "send_audio(audio)",
        "send_tool_result(call_id, output)",
        "interrupt()",
        "commit_audio()",
        "clear_audio()",
        "truncate_audio(item_id, audio_end_ms)",
    ]
    mapped = {r.source for r in SERVER_ROUTES if r.dispatch}
    assert mapped == {
        "session.created",
        "session.updated",
        "response.created",
        "response.output_text.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.function_call_arguments.done",
        "response.done",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "rate_limits.updated",
        "error",
    }
    assert not mapped & IGNORED_SERVER_EVENTS
    docs = Path(__file__).resolve().parents[1] / "docs" / "openai-transport.md"
    assert mapping_table_markdown() in docs.read_text(encoding="utf-8")


# ------------------------------------------------------------------ voice: one response at a time


def _tone(ms: int, amplitude: float = 0.5) -> bytes:
    """``ms`` of a 150 Hz tone as PCM16 24 kHz (loud enough for the server's VAD)."""
    samples = array(
        "h",
        (
            round(amplitude * 32767 * math.sin(2 * math.pi * 150 * n / 24_000))
            for n in range(24 * ms)
        ),
    )
    if sys.byteorder == "big":  # pragma: no cover
        samples.byteswap()
    return samples.tobytes()


def _quiet(ms: int) -> bytes:
    return b"\x00\x00" * 24 * ms


PUSH_TO_TALK = attrs.evolve(CONFIG, turn_detection=TurnDetection(mode="manual"))


def _said(role: str, text: str) -> dict[str, Any]:
    part = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


async def _spoken_reply(h: Harness, text: str, config: RealtimeSessionConfig = CONFIG) -> str:
    """Connect, say ``text``, wait for the spoken answer; the id of its audio item."""
    await h.transport.connect(config)
    await h.transport.send_text(text)
    await h.events.wait_for(AssistantResponseCompleted)
    item_id = h.events.of(AudioOutputDelta)[0].item_id
    assert item_id is not None
    return item_id


def _received_ms(h: Harness, item_id: str, bytes_per_ms: int) -> int:
    audio = sum(len(d.audio) for d in h.events.of(AudioOutputDelta) if d.item_id == item_id)
    return audio // bytes_per_ms


async def test_a_message_during_a_response_waits_for_its_response_done() -> None:
    def reply(text: str) -> str:
        return " ".join(["la"] * 40) if text == "first" else f"You said: {text}"

    async with running({"delta_delay": 0.005, "reply": reply}) as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("first")
        await h.events.wait_for(AssistantTextDelta)
        await h.transport.send_text("second")
        assert h.server.received_types().count("response.create") == 1  # held back
        assert h.transport.response_in_flight
        first = await h.events.wait_for(AssistantResponseCompleted)
        second = await h.events.wait_for(AssistantResponseCompleted, 2)
        assert first.text.startswith("la la")
        assert second.text == "You said: second"
        assert h.server.received_types().count("response.create") == 2
        assert h.server.sent_of("error") == []  # never conversation_already_has_active_response
        assert h.events.of(ErrorEvent) == []


async def test_a_tool_result_asks_for_one_response_after_response_done() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("weather in Paris?")
        call = await h.events.wait_for(ToolCall)
        assert call.call_id is not None
        await h.transport.send_tool_result(call.call_id, {"temperature": 21})
        done = await h.events.wait_for(AssistantResponseCompleted, 2)
        assert done.text == 'get_weather says: {"temperature": 21}'
        assert h.server.received_types().count("response.create") == 2
        assert h.server.sent_of("error") == []
        assert h.events.of(ErrorEvent) == []


async def test_race_errors_from_the_service_are_not_surfaced() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        for code, message in (
            ("conversation_already_has_active_response", "Conversation already has an active"),
            ("response_cancel_not_active", "Cancellation failed: no active response found"),
        ):
            await h.server.send_event(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "code": code,
                        "message": message,
                        "param": None,
                        "event_id": None,
                    },
                }
            )
        await h.transport.send_text("still answering?")
        done = await h.events.wait_for(AssistantResponseCompleted)
        assert done.text == "You said: still answering?"
        assert h.events.of(ErrorEvent) == []


# ------------------------------------------------------------------ voice: the model's audio


async def test_audio_deltas_carry_the_exact_bytes_and_item_ids() -> None:
    async with running({"audio": True}) as h:
        await _spoken_reply(h, "sing me something")
        from_server = [
            (event["item_id"], base64.b64decode(event["delta"]))
            for event in h.server.sent_of("response.output_audio.delta")
        ]
        received = [(event.item_id, event.audio) for event in h.events.of(AudioOutputDelta)]
        assert received == from_server
        types = h.events.types()
        assert types.index("audio.output.started") < types.index("audio.output.delta")
        levels = [event.rms for event in h.events.of(AudioLipsync)]
        assert levels == [pytest.approx(pcm16_rms(audio), abs=1e-9) for _, audio in from_server]


async def test_g711_output_is_forwarded_and_measured_in_its_format() -> None:
    config = attrs.evolve(CONFIG, output_audio_format="g711_alaw", input_audio_format="g711_ulaw")
    async with running({"audio": True}) as h:
        item_id = await _spoken_reply(h, "hello", config)
        acknowledged = h.server.sent_of("session.updated")[-1]["session"]["audio"]
        assert acknowledged["output"]["format"] == {"type": "audio/pcma"}
        assert acknowledged["input"]["format"] == {"type": "audio/pcmu"}
        deltas = h.events.of(AudioOutputDelta)
        levels = [event.rms for event in h.events.of(AudioLipsync)]
        assert levels == [g711_rms(d.audio, "g711_alaw") for d in deltas]
        assert len(set(levels)) > 1
        # 8 bytes a millisecond: truncating past the end clamps to what was received
        received_ms = _received_ms(h, item_id, 8)
        await h.transport.truncate_audio(item_id, received_ms + 10_000)
        truncated = await h.server.wait_for_sent("conversation.item.truncated")
        assert truncated["audio_end_ms"] == received_ms
        await h.transport.send_audio(b"\x7f\xff\x00")  # one byte a sample: any length
        assert h.events.of(ErrorEvent) == []


async def test_truncate_audio_clamps_and_refuses_unknown_items() -> None:
    async with running({"audio": True}) as h:
        item_id = await _spoken_reply(h, "tell me a story")
        received_ms = _received_ms(h, item_id, 48)
        with pytest.raises(CharivoValidationError, match="unknown assistant audio item"):
            await h.transport.truncate_audio("item_never_seen", 10)
        await h.transport.truncate_audio(item_id, received_ms * 10)
        truncated = await h.server.wait_for_sent("conversation.item.truncated")
        assert h.server.received_of("conversation.item.truncate") == [
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": received_ms,
                "event_id": h.server.received_of("conversation.item.truncate")[0]["event_id"],
            }
        ]
        assert truncated["item_id"] == item_id
        assert h.events.of(ErrorEvent) == []


# ------------------------------------------------------------------ voice: the user's audio


async def test_push_to_talk_commit_and_clear() -> None:
    server = {"transcribe": lambda audio: "hello from the mic"}
    async with running(server, transcription_model="gpt-4o-transcribe") as h:
        await h.transport.connect(PUSH_TO_TALK)
        assert h.server.received[0]["session"]["audio"]["input"]["turn_detection"] is None
        await h.transport.send_audio(_tone(300))
        await h.transport.commit_audio()
        transcript = await h.events.wait_for(UserTranscript)
        await h.events.wait_for(AssistantResponseCompleted)
        assert transcript.text == "hello from the mic"
        tail = h.server.received_types()[-2:]
        assert tail == ["input_audio_buffer.commit", "response.create"]
        await h.transport.send_audio(_tone(100))
        await h.transport.clear_audio()
        await h.server.wait_for_sent("input_audio_buffer.cleared")
        assert h.events.of(ErrorEvent) == []
        assert h.events.of(UserSpeechStarted) == []  # no turn detection


async def test_server_vad_reports_speech_and_transcripts() -> None:
    server = {"transcribe": lambda audio: "testing one two"}
    async with running(server, transcription_model="gpt-4o-transcribe") as h:
        await h.transport.connect(CONFIG)  # the service's default: server VAD
        await h.transport.send_audio(_quiet(200) + _tone(500) + _quiet(800))
        started = await h.events.wait_for(UserSpeechStarted)
        stopped = await h.events.wait_for(UserSpeechStopped)
        transcript = await h.events.wait_for(UserTranscript)
        assert started.item_id is not None and started.item_id == stopped.item_id
        assert started.audio_start_ms is not None and stopped.audio_end_ms is not None
        assert started.audio_start_ms < stopped.audio_end_ms
        assert transcript.text == "testing one two"
        deltas = h.events.of(UserTranscriptDelta)
        assert "".join(d.text for d in deltas) == "testing one two"
        assert {d.item_id for d in deltas} == {started.item_id}


async def test_big_audio_is_split_into_appends_below_the_limit() -> None:
    audio = _quiet(1) * (MAX_APPEND_BYTES // 48 + 500)  # a bit over 3 MiB
    async with running() as h:
        await h.transport.connect(PUSH_TO_TALK)
        await h.transport.send_audio(audio)
        await h.server.wait_for_event("input_audio_buffer.append", 2)
        appends = h.server.received_of("input_audio_buffer.append")
        chunks = [base64.b64decode(event["audio"]) for event in appends]
        assert [len(chunk) for chunk in chunks] == [MAX_APPEND_BYTES, len(audio) - MAX_APPEND_BYTES]
        assert b"".join(chunks) == audio
        assert all(len(event["audio"]) < 15 * 1024 * 1024 for event in appends)


async def test_pcm16_audio_with_half_a_sample_is_refused_before_sending() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        with pytest.raises(CharivoValidationError, match="16-bit"):
            await h.transport.send_audio(b"\x00\x01\x02")
        assert "input_audio_buffer.append" not in h.server.received_types()


async def test_rate_limits_and_failed_transcriptions_are_mapped() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        limits = [{"name": "requests", "limit": 100, "remaining": 99, "reset_seconds": 0.5}]
        await h.server.send_event({"type": "rate_limits.updated", "rate_limits": limits})
        await h.server.send_event(
            {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": "item_1",
                "content_index": 0,
                "error": {
                    "type": "transcription_error",
                    "code": "audio_unintelligible",
                    "message": "Could not transcribe",
                    "param": None,
                },
            }
        )
        updated = await h.events.wait_for(RateLimitsUpdated)
        failure = await h.events.wait_for(ErrorEvent)
        assert updated.limits == tuple(limits)
        assert isinstance(failure.error, CharivoProviderError)
        assert failure.error.provider_code == "audio_unintelligible"


async def test_the_voice_config_reaches_the_server_in_ga_shape() -> None:
    config = attrs.evolve(
        CONFIG,
        turn_detection=TurnDetection(mode="semantic_vad", eagerness="high"),
        output_modalities=("audio",),
        input_transcription_model="gpt-4o-transcribe",
    )
    async with running(transcription_model="whisper-1") as h:
        await h.transport.connect(config)
        session = h.server.received[0]["session"]
        assert session == build_session_update(config)["session"]
        assert session["audio"]["input"] == {
            "transcription": {"model": "gpt-4o-transcribe"},
            "turn_detection": {
                "type": "semantic_vad",
                "eagerness": "high",
                "create_response": True,
                "interrupt_response": True,
            },
        }
        assert h.events.of(ErrorEvent) == []


# ------------------------------------------------------------------ voice: recover replays


async def test_recover_replays_the_conversation_into_the_new_session() -> None:
    async with running() as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("My name is Ada.")
        await h.events.wait_for(AssistantResponseCompleted)
        await h.transport.send_text("And the weather?")
        call = await h.events.wait_for(ToolCall)
        assert call.call_id is not None
        await h.transport.send_tool_result(call.call_id, {"sky": "clear"})
        await h.events.wait_for(AssistantResponseCompleted, 3)
        await h.server.drop_connection()
        await h.events.wait_for(ConnectionLost)
        before = len(h.server.received)
        await h.transport.recover(CONFIG)
        await h.server.wait_for_event("conversation.item.create", 3 + 6)
        replay = h.server.received[before:]
        assert [event["type"] for event in replay] == (
            ["session.update"] + ["conversation.item.create"] * 6
        )
        assert [event["item"] for event in replay[1:]] == [
            _said("user", "My name is Ada."),
            _said("assistant", "You said: My name is Ada."),
            _said("user", "And the weather?"),
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'},
            _said("assistant", 'get_weather says: {"sky": "clear"}'),
        ]
        # the new service session remembers
        await h.transport.send_text("What did I say first?")
        done = await h.events.wait_for(AssistantResponseCompleted, 4)
        assert "My name is Ada." in done.text
        assert h.events.of(ErrorEvent) == []
        assert h.server.sent_of("error") == []


async def test_recover_replays_at_most_max_replay_items_and_connect_starts_afresh() -> None:
    async with running(max_replay_items=1) as h:
        await h.transport.connect(CONFIG)
        for count, text in enumerate(("one", "two"), 1):
            await h.transport.send_text(text)
            await h.events.wait_for(AssistantResponseCompleted, count)
        await h.transport.recover(CONFIG)
        await h.server.wait_for_event("conversation.item.create", 3)
        replayed = h.server.received_of("conversation.item.create")[2:]
        assert [event["item"]["role"] for event in replayed] == ["assistant"]
        assert replayed[0]["item"]["content"][0]["text"] == "You said: two"
        await h.transport.connect(CONFIG)  # a new conversation: nothing to replay
        await h.transport.recover(CONFIG)
        await h.transport.send_text("three")
        await h.server.wait_for_event("conversation.item.create", 4)
        assert h.server.received_of("conversation.item.create")[3]["item"]["content"] == [
            {"type": "input_text", "text": "three"}
        ]
    async with running(max_replay_items=0) as h:
        await h.transport.connect(CONFIG)
        await h.transport.send_text("hello")
        await h.events.wait_for(AssistantResponseCompleted)
        await h.transport.recover(CONFIG)
        await h.transport.send_text("again")
        await h.server.wait_for_event("conversation.item.create", 2)
        assert h.server.received_of("conversation.item.create")[1]["item"]["content"] == [
            {"type": "input_text", "text": "again"}
        ]


def test_the_transport_is_a_voice_transport_and_checks_max_replay_items() -> None:
    assert isinstance(OpenAIRealtimeTransport(), VoiceTransport)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(CharivoValidationError):
            OpenAIRealtimeTransport(max_replay_items=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ with the manager


async def test_end_to_end_with_the_manager() -> None:
    calls: list[dict[str, Any]] = []

    async def get_weather(args: dict[str, Any], context: Any) -> Mapping[str, Any]:
        calls.append(args)
        return {"city": args["city"], "temperature": 21}

    emitter = RecordingEmitter()
    async with LocalRealtimeServer(api_key=KEY) as server:
        transport = OpenAIRealtimeTransport(api_key=KEY, url=server.url, close_timeout=1.0)
        manager = create_realtime_manager(
            transport,
            tools=[RealtimeToolRegistration(definition=WEATHER, handler=get_weather)],
            transport_timeout=3.0,
        )
        manager.set_event_emitter(emitter)

        async def wait_emitted(name: str, count: int = 1) -> None:
            await until(lambda: len(emitter.payloads(name)) >= count)

        with anyio.fail_after(TEST_BOUND):
            async with transport, manager:
                await manager.start_session({"instructions": "Be brief.", "voice": "marin"})
                assert manager.state.connection == "connected"
                await manager.send_message("hello")
                await wait_emitted("realtime:assistant:done")
                assert emitter.last("realtime:assistant:done").text == "You said: hello"
                assert [p.text for p in emitter.payloads("realtime:assistant:delta")] == [
                    "You ",
                    "said: ",
                    "hello",
                ]
                await manager.send_message("How is the weather?")
                await wait_emitted("realtime:tool:result")
                await wait_emitted("realtime:assistant:done", 3)
                assert calls == [{"city": "Paris"}]
                result = emitter.last("realtime:tool:result")
                assert result.output == {"city": "Paris", "temperature": 21}
                assert emitter.last("realtime:assistant:done").text == (
                    'get_weather says: {"city": "Paris", "temperature": 21}'
                )
                usage = emitter.last("realtime:usage")
                assert usage.session_id == manager.session_id
                assert usage.model == "gpt-realtime"
                await manager.stop_session()
            await server.wait_for_close_frames(1)
        session = server.received_of("session.update")[0]["session"]
        assert session["tools"][0]["name"] == "get_weather"
        assert session["instructions"] == "Be brief."
        for event in server.received:
            validate_client_event(event)
    names = emitter.names()
    assert names.count("realtime:session:start") == 1
    assert names.count("realtime:session:end") == 1
    assert emitter.last("realtime:session:end").reason == "user"
    assert "realtime:tool:call" in names
    assert names.index("realtime:tool:call") < names.index("realtime:tool:result")


async def test_the_manager_reconnects_through_recover_after_a_drop() -> None:
    emitter = RecordingEmitter()
    async with LocalRealtimeServer(api_key=KEY) as server:
        transport = OpenAIRealtimeTransport(api_key=KEY, url=server.url, close_timeout=1.0)
        manager = create_realtime_manager(
            transport, reconnect_delays=(0.05, 0.05), transport_timeout=3.0
        )
        manager.set_event_emitter(emitter)
        with anyio.fail_after(TEST_BOUND):
            async with transport, manager:
                await manager.start_session()
                await server.drop_connection()
                await until(lambda: bool(emitter.payloads("realtime:reconnect:success")))
                assert server.connections == 2
                assert emitter.last("realtime:reconnect:success").cause == "socket-closed"
                await manager.send_message("back")
                await until(lambda: bool(emitter.payloads("realtime:assistant:done")))
        for event in server.received:
            validate_client_event(event)
