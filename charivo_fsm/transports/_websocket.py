"""A minimal WebSocket layer: ``wsproto`` (sans-IO) driven over an anyio byte stream.

Shared by :mod:`charivo_fsm.transports.openai` (client side) and
:mod:`charivo_fsm.testing.server` (server side).  Because all I/O goes through
anyio, it runs unchanged on asyncio and on trio.

What it does and does not do:

* the opening handshake on either side (:func:`client_handshake`,
  :func:`server_handshake`);
* text messages in both directions, reassembled from fragments, with a size
  limit: a message above ``max_message_size`` bytes is skipped as it streams in
  (never buffered whole) and reported once as a :class:`DroppedMessage`;
* a message split into more than ``max_fragments`` frames (default
  :data:`MAX_FRAGMENTS`) fails the connection (close code 1009): a peer that
  floods one-byte continuation frames cannot make the reader spend seconds of
  CPU on one message; the reader also yields to the event loop every
  :data:`YIELD_EVERY` frames, so a burst of frames never stalls other tasks;
* binary messages are reported as :class:`DroppedMessage` (the Realtime API
  only speaks JSON text);
* pings are answered automatically; :meth:`WebSocket.ping` sends one and waits
  for its pong;
* the closing handshake: a peer's close frame is answered, ours is sent by
  :meth:`WebSocket.close`; :meth:`WebSocket.abort` drops the TCP connection.

Nothing here logs, and no exception message ever contains request headers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

__all__ = [
    "FAST_FRAME_LIMIT",
    "MAX_FRAGMENTS",
    "READ_CHUNK",
    "YIELD_EVERY",
    "DroppedMessage",
    "HandshakeRejected",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketError",
    "client_handshake",
    "server_handshake",
]

READ_CHUNK = 65536
"""How many bytes one read from the byte stream asks for."""

MAX_FRAGMENTS = 4096
"""The most frames one message may be split into (real peers send one to a few)."""

YIELD_EVERY = 64
"""The reader yields to the event loop after handling this many frames in a row."""

FAST_FRAME_LIMIT = 1024 * 1024
"""Text frames up to this size are decoded by :meth:`WebSocket.receive` itself."""

_HANDSHAKE_LIMIT = 64 * 1024
"""The most bytes an HTTP handshake (request or response, body included) may take."""

_STREAM_ERRORS = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
)

Headers = Sequence[tuple[bytes, bytes]]


class WebSocketError(Exception):
    """The WebSocket failed (a send on a dead socket, a protocol violation)."""


class WebSocketClosed(WebSocketError):
    """The connection is closed: by a close frame (``code``/``reason`` from it) or
    by the TCP connection ending (code 1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = f"WebSocket closed (code {code})"
        super().__init__(f"{text}: {reason}" if reason else text)


class HandshakeRejected(WebSocketError):
    """The server answered the opening handshake with an HTTP error."""

    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(f"HTTP {status_code}")


@attrs.frozen(slots=True)
class DroppedMessage:
    """A message that was skipped: ``reason`` is ``"oversized"`` or ``"binary"``;
    ``size`` is its length in bytes (for an oversized one, as far as received)."""

    reason: str
    size: int


class WebSocket:
    """One open WebSocket connection (after the opening handshake).

    Sending is safe from several tasks (a lock keeps frames whole and in
    order); receiving must happen in one task at a time.
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        connection: WSConnection,
        *,
        max_message_size: int,
        max_fragments: int = MAX_FRAGMENTS,
        initial: bytes = b"",
    ) -> None:
        self._stream = stream
        self._ws = connection
        # Bytes read from the stream and not yet framed (see ``receive``).
        self._buffer = bytearray(initial)
        self._routing = 0  # bytes of the frame being streamed into wsproto still to pass
        self._in_message = False  # wsproto holds the start of a fragmented message
        self._routed = False  # _frame passed bytes to wsproto
        self._fast_limit = min(max_message_size, FAST_FRAME_LIMIT)
        self._max = max_message_size
        self._max_fragments = max_fragments
        self._fragments = 0
        # Uncontended (the usual case) it is taken without a trip through the event
        # loop; the stream's send yields once anyway.
        self._send_lock = anyio.Lock(fast_acquire=True)
        self._parts: list[str] = []
        self._size = 0
        self._oversized = False
        self._binary = False
        self._pongs: dict[bytes, anyio.Event] = {}
        self._aborted = False
        self._eof = False
        self.peer_close: tuple[int, str] | None = None
        """The code and reason of the peer's close frame, once one arrived."""
        self.answer_pings = True
        """Reply to the peer's pings (the local test server can turn this off)."""
        self.answer_close = True
        """Reply to the peer's close frame (the local test server can turn this off)."""

    @property
    def is_open(self) -> bool:
        """Whether messages can still be sent."""
        return not self._aborted and self._ws.state is ConnectionState.OPEN

    # ------------------------------------------------------------------ send

    async def _send(self, event: Event) -> None:
        async with self._send_lock:
            try:
                data = self._ws.send(event)
            except LocalProtocolError as exc:
                raise WebSocketClosed(1006, f"cannot send in state {self._ws.state.name}") from exc
            try:
                await self._stream.send(data)
            except _STREAM_ERRORS as exc:
                raise WebSocketClosed(1006, f"send failed ({type(exc).__name__})") from exc

    async def send_text(self, text: str) -> None:
        """Send one text message."""
        await self._send(TextMessage(data=text))

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message."""
        await self._send(BytesMessage(data=data))

    async def ping(self) -> None:
        """Send a ping and wait for its pong (bound it with a timeout)."""
        payload = os.urandom(8)
        waiter = anyio.Event()
        self._pongs[payload] = waiter
        try:
            await self._send(Ping(payload=payload))
            await waiter.wait()
        finally:
            self._pongs.pop(payload, None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send our close frame (if the connection is open or the peer is closing).

        The peer's answer is seen by :meth:`receive` as :class:`WebSocketClosed`.
        """
        if self._aborted or self._ws.state not in (
            ConnectionState.OPEN,
            ConnectionState.REMOTE_CLOSING,
        ):
            return
        await self._send(CloseConnection(code=code, reason=reason or None))

    async def abort(self) -> None:
        """Close the TCP connection at once, without any closing handshake."""
        self._aborted = True
        await anyio.aclose_forcefully(self._stream)

    # --------------------------------------------------------------- receive

    async def receive(self) -> str | DroppedMessage:
        """Return the next text message (or a :class:`DroppedMessage`).

        Raises :class:`WebSocketClosed` once the connection is closed.

        The common frame -- a whole unmasked text message in one frame, at most
        :data:`FAST_FRAME_LIMIT` bytes, valid UTF-8, while the connection is open --
        is decoded here directly (a model streams tens of them a second per
        session); every other frame (control frames, fragments, masked, reserved
        bits, large or invalid ones) is passed to wsproto whole or as it streams
        in, so wsproto's checks and close codes apply to it as before.
        """
        handled = 0
        while True:
            for event in self._ws.events():
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
                result = await self._handle(event)
                if result is not None:
                    return result
            if self._ws.state is ConnectionState.CLOSED or self._aborted:
                raise WebSocketClosed(1006, "connection closed")
            if self._buffer:
                text = self._frame()
                if text is not None:
                    return text
                if self._routed:
                    self._routed = False
                    continue
            try:
                data: bytes | None = await self._stream.receive(READ_CHUNK)
            except anyio.EndOfStream:
                data = None
            except _STREAM_ERRORS as exc:
                self._eof = True
                raise WebSocketClosed(1006, f"connection lost ({type(exc).__name__})") from exc
            if data is None:
                self._eof = True
                if self._buffer:  # a partial frame: wsproto decides what it was
                    self._ws.receive_data(bytes(self._buffer))
                    self._buffer.clear()
                self._ws.receive_data(None)
            else:
                self._buffer += data

    def _frame(self) -> str | None:
        """Take the frame at the head of the buffer: the text of a common frame, or
        ``None`` after passing (part of) another frame to wsproto (``_routed``) or
        when the frame is not complete yet."""
        buffer = self._buffer
        if self._routing:
            count = min(self._routing, len(buffer))
            self._ws.receive_data(bytes(buffer[:count]))
            del buffer[:count]
            self._routing -= count
            self._routed = True
            return None
        available = len(buffer)
        if available < 2:
            return None
        first, second = buffer[0], buffer[1]
        size = second & 0x7F
        start = 2
        if size == 126:
            if available < 4:
                return None
            size = int.from_bytes(buffer[2:4], "big")
            start = 4
        elif size == 127:
            if available < 10:
                return None
            size = int.from_bytes(buffer[2:10], "big")
            start = 10
        end = start + size + (4 if second & 0x80 else 0)
        if (
            first == 0x81  # FIN, no reserved bits, text
            and not second & 0x80  # not masked
            and size <= self._fast_limit
            and not self._in_message
            and self._ws.state is ConnectionState.OPEN
        ):
            if available < end:
                return None
            try:
                text = buffer[start:end].decode("utf-8")
            except UnicodeDecodeError:
                pass  # wsproto fails the connection with its close code
            else:
                del buffer[:end]
                return text
        opcode = first & 0x0F
        if opcode < 0x8:  # a data frame: a message is open in wsproto until a FIN
            self._in_message = not first & 0x80
        self._routing = end
        return self._frame()

    async def _handle(self, event: Event) -> str | DroppedMessage | None:
        if isinstance(event, (TextMessage, BytesMessage)):
            self._fragments += 1
            if self._fragments > self._max_fragments:
                await self._fail(1009, f"message split into more than {self._max_fragments} frames")
            return self._collect(event)
        if isinstance(event, Ping):
            if self.answer_pings and self._ws.state is ConnectionState.OPEN:
                await self._send(event.response())
            return None
        if isinstance(event, Pong):
            waiter = self._pongs.get(bytes(event.payload))
            if waiter is not None:
                waiter.set()
            return None
        if isinstance(event, CloseConnection):
            await self._on_close(event)
        return None  # pragma: no cover - other events do not occur after the handshake

    async def _on_close(self, event: CloseConnection) -> None:
        state = self._ws.state
        reason = event.reason or ("connection lost" if event.code == 1006 else "")
        if state is ConnectionState.REMOTE_CLOSING or (
            state is ConnectionState.CLOSED and not self._eof
        ):
            self.peer_close = (event.code, reason)
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: answer it (unless told not to).
            if self.answer_close:
                try:
                    await self._send(event.response())
                except WebSocketClosed:
                    pass
        elif state is ConnectionState.OPEN:
            # A protocol error detected by wsproto: fail the connection with its code.
            try:
                await self._send(CloseConnection(code=event.code, reason=reason or None))
            except WebSocketClosed:
                pass
        raise WebSocketClosed(event.code, reason)

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the connection: our close frame, then :class:`WebSocketClosed`."""
        try:
            await self.close(code, reason)
        except WebSocketClosed:
            pass
        await self.abort()
        raise WebSocketClosed(code, reason)

    def _collect(self, event: TextMessage | BytesMessage) -> str | DroppedMessage | None:
        if isinstance(event, BytesMessage):
            self._binary = True
            self._size += len(event.data)
        else:
            piece = event.data
            self._size += len(piece.encode("utf-8"))
            if not self._oversized and not self._binary:
                self._parts.append(piece)
        if self._size > self._max and not self._oversized:
            self._oversized = True
            self._parts.clear()
        if not event.message_finished:
            return None
        self._fragments = 0
        size, oversized, binary = self._size, self._oversized, self._binary
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._oversized = False
        self._binary = False
        if oversized:
            return DroppedMessage("oversized", size)
        if binary:
            return DroppedMessage("binary", size)
        return text


# -------------------------------------------------------------------- handshakes


async def _read_handshake(stream: anyio.abc.ByteStream, total: int) -> tuple[bytes | None, int]:
    try:
        data = await stream.receive(READ_CHUNK)
    except anyio.EndOfStream:
        return None, total
    except _STREAM_ERRORS as exc:
        raise WebSocketError(
            f"connection lost during the handshake ({type(exc).__name__})"
        ) from exc
    total += len(data)
    if total > _HANDSHAKE_LIMIT:
        raise WebSocketError("the handshake exceeded its size limit")
    return data, total


async def client_handshake(
    stream: anyio.abc.ByteStream,
    *,
    host: str,
    target: str,
    headers: Headers,
    max_message_size: int,
) -> WebSocket:
    """Perform the client side of the opening handshake on ``stream``.

    Raises :class:`HandshakeRejected` for an HTTP error answer and
    :class:`WebSocketError` for anything else that goes wrong.  The messages
    never contain ``headers`` (which may carry credentials).
    """
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        request = ws.send(Request(host=host, target=target, extra_headers=list(headers)))
    except LocalProtocolError:
        raise WebSocketError("could not build the handshake request") from None
    try:
        await stream.send(request)
    except _STREAM_ERRORS as exc:
        raise WebSocketError(f"could not send the handshake ({type(exc).__name__})") from None
    status = 0
    body = bytearray()
    total = 0
    head = _Head()
    while True:
        data, total = await _read_handshake(stream, total)
        try:
            for event in head.feed(ws, data):
                if isinstance(event, AcceptConnection):
                    # Frames that arrived with the 101 are the WebSocket's first bytes.
                    return WebSocket(
                        stream, ws, max_message_size=max_message_size, initial=head.rest
                    )
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise HandshakeRejected(status, b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise HandshakeRejected(status, bytes(body))
        except (LocalProtocolError, RemoteProtocolError) as exc:
            raise WebSocketError(f"invalid handshake response ({type(exc).__name__})") from None
        if data is None:
            if status:
                raise HandshakeRejected(status, bytes(body))
            raise WebSocketError("the server closed the connection during the handshake")


class _Head:
    """Feeds wsproto the HTTP head of a handshake and nothing after it: the bytes that
    follow the head of an accepted upgrade are WebSocket frames, which the
    :class:`WebSocket` frames itself (``rest``); a rejection's body is fed on."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.done = False
        self.rest = b""

    def feed(self, ws: WSConnection, data: bytes | None) -> list[Event]:
        if self.done or data is None:
            if self.rest:  # a rejection's body that came with its head
                ws.receive_data(self.rest)
                self.rest = b""
            ws.receive_data(data)
            return list(ws.events())
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return []
        self.done = True
        ws.receive_data(bytes(self.buffer[: end + 4]))
        self.rest = bytes(self.buffer[end + 4 :])
        self.buffer.clear()
        events = list(ws.events())
        if self.rest and any(isinstance(event, RejectConnection) for event in events):
            ws.receive_data(self.rest)
            self.rest = b""
            events += ws.events()
        return events


Decision = tuple[int, bytes] | str | None
"""What a server's ``decide`` callback returns: ``None`` to accept the request,
a string to accept it with that subprotocol, or ``(status_code, json_body)`` to
reject it."""


async def server_handshake(
    stream: anyio.abc.ByteStream,
    *,
    decide: Callable[[Request], Decision],
    max_message_size: int,
    initial: bytes = b"",
) -> tuple[WebSocket, Request] | None:
    """Perform the server side of the opening handshake on ``stream``.

    ``decide(request)`` accepts (``None``) or rejects the upgrade with an HTTP
    status and a JSON body.  Returns the open :class:`WebSocket` and the
    request, or ``None`` when the request was rejected (the caller closes the
    stream).  Raises :class:`WebSocketError` for a malformed request.
    """
    ws = WSConnection(ConnectionType.SERVER)
    total = len(initial)
    pending: bytes | None = initial or None  # bytes the caller already read
    head = _Head()
    while True:
        data: bytes | None
        if pending is not None:
            data, pending = pending, None
        else:
            data, total = await _read_handshake(stream, total)
        if data is None:
            raise WebSocketError("the client closed the connection during the handshake")
        try:
            for event in head.feed(ws, data):
                if not isinstance(event, Request):
                    continue
                decision = decide(event)
                if decision is None or isinstance(decision, str):
                    reply = ws.send(AcceptConnection(subprotocol=decision))
                    await stream.send(reply)
                    socket = WebSocket(
                        stream, ws, max_message_size=max_message_size, initial=head.rest
                    )
                    return socket, event
                code, body = decision
                reply = ws.send(
                    RejectConnection(
                        status_code=code,
                        headers=[
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                        has_body=True,
                    )
                )
                reply += ws.send(RejectData(data=body, body_finished=True))
                await stream.send(reply)
                return None
        except (LocalProtocolError, RemoteProtocolError) as exc:
            raise WebSocketError(f"invalid handshake request ({type(exc).__name__})") from None
        except _STREAM_ERRORS as exc:
            raise WebSocketError(
                f"connection lost during the handshake ({type(exc).__name__})"
            ) from None
