"""An embedded OpenAI-Realtime-compatible WebSocket server for tests and the demo.

:class:`LocalRealtimeServer` listens on 127.0.0.1 (an ephemeral port) and
behaves like the real service's GA interface, refusals included, so a client
can be tested against it the way it will meet the service.  It records what
each side sent and takes fault-injection commands.  It is built on anyio and
wsproto like the transport, so it runs on asyncio and on trio::

    async with LocalRealtimeServer(api_key="sk-test") as server:
        async with OpenAIRealtimeTransport(api_key="sk-test", url=server.url) as transport:
            ...
        assert server.received_types()[0] == "session.update"

The rules live, socket-free, in :mod:`charivo_fsm.testing.service_rules` (one
connection's session, conversation and input audio) and
:mod:`charivo_fsm.testing.service_response` (one response's events); this module
is the I/O around them: handshakes, connections, pacing, recording, faults.
Every event the server sends itself validates against the ``openai`` SDK's
``RealtimeServerEvent`` models; every error carries the real service's ``code``,
``type`` (``invalid_request_error``) and message, and in ``event_id`` the
``event_id`` of the client event it refuses.

Connection
----------
* The ``Authorization: Bearer <key>`` header must carry ``api_key``
  (``api_key=None`` accepts anything), else HTTP 401 with an OpenAI-style JSON
  body (``invalid_api_key``).  Every handshake is recorded in :attr:`requests`
  (path and query, never the header).  The ``model`` query parameter names the
  session's model.
* On connect: ``session.created`` with the whole session.  Defaults as the
  service's: ``audio/pcm`` 24 kHz in and out, voice ``alloy``, server VAD
  (threshold 0.5, prefix padding 300 ms, silence 500 ms, create and interrupt
  response), no input transcription; ``output_modalities`` is ``["text"]``, or
  ``["audio"]`` (the service's default) with ``audio=True``.

Client secrets (remote bootstrap)
---------------------------------
* ``POST {http_url}/realtime/client_secrets`` (plain HTTP on the same port)
  mints short-lived ``ek_`` keys as the service does (body ``expires_after`` 10
  to 7200 s, default 600, and ``session``); only the long-lived key may mint.
* A WebSocket accepts the long-lived key or an unexpired ``ek_`` key in the
  ``Authorization`` header; from a browser page (the
  ``openai-insecure-api-key.<key>`` subprotocol) only ``ek_`` keys.  Expiry
  follows the ``clock`` option (Unix seconds), so tests can move time.  See
  :mod:`charivo_fsm.testing.client_secrets`.

Session
-------
* ``session.update`` merges into the session (``audio.input``/``audio.output``
  key by key; a ``turn_detection`` object is completed with its type's
  defaults) and is answered with ``session.updated`` carrying the whole
  session.  Refused, with nothing applied: no ``session.type``
  (``missing_required_parameter``), an unknown field (``unknown_parameter``),
  ``output_modalities`` other than ``["audio"]`` or ``["text"]`` (the service
  cannot do both), a voice change once the session has produced assistant
  audio (``cannot_update_voice``, "Cannot update a conversation's voice if
  assistant audio is present.").

Conversation (memory)
---------------------
Each connection keeps its conversation: user messages (typed, or committed
audio), assistant messages (produced, or created by the client, as a client
replays history into a new session after a reconnect), function calls and
their outputs.  :meth:`conversation` returns the latest connection's items.

* ``conversation.item.create``: checked as the service does (role, content part
  types, assistant parts need ``text``, a ``function_call_output`` must name a
  ``call_id`` of a function call in the conversation: ``invalid_tool_call_id``),
  stored (after ``previous_item_id`` if given; ``"root"`` = first) and
  acknowledged with ``conversation.item.added`` and ``conversation.item.done``.
* ``conversation.item.delete`` / ``retrieve``: ``conversation.item.deleted`` /
  ``retrieved``, or ``item_delete_invalid_item_id`` / ``item_retrieve_invalid_item_id``.
* ``conversation.item.truncate``: the item must be in the conversation
  (``item_truncate_invalid_item_id``), an assistant audio message
  (``unsupported_content_type``), ``content_index`` 0 and ``audio_end_ms`` not
  past the audio the server produced for it (``invalid_value``, "Audio content
  of 1200ms is already shorter than 1500ms").  Then
  ``conversation.item.truncated``, and the stored item keeps only that audio
  and the transcript of the words it finished saying.

Responses
---------
* ``response.create`` while a response is active is refused
  (``conversation_already_has_active_response``, naming the active response);
  no second response starts.  ``response.output_modalities``,
  ``max_output_tokens`` and ``metadata`` are honoured.
* A response is ``response.created``, output items with real ids, indexes and
  content indexes (``response.output_item.added``, ``conversation.item.added``,
  ``response.content_part.added``, one delta per word, the ``…done`` events,
  ``conversation.item.done``), ``response.done`` with ``usage``, then
  ``rate_limits.updated``.  With
  ``["audio"]`` each word is a ``response.output_audio_transcript.delta`` and
  40 ms chunks of a synthetic voice in the session's output format
  (:func:`~charivo_fsm.testing.audio.voice_chunks`), then
  ``response.output_audio.done``; with ``["text"]``, ``response.output_text``
  deltas.  Audio is sent as fast as possible, or at ``audio_pace`` times real
  time; ``delta_delay`` waits before each word.  More words than
  ``max_output_tokens`` end the response ``incomplete`` (``max_output_tokens``).
* What it says: after a ``function_call_output``, ``"<tool> says: <output>"``.
  A user message containing a :class:`ToolTrigger` keyword, when the session
  declares that tool (and ``tool_choice`` is not ``none``), makes the response
  a function call; the response then completes (``…arguments.done``,
  ``output_item.done``, ``response.done``) and the client sends the
  ``function_call_output`` and a new ``response.create``.  A user message
  containing "what did I say" or "remember" is answered with the earliest user
  message of this connection's conversation (``You first said: "…".``; without
  one, ``I don't remember anything you said before this.``).  Otherwise
  ``reply(text)`` (default ``"You said: <text>"``), where ``text`` is the user's
  turn: the user's messages since the model last spoke, joined by spaces (two
  messages sent before one ``response.create`` are both answered).
* ``response.cancel`` ends the active response (open parts and items done as
  ``incomplete``, ``response.done`` with status ``cancelled``, reason
  ``client_cancelled``); with none active: ``response_cancel_not_active``.

Input audio
-----------
* ``input_audio_buffer.append`` adds audio in the session's input format.
* Server VAD (``server_vad``; ``semantic_vad`` works alike, its silence set by
  ``eagerness``): a 20 ms frame whose RMS level is above ``threshold`` × 0.1 of
  full scale is speech.  Speech starting sends
  ``input_audio_buffer.speech_started`` (``audio_start_ms`` including the prefix
  padding, the coming item's id) and, with ``interrupt_response``, cancels an
  active response (barge-in: ``response.done`` ``cancelled``, reason
  ``turn_detected``).  ``silence_duration_ms`` of silence then sends
  ``speech_stopped``, ``input_audio_buffer.committed``, the user item
  (``conversation.item.added``/``done``), the transcription when
  ``audio.input.transcription`` names a model
  (``conversation.item.input_audio_transcription.delta``/``completed``) and,
  with ``create_response``, a response.  What the user said is
  ``transcribe(audio)`` (default ``"(spoken audio, 1.2 s)"``).
* With ``turn_detection: null`` (push to talk) nothing happens until
  ``input_audio_buffer.commit`` (under 100 ms of audio:
  ``input_audio_buffer_commit_empty``); a commit never starts a response.
  ``input_audio_buffer.clear`` empties the buffer (``input_audio_buffer.cleared``).
* Anything else: an ``error`` (``unknown_event``).

Fault injection
---------------
Flags (take effect for the next matching client event):
:meth:`reject_next_session_update`, :meth:`delay_next_session_update`,
:meth:`send_bad_tool_arguments`, :meth:`never_answer_close`,
:meth:`ignore_pings`; ``error_event_ids=False`` sends ``error.event_id`` as
``null``, as the real service often does.  Actions on the live connections
(awaitable): :meth:`drop_connection`, :meth:`close_connection`, and the three
that send data the server would not send itself — :meth:`send_event` (any
event, well-formed or not), :meth:`send_raw_text`, :meth:`send_garbage`.  What
those three send is recorded in :attr:`injected`, never in :attr:`sent`, so
:attr:`sent` holds only the server's own messages.  A test that sends invalid
client events on purpose sets :attr:`expects_invalid_client_events`.
Waiting: :meth:`wait_for_event`, :meth:`wait_for_sent`,
:meth:`wait_for_connections`, :meth:`wait_for_close_frames`.
"""

