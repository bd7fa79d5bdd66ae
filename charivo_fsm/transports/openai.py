"""The OpenAI Realtime transport: the GA Realtime protocol over a WebSocket.

:class:`OpenAIRealtimeTransport` implements :class:`~charivo_fsm.RealtimeTransport`
by speaking the OpenAI Realtime API (GA interface) over ``wss://``::

    async with OpenAIRealtimeTransport(model="gpt-realtime") as transport:
        async with create_realtime_manager(transport) as manager:
            await manager.start_session()
            await manager.send_message("Hello!")

Why wsproto over anyio streams
------------------------------
charivo_fsm runs on asyncio *and* trio.  The popular ``websockets`` package is
asyncio-only (and ``aiohttp`` too); ``trio-websocket`` is trio-only.  ``wsproto``
is a sans-IO WebSocket state machine: it turns bytes into events and events
into bytes and does no I/O itself, so it can be driven over anyio's byte
streams (``anyio.connect_tcp``, TLS through ``ssl.create_default_context()``),
which work on both event loops.  It is a small, pure-Python dependency (with
``h11`` for the HTTP upgrade).  The framing layer lives in
:mod:`charivo_fsm.transports._websocket` and is shared with the local test
server (:class:`charivo_fsm.testing.LocalRealtimeServer`).

Where the reader task lives
---------------------------
Each connection needs a task that reads the socket while the manager is doing
other things.  Structured concurrency forbids ``connect()`` from leaving a task
running after it returns unless that task belongs to a task group that outlives
the call.  So the transport has a lifetime of its own: ``async with transport:``
enters the transport's task group, ``connect()``/``recover()`` start the
connection's reader (and its keep-alive pinger) in that group, and leaving the
block closes the socket (a polite close frame first, bounded by
``close_timeout``) and cancels everything.  ``connect()`` on a transport that is
not entered raises :class:`~charivo_fsm.CharivoStateError`.  Enter the transport
*outside* the manager, so that the manager's own shutdown (which calls
``disconnect()``) still has a working transport::

    async with transport, create_realtime_manager(transport) as manager: ...

The mapping
-----------
:data:`CLIENT_ROUTES` (transport calls → client events) and
:data:`SERVER_ROUTES` (server events → transport events) are the one mapping
table: the dispatcher is built from :data:`SERVER_ROUTES`, and
:func:`mapping_table_markdown` renders both for ``docs/openai-transport.md``.
Server events of the protocol that have no transport event
(:data:`IGNORED_SERVER_EVENTS`) are dropped with a debug log; anything else the
server sends that is not understood — invalid JSON, a non-object, an unknown
``type``, a malformed known event, a binary or oversized message — is logged
as a warning on ``charivo_fsm.transports.openai`` and dropped.

Secrets
-------
The API key (``api_key`` or ``OPENAI_API_KEY``, read at connect time) is only
ever written into the ``Authorization`` header.  It is never logged and never
part of a ``repr`` or an exception message; text that comes from the server
(error messages, an HTTP error body) is scrubbed of the key and of anything
shaped like an OpenAI key before it is logged or raised.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import math
import os
import re
import ssl
import sys
import uuid
from array import array
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import anyio.abc
import attrs

from .. import __version__
from ..errors import (
    CharivoError,
    CharivoProviderError,
    CharivoStateError,
    CharivoTransportError,
    CharivoValidationError,
)
from ..events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputEnded,
    AudioOutputStarted,
    ConnectionLost,
    ErrorEvent,
    SessionStarted,
    ToolCall,
    TransportEvent,
    UserTranscript,
)
from ..model import RealtimeSessionConfig
from ..transport import EventCallback
from ._websocket import (
    DroppedMessage,
    HandshakeRejected,
    WebSocket,
    WebSocketError,
    client_handshake,
)

if TYPE_CHECKING:
    from ..transport import RealtimeTransport

__all__ = [
    "CLIENT_ROUTES",
    "CONNECTION_LOST_CAUSE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "IGNORED_SERVER_EVENTS",
    "SERVER_ROUTES",
    "OpenAIRealtimeTransport",
    "Route",
    "build_session_update",
    "mapping_table_markdown",
    "pcm16_rms",
]

logger = logging.getLogger("charivo_fsm.transports.openai")

DEFAULT_URL: Final = "wss://api.openai.com/v1/realtime"
DEFAULT_MODEL: Final = "gpt-realtime"
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
"""Server messages above this many bytes are dropped (16 MiB)."""
USER_AGENT: Final = f"charivo-fsm/{__version__}"
CONNECTION_LOST_CAUSE: Final = "socket-closed"
"""The ``cause`` of every :class:`~charivo_fsm.events.ConnectionLost` this transport emits."""


# ------------------------------------------------------------------ the mapping


@attrs.frozen(slots=True)
class Route:
    """One row of the mapping table.

    For :data:`CLIENT_ROUTES`, ``source`` is a transport call and ``produces``
    the client events it sends, in order.  For :data:`SERVER_ROUTES`,
    ``source`` is a server event type (or, with ``dispatch=False``, a socket
    condition) and ``produces`` the transport events it may yield.
    """

    source: str
    produces: tuple[str, ...]
    note: str = ""
    dispatch: bool = True


CLIENT_ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "connect(config)",
        ("session.update",),
        "opens the socket; returns after the matching `session.updated`, then emits"
        " `SessionStarted`",
    ),
    Route(
        "update_session(config)",
        ("session.update",),
        "returns after the matching `session.updated`; an `error` naming its `event_id`"
        " raises `CharivoProviderError`",
    ),
    Route(
        "recover(config)",
        ("session.update",),
        "drops the old socket, opens a new one and re-sends the config (as connect)",
    ),
    Route(
        "disconnect()",
        (),
        "close frame; returns after the server's close frame or `close_timeout`; idempotent",
    ),
    Route(
        "send_text(text)",
        ("conversation.item.create", "response.create"),
        "a user `message` item with one `input_text` part",
    ),
    Route(
        "send_audio(audio)",
        ("input_audio_buffer.append",),
        "the bytes (PCM16) base64-encoded",
    ),
    Route(
        "send_tool_result(call_id, output)",
        ("conversation.item.create", "response.create"),
        "a `function_call_output` item; `output` JSON-encoded",
    ),
    Route("interrupt()", ("response.cancel",), ""),
)
"""Transport call → client events sent."""

SERVER_ROUTES: Final[tuple[Route, ...]] = (
    Route("session.created", (), "internal: remembers the session's model"),
    Route("session.updated", (), "internal: completes the oldest pending `session.update`"),
    Route("response.created", ("AssistantResponseStarted",)),
    Route("response.output_text.delta", ("AssistantTextDelta",)),
    Route("response.output_audio_transcript.delta", ("AssistantTextDelta",)),
    Route(
        "response.output_audio.delta",
        ("AudioOutputStarted", "AudioLipsync"),
        "`AudioOutputStarted` for the first delta of a response; `rms` of the PCM16 samples, 0..1",
    ),
    Route("response.output_audio.done", ("AudioOutputEnded",)),
    Route(
        "response.function_call_arguments.done",
        ("ToolCall",),
        "arguments that are not a JSON object: warning, no event, and a"
        ' `{"success": false, "error": ...}` output is sent back',
    ),
    Route(
        "response.done",
        ("AssistantResponseCompleted",),
        "`text` = the output items' text/transcripts, `usage` = `response.usage`; also"
        " `AudioOutputEnded` if audio was still open and `ErrorEvent` if `status` is"
        " `failed`",
    ),
    Route("conversation.item.input_audio_transcription.completed", ("UserTranscript",)),
    Route(
        "error",
        ("ErrorEvent",),
        "`CharivoProviderError(message)`; an error naming a pending `session.update`"
        " fails that call instead",
    ),
    Route(
        "(socket closed, close frame or failed ping)",
        ("ConnectionLost",),
        '`cause="socket-closed"`; not after `disconnect()`',
        dispatch=False,
    ),
)
"""Server event → transport events."""

IGNORED_SERVER_EVENTS: Final[frozenset[str]] = frozenset(
    {
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.cleared",
        "input_audio_buffer.committed",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "rate_limits.updated",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.output_audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
    }
)
"""Server events of the GA protocol that carry nothing for the manager (debug-logged)."""


def _handler_name(event_type: str) -> str:
    return "_on_" + re.sub(r"[^a-z0-9]+", "_", event_type)


def mapping_table_markdown() -> str:
    """Render :data:`CLIENT_ROUTES` and :data:`SERVER_ROUTES` as two Markdown tables."""

    def cell(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{item}`" for item in items) if items else "—"

    lines = [
        "| transport call | client events sent | notes |",
        "|---|---|---|",
    ]
    lines += [f"| `{r.source}` | {cell(r.produces)} | {r.note} |" for r in CLIENT_ROUTES]
    lines += [
        "",
        "| server event | transport events | notes |",
        "|---|---|---|",
    ]
    for r in SERVER_ROUTES:
        source = f"`{r.source}`" if r.dispatch else r.source
        lines.append(f"| {source} | {cell(r.produces)} | {r.note} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ helpers


def _plain(value: Any) -> Any:
    """A JSON-ready deep copy: mappings become dicts, sequences lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_session_update(
    config: RealtimeSessionConfig,
    *,
    event_id: str | None = None,
    transcription_model: str | None = None,
) -> dict[str, Any]:
    """The ``session.update`` client event (GA shape) for ``config``.

    Only fields the config specifies are sent: ``instructions``, the voice as
    ``audio.output.voice``, ``tools`` as function tools, ``tool_choice`` and
    ``max_tokens`` as ``max_output_tokens``.  ``model`` travels in the URL
    (the GA interface does not allow changing it by ``session.update``);
    ``temperature`` has no GA session field and is not sent.  With
    ``transcription_model``, input audio transcription is switched on
    (``audio.input.transcription.model``).
    """
    session: dict[str, Any] = {"type": "realtime"}
    if config.instructions is not None:
        session["instructions"] = config.instructions
    audio: dict[str, Any] = {}
    if transcription_model is not None:
        audio["input"] = {"transcription": {"model": transcription_model}}
    if config.voice is not None:
        audio["output"] = {"voice": config.voice}
    if audio:
        session["audio"] = audio
    if config.tools is not None:
        tools = []
        for tool in config.tools:
            entry: dict[str, Any] = {"type": "function", "name": tool.name}
            if tool.description is not None:
                entry["description"] = tool.description
            entry["parameters"] = _plain(tool.parameters)
            tools.append(entry)
        session["tools"] = tools
    if config.tool_choice is not None:
        session["tool_choice"] = config.tool_choice
    if config.max_tokens is not None:
        session["max_output_tokens"] = config.max_tokens
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return event


