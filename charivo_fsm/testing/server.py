"""An embedded OpenAI-Realtime-compatible WebSocket server for tests and the demo.

:class:`LocalRealtimeServer` listens on 127.0.0.1 (an ephemeral port), speaks
the GA Realtime protocol closely enough for
:class:`~charivo_fsm.transports.openai.OpenAIRealtimeTransport`, records what
the client sent and takes fault-injection commands.  It is built on anyio and
wsproto like the transport, so it runs on asyncio and on trio::

    async with LocalRealtimeServer(api_key="sk-test") as server:
        async with OpenAIRealtimeTransport(api_key="sk-test", url=server.url) as transport:
            ...
        assert server.received_types()[0] == "session.update"

Behaviour
---------
* Handshake: the ``Authorization: Bearer <key>`` header must carry ``api_key``
  (``api_key=None`` accepts anything); otherwise HTTP 401 with an OpenAI-style
  JSON error body.  Every handshake is recorded in :attr:`requests` (path and
  query, never the header).
* On connect: ``session.created``.
* ``session.update``: merged into the connection's session and acknowledged
  with ``session.updated`` carrying the whole session.
* ``conversation.item.create``: stored, acknowledged with
  ``conversation.item.added`` and ``conversation.item.done``.
* ``response.create``: a response is streamed — ``response.created``,
  ``response.output_item.added``, ``response.content_part.added``, one
  ``response.output_text.delta`` per word (with ``audio=True``:
  ``response.output_audio_transcript.delta`` plus a PCM16 tone in
  ``response.output_audio.delta``, then ``response.output_audio.done``),
  ``…done`` events and ``response.done`` with ``usage`` (word counts).  The
  reply to a user message is ``reply(text)`` (default ``"You said: <text>"``).
  When the latest user message contains a :class:`ToolTrigger` keyword and
  the session declares that tool, the response is a function call instead
  (``response.function_call_arguments.done`` with a fresh ``call_id``); after
  the client's ``function_call_output`` and ``response.create`` the answer is
  ``"<tool> says: <output>"``.
* ``response.cancel``: the streaming response stops and ends with
  ``response.done`` (``status: "cancelled"``); with no response in flight an
  ``error`` (``response_cancel_not_active``) is sent, as the real API does.
* ``input_audio_buffer.append``: with ``transcribe_audio=True`` (default) a
  ``conversation.item.input_audio_transcription.completed`` follows, with the
  transcript ``"heard <n> bytes of audio"``.
* Anything else: an ``error`` event (``unknown_event``).

Fault injection
---------------
Flags (take effect for the next matching client event):
:meth:`reject_next_session_update`, :meth:`delay_next_session_update`,
:meth:`send_bad_tool_arguments`, :meth:`never_answer_close`,
:meth:`ignore_pings`.  Actions on the live connections (awaitable):
:meth:`drop_connection`, :meth:`send_garbage`, :meth:`send_event`,
:meth:`close_connection`.  Waiting: :meth:`wait_for_event`,
:meth:`wait_for_connections`, :meth:`wait_for_close_frames`.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import ssl
import sys
import uuid
from array import array
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
import anyio.streams.tls
import attrs
from wsproto.events import Request

from ..transports._websocket import (
    Decision,
    DroppedMessage,
    WebSocket,
    WebSocketError,
    server_handshake,
)

__all__ = [
    "DEFAULT_TOOL_TRIGGERS",
    "GARBAGE_KINDS",
    "GarbageKind",
    "HandshakeRecord",
    "LocalRealtimeServer",
    "ToolTrigger",
]

logger = logging.getLogger("charivo_fsm.testing.server")

GarbageKind = Literal[
    "invalid-json", "unknown-type", "non-object", "oversized", "binary", "malformed"
]
"""What :meth:`LocalRealtimeServer.send_garbage` can send:

* ``invalid-json`` — a text message that is not JSON;
* ``unknown-type`` — a JSON object whose ``type`` the protocol does not have;
* ``non-object`` — valid JSON that is not an object (an array);
* ``oversized`` — a text message of ``size`` bytes (default 16 MiB + 1 KiB);
* ``binary`` — a binary message;
* ``malformed`` — a known event type with a missing field
  (``response.output_text.delta`` without ``delta``).