from __future__ import annotations

import copy
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
import anyio.streams.tls
import attrs
import h11
from wsproto.events import Request

from ..transports._websocket import (
    Decision,
    DroppedMessage,
    WebSocket,
    WebSocketError,
    server_handshake,
)
from .client_secrets import BROWSER_KEY_PREFIX, ClientSecretIssuer
from .service_response import Pause, ResponseRun, new_id
from .service_rules import (
    DEFAULT_TOOL_TRIGGERS,
    Script,
    ServiceError,
    ServiceSession,
    ToolTrigger,
    default_reply,
)

__all__ = [
    "DEFAULT_TOOL_TRIGGERS",
    "GARBAGE_KINDS",
    "GarbageKind",
    "HandshakeRecord",
    "Injection",
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


@attrs.frozen(slots=True)
class HandshakeRecord:
    """One opening handshake: the request path, its query parameters and whether
    the Authorization header was accepted (the header itself is never kept)."""

    path: str
    query: Mapping[str, str]
    authorized: bool


@attrs.frozen(slots=True)
class Injection:
    """One message a fault-injection method sent on one connection.

    ``kind`` is ``"event"`` (:meth:`~LocalRealtimeServer.send_event`; ``payload``
    is the event), ``"raw-text"`` (:meth:`~LocalRealtimeServer.send_raw_text`;
    the text) or a :data:`GarbageKind` (:meth:`~LocalRealtimeServer.send_garbage`;
    the text, or the bytes of a binary message)."""

    kind: str
    payload: Mapping[str, Any] | str | bytes


class _Conn:
    """Server-side state of one client connection."""

    def __init__(self, ws: WebSocket, service: ServiceSession) -> None:
        self.ws = ws
        self.service = service
        self.lock = anyio.Lock()
        """Held while the rules run and their events are sent, so the reader and
        the response streamer never interleave."""
        self.group: anyio.abc.TaskGroup | None = None
        self.streaming: ResponseRun | None = None
        self.stream_scope: anyio.CancelScope | None = None


class LocalRealtimeServer:
    """A local OpenAI-Realtime-compatible server; see the module documentation.

    :param api_key: the key the ``Authorization`` header must carry
        (``None``: no check).
    :param host: the loopback address to listen on.
    :param path: the URL path (the server accepts any path; :attr:`url` uses this).
    :param tool_triggers: keyword → tool call rules.
    :param reply: the assistant's answer to the user's turn (the text of the user's
        messages since the model last spoke, joined by spaces).
    :param audio: sessions start with ``output_modalities`` ``["audio"]`` (the real
        service's default) instead of ``["text"]``.
    :param delta_delay: seconds to wait before each word of a response.
    :param audio_pace: stream assistant audio at this multiple of real time
        (``1.0``: a 40 ms chunk every 40 ms); ``None``: as fast as possible.
    :param transcribe: what the user said in committed audio (raw bytes in the
        input format); default ``"(spoken audio, <seconds> s)"``.
    :param error_event_ids: errors name the offending client event's
        ``event_id`` (``False``: ``null``, as the real service often sends).
    :param expects_invalid_client_events: the test sends invalid client events
        on purpose (the suite's SDK check of received events is skipped).
    :param ssl_context: a server-side TLS context: serve ``wss://``.
    :param max_message_size: client messages above this many bytes are dropped.
    :param clock: Unix seconds, for client-secret expiry (a test can pass its own).
    :param port: the port to listen on (``0``: an ephemeral one, see :attr:`port`).
    """

    def __init__(
        self,
        *,
        api_key: str | None = "sk-local-test-key",
        host: str = "127.0.0.1",
        path: str = "/v1/realtime",
        tool_triggers: Sequence[ToolTrigger] = DEFAULT_TOOL_TRIGGERS,
        reply: Callable[[str], str] = default_reply,
        audio: bool = False,
        delta_delay: float = 0.0,
        audio_pace: float | None = None,
        transcribe: Callable[[bytes], str] | None = None,
        error_event_ids: bool = True,
        expects_invalid_client_events: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        max_message_size: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        port: int = 0,
    ) -> None:
        if audio_pace is not None and not audio_pace > 0:
            raise ValueError("audio_pace must be positive or None")
        self._api_key = api_key
        self.client_secrets = ClientSecretIssuer(api_key, clock)
        """The client-secret endpoint's keys (see :mod:`charivo_fsm.testing.client_secrets`)."""
        self._host = host
        self._requested_port = port
        self._path = path
        self.script = Script(
            tool_triggers=tuple(tool_triggers),
            reply=reply,
            transcribe=transcribe,
            audio=audio,
            error_event_ids=error_event_ids,
        )
        """The scripted model every connection shares (see :class:`Script`)."""
        self.delta_delay = delta_delay
        self.audio_pace = audio_pace
        self.expects_invalid_client_events = expects_invalid_client_events
        """Set by a test that sends invalid client events on purpose."""
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
        """Every event the server sent of its own accord, in order (injections excluded)."""
        self.injected: list[Injection] = []
        """Every message a fault-injection method sent, in order."""
        self.requests: list[HandshakeRecord] = []
        """Every opening handshake, accepted or not."""
        self.connections = 0
        """How many WebSocket connections were accepted so far."""
        self.close_frames = 0
        """How many close frames clients sent."""
        self.last_session: ServiceSession | None = None
        """The rules of the latest accepted connection (kept after it closes)."""
        self._reject_next: list[str] = []
        self._delay_next: list[float] = []
        self._never_answer_close = False
        self._ignore_pings = False

    # ------------------------------------------------------------ script

    @property
    def reply(self) -> Callable[[str], str]:
        """The assistant's answer to the user's turn: the text of the user's messages
        since the model last spoke, joined by spaces (may be replaced at any time)."""
        return self.script.reply

    @reply.setter
    def reply(self, value: Callable[[str], str]) -> None:
        self.script.reply = value

    @property
    def tool_triggers(self) -> tuple[ToolTrigger, ...]:
        """Which keywords in a user message make the server call which tool (settable)."""
        return self.script.tool_triggers

    @tool_triggers.setter
    def tool_triggers(self, value: Sequence[ToolTrigger]) -> None:
        self.script.tool_triggers = tuple(value)

    @property
    def audio(self) -> bool:
        """Whether new sessions default to ``["audio"]`` output."""
        return self.script.audio

    @audio.setter
    def audio(self, value: bool) -> None:
        self.script.audio = value

    # ------------------------------------------------------------ lifetime

    @property
    def port(self) -> int:
        """The port the server listens on (``RuntimeError`` when it is not running)."""
        if self._port is None:
            raise RuntimeError("the server is not running (use `async with`)")
        return self._port

    @property
    def http_url(self) -> str:
        """The HTTP API base (``http://127.0.0.1:<port>/v1``): the client-secret
        endpoint is ``{http_url}/realtime/client_secrets``."""
        return f"http://{self._host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/v1/realtime`` (``wss://`` with an ``ssl_context``)."""
        scheme = "wss" if self._ssl_context is not None else "ws"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}{self._path}"

    async def __aenter__(self) -> LocalRealtimeServer:
        listener = await anyio.create_tcp_listener(
            local_host=self._host, local_port=self._requested_port
        )
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

    def conversation(self) -> list[dict[str, Any]]:
        """A copy of the latest connection's conversation items (empty before any)."""
        if self.last_session is None:
            return []
        return copy.deepcopy(self.last_session.items)

    @property
    def active_connections(self) -> int:
        """How many client connections are open now."""
        return len(self._conns)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_until(self, check: Callable[[], bool], timeout: float) -> None:
        with anyio.fail_after(timeout):
            while not check():
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    async def wait_for_event(
        self, event_type: str, count: int = 1, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait until ``count`` client events of ``event_type`` arrived; return the last."""
        await self._wait_until(lambda: len(self.received_of(event_type)) >= count, timeout)
        return self.received_of(event_type)[count - 1]

    async def wait_for_sent(
        self, event_type: str, count: int = 1, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait until the server sent ``count`` events of ``event_type``; return the last."""
        await self._wait_until(lambda: len(self.sent_of(event_type)) >= count, timeout)
        return self.sent_of(event_type)[count - 1]

    async def wait_for_connections(self, count: int = 1, *, timeout: float = 5.0) -> None:
        """Wait until ``count`` connections were accepted in total."""
        await self._wait_until(lambda: self.connections >= count, timeout)

    async def wait_for_close_frames(self, count: int = 1, *, timeout: float = 5.0) -> None:
        """Wait until clients sent ``count`` close frames in total."""
        await self._wait_until(lambda: self.close_frames >= count, timeout)

    # ------------------------------------------------------------ fault injection

    def reject_next_session_update(self, message: str = "Invalid session configuration") -> None:
        """Answer the next ``session.update`` with an ``error`` (``invalid_value``)
        naming its ``event_id``; nothing of it is applied."""
        self._reject_next.append(message)

    def delay_next_session_update(self, seconds: float) -> None:
        """Handle the next ``session.update`` only after ``seconds`` (the
        connection reads nothing meanwhile)."""
        self._delay_next.append(seconds)

    def send_bad_tool_arguments(self) -> None:
        """The next tool call carries arguments that are not valid JSON."""
        self.script.bad_tool_arguments += 1

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
        """Send ``event`` as it is (``event_id`` added if missing) on every live
        connection; recorded in :attr:`injected`."""
        for conn in tuple(self._conns):
            payload = dict(event)
            payload.setdefault("event_id", new_id("event"))
            await self._inject(conn, Injection("event", payload), json.dumps(payload))

    async def send_raw_text(self, text: str) -> None:
        """Send ``text`` as one text message, unchecked, on every live connection;
        recorded in :attr:`injected`."""
        for conn in tuple(self._conns):
            await self._inject(conn, Injection("raw-text", text), text)

    async def send_garbage(self, kind: GarbageKind, *, size: int = _DEFAULT_OVERSIZE) -> None:
        """Send one bad message of ``kind`` (see :data:`GarbageKind`) on every live
        connection; recorded in :attr:`injected`."""
        if kind not in GARBAGE_KINDS:
            raise ValueError(f"unknown garbage kind {kind!r}; expected one of {GARBAGE_KINDS}")
        message: str | bytes
        if kind == "invalid-json":
            message = '{"type": "response.output_text.delta", "delta": '
        elif kind == "unknown-type":
            message = json.dumps({"type": "response.teleported", "event_id": new_id("event")})
        elif kind == "non-object":
            message = '["response.created", 1, 2]'
        elif kind == "oversized":
            filler = "x" * max(0, size - 48)
            message = json.dumps({"type": "response.output_text.delta", "delta": filler})
        elif kind == "binary":
            message = b"\x00\x01 binary frame"
        else:
            message = json.dumps(
                {"type": "response.output_text.delta", "event_id": new_id("event")}
            )
        for conn in tuple(self._conns):
            await self._inject(conn, Injection(kind, message), message)

    async def _inject(self, conn: _Conn, record: Injection, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                await conn.ws.send_bytes(message)
            else:
                await conn.ws.send_text(message)
        except WebSocketError:
            return
        self.injected.append(record)

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
        browser_key = next(
            (
                protocol[len(BROWSER_KEY_PREFIX) :]
                for protocol in request.subprotocols
                if protocol.startswith(BROWSER_KEY_PREFIX)
            ),
            None,
        )
        if browser_key is not None:
            authorized, reason = self.client_secrets.check_browser(browser_key)
        else:
            authorized, reason = self.client_secrets.check_header(presented)
        self.requests.append(HandshakeRecord(parts.path, query, authorized))
        self._notify()
        if authorized:
            if browser_key is not None:
                return "realtime" if "realtime" in request.subprotocols else None
            return None
        if presented is not None and not presented.startswith("ek_") and browser_key is None:
            shown = f"{presented[:3]}***{presented[-2:]}" if len(presented) > 8 else "***"
            reason = f"Incorrect API key provided: {shown}."
        elif presented is None and browser_key is None:
            reason = "You didn't provide an API key in the Authorization header (Bearer)."
        body = {
            "error": {
                "message": reason,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        return 401, json.dumps(body).encode()

    async def _read_head(self, stream: anyio.abc.ByteStream) -> bytes | None:
        """The bytes of the request head (and whatever followed), or None if closed."""
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            try:
                data = await stream.receive(65536)
            except anyio.EndOfStream:
                return None
            buffer += data
            if len(buffer) > 64 * 1024:
                return None
        return buffer

    async def _serve_http(self, stream: anyio.abc.ByteStream, initial: bytes) -> None:
        """A plain HTTP request: the client-secret endpoint, or 404."""
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(initial)
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive(65536))
                except anyio.EndOfStream:
                    conn.receive_data(b"")
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
                if len(body) > 1024 * 1024:
                    return
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return
        assert request is not None
        path = urlsplit(request.target.decode("latin-1")).path
        authorization = next(
            (v.decode("latin-1") for k, v in request.headers if k.lower() == b"authorization"),
            None,
        )
        if path.rstrip("/").endswith("/realtime/client_secrets") and request.method == b"POST":
            status, answer = self.client_secrets.handle(authorization, body)
        else:
            status = 404
            answer = json.dumps(
                {"error": {"message": "Not found", "type": "invalid_request_error",
                           "param": None, "code": "not_found"}}
            ).encode()
        reply = conn.send(
            h11.Response(
                status_code=status,
                headers=[
                    ("content-type", "application/json"),
                    ("content-length", str(len(answer))),
                    ("connection", "close"),
                ],
            )
        )
        reply = (reply or b"") + (conn.send(h11.Data(data=answer)) or b"")
        reply += conn.send(h11.EndOfMessage()) or b""
        await stream.send(reply)

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
            head = await self._read_head(stream)
            if head is None:
                return
            if b"upgrade: websocket" not in head.split(b"\r\n\r\n", 1)[0].lower():
                await self._serve_http(stream, head)
                return
            result = await server_handshake(
                stream,
                decide=self._decide,
                max_message_size=self._max_message_size,
                initial=head,
            )
            if result is None:
                return
            ws, request = result
            ws.answer_close = not self._never_answer_close
            ws.answer_pings = not self._ignore_pings
            query = dict(parse_qsl(urlsplit(request.target).query))
            service = ServiceSession(self.script, query.get("model", "gpt-realtime"))
            conn = _Conn(ws, service)
            self.last_session = service
            self._conns.add(conn)
            self.connections += 1
            self._notify()
            async with anyio.create_task_group() as group:
                conn.group = group
                await self._answer(conn, service.opening())
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
                await self._refuse(conn, "message_dropped", message.reason)
                continue
            try:
                event = json.loads(message)
            except (ValueError, RecursionError):
                await self._refuse(conn, "invalid_json", "Invalid JSON")
                continue
            if not isinstance(event, dict):
                await self._refuse(conn, "invalid_event", "Not an object")
                continue
            self.received.append(event)
            self._notify()
            await self._on_client_event(conn, event)

    async def _refuse(
        self,
        conn: _Conn,
        code: str,
        message: str,
        *,
        about: object = None,
        param: str | None = None,
    ) -> None:
        refusal = ServiceError(code, message, param=param)
        async with conn.lock:
            await self._send(
                conn, conn.service.error(refusal, about if isinstance(about, str) else None)
            )

    async def _on_client_event(self, conn: _Conn, event: dict[str, Any]) -> None:
        if event.get("type") == "session.update":
            if self._delay_next:
                await anyio.sleep(self._delay_next.pop(0))
            if self._reject_next:
                message = self._reject_next.pop(0)
                await self._refuse(
                    conn, "invalid_value", message, about=event.get("event_id"), param="session"
                )
                return
        async with conn.lock:
            await self._answer(conn, conn.service.handle(event))

    async def _answer(self, conn: _Conn, events: list[dict[str, Any]]) -> None:
        """Send ``events`` (the caller holds ``conn.lock`` or nothing else runs), then
        follow the rules' response: stop streaming a finished one, start a new one."""
        for event in events:
            await self._send(conn, event)
        if conn.streaming is not None and conn.streaming.finished:
            if conn.stream_scope is not None:
                conn.stream_scope.cancel()
            conn.streaming, conn.stream_scope = None, None
        run = conn.service.response
        if run is not None and run is not conn.streaming:
            assert conn.group is not None
            scope = anyio.CancelScope()
            conn.streaming, conn.stream_scope = run, scope
            conn.group.start_soon(self._stream, conn, run, scope)

    async def _stream(self, conn: _Conn, run: ResponseRun, scope: anyio.CancelScope) -> None:
        """Send ``run``'s events, paced as configured, until it is over."""
        next_audio_at: float | None = None
        with scope:
            try:
                while True:
                    async with conn.lock:
                        if run.finished:
                            return
                        events, pause = run.step()
                        for event in events:
                            await self._send(conn, event)
                    if pause is None:
                        return
                    next_audio_at = await self._pause(pause, next_audio_at)
            except WebSocketError:
                pass  # the client went away mid-response

    async def _pause(self, pause: Pause, next_audio_at: float | None) -> float | None:
        """Wait as ``pause`` asks; returns when the next audio chunk is due."""
        if pause.kind == "word":
            if self.delta_delay:
                await anyio.sleep(self.delta_delay)
            return next_audio_at
        if self.audio_pace is None:
            return None
        now = anyio.current_time()
        if next_audio_at is None or next_audio_at < now:
            next_audio_at = now
        await anyio.sleep(next_audio_at - now)
        return next_audio_at + pause.ms / 1000 / self.audio_pace

    async def _send(self, conn: _Conn, event: dict[str, Any]) -> None:
        # Recorded before the send yields to the event loop: the client may handle
        # the event before this task runs again, and a test that then looks at
        # ``sent`` must find it there.  A send that fails takes it out again.
        text = json.dumps(event)
        self.sent.append(event)
        try:
            await conn.ws.send_text(text)
        except BaseException:
            for index in range(len(self.sent) - 1, -1, -1):
                if self.sent[index] is event:
                    del self.sent[index]
                    break
            raise
        self._notify()
