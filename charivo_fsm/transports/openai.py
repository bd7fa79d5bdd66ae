"""The OpenAI Realtime transport: the GA Realtime protocol over a WebSocket.

:class:`OpenAIRealtimeTransport` implements :class:`~charivo_fsm.VoiceTransport`
(a :class:`~charivo_fsm.RealtimeTransport` with push to talk and truncation) by
speaking the OpenAI Realtime API (GA interface) over ``wss://``::

    async with OpenAIRealtimeTransport(model="gpt-realtime") as transport:
        async with create_realtime_manager(transport) as manager:
            await manager.start_session()
            await manager.send_message("Hello!")

Layers
------
* :mod:`.openai_mapping` — the mapping table (:data:`CLIENT_ROUTES`,
  :data:`SERVER_ROUTES`, :data:`IGNORED_SERVER_EVENTS`), the
  ``session.update`` built from a config and the audio helpers;
* :mod:`.openai_history` — :class:`~.openai_history.ConversationHistory`, the
  conversation ``recover`` replays into a new service session;
* :mod:`.openai_protocol` — :class:`~.openai_protocol.OpenAIRealtimeProtocol`,
  every protocol rule (one response in flight, tool turns, interrupts,
  truncation, the replay history) as a sans-IO state machine: messages in,
  messages and events out, no socket, no clock;
* this module — the I/O shell: the socket, the reader task, keep-alive pings,
  the lifetime, and the waits for ``session.updated``.

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

Sending in order
----------------
Every call asks the connection's protocol object for its messages and then
drains the protocol's outbox under the connection's send lock, so the messages
go out exactly in the order the protocol produced them, whichever task
produced them (a tool result's item and a reader's ``response.create``, say).

Bad input
---------
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

import ipaddress
import json
import logging
import os
import re
import ssl
from collections.abc import Mapping
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
from ..events import ConnectionLost, SessionStarted, TransportEvent
from ..model import RealtimeSessionConfig
from ..transport import EventCallback
from ._websocket import (
    DroppedMessage,
    HandshakeRejected,
    WebSocket,
    WebSocketError,
    client_handshake,
)
from .openai_history import DEFAULT_MAX_REPLAY_ITEMS, ConversationHistory
from .openai_mapping import (
    AUDIO_FORMATS,
    CLIENT_ROUTES,
    IGNORED_SERVER_EVENTS,
    MAX_APPEND_BYTES,
    SERVER_ROUTES,
    Route,
    audio_level,
    build_session_update,
    g711_rms,
    mapping_table_markdown,
    pcm16_rms,
)
from .openai_protocol import (
    OpenAIRealtimeProtocol,
    Outgoing,
    provider_error,
)

if TYPE_CHECKING:
    from ..transport import VoiceTransport

__all__ = [
    "AUDIO_FORMATS",
    "CLIENT_ROUTES",
    "CONNECTION_LOST_CAUSE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_REPLAY_ITEMS",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "IGNORED_SERVER_EVENTS",
    "MAX_APPEND_BYTES",
    "SERVER_ROUTES",
    "ConversationHistory",
    "OpenAIRealtimeProtocol",
    "OpenAIRealtimeTransport",
    "Route",
    "audio_level",
    "build_session_update",
    "g711_rms",
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


# ------------------------------------------------------------------ helpers


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


_SECRET_PARAM = re.compile(
    r"(?:^|[-_.])(?:api)?(?:key|token|secret|password|auth|authorization|sig|signature)$",
    re.IGNORECASE,
)
"""Query parameter names that carry credentials (``api-key=`` Azure style, ...)."""


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
    query = tuple(parse_qsl(parts.query, keep_blank_values=True))
    for name, _value in query:
        if _SECRET_PARAM.search(name):
            # The value is not repeated here: the message names only the parameter.
            raise CharivoValidationError(
                f"url must not carry a key in its query (parameter {name[:40]!r}): a URL "
                "ends up in logs and reprs. Pass the key as api_key= (sent in the "
                "Authorization header) instead"
            )
    return _Endpoint(
        scheme=scheme,
        host=host,
        port=port if port is not None else (443 if scheme == "wss" else 80),
        path=parts.path or "/",
        query=query,
    )


def _positive(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise CharivoValidationError(f"{name} must be a positive number (got {value!r})")
    return float(value)


# ------------------------------------------------------------------ connection


class _Waiter:
    """A ``session.update`` call waiting for its ``session.updated`` (or an error)."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: CharivoError | None = None

    def settle(self, error: CharivoError | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _Connection:
    """One WebSocket connection: its socket, its protocol state and its tasks."""

    def __init__(self, ws: WebSocket, protocol: OpenAIRealtimeProtocol) -> None:
        self.ws = ws
        self.protocol = protocol
        self.scope = anyio.CancelScope()
        self.finished = anyio.Event()
        self.waiters: dict[str, _Waiter] = {}  # session.update event_id -> its caller
        # The outbox goes out in protocol order; uncontended (the usual case) the lock
        # is taken without a trip through the event loop.
        self.send_lock = anyio.Lock(fast_acquire=True)
        self.tasks: anyio.abc.TaskGroup | None = None  # the reader's group, while it runs
        self.established = False  # SessionStarted was emitted for it
        self.closing = False  # we are closing it: no ConnectionLost
        self.lost_error: CharivoError | None = None


# ------------------------------------------------------------------ transport


class OpenAIRealtimeTransport:
    """A :class:`~charivo_fsm.VoiceTransport` speaking the OpenAI Realtime API (GA).

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
        on with this model (needed for ``UserTranscript`` from the real API); a
        config's ``input_transcription_model`` wins over it.
    :param max_replay_items: how many conversation items ``recover`` replays
        into the new service session (the most recent; ``0``: no replay).
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
        max_replay_items: int = DEFAULT_MAX_REPLAY_ITEMS,
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
        self._history = ConversationHistory(max_replay_items)
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

    # ------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """The endpoint (without the model parameter)."""
        e = self._endpoint
        query = f"?{urlencode(e.query)}" if e.query else ""
        return f"{e.scheme}://{e.host_header}{e.path}{query}"

    @property
    def model(self) -> str:
        """The model the next connection asks for (a config's ``model`` wins)."""
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

    @property
    def history(self) -> ConversationHistory:
        """The conversation history ``recover`` replays."""
        return self._history

    @property
    def response_in_flight(self) -> bool:
        """Whether the service has a response in flight on the current connection."""
        conn = self._conn
        return conn is not None and conn.protocol.response_in_flight

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

    def applied_config(self, config: RealtimeSessionConfig) -> RealtimeSessionConfig:
        """``config`` as this transport applies it: ``transport="websocket"``, the
        model in use and provider ``"openai"`` unless set.  The model is the live
        connection's while one is up (the GA interface cannot change it by
        ``session.update``: a new model takes effect at the next connect or
        recover), else the one the next connection will use (the config's, else
        the constructor's).  The manager shows this in ``state.session.config``."""
        conn = self._conn
        if conn is not None and conn.established and not conn.finished.is_set():
            model = conn.protocol.model
        else:
            model = config.model or self._model
        return attrs.evolve(
            config,
            transport="websocket",
            model=model,
            provider=config.provider or "openai",
        )

    # ------------------------------------------------------------ lifecycle

    async def connect(self, config: RealtimeSessionConfig) -> None:
        """Open the socket, send ``session.update`` and wait for ``session.updated``.

        Starts a new conversation: the replay history is cleared.  Emits
        :class:`~charivo_fsm.events.SessionStarted` on success.  Raises
        :class:`~charivo_fsm.CharivoStateError` when the transport is not
        entered, :class:`~charivo_fsm.CharivoProviderError` when the server
        refuses the key or the config, :class:`~charivo_fsm.CharivoTransportError`
        when the network fails.
        """
        self._require_entered()
        self._history.clear()
        await self._open(config, replay=False)

    async def update_session(self, config: RealtimeSessionConfig) -> None:
        """Send ``session.update`` and wait for the matching ``session.updated``."""
        conn = self._require_connection()
        await self._session_update(conn, config)
        self._config = config

    async def recover(self, config: RealtimeSessionConfig) -> None:
        """Open a new socket, re-send ``config`` and replay the conversation.

        After the new session acknowledged ``config``, the history (at most
        ``max_replay_items`` items) is sent as ``conversation.item.create``
        events before this returns.
        """
        self._require_entered()
        await self._open(config, replay=True)

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
        """A user message item, then ``response.create`` (held while a response is in flight)."""
        conn = self._require_connection()
        conn.protocol.send_text(text)
        await self._flush(conn)

    async def send_audio(self, audio: bytes) -> None:
        """``input_audio_buffer.append`` (split into appends of at most 3 MiB of audio).

        Raises :class:`~charivo_fsm.CharivoValidationError` before sending
        when the audio does not fit the session's input format.
        """
        conn = self._require_connection()
        conn.protocol.send_audio(audio)
        await self._flush(conn)

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        """A ``function_call_output`` item now; ``response.create`` by the tool-turn rule."""
        conn = self._require_connection()
        conn.protocol.send_tool_result(call_id, output)
        await self._flush(conn)

    async def interrupt(self) -> None:
        """``response.cancel`` while a response is in flight; otherwise nothing."""
        conn = self._require_connection()
        conn.protocol.interrupt()
        await self._flush(conn)

    async def commit_audio(self) -> None:
        """Push to talk: ``input_audio_buffer.commit``, then a response request."""
        conn = self._require_connection()
        conn.protocol.commit_audio()
        await self._flush(conn)

    async def clear_audio(self) -> None:
        """``input_audio_buffer.clear``: drop the input audio not yet committed."""
        conn = self._require_connection()
        conn.protocol.clear_audio()
        await self._flush(conn)

    async def truncate_audio(self, item_id: str, audio_end_ms: int) -> None:
        """``conversation.item.truncate`` at ``audio_end_ms`` (clamped to the audio
        received); an item this connection never received audio for raises
        :class:`~charivo_fsm.CharivoValidationError`."""
        conn = self._require_connection()
        conn.protocol.truncate_audio(item_id, audio_end_ms)
        await self._flush(conn)

    # ------------------------------------------------------------ internals

    def _require_entered(self) -> anyio.abc.TaskGroup:
        task_group = self._task_group
        if task_group is None:
            raise CharivoStateError(
                "OpenAIRealtimeTransport must be entered (`async with transport:`) before connect()"
            )
        return task_group

    async def _open(self, config: RealtimeSessionConfig, *, replay: bool) -> None:
        task_group = self._require_entered()
        key = await self._credentials(config)
        await self._drop_current()
        model = config.model or self._model
        ws = await self._open_socket(key, model)
        protocol = OpenAIRealtimeProtocol(
            model=model,
            history=self._history,
            transcription_model=self._transcription_model,
            scrub=self._scrub,
        )
        conn = _Connection(ws, protocol)
        self._conn = conn
        try:
            task_group.start_soon(self._run_connection, conn)
            await self._session_update(conn, config)
            if replay:
                count = protocol.replay()
                await self._flush(conn)
                logger.info("replayed %d conversation items", count)
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

    async def _credentials(self, config: RealtimeSessionConfig) -> str:
        """The key for the next connection (connect or recover).  The default is the
        long-lived key; :mod:`charivo_fsm.remote` fetches a fresh client secret here
        (and may point the transport at another endpoint).  The key returned is
        remembered for scrubbing."""
        return self._resolve_key()

    def _remember_secret(self, key: str) -> None:
        if all(secret.reveal() != key for secret in self._secrets):
            self._secrets = (*self._secrets, _Secret(key))

    def _resolve_key(self) -> str:
        key = self._api_key.reveal() if self._api_key is not None else None
        if not key:
            key = os.environ.get("OPENAI_API_KEY") or None
        if not key:
            raise CharivoValidationError("no OpenAI API key: pass api_key= or set OPENAI_API_KEY")
        self._remember_secret(key)
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
        self._fail_waiters(conn, CharivoTransportError("the connection was closed"))

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
            raise self._rejection(exc.status_code, exc.body) from None
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
            if isinstance(exc, WebSocketError):
                raise CharivoTransportError(
                    f"WebSocket handshake with {where} failed: {exc}"
                ) from None
            raise

    def _rejection(self, status_code: int, body: bytes) -> CharivoProviderError:
        """The error for an HTTP answer to the upgrade (with the service's error fields)."""
        if status_code in (401, 403):
            message = f"OpenAI Realtime refused the API key (HTTP {status_code})"
        else:
            message = f"OpenAI Realtime rejected the connection (HTTP {status_code})"
        try:
            error = json.loads(body.decode("utf-8"))["error"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            error = None
        if not isinstance(error, dict):
            return CharivoProviderError(message)
        detail = error.get("message")
        if isinstance(detail, str) and detail:
            message = f"{message}: {self._scrub(detail)[:300]}"
        return provider_error(error, message)

    async def _session_update(self, conn: _Connection, config: RealtimeSessionConfig) -> None:
        event_id = conn.protocol.session_update(config)
        waiter = conn.waiters[event_id] = _Waiter()
        try:
            await self._flush(conn)
            await waiter.done.wait()
        except BaseException:
            conn.waiters.pop(event_id, None)
            conn.protocol.abandon_update(event_id)
            raise
        if waiter.error is not None:
            raise waiter.error

    async def _flush(self, conn: _Connection) -> None:
        """Send everything the protocol has queued, in its order."""
        async with conn.send_lock:
            while batch := conn.protocol.data_to_send():
                for message in batch:
                    await self._send(conn, message)

    async def _send(self, conn: _Connection, message: Outgoing) -> None:
        try:
            await conn.ws.send_text(message.text)
        except WebSocketError as exc:
            raise CharivoTransportError(f"sending {message.type} failed: {exc}") from exc
        logger.debug("sent %s (%s)", message.type, message.event["event_id"])

    def _deliver(self, conn: _Connection) -> None:
        """Settle answered ``session.update`` calls and emit the protocol's events."""
        for event_id, error in conn.protocol.settled_updates():
            waiter = conn.waiters.pop(event_id, None)
            if waiter is not None:
                waiter.settle(error)
        for event in conn.protocol.events_to_emit():
            self._emit(event)

    def _fail_waiters(self, conn: _Connection, error: CharivoError) -> None:
        waiters, conn.waiters = conn.waiters, {}
        for waiter in waiters.values():
            waiter.settle(error)

    # ------------------------------------------------------------ reading

    async def _run_connection(self, conn: _Connection) -> None:
        """The connection's reader (plus its keep-alive pinger), in the transport's group."""
        try:
            with conn.scope:
                async with anyio.create_task_group() as group:
                    conn.tasks = group
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
            self._fail_waiters(conn, lost)
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
            self._handle_message(conn, message)

    def _handle_message(self, conn: _Connection, text: str) -> None:
        """Feed one server message to the protocol and deliver what follows.

        What it makes the protocol send (a held ``response.create``, a tool
        error output) goes out from a task of its own: the reader never waits
        for the send lock, so a long send cannot stop it from reading.
        """
        conn.protocol.receive_text(text)
        self._deliver(conn)
        if conn.protocol.has_data_to_send and conn.tasks is not None:
            conn.tasks.start_soon(self._flush_quietly, conn)

    async def _flush_quietly(self, conn: _Connection) -> None:
        try:
            await self._flush(conn)
        except CharivoError as error:  # the socket is failing: the read loop will see it
            logger.debug("could not send after a server event: %s", error.message)


if TYPE_CHECKING:

    def _conforms(transport: OpenAIRealtimeTransport) -> VoiceTransport:
        return transport