def pcm16_rms(pcm: bytes) -> float:
    """The RMS level of little-endian signed 16-bit PCM, normalised to 0..1."""
    usable = len(pcm) - (len(pcm) % 2)
    if usable <= 0:
        return 0.0
    samples = array("h")
    samples.frombytes(pcm[:usable])
    if sys.byteorder == "big":  # pragma: no cover - little-endian machines only in CI
        samples.byteswap()
    total = math.fsum(s * s for s in samples)
    return min(1.0, math.sqrt(total / len(samples)) / 32768.0)


def _new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex[:24]


_KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}")


def _is_loopback(host: str) -> bool:
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Secret:
    """Holds the API key so that no ``repr``/``vars()`` dump can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


@attrs.frozen(slots=True)
class _Endpoint:
    scheme: str
    host: str
    port: int
    path: str
    query: tuple[tuple[str, str], ...]

    @property
    def tls(self) -> bool:
        return self.scheme == "wss"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    def target(self, model: str) -> str:
        params = [(k, v) for k, v in self.query if k != "model"] + [("model", model)]
        return f"{self.path}?{urlencode(params)}"


def _parse_url(url: str) -> _Endpoint:
    if not isinstance(url, str):
        raise CharivoValidationError(f"url must be a string (got {type(url).__name__})")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise CharivoValidationError(
            f"url must use wss:// (or ws:// for a loopback host), got scheme {parts.scheme!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise CharivoValidationError("url must not carry credentials; use api_key")
    host = parts.hostname
    if not host:
        raise CharivoValidationError("url has no host")
    try:
        port = parts.port
    except ValueError:
        raise CharivoValidationError("url has an invalid port") from None
    if scheme == "ws" and not _is_loopback(host):
        raise CharivoValidationError(
            f"refusing unencrypted ws:// to non-loopback host {host!r}; use wss://"
        )
    return _Endpoint(
        scheme=scheme,
        host=host,
        port=port if port is not None else (443 if scheme == "wss" else 80),
        path=parts.path or "/",
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
    )


def _positive(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise CharivoValidationError(f"{name} must be a positive number (got {value!r})")
    return float(value)


# ------------------------------------------------------------------ connection


class _PendingUpdate:
    """A ``session.update`` waiting for its ``session.updated`` (or an error)."""

    __slots__ = ("abandoned", "done", "error", "event_id")

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        self.done = anyio.Event()
        self.error: CharivoError | None = None
        self.abandoned = False  # the caller stopped waiting (cancelled)

    def settle(self, error: CharivoError | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _Connection:
    """One WebSocket connection and its per-connection protocol state."""

    def __init__(self, ws: WebSocket, model: str) -> None:
        self.ws = ws
        self.model = model
        self.scope = anyio.CancelScope()
        self.finished = anyio.Event()
        self.pending: list[_PendingUpdate] = []
        self.audio_open: set[str | None] = set()
        self.established = False  # SessionStarted was emitted for it
        self.closing = False  # we are closing it: no ConnectionLost
        self.lost_error: CharivoError | None = None
        self.turn_lock = anyio.Lock()  # keeps the two events of a turn together


# ------------------------------------------------------------------ transport


class OpenAIRealtimeTransport:
    """A :class:`~charivo_fsm.RealtimeTransport` speaking the OpenAI Realtime API (GA).

    :param api_key: the API key; ``None`` reads ``OPENAI_API_KEY`` at each connect.
    :param model: sent as the ``model`` query parameter (a config's ``model``,
        when set, wins at connect/recover time).
    :param url: the endpoint; ``ws://`` is accepted only for loopback hosts
        (127.0.0.0/8, ::1, localhost), anything else raises
        :class:`~charivo_fsm.CharivoValidationError`.
    :param close_timeout: seconds ``disconnect()`` waits for the server's close frame.
    :param max_message_size: server messages above this many bytes are dropped.
    :param ping_interval: seconds between keep-alive pings (``None``: no pings).
    :param ping_timeout: seconds a ping may wait for its pong before the
        connection counts as lost.
    :param transcription_model: when set, input audio transcription is switched
        on with this model (needed for ``UserTranscript`` from the real API).
    :param ssl_context: TLS settings for ``wss://`` (default:
        ``ssl.create_default_context()``).

    The transport must be entered (``async with transport:``) before
    ``connect()``; see the module documentation.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        url: str = DEFAULT_URL,
        close_timeout: float = 5.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        transcription_model: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise CharivoValidationError("api_key must be a non-empty string or None")
        if not isinstance(model, str) or not model:
            raise CharivoValidationError("model must be a non-empty string")
        if transcription_model is not None and (
            not isinstance(transcription_model, str) or not transcription_model
        ):
            raise CharivoValidationError("transcription_model must be a non-empty string or None")
        if (
            isinstance(max_message_size, bool)
            or not isinstance(max_message_size, int)
            or max_message_size <= 0
        ):
            raise CharivoValidationError("max_message_size must be a positive integer")
        self._api_key = _Secret(api_key) if api_key is not None else None
        self._model = model
        self._endpoint = _parse_url(url)
        self._close_timeout = _positive("close_timeout", close_timeout)
        self._ping_interval = _positive("ping_interval", ping_interval, allow_none=True)
        self._ping_timeout = _positive("ping_timeout", ping_timeout)
        self._max_message_size = max_message_size
        self._transcription_model = transcription_model
        self._ssl_context = ssl_context
        self._callbacks: list[EventCallback] = []
        self._task_group: anyio.abc.TaskGroup | None = None
        self._conn: _Connection | None = None
        self._config: RealtimeSessionConfig | None = None
        self._secrets: tuple[_Secret, ...] = ()  # every key used so far, for scrubbing
        self._dispatch: dict[str, Callable[[_Connection, dict[str, Any]], Any]] = {
            route.source: getattr(self, _handler_name(route.source))
            for route in SERVER_ROUTES
            if route.dispatch
        }

    # ------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """The endpoint (without the model parameter)."""
        e = self._endpoint
        query = f"?{urlencode(e.query)}" if e.query else ""
        return f"{e.scheme}://{e.host_header}{e.path}{query}"

    @property
    def model(self) -> str:
        return self._model

    @property
    def connected(self) -> bool:
        """Whether a session is established on an open socket."""
        conn = self._conn
        return conn is not None and conn.established and not conn.finished.is_set()

    @property
    def config(self) -> RealtimeSessionConfig | None:
        """The latest config the server acknowledged."""
        return self._config

    def __repr__(self) -> str:
        state = "connected" if self.connected else "idle"
        return f"<OpenAIRealtimeTransport url={self.url!r} model={self._model!r} {state}>"

    # ------------------------------------------------------------ lifetime

    async def __aenter__(self) -> OpenAIRealtimeTransport:
        if self._task_group is not None:
            raise CharivoStateError("OpenAIRealtimeTransport is already entered")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        assert task_group is not None, "__aexit__ without __aenter__"
        try:
            with anyio.CancelScope(shield=True):
                await self.disconnect()
        except Exception as error:  # pragma: no cover - disconnect does not raise
            logger.warning("closing the connection failed: %s", self._scrub(str(error)))
        task_group.cancel_scope.cancel()
        self._task_group = None
        return await task_group.__aexit__(exc_type, exc, tb)

    def on_event(self, callback: EventCallback) -> None:
        """Register a synchronous callback for every transport event."""
        if not callable(callback):
            raise CharivoValidationError("on_event needs a callable")
        self._callbacks.append(callback)

    def _emit(self, event: TransportEvent) -> None:
        for callback in tuple(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("an on_event callback raised for %s", event.type)

    # ------------------------------------------------------------ lifecycle

    async def connect(self, config: RealtimeSessionConfig) -> None:
        """Open the socket, send ``session.update`` and wait for ``session.updated``.

        Emits :class:`~charivo_fsm.events.SessionStarted` on success.  Raises
        :class:`~charivo_fsm.CharivoStateError` when the transport is not
        entered, :class:`~charivo_fsm.CharivoProviderError` when the server
        refuses the key or the config, :class:`~charivo_fsm.CharivoTransportError`
        when the network fails.
        """
        task_group = self._task_group
        if task_group is None:
            raise CharivoStateError(
                "OpenAIRealtimeTransport must be entered (`async with transport:`) before connect()"
            )
        key = self._resolve_key()
        await self._drop_current()
        model = config.model or self._model
        ws = await self._open_socket(key, model)
        conn = _Connection(ws, model)
        self._conn = conn
        try:
            task_group.start_soon(self._run_connection, conn)
            await self._session_update(conn, config)
            if conn.finished.is_set():
                raise conn.lost_error or CharivoTransportError(
                    "the connection closed while connecting"
                )
        except BaseException:
            conn.closing = True
            if self._conn is conn:
                self._conn = None
            with anyio.CancelScope(shield=True):
                await self._abort(conn)
            raise
        conn.established = True
        self._config = config
        logger.info("connected to %s (model %s)", self.url, model)
        self._emit(SessionStarted())

    async def update_session(self, config: RealtimeSessionConfig) -> None:
        """Send ``session.update`` and wait for the matching ``session.updated``."""
        conn = self._require_connection()
        await self._session_update(conn, config)
        self._config = config

    async def recover(self, config: RealtimeSessionConfig) -> None:
        """Open a new socket and re-send ``config`` (as :meth:`connect`)."""
        await self.connect(config)

    async def disconnect(self) -> None:
        """Close the socket politely; idempotent.

        Sends a close frame and waits for the server's (at most
        ``close_timeout`` seconds), then drops the TCP connection.  No
        :class:`~charivo_fsm.events.ConnectionLost` follows.
        """
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        conn.closing = True
        try:
            with anyio.move_on_after(self._close_timeout):
                try:
                    await conn.ws.close(1000)
                except WebSocketError:
                    pass
                await conn.finished.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self._abort(conn)
        logger.info("disconnected from %s", self.url)

    # ------------------------------------------------------------ sending

    async def send_text(self, text: str) -> None:
        """``conversation.item.create`` (user message) then ``response.create``."""
        conn = self._require_connection()
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        async with conn.turn_lock:
            await self._send(conn, {"type": "conversation.item.create", "item": item})
            await self._send(conn, {"type": "response.create"})

    async def send_audio(self, audio: bytes) -> None:
        """``input_audio_buffer.append`` with the PCM16 bytes base64-encoded."""
        conn = self._require_connection()
        encoded = base64.b64encode(bytes(audio)).decode("ascii")
        await self._send(conn, {"type": "input_audio_buffer.append", "audio": encoded})

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        """A ``function_call_output`` item (output JSON-encoded) then ``response.create``."""
        conn = self._require_connection()
        await self._send_tool_output(conn, call_id, output)

    async def interrupt(self) -> None:
        """``response.cancel``."""
        conn = self._require_connection()
        await self._send(conn, {"type": "response.cancel"})

    # ------------------------------------------------------------ internals

    def _resolve_key(self) -> str:
        key = self._api_key.reveal() if self._api_key is not None else None
        if not key:
            key = os.environ.get("OPENAI_API_KEY") or None
        if not key:
            raise CharivoValidationError("no OpenAI API key: pass api_key= or set OPENAI_API_KEY")
        if all(secret.reveal() != key for secret in self._secrets):
            self._secrets = (*self._secrets, _Secret(key))
        return key

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret.reveal(), "[redacted]")
        return _KEY_SHAPE.sub("sk-[redacted]", text)

    def _require_connection(self) -> _Connection:
        conn = self._conn
        if conn is None or not conn.established or conn.finished.is_set():
            raise CharivoStateError("the OpenAI Realtime transport is not connected")
        return conn

    async def _drop_current(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.closing = True
            with anyio.CancelScope(shield=True):
                await self._abort(conn)

    async def _abort(self, conn: _Connection) -> None:
        """Drop ``conn``'s socket and stop its tasks (never blocks for long)."""
        conn.scope.cancel()
        await conn.ws.abort()
        self._fail_pending(conn, CharivoTransportError("the connection was closed"))

    async def _open_socket(self, key: str, model: str) -> WebSocket:
        endpoint = self._endpoint
        where = f"{endpoint.host}:{endpoint.port}"
        try:
            if endpoint.tls:
                context = self._ssl_context or ssl.create_default_context()
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                    endpoint.host,
                    endpoint.port,
                    tls=True,
                    ssl_context=context,
                    tls_standard_compatible=False,
                )
            else:
                stream = await anyio.connect_tcp(endpoint.host, endpoint.port)
        except (OSError, anyio.BrokenResourceError) as exc:
            raise CharivoTransportError(
                f"could not connect to {where}: {self._scrub(str(exc)) or type(exc).__name__}",
                cause=exc,
            ) from exc
        headers = [
            (b"authorization", b"Bearer " + key.encode("utf-8")),
            (b"user-agent", USER_AGENT.encode("ascii")),
        ]
        try:
            return await client_handshake(
                stream,
                host=endpoint.host_header,
                target=endpoint.target(model),
                headers=headers,
                max_message_size=self._max_message_size,
            )
        except HandshakeRejected as exc:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
            detail = self._http_error_detail(exc.body)
            if exc.status_code in (401, 403):
                message = f"OpenAI Realtime refused the API key (HTTP {exc.status_code})"
            else:
                message = f"OpenAI Realtime rejected the connection (HTTP {exc.status_code})"
            raise CharivoProviderError(f"{message}: {detail}" if detail else message) from None
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
            if isinstance(exc, WebSocketError):
                raise CharivoTransportError(
                    f"WebSocket handshake with {where} failed: {exc}"
                ) from None
            raise

    def _http_error_detail(self, body: bytes) -> str:
        try:
            data = json.loads(body.decode("utf-8"))
            message = data["error"]["message"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return ""
        if not isinstance(message, str):
            return ""
        return self._scrub(message)[:300]

    async def _session_update(self, conn: _Connection, config: RealtimeSessionConfig) -> None:
        event_id = _new_event_id()
        event = build_session_update(
            config, event_id=event_id, transcription_model=self._transcription_model
        )
        pending = _PendingUpdate(event_id)
        conn.pending.append(pending)
        try:
            await self._send(conn, event)
        except BaseException:
            if pending in conn.pending:
                conn.pending.remove(pending)
            raise
        try:
            await pending.done.wait()
        except BaseException:
            pending.abandoned = True
            raise
        if pending.error is not None:
            raise pending.error

    async def _send(self, conn: _Connection, event: dict[str, Any]) -> None:
        event.setdefault("event_id", _new_event_id())
        try:
            text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CharivoValidationError(
                f"{event['type']} is not JSON-serialisable: {exc}"
            ) from exc
        try:
            await conn.ws.send_text(text)
        except WebSocketError as exc:
            raise CharivoTransportError(f"sending {event['type']} failed: {exc}") from exc
        logger.debug("sent %s (%s)", event["type"], event["event_id"])

    async def _send_tool_output(
        self, conn: _Connection, call_id: str, output: Mapping[str, Any]
    ) -> None:
        try:
            encoded = json.dumps(_plain(output), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CharivoValidationError(f"tool output is not JSON-serialisable: {exc}") from exc
        item = {"type": "function_call_output", "call_id": call_id, "output": encoded}
        async with conn.turn_lock:
            await self._send(conn, {"type": "conversation.item.create", "item": item})
            await self._send(conn, {"type": "response.create"})

    def _fail_pending(self, conn: _Connection, error: CharivoError) -> None:
        pending, conn.pending = conn.pending, []
        for update in pending:
            update.settle(error)

    # ------------------------------------------------------------ reading

    async def _run_connection(self, conn: _Connection) -> None:
        """The connection's reader (plus its keep-alive pinger), in the transport's group."""
        try:
            with conn.scope:
                async with anyio.create_task_group() as group:
                    if self._ping_interval is not None:
                        group.start_soon(self._keepalive, conn)
                    await self._read_loop(conn)
                    group.cancel_scope.cancel()
        except Exception as exc:  # a bug: keep it away from the transport's task group
            logger.error("the connection reader failed: %s", self._scrub(repr(exc)))
            conn.lost_error = conn.lost_error or CharivoTransportError(
                "the connection reader failed"
            )
        finally:
            with anyio.CancelScope(shield=True):
                await conn.ws.abort()
            lost = conn.lost_error or CharivoTransportError("the socket closed")
            self._fail_pending(conn, lost)
            conn.finished.set()
            if conn.established and not conn.closing:
                conn.closing = True
                if self._conn is conn:
                    self._conn = None
                logger.warning("connection lost: %s", lost.message)
                self._emit(ConnectionLost(cause=CONNECTION_LOST_CAUSE, error=lost))

    async def _keepalive(self, conn: _Connection) -> None:
        assert self._ping_interval is not None
        while True:
            await anyio.sleep(self._ping_interval)
            try:
                with anyio.fail_after(self._ping_timeout):
                    await conn.ws.ping()
                continue
            except TimeoutError:
                error = CharivoTransportError(f"no pong within {self._ping_timeout:g} s")
            except WebSocketError as exc:
                error = CharivoTransportError(f"ping failed: {exc}")
            if not conn.closing:
                conn.lost_error = conn.lost_error or error
            await conn.ws.abort()
            return

    async def _read_loop(self, conn: _Connection) -> None:
        while True:
            try:
                message = await conn.ws.receive()
            except WebSocketError as exc:
                if not conn.closing and conn.lost_error is None:
                    conn.lost_error = CharivoTransportError(
                        f"the server closed the connection: {self._scrub(str(exc))}"
                    )
                return
            if isinstance(message, DroppedMessage):
                logger.warning(
                    "dropped a %s server message (%d bytes; limit %d)",
                    message.reason,
                    message.size,
                    self._max_message_size,
                )
                continue
            await self._handle_message(conn, message)

    async def _handle_message(self, conn: _Connection, text: str) -> None:
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            logger.warning("dropped a server message that is not valid JSON (%s)", exc.msg)
            return
        except (ValueError, RecursionError) as exc:
            logger.warning(
                "dropped a server message that is not valid JSON (%s)", type(exc).__name__
            )
            return
        if not isinstance(event, dict):
            logger.warning(
                "dropped a server message that is not a JSON object (%s)", type(event).__name__
            )
            return
        event_type = event.get("type")
        if not isinstance(event_type, str):
            logger.warning("dropped a server message without a string type")
            return
        handler = self._dispatch.get(event_type)
        if handler is None:
            if event_type in IGNORED_SERVER_EVENTS:
                logger.debug("ignored server event %s", event_type)
            else:
                logger.warning("dropped an unknown server event type %r", event_type[:80])
            return
        try:
            result = handler(conn, event)
            if result is not None:
                await result
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning(
                "dropped a malformed %s event (%s: %s)",
                event_type,
                type(exc).__name__,
                self._scrub(str(exc))[:200],
            )

    # ------------------------------------------------------------ server events
    # One method per dispatched row of SERVER_ROUTES (name from _handler_name).

    def _on_session_created(self, conn: _Connection, event: dict[str, Any]) -> None:
        self._note_model(conn, event)

    def _on_session_updated(self, conn: _Connection, event: dict[str, Any]) -> None:
        self._note_model(conn, event)
        if not conn.pending:
            logger.debug("session.updated without a pending session.update")
            return
        update = conn.pending.pop(0)
        if update.abandoned:
            logger.debug("session.updated for an abandoned session.update %s", update.event_id)
        update.settle()

    def _note_model(self, conn: _Connection, event: dict[str, Any]) -> None:
        session = event["session"]
        model = session.get("model") if isinstance(session, dict) else None
        if isinstance(model, str) and model:
            conn.model = model

    def _on_response_created(self, conn: _Connection, event: dict[str, Any]) -> None:
        response = event.get("response")
        response_id = response.get("id") if isinstance(response, dict) else None
        conn.audio_open.discard(response_id)
        self._emit(AssistantResponseStarted())

    def _on_text_delta(self, conn: _Connection, event: dict[str, Any]) -> None:
        delta = event["delta"]
        if not isinstance(delta, str):
            raise TypeError("delta must be a string")
        if delta:
            self._emit(AssistantTextDelta(delta))

    _on_response_output_text_delta = _on_text_delta
    _on_response_output_audio_transcript_delta = _on_text_delta

    def _on_response_output_audio_delta(self, conn: _Connection, event: dict[str, Any]) -> None:
        delta = event["delta"]
        if not isinstance(delta, str):
            raise TypeError("delta must be a string")
        pcm = base64.b64decode(delta, validate=True)  # binascii.Error is a ValueError
        response_id = event.get("response_id")
        if response_id not in conn.audio_open:
            conn.audio_open.add(response_id)
            self._emit(AudioOutputStarted())
        self._emit(AudioLipsync(pcm16_rms(pcm)))

    def _on_response_output_audio_done(self, conn: _Connection, event: dict[str, Any]) -> None:
        response_id = event.get("response_id")
        if response_id in conn.audio_open:
            conn.audio_open.discard(response_id)
            self._emit(AudioOutputEnded())

    async def _on_response_function_call_arguments_done(
        self, conn: _Connection, event: dict[str, Any]
    ) -> None:
        name = event["name"]
        call_id = event["call_id"]
        arguments = event["arguments"]
        if not isinstance(name, str) or not isinstance(call_id, str):
            raise TypeError("name and call_id must be strings")
        problem: str | None = None
        args: Any = None
        if not isinstance(arguments, str):
            problem = "are not a JSON string"
        else:
            try:
                args = json.loads(arguments)
            except json.JSONDecodeError as exc:
                problem = f"are not valid JSON: {exc.msg}"
            except (ValueError, RecursionError) as exc:
                problem = f"are not valid JSON: {type(exc).__name__}"
            else:
                if not isinstance(args, dict):
                    problem = "must be a JSON object"
        if problem is not None:
            logger.warning(
                "tool call %s (%s): invalid arguments (%s); sent a tool error back",
                name[:80],
                call_id[:80],
                problem,
            )
            output = {"success": False, "error": f'Realtime tool "{name}" arguments {problem}'}
            try:
                await self._send_tool_output(conn, call_id, output)
            except CharivoError as send_error:
                logger.warning("could not send the tool error: %s", send_error.message)
            return
        self._emit(ToolCall(name=name, args=args, call_id=call_id))

    def _on_response_done(self, conn: _Connection, event: dict[str, Any]) -> None:
        response = event["response"]
        if not isinstance(response, dict):
            raise TypeError("response must be an object")
        response_id = response.get("id")
        if response_id in conn.audio_open:
            conn.audio_open.discard(response_id)
            self._emit(AudioOutputEnded())
        status = response.get("status")
        if status == "failed":
            details = response.get("status_details")
            error = details.get("error") if isinstance(details, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            text = self._scrub(message) if isinstance(message, str) else "the response failed"
            logger.warning("response %s failed: %s", response_id, text)
            self._emit(ErrorEvent(CharivoProviderError(text)))
        usage = response.get("usage")
        self._emit(
            AssistantResponseCompleted(
                text=_output_text(response.get("output")),
                usage=dict(usage) if isinstance(usage, dict) else None,
                model=conn.model,
                response_id=response_id if isinstance(response_id, str) else None,
            )
        )

    def _on_conversation_item_input_audio_transcription_completed(
        self, conn: _Connection, event: dict[str, Any]
    ) -> None:
        transcript = event["transcript"]
        if not isinstance(transcript, str):
            raise TypeError("transcript must be a string")
        self._emit(UserTranscript(transcript))

    def _on_error(self, conn: _Connection, event: dict[str, Any]) -> None:
        error = event["error"]
        if not isinstance(error, dict):
            raise TypeError("error must be an object")
        raw = error.get("message")
        message = self._scrub(raw) if isinstance(raw, str) and raw else "unknown provider error"
        code = error.get("code")
        about = error.get("event_id")
        for update in conn.pending:
            if about is not None and update.event_id == about:
                conn.pending.remove(update)
                logger.warning("session.update %s rejected: %s (%s)", about, message, code)
                update.settle(CharivoProviderError(message))
                if not update.abandoned:
                    return
                break
        else:
            logger.warning("server error: %s (%s)", message, code)
        self._emit(ErrorEvent(CharivoProviderError(message)))


def _output_text(output: Any) -> str:
    """The text of a response's output items (text parts and audio transcripts)."""
    if not isinstance(output, list):
        return ""
    pieces: list[str] = []
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        content = item.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            value = part.get("text") if part.get("type") == "output_text" else None
            if part.get("type") == "output_audio":
                value = part.get("transcript")
            if isinstance(value, str):
                pieces.append(value)
    return "".join(pieces)


if TYPE_CHECKING:

    def _conforms(transport: OpenAIRealtimeTransport) -> RealtimeTransport:
        return transport
