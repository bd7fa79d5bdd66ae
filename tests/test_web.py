"""The web backend (charivo_fsm.web) without a browser.

* ``serve_page`` over an in-memory page socket, on asyncio and trio (virtual
  time), with the fake transport: the page protocol, bad input, a page that goes
  away mid-response, state without config;
* ``serve_page`` with the real WebSocket transport and the local server (real
  clocks): a page that leaves mid-response leaves no task and no connection;
* the Starlette app through Starlette's ``TestClient`` (app on asyncio and on
  trio): the page and its files, the WebSocket protocol, oversized frames, the
  origin check, the connection count going back to zero;
* ``charivo-fsm web`` as a process: it prints its URL, serves, stops on Ctrl+C.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from charivo_fsm import RealtimeTool, RealtimeToolRegistration
from charivo_fsm.events import (
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioOutputDelta,
    ToolCall,
    UserSpeechStarted,
)
from charivo_fsm.testing import FakeTransport, LocalRealtimeServer
from charivo_fsm.transports.openai import OpenAIRealtimeTransport
from charivo_fsm.web import PageGone, PageSettings, create_app, serve_page
from charivo_fsm.web.protocol import (
    PageProtocolError,
    Played,
    Simple,
    Start,
    Text,
    event_message,
    parse_page_message,
)

SECRET_INSTRUCTIONS = "secret-instructions-do-not-leak"
TOOL = RealtimeTool(
    name="get_weather",
    description="secret-tool-description",
    parameters={"type": "object", "properties": {"secretParam": {"type": "string"}}},
)


async def _weather(args: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"forecast": "sunny"}


TOOLS = (RealtimeToolRegistration(definition=TOOL, handler=_weather),)
CONFIG = {"instructions": SECRET_INSTRUCTIONS, "voice": "secret-voice-name", "model": "m-secret"}
LEAKS = (SECRET_INSTRUCTIONS, "secret-tool-description", "secretParam", "secret-voice-name")


def _no_leak(messages: list[Any]) -> None:
    text = json.dumps(messages)
    for secret in LEAKS:
        assert secret not in text
    assert '"config"' not in text


# ------------------------------------------------------------------ protocol


def test_parse_page_messages() -> None:
    assert parse_page_message(b"\x01\x00\x02\x00").type == "audio"
    assert parse_page_message('{"type": "start"}') == Start()
    assert parse_page_message('{"type": "start", "pushToTalk": true}') == Start(True)
    assert parse_page_message('{"type": "stop"}') == Simple("stop")
    assert parse_page_message('{"type": "text", "text": "hi"}') == Text("hi")
    assert parse_page_message('{"type": "played", "itemId": "i", "playedMs": 5}') == Played("i", 5)
    audio = base64.b64encode(b"\x00\x01\x02\x03").decode()
    parsed = parse_page_message(json.dumps({"type": "audio", "audio": audio}))
    assert parsed.type == "audio"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"kind": "start"}', "bad_message"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "start", "pushToTalk": "yes"}', "bad_message"),
        ('{"type": "stop", "now": true}', "bad_message"),
        ('{"type": "text"}', "bad_message"),
        ('{"type": "text", "text": "   "}', "bad_message"),
        ('{"type": "played", "itemId": "i", "playedMs": -1}', "bad_message"),
        ('{"type": "played", "itemId": "i", "playedMs": 1.5}', "bad_message"),
        ('{"type": "played", "itemId": "", "playedMs": 1}', "bad_message"),
        ('{"type": "audio", "audio": "!!!"}', "bad_audio"),
        ('{"type": "audio", "audio": "AA=="}', "bad_audio"),  # one byte
        (b"\x00\x01\x02", "bad_audio"),
        (b"", "bad_audio"),
    ],
)
def test_bad_page_messages(message: str | bytes, code: str) -> None:
    with pytest.raises(PageProtocolError) as raised:
        parse_page_message(message)
    assert raised.value.code == code


def test_state_goes_out_without_config() -> None:
    from charivo_fsm.model import (
        ConnectionState,
        RealtimeSessionConfig,
        RealtimeState,
        ResponseState,
        ResponseStatus,
        SessionState,
        SessionStatus,
    )
    from charivo_fsm.payloads import StatePayload

    config = RealtimeSessionConfig(instructions=SECRET_INSTRUCTIONS, tools=(TOOL,))
    state = RealtimeState(
        connection=ConnectionState.CONNECTED,
        session=SessionState(SessionStatus.ACTIVE, config, "hiyori"),
        response=ResponseState(ResponseStatus.IDLE, ""),
        last_error=None,
    )
    message = event_message("realtime:state", StatePayload(state))
    assert message["payload"]["state"]["session"] == {"status": "active", "characterId": "hiyori"}
    _no_leak([message])


# ------------------------------------------------------------------ in-memory page


class MemoryPage:
    """A :class:`~charivo_fsm.web.PageSocket` driven by the test (the page side)."""

    def __init__(self) -> None:
        self._in, self._out = anyio.create_memory_object_stream[str | bytes](100)
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.left = False
        self._changed = anyio.Event()
        self.block_sends = False

    # backend side
    async def receive(self) -> str | bytes | None:
        try:
            return await self._out.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return None

    async def send_text(self, text: str) -> None:
        if self.left or self.closed:
            raise PageGone
        while self.block_sends:
            await anyio.sleep(0.01)
        self.sent.append(json.loads(text))
        self._notify()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self._notify()

    # page side
    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def say(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        await self._in.send(message)

    def leave(self) -> None:
        self.left = True
        self._in.close()

    def of(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            m
            for m in self.sent
            if m["type"] == kind and all(m.get(k) == v for k, v in fields.items())
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m["payload"] for m in self.of("event", name=name)]

    async def wait(self, check: Callable[[], object], timeout: float = 5.0) -> None:
        with anyio.fail_after(timeout):
            while not check():
                await self._changed.wait()


def _settings(fake: FakeTransport, **options: Any) -> PageSettings:
    return PageSettings(
        transport_factory=lambda: fake,
        tools=TOOLS,
        session_config=CONFIG,
        transport_timeout=2.0,
        **options,
    )


async def _started(page: MemoryPage, fake: FakeTransport) -> None:
    await page.wait(lambda: page.of("hello"))
    await page.say({"type": "start"})
    await page.wait(lambda: page.of("done", command="start"))


@pytest.mark.anyio
async def test_page_session_protocol() -> None:
    fake = FakeTransport(emit_session_started_on_connect=True)
    page = MemoryPage()
    async with anyio.create_task_group() as group:
        group.start_soon(serve_page, page, _settings(fake))
        await page.wait(lambda: page.of("hello"))
        hello = page.of("hello")[0]
        assert hello["tools"] == ["get_weather"]
        assert hello["audio"] == {
            "encoding": "pcm16",
            "sampleRate": 24000,
            "channels": 1,
            "endianness": "little",
        }
        assert hello["pushToTalk"] is True
        # bad input: an error each, and the session goes on
        await page.say("{oops")
        await page.say({"type": "teleport"})
        await page.say(b"\x00\x01\x02")
        await page.wait(lambda: len(page.of("error")) == 3)
        assert [e["code"] for e in page.of("error")] == ["bad_json", "unknown_type", "bad_audio"]
        await _started(page, fake)
        config = fake.calls_to("connect")[0][0]
        assert config.instructions == SECRET_INSTRUCTIONS
        assert config.turn_detection.mode == "server_vad"
        await page.say(b"\x00\x01" * 480)
        await page.say({"type": "text", "text": "hello"})
        await page.say({"type": "commit"})
        await page.say({"type": "clear"})
        await page.say({"type": "interrupt"})
        await page.wait(lambda: page.of("done", command="interrupt"))
        assert fake.calls_to("send_audio") == [(b"\x00\x01" * 480,)]
        assert fake.calls_to("send_text") == [("hello",)]
        assert fake.count("commit_audio") == fake.count("clear_audio") == 1
        assert fake.count("interrupt") == 1
        # the model talks; the page reports what it played
        fake.emit(AssistantResponseStarted())
        fake.emit(AudioOutputDelta(audio=b"\x00\x00" * 2400, item_id="item_a"))
        fake.emit(AssistantTextDelta("Hi"))
        await page.wait(lambda: page.events("realtime:audio:delta"))
        delta = page.events("realtime:audio:delta")[0]
        assert delta == {"audio": base64.b64encode(b"\x00\x00" * 2400).decode(), "itemId": "item_a"}
        await page.say({"type": "played", "itemId": "item_a", "playedMs": 60})
        await page.say({"type": "clear"})  # read after the report: its "done" means applied
        await page.wait(lambda: len(page.of("done", command="clear")) == 2)
        fake.emit(UserSpeechStarted(item_id="item_u", audio_start_ms=10))
        await fake.wait_for_call("truncate_audio")
        assert fake.calls_to("truncate_audio") == [("item_a", 60)]
        # a report for an item the engine never had
        await page.say({"type": "played", "itemId": "nope", "playedMs": 1})
        await page.wait(lambda: page.of("error", command="played"))
        # a tool call shows up with its result
        fake.emit(ToolCall(name="get_weather", args={}, call_id="c1"))
        await page.wait(lambda: page.events("realtime:tool:result"))
        assert page.events("realtime:tool:call")[0]["callId"] == "c1"
        assert page.events("realtime:tool:result")[0]["output"] == {"forecast": "sunny"}
        await page.say({"type": "stop"})
        await page.wait(lambda: page.events("realtime:session:end"))
        assert page.events("realtime:session:end")[0]["reason"] == "user"
        page.leave()
    assert page.closed is None  # the page left by itself
    _no_leak(page.sent)
    states = page.events("realtime:state")
    assert states and all("config" not in s["state"]["session"] for s in states)


@pytest.mark.anyio
async def test_push_to_talk_start(fake: FakeTransport) -> None:
    page = MemoryPage()
    async with anyio.create_task_group() as group:
        group.start_soon(serve_page, page, _settings(fake))
        await page.wait(lambda: page.of("hello"))
        await page.say({"type": "start", "pushToTalk": True})
        await page.wait(lambda: page.of("done", command="start"))
        assert fake.calls_to("connect")[0][0].turn_detection.mode == "manual"
        await page.say({"type": "stop"})
        await page.wait(lambda: page.of("done", command="stop"))
        await page.say({"type": "start"})  # a voice session again: not stuck in manual
        await page.wait(lambda: len(page.of("done", command="start")) == 2)
        assert fake.calls_to("connect")[1][0].turn_detection.mode == "server_vad"
        page.leave()


@pytest.mark.anyio
async def test_audio_errors_are_not_repeated(fake: FakeTransport) -> None:
    page = MemoryPage()
    async with anyio.create_task_group() as group:
        group.start_soon(serve_page, page, _settings(fake))
        await page.wait(lambda: page.of("hello"))
        for _ in range(5):
            await page.say(b"\x00\x00" * 10)  # no session yet
        await page.say({"type": "interrupt"})  # also refused: no session
        await page.wait(lambda: page.of("error", command="interrupt"))
        assert len(page.of("error", command="audio")) == 1
        assert page.of("error", command="audio")[0]["code"] == "command_failed"
        assert page.of("error", command="audio")[0]["error"]["code"] == "CHARIVO_STATE_ERROR"
        await _started(page, fake)
        await page.say(b"\x00\x00" * 10)
        await fake.wait_for_call("send_audio")
        page.leave()


@pytest.mark.anyio
async def test_oversized_frame_closes_only_that_socket() -> None:
    fake = FakeTransport(emit_session_started_on_connect=True)
    big, small = MemoryPage(), MemoryPage()
    other = FakeTransport()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(serve_page, big, _settings(fake, max_frame_bytes=1000))
            group.start_soon(serve_page, small, _settings(other, max_frame_bytes=1000))
            await _started(big, fake)
            await big.say(b"\x00" * 1002)
            await big.wait(lambda: big.closed)
            assert big.closed is not None and big.closed[0] == 1009
            await small.wait(lambda: small.of("hello"))
            await small.say(json.dumps({"type": "text", "text": "x" * 900}))  # under the limit
            await small.wait(lambda: small.of("error", command="text"))  # no session: refused
            assert small.closed is None
            small.leave()
    assert fake.count("disconnect") == 1  # the big page's session was stopped


@pytest.mark.anyio
async def test_page_leaving_mid_response_stops_the_session() -> None:
    fake = FakeTransport(emit_session_started_on_connect=True)
    fake.hang("disconnect")  # the worst case: the transport never finishes closing
    page = MemoryPage()
    tasks_before = len(anyio.get_running_tasks())
    async with anyio.create_task_group() as group:
        group.start_soon(serve_page, page, _settings(fake))
        await _started(page, fake)
        fake.emit(AssistantResponseStarted())
        fake.emit(AudioOutputDelta(audio=b"\x01\x00" * 960, item_id="item_a"))
        await page.wait(lambda: page.events("realtime:audio:delta"))
        page.leave()
        left_at = anyio.current_time()
    assert anyio.current_time() - left_at <= 2.0 + 1.0  # transport_timeout (+ its margin)
    assert fake.count("disconnect") == 1
    assert len(anyio.get_running_tasks()) == tasks_before


@pytest.mark.anyio
async def test_slow_page_overflow_closes_the_socket() -> None:
    fake = FakeTransport(emit_session_started_on_connect=True)
    page = MemoryPage()
    async with anyio.create_task_group() as group:
        group.start_soon(serve_page, page, _settings(fake, max_event_buffer=8))
        await _started(page, fake)
        page.block_sends = True
        for _ in range(20):
            fake.emit(AssistantTextDelta("x"))
        page.block_sends = False
        await page.wait(lambda: page.closed)
    assert page.closed is not None and page.closed[0] == 1011
    assert page.of("error", code="overflow")
    assert fake.count("disconnect") == 1


@pytest.mark.anyio
async def test_transport_factory_failure() -> None:
    def broken() -> FakeTransport:
        raise RuntimeError("no network")

    page = MemoryPage()
    await serve_page(page, PageSettings(transport_factory=broken))
    assert page.closed is not None and page.closed[0] == 1011
    assert page.of("error")[0]["message"] == "the backend cannot reach the model"


# ------------------------------------------------------------------ real transport


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def real_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_page_leaving_mid_response_real_transport(real_backend: str) -> None:
    """Real sockets, real clocks: the page leaves while the local server streams a
    spoken answer; the session stops, the server sees the connection go, no task
    is left."""

    async def main() -> None:
        server = LocalRealtimeServer(api_key="k", audio=True, audio_pace=1.0)
        async with server:
            page = MemoryPage()
            settings = PageSettings(
                transport_factory=lambda: OpenAIRealtimeTransport(api_key="k", url=server.url),
                transport_timeout=3.0,
            )
            await anyio.sleep(0.05)  # the server's listener tasks are up
            tasks_before = len(anyio.get_running_tasks())
            with anyio.fail_after(15):
                async with anyio.create_task_group() as group:
                    group.start_soon(serve_page, page, settings)
                    await _started(page, FakeTransport())
                    await page.say({"type": "text", "text": "tell me a long story"})
                    await page.wait(lambda: len(page.events("realtime:audio:delta")) >= 3)
                    page.leave()
                    left_at = anyio.current_time()
            assert anyio.current_time() - left_at < 3.0
            with anyio.fail_after(3):  # the server's side of the connection ends too
                while server.active_connections:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            assert len(anyio.get_running_tasks()) == tasks_before
            assert page.events("realtime:session:start")

    anyio.run(main, backend=real_backend)


# ------------------------------------------------------------------ Starlette app


@pytest.fixture(params=["asyncio", "trio"], ids=["app-asyncio", "app-trio"])
def client_for(request: pytest.FixtureRequest) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(fake: FakeTransport, **options: Any) -> TestClient:
        app = create_app(
            lambda: fake, tools=TOOLS, session_config=CONFIG, transport_timeout=2.0, **options
        )
        client = TestClient(app, backend=request.param)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _receive_until(ws: Any, check: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    seen = []
    while True:
        message = ws.receive_json()
        seen.append(message)
        if check(message):
            return seen


def _wait_idle(client: TestClient) -> None:
    for _ in range(500):
        if client.app.state.page_sessions == 0:  # type: ignore[attr-defined]
            return
        time.sleep(0.01)
    raise AssertionError("a page session is still running")


def test_page_and_static_files(client_for: Callable[..., TestClient]) -> None:
    client = client_for(FakeTransport())
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="status"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "capture-worklet.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert "registerProcessor" in client.get("/static/capture-worklet.js").text
    assert client.get("/healthz").json() == {"ok": True, "pageSessions": 0}
    for secret in LEAKS:
        assert secret not in page.text


def test_websocket_protocol(client_for: Callable[..., TestClient]) -> None:
    fake = FakeTransport(emit_session_started_on_connect=True)
    client = client_for(fake)
    with client.websocket_connect("/session") as ws:
        seen = [ws.receive_json()]
        assert seen[0]["type"] == "hello"
        ws.send_text("not json")
        seen += _receive_until(ws, lambda m: m["type"] == "error")
        assert seen[-1]["code"] == "bad_json"
        ws.send_json({"type": "nope"})
        seen += _receive_until(ws, lambda m: m["type"] == "error")
        assert seen[-1]["code"] == "unknown_type"
        ws.send_bytes(b"\x00\x01\x02")
        seen += _receive_until(ws, lambda m: m["type"] == "error")
        assert seen[-1]["code"] == "bad_audio"
        ws.send_json({"type": "start"})
        seen += _receive_until(ws, lambda m: m.get("command") == "start")
        ws.send_bytes(b"\x00\x01" * 240)
        ws.send_json({"type": "text", "text": "hi"})
        seen += _receive_until(ws, lambda m: m.get("command") == "text")
        assert fake.calls_to("send_audio") == [(b"\x00\x01" * 240,)]
        names = [m.get("name") for m in seen if m["type"] == "event"]
        assert "realtime:session:start" in names and "realtime:state" in names
    _wait_idle(client)
    assert fake.count("disconnect") == 1
    _no_leak(seen)


def test_oversized_frame_closes_the_socket(client_for: Callable[..., TestClient]) -> None:
    fake = FakeTransport()
    client = client_for(fake, max_frame_bytes=4096)
    with client.websocket_connect("/session") as ws:
        assert ws.receive_json()["type"] == "hello"
        ws.send_bytes(b"\x00" * 5000)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1009
    with client.websocket_connect("/session") as ws:  # the app still serves others
        assert ws.receive_json()["type"] == "hello"
    _wait_idle(client)


def test_disconnect_mid_response(client_for: Callable[..., TestClient]) -> None:
    fake = FakeTransport(emit_session_started_on_connect=True)
    client = client_for(fake)
    with client.websocket_connect("/session") as ws:
        ws.receive_json()
        ws.send_json({"type": "start"})
        _receive_until(ws, lambda m: m.get("command") == "start")
        fake.emit(AssistantResponseStarted())
        fake.emit(AudioOutputDelta(audio=b"\x00\x00" * 960, item_id="item_a"))
        _receive_until(ws, lambda m: m.get("name") == "realtime:audio:delta")
    _wait_idle(client)
    assert fake.count("disconnect") == 1


def test_cross_origin_is_refused(client_for: Callable[..., TestClient]) -> None:
    client = client_for(FakeTransport())
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/session", headers={"origin": "http://evil.example"}):
            pass
    assert refused.value.code == 1008
    with client.websocket_connect("/session", headers={"origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "hello"
    _wait_idle(client)


# ------------------------------------------------------------------ the command


def test_cli_web_serves_the_page_and_stops_on_ctrl_c() -> None:
    """``charivo-fsm web --port 0`` (local server) prints its URL, serves the page,
    and stops cleanly on SIGINT."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("OPENAI_API_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "charivo_fsm", "web", "--port", "0"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("charivo-fsm web: open http://127.0.0.1:"), line
        assert "local realtime server" in line
        url = line.split("open ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert b'id="status"' in answer.read()
        with urllib.request.urlopen(url + "healthz", timeout=5) as answer:
            assert json.loads(answer.read()) == {"ok": True, "pageSessions": 0}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