"""

GARBAGE_KINDS: tuple[GarbageKind, ...] = get_args(GarbageKind)

_DEFAULT_OVERSIZE = 16 * 1024 * 1024 + 1024
_SAMPLE_RATE = 24_000


@attrs.frozen(slots=True)
class ToolTrigger:
    """When a user message contains ``keyword`` (case-insensitive) and the session
    declares a tool called ``name``, the next response calls it with ``arguments``."""

    keyword: str
    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)


DEFAULT_TOOL_TRIGGERS: tuple[ToolTrigger, ...] = (
    ToolTrigger("weather", "get_weather", {"city": "Paris"}),
)


@attrs.frozen(slots=True)
class HandshakeRecord:
    """One opening handshake: the request path, its query parameters and whether
    the Authorization header was accepted (the header itself is never kept)."""

    path: str
    query: Mapping[str, str]
    authorized: bool


def _default_reply(text: str) -> str:
    return f"You said: {text}"


def _tone(samples: int, *, amplitude: float = 0.5, frequency: float = 440.0) -> bytes:
    """A sine tone as little-endian PCM16 at 24 kHz (RMS = amplitude / sqrt 2)."""
    values = array(
        "h",
        (
            round(amplitude * 32767 * math.sin(2 * math.pi * frequency * n / _SAMPLE_RATE))
            for n in range(samples)
        ),
    )
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values.tobytes()


def _words(text: str) -> list[str]:
    """Split ``text`` into deltas that join back to it exactly."""
    parts = text.split(" ")
    return [part + " " for part in parts[:-1]] + [parts[-1]] if text else []


class _Conn:
    """Server-side state of one client connection."""

    def __init__(self, ws: WebSocket, model: str) -> None:
        self.ws = ws
        self.id = "sess_" + uuid.uuid4().hex[:20]
        self.session: dict[str, Any] = {
            "type": "realtime",
            "id": self.id,
            "object": "realtime.session",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": _SAMPLE_RATE}},
                "output": {"format": {"type": "audio/pcm", "rate": _SAMPLE_RATE}, "voice": "alloy"},
            },
        }
        self.conversation_id = "conv_" + uuid.uuid4().hex[:20]
        self.items: list[dict[str, Any]] = []
        self.calls: dict[str, str] = {}  # call_id -> tool name
        self.response: tuple[str, anyio.CancelScope] | None = None
        self.audio_bytes = 0
        self.group: anyio.abc.TaskGroup | None = None


class LocalRealtimeServer:
    """A local OpenAI-Realtime-compatible server; see the module documentation.

    :param api_key: the key the ``Authorization`` header must carry
        (``None``: no check).
    :param host: the loopback address to listen on.
    :param path: the URL path (the server accepts any path; :attr:`url` uses this).
    :param tool_triggers: keyword → tool call rules.
    :param reply: the assistant's answer to a user message.
    :param audio: stream audio (``output_audio_transcript`` deltas and PCM16
        ``output_audio`` deltas) instead of ``output_text`` deltas.
    :param delta_delay: seconds between two deltas of a response.
    :param transcribe_audio: answer each ``input_audio_buffer.append`` with a
        transcription event.
    :param ssl_context: a server-side TLS context: serve ``wss://``.
    :param max_message_size: client messages above this many bytes are dropped.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "sk-local-test-key",
        host: str = "127.0.0.1",
        path: str = "/v1/realtime",
        tool_triggers: Sequence[ToolTrigger] = DEFAULT_TOOL_TRIGGERS,
        reply: Callable[[str], str] = _default_reply,
        audio: bool = False,
        delta_delay: float = 0.0,
        transcribe_audio: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        max_message_size: int = 16 * 1024 * 1024,
    ) -> None:
        self._api_key = api_key
        self._host = host
        self._path = path
        self.tool_triggers = tuple(tool_triggers)
        self.reply = reply
        self.audio = audio
        self.delta_delay = delta_delay
        self.transcribe_audio = transcribe_audio
        self._ssl_context = ssl_context
        self._max_message_size = max_message_size
        self._port: int | None = None
        self._listener: anyio.abc.Listener[Any] | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._conns: set[_Conn] = set()
        self._changed: anyio.Event | None = None
        self.received: list[dict[str, Any]] = []
        """Every client event received (parsed JSON objects), in arrival order."""
        self.sent: list[dict[str, Any]] = []
        """Every well-formed server event sent (garbage excluded), in order."""
        self.requests: list[HandshakeRecord] = []
        """Every opening handshake, accepted or not."""
        self.connections = 0
        """How many WebSocket connections were accepted so far."""
        self.close_frames = 0
        """How many close frames clients sent."""
        self._reject_next: list[str] = []
        self._delay_next: list[float] = []
        self._bad_tool_arguments = 0
        self._never_answer_close = False
        self._ignore_pings = False

    # ------------------------------------------------------------ lifetime

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not running (use `async with`)")
        return self._port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/v1/realtime`` (``wss://`` with an ``ssl_context``)."""
        scheme = "wss" if self._ssl_context is not None else "ws"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}{self._path}"

    async def __aenter__(self) -> LocalRealtimeServer:
        listener = await anyio.create_tcp_listener(local_host=self._host, local_port=0)
        self._port = int(listener.listeners[0].extra(anyio.abc.SocketAttribute.local_port))
        self._listener = listener
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(listener.serve, self._serve_client, group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, listener = self._group, self._listener
        assert group is not None and listener is not None
        group.cancel_scope.cancel()
        self._group = None
        try:
            return await group.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()

    # ------------------------------------------------------------ inspection

    def received_types(self) -> list[str]:
        """The ``type`` of every received client event, in order."""
        return [str(event.get("type")) for event in self.received]

    def received_of(self, event_type: str) -> list[dict[str, Any]]:
        """The received client events of one type, in order."""
        return [event for event in self.received if event.get("type") == event_type]

    def sent_types(self) -> list[str]:
        """The ``type`` of every server event sent, in order."""
        return [str(event.get("type")) for event in self.sent]

    def sent_of(self, event_type: str) -> list[dict[str, Any]]:
        """The sent server events of one type, in order."""
        return [event for event in self.sent if event.get("type") == event_type]

    @property
    def active_connections(self) -> int:
        return len(self._conns)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        with anyio.fail_after(timeout):
            while not check():
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    async def wait_for_event(
        self, event_type: str, count: int = 1, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait until ``count`` client events of ``event_type`` arrived; return the last."""
        await self._wait_until(
            lambda: len(self.received_of(event_type)) >= count, timeout, event_type
        )
        return self.received_of(event_type)[count - 1]

    async def wait_for_connections(self, count: int = 1, *, timeout: float = 5.0) -> None:
        """Wait until ``count`` connections were accepted in total."""
        await self._wait_until(lambda: self.connections >= count, timeout, "connections")

    async def wait_for_close_frames(self, count: int = 1, *, timeout: float = 5.0) -> None:
        """Wait until clients sent ``count`` close frames in total."""
        await self._wait_until(lambda: self.close_frames >= count, timeout, "close frames")

    # ------------------------------------------------------------ fault injection

    def reject_next_session_update(self, message: str = "Invalid session configuration") -> None:
        """Answer the next ``session.update`` with an ``error`` naming its ``event_id``."""
        self._reject_next.append(message)

    def delay_next_session_update(self, seconds: float) -> None:
        """Acknowledge the next ``session.update`` only after ``seconds``."""
        self._delay_next.append(seconds)

    def send_bad_tool_arguments(self) -> None:
        """The next tool call carries arguments that are not valid JSON."""
        self._bad_tool_arguments += 1

    def never_answer_close(self, enabled: bool = True) -> None:
        """Ignore clients' close frames: no close reply, the TCP connection stays open."""
        self._never_answer_close = enabled
        for conn in self._conns:
            conn.ws.answer_close = not enabled

    def ignore_pings(self, enabled: bool = True) -> None:
        """Stop answering clients' pings (their keep-alive then fails)."""
        self._ignore_pings = enabled
        for conn in self._conns:
            conn.ws.answer_pings = not enabled

    async def drop_connection(self) -> None:
        """Drop every live connection at the TCP level (no close frame)."""
        for conn in tuple(self._conns):
            await conn.ws.abort()

    async def close_connection(self, code: int = 1011, reason: str = "server closing") -> None:
        """Start a closing handshake on every live connection (a close frame)."""
        for conn in tuple(self._conns):
            try:
                await conn.ws.close(code, reason)
            except WebSocketError:
                pass

    async def send_event(self, event: Mapping[str, Any]) -> None:
        """Send ``event`` (``event_id`` added if missing) on every live connection."""
        for conn in tuple(self._conns):
            await self._send(conn, dict(event))

    async def send_raw_text(self, text: str) -> None:
        """Send ``text`` as one text message, unchecked, on every live connection."""
        for conn in tuple(self._conns):
            try:
                await conn.ws.send_text(text)
            except WebSocketError:
                pass

    async def send_garbage(self, kind: GarbageKind, *, size: int = _DEFAULT_OVERSIZE) -> None:
        """Send one bad message of ``kind`` (see :data:`GarbageKind`) on every live connection."""
        if kind not in GARBAGE_KINDS:
            raise ValueError(f"unknown garbage kind {kind!r}; expected one of {GARBAGE_KINDS}")
        for conn in tuple(self._conns):
            try:
                if kind == "invalid-json":
                    await conn.ws.send_text('{"type": "response.output_text.delta", "delta": ')
                elif kind == "unknown-type":
                    await conn.ws.send_text(
                        json.dumps({"type": "response.teleported", "event_id": _event_id()})
                    )
                elif kind == "non-object":
                    await conn.ws.send_text('["response.created", 1, 2]')
                elif kind == "oversized":
                    filler = "x" * max(0, size - 48)
                    await conn.ws.send_text(
                        json.dumps({"type": "response.output_text.delta", "delta": filler})
                    )
                elif kind == "binary":
                    await conn.ws.send_bytes(b"\x00\x01 binary frame")
                else:
                    await conn.ws.send_text(
                        json.dumps({"type": "response.output_text.delta", "event_id": _event_id()})
                    )
            except WebSocketError:
                pass

    # ------------------------------------------------------------ connection handling

    def _decide(self, request: Request) -> Decision:
        parts = urlsplit(request.target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        presented: str | None = None
        for name, value in request.extra_headers:
            if name.lower() == b"authorization":
                text = value.decode("latin-1")
                if text.startswith("Bearer "):
                    presented = text[len("Bearer ") :]
        authorized = self._api_key is None or presented == self._api_key
        self.requests.append(HandshakeRecord(parts.path, query, authorized))
        self._notify()
        if authorized:
            return None
        if presented is None:
            message = "You didn't provide an API key in the Authorization header (Bearer)."
        else:
            shown = f"{presented[:3]}***{presented[-2:]}" if len(presented) > 8 else "***"
            message = f"Incorrect API key provided: {shown}."
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        return 401, json.dumps(body).encode()

    async def _serve_client(self, stream: anyio.abc.ByteStream) -> None:
        conn: _Conn | None = None
        try:
            if self._ssl_context is not None:
                stream = await anyio.streams.tls.TLSStream.wrap(
                    stream,
                    server_side=True,
                    ssl_context=self._ssl_context,
                    standard_compatible=False,
                )
            result = await server_handshake(
                stream, decide=self._decide, max_message_size=self._max_message_size
            )
            if result is None:
                return
            ws, request = result
            ws.answer_close = not self._never_answer_close
            ws.answer_pings = not self._ignore_pings
            query = dict(parse_qsl(urlsplit(request.target).query))
            conn = _Conn(ws, query.get("model", "gpt-realtime"))
            self._conns.add(conn)
            self.connections += 1
            self._notify()
            async with anyio.create_task_group() as group:
                conn.group = group
                await self._send(conn, {"type": "session.created", "session": conn.session})
                await self._read(conn)
                group.cancel_scope.cancel()
        except (WebSocketError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        except Exception:  # never take the server down
            logger.exception("local realtime server: a connection handler failed")
        finally:
            if conn is not None:
                self._conns.discard(conn)
                self._notify()
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)

    async def _read(self, conn: _Conn) -> None:
        while True:
            try:
                message = await conn.ws.receive()
            except WebSocketError:
                if conn.ws.peer_close is not None:
                    self.close_frames += 1
                    self._notify()
                    if not conn.ws.answer_close:
                        # never_answer_close(): keep the TCP connection open, silent.
                        await anyio.sleep_forever()
                return
            if isinstance(message, DroppedMessage):
                await self._error(conn, "invalid_request_error", "message_dropped", message.reason)
                continue
            try:
                event = json.loads(message)
            except (ValueError, RecursionError):
                await self._error(conn, "invalid_request_error", "invalid_json", "Invalid JSON")
                continue
            if not isinstance(event, dict):
                await self._error(conn, "invalid_request_error", "invalid_event", "Not an object")
                continue
            self.received.append(event)
            self._notify()
            await self._on_client_event(conn, event)

    # ------------------------------------------------------------ protocol

    async def _send(self, conn: _Conn, event: dict[str, Any]) -> None:
        event.setdefault("event_id", _event_id())
        await conn.ws.send_text(json.dumps(event))
        self.sent.append(event)

    async def _error(
        self,
        conn: _Conn,
        error_type: str,
        code: str,
        message: str,
        *,
        about: str | None = None,
        param: str | None = None,
    ) -> None:
        error = {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": about,
        }
        await self._send(conn, {"type": "error", "error": error})

    async def _on_client_event(self, conn: _Conn, event: dict[str, Any]) -> None:
        event_type = event.get("type")
        about = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if event_type == "session.update":
            await self._on_session_update(conn, event, about)
        elif event_type == "conversation.item.create":
            await self._on_item_create(conn, event, about)
        elif event_type == "response.create":
            await self._on_response_create(conn, about)
        elif event_type == "response.cancel":
            if conn.response is None:
                await self._error(
                    conn,
                    "invalid_request_error",
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    about=about,
                )
            else:
                conn.response[1].cancel()
        elif event_type == "input_audio_buffer.append":
            await self._on_audio(conn, event, about)
        else:
            await self._error(
                conn,
                "invalid_request_error",
                "unknown_event",
                f"Unsupported client event type: {str(event_type)[:60]}",
                about=about,
            )

    async def _on_session_update(
        self, conn: _Conn, event: dict[str, Any], about: str | None
    ) -> None:
        session = event.get("session")
        if self._delay_next:
            await anyio.sleep(self._delay_next.pop(0))
        if self._reject_next:
            message = self._reject_next.pop(0)
            await self._error(
                conn,
                "invalid_request_error",
                "invalid_value",
                message,
                about=about,
                param="session",
            )
            return
        if not isinstance(session, dict):
            await self._error(
                conn,
                "invalid_request_error",
                "missing_required_parameter",
                "Missing session",
                about=about,
                param="session",
            )
            return
        for key, value in session.items():
            if key == "audio" and isinstance(value, dict):
                for side, settings in value.items():
                    if isinstance(settings, dict):
                        conn.session["audio"].setdefault(side, {}).update(settings)
            else:
                conn.session[key] = value
        await self._send(conn, {"type": "session.updated", "session": conn.session})

    async def _on_item_create(self, conn: _Conn, event: dict[str, Any], about: str | None) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await self._error(
                conn,
                "invalid_request_error",
                "missing_required_parameter",
                "Missing item",
                about=about,
                param="item",
            )
            return
        if item.get("type") == "function_call_output" and item.get("call_id") not in conn.calls:
            await self._error(
                conn,
                "invalid_request_error",
                "invalid_value",
                f"Tool call {str(item.get('call_id'))[:40]} not found",
                about=about,
                param="item.call_id",
            )
            return
        stored = {**item, "id": "item_" + uuid.uuid4().hex[:20], "object": "realtime.item"}
        stored.setdefault("status", "completed")
        previous = conn.items[-1]["id"] if conn.items else None
        conn.items.append(stored)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self._send(conn, {"type": kind, "item": stored, "previous_item_id": previous})

    async def _on_audio(self, conn: _Conn, event: dict[str, Any], about: str | None) -> None:
        try:
            size = len(base64.b64decode(str(event.get("audio", "")), validate=True))
        except ValueError:
            await self._error(
                conn,
                "invalid_request_error",
                "invalid_value",
                "Invalid base64 audio",
                about=about,
                param="audio",
            )
            return
        conn.audio_bytes += size
        if self.transcribe_audio:
            await self._send(
                conn,
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": "item_" + uuid.uuid4().hex[:20],
                    "content_index": 0,
                    "transcript": f"heard {size} bytes of audio",
                    "usage": {"type": "duration", "seconds": size / (2 * _SAMPLE_RATE)},
                },
            )

    async def _on_response_create(self, conn: _Conn, about: str | None) -> None:
        if conn.response is not None:
            await self._error(
                conn,
                "invalid_request_error",
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress",
                about=about,
            )
            return
        response_id = "resp_" + uuid.uuid4().hex[:20]
        scope = anyio.CancelScope()
        conn.response = (response_id, scope)
        assert conn.group is not None
        conn.group.start_soon(self._run_response, conn, response_id, scope)

    def _plan(self, conn: _Conn) -> tuple[str, ToolTrigger | None]:
        """What to answer: (text, None) or ("", the tool to call)."""
        last = conn.items[-1] if conn.items else None
        if last is not None and last.get("type") == "function_call_output":
            name = conn.calls.get(str(last.get("call_id")), "tool")
            return f"{name} says: {last.get('output', '')}", None
        user_text = ""
        if last is not None and last.get("type") == "message" and last.get("role") == "user":
            for part in last.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "input_text":
                    user_text += str(part.get("text", ""))
        declared = {
            tool.get("name") for tool in conn.session.get("tools") or () if isinstance(tool, dict)
        }
        for trigger in self.tool_triggers:
            if trigger.keyword.lower() in user_text.lower() and trigger.name in declared:
                return "", trigger
        if not user_text and conn.audio_bytes:
            user_text = f"{conn.audio_bytes} bytes of audio"
        return self.reply(user_text), None

    def _response(self, conn: _Conn, response_id: str, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "conversation_id": conn.conversation_id,
            "output_modalities": ["audio"] if self.audio else ["text"],
            "max_output_tokens": conn.session.get("max_output_tokens", "inf"),
            "output": [],
            "usage": None,
            **extra,
        }

    async def _run_response(self, conn: _Conn, response_id: str, scope: anyio.CancelScope) -> None:
        try:
            await self._stream_response(conn, response_id, scope)
        except WebSocketError:
            pass  # the client went away mid-response
        finally:
            if conn.response is not None and conn.response[0] == response_id:
                conn.response = None

    async def _stream_response(
        self, conn: _Conn, response_id: str, scope: anyio.CancelScope
    ) -> None:
        output: list[dict[str, Any]] = []
        status = "cancelled"
        audio_open: list[str] = []
        with scope:
            await self._send(
                conn,
                {
                    "type": "response.created",
                    "response": self._response(conn, response_id, "in_progress"),
                },
            )
            text, tool = self._plan(conn)
            if tool is not None:
                await self._stream_tool_call(conn, response_id, tool, output)
            else:
                await self._stream_text(conn, response_id, text, output, audio_open)
            status = "completed"
        conn.response = None
        if status == "cancelled":
            for item_id in audio_open:
                await self._send(
                    conn,
                    {
                        "type": "response.output_audio.done",
                        "response_id": response_id,
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                    },
                )
        words = sum(
            len(str(part.get("text") or part.get("transcript") or "").split())
            for item in output
            for part in item.get("content") or ()
        )
        usage = {
            "total_tokens": 10 + words,
            "input_tokens": 10,
            "output_tokens": words,
            "input_token_details": {
                "text_tokens": 10,
                "audio_tokens": 0,
                "cached_tokens": 0,
                "image_tokens": 0,
            },
            "output_token_details": {"text_tokens": words, "audio_tokens": 0},
        }
        extra: dict[str, Any] = {"output": output, "usage": usage}
        if status == "cancelled":
            extra["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        await self._send(
            conn,
            {
                "type": "response.done",
                "response": self._response(conn, response_id, status, **extra),
            },
        )

    async def _stream_tool_call(
        self, conn: _Conn, response_id: str, tool: ToolTrigger, output: list[dict[str, Any]]
    ) -> None:
        call_id = "call_" + uuid.uuid4().hex[:16]
        item_id = "item_" + uuid.uuid4().hex[:20]
        if self._bad_tool_arguments:
            self._bad_tool_arguments -= 1
            arguments = '{"city": "Paris"'
        else:
            arguments = json.dumps(dict(tool.arguments))
        conn.calls[call_id] = tool.name
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": tool.name,
            "call_id": call_id,
            "arguments": "",
        }
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        await self._send(
            conn,
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            },
        )
        await self._send(
            conn,
            {
                "type": "response.function_call_arguments.delta",
                **where,
                "call_id": call_id,
                "delta": arguments,
            },
        )
        await self._send(
            conn,
            {
                "type": "response.function_call_arguments.done",
                **where,
                "call_id": call_id,
                "name": tool.name,
                "arguments": arguments,
            },
        )
        done = {**item, "status": "completed", "arguments": arguments}
        conn.items.append(done)
        output.append(done)
        await self._send(
            conn,
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": done,
            },
        )

    async def _stream_text(
        self,
        conn: _Conn,
        response_id: str,
        text: str,
        output: list[dict[str, Any]],
        audio_open: list[str],
    ) -> None:
        item_id = "item_" + uuid.uuid4().hex[:20]
        # Item content parts say output_audio/output_text; content_part events say audio/text.
        part_type = "output_audio" if self.audio else "output_text"
        field = "transcript" if self.audio else "text"
        empty_part: dict[str, Any] = {"type": "audio" if self.audio else "text", field: ""}
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        await self._send(
            conn,
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            },
        )
        await self._send(
            conn,
            {
                "type": "response.content_part.added",
                **where,
                "content_index": 0,
                "part": empty_part,
            },
        )
        delta_type = (
            "response.output_audio_transcript.delta" if self.audio else "response.output_text.delta"
        )
        sent = ""
        final_part: dict[str, Any] = {"type": part_type, field: ""}
        final_item = {**item, "status": "incomplete", "content": [final_part]}
        output.append(final_item)
        for piece in _words(text):
            if self.delta_delay:
                await anyio.sleep(self.delta_delay)
            await self._send(
                conn, {"type": delta_type, **where, "content_index": 0, "delta": piece}
            )
            sent += piece
            final_part[field] = sent
            if self.audio:
                if not audio_open:
                    audio_open.append(item_id)
                chunk = base64.b64encode(_tone(480)).decode("ascii")
                await self._send(
                    conn,
                    {
                        "type": "response.output_audio.delta",
                        **where,
                        "content_index": 0,
                        "delta": chunk,
                    },
                )
        if self.audio:
            audio_open.clear()
            await self._send(
                conn, {"type": "response.output_audio.done", **where, "content_index": 0}
            )
            await self._send(
                conn,
                {
                    "type": "response.output_audio_transcript.done",
                    **where,
                    "content_index": 0,
                    "transcript": sent,
                },
            )
        else:
            await self._send(
                conn,
                {"type": "response.output_text.done", **where, "content_index": 0, "text": sent},
            )
        await self._send(
            conn,
            {
                "type": "response.content_part.done",
                **where,
                "content_index": 0,
                "part": {"type": empty_part["type"], field: sent},
            },
        )
        final_item["status"] = "completed"
        conn.items.append(final_item)
        await self._send(
            conn,
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": final_item,
            },
        )


def _event_id() -> str:
    return "event_" + uuid.uuid4().hex[:20]
