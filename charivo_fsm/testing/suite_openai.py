"""The semantic suite over the OpenAI transport and the local server.

``charivo-fsm check --transport charivo_fsm.testing.suite_openai:openai_transport_factory``
runs the driver programs against :class:`~charivo_fsm.OpenAIRealtimeTransport`
talking to an in-process :class:`~charivo_fsm.testing.LocalRealtimeServer`: the
real protocol layer, the real WebSocket framing and the server's rules, over an
in-memory byte pipe instead of a TCP socket, so the programs still run on a
virtual clock (a socket wait would look like idleness to it) and replay exactly.

The provider's side of the link (:class:`OpenAIFaults`):

* a lost link is the server dropping the connection, and an error event is an
  ``error`` the server sends, when a connection is up; the transport then
  reports them itself;
* the other events (and those two without a connection) are delivered as the
  transport delivers what it maps from the server;
* faults of a transport call (fail, hang, delay, emit then fail) happen in the
  call, before the transport does its work (a faulty ``disconnect`` still
  closes the socket when it ends);
* the transport's own rules (:class:`~charivo_fsm.testing.suite_faults.TransportRules`),
  checked on the server's side after every step: at most one response request
  in flight (the server never refuses a ``response.create`` with
  ``conversation_already_has_active_response``), truncation never past the
  audio the service produced, and after every successful ``recover`` the new
  service session holds the conversation's user messages again (replayed, in
  order).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import CharivoTransportError
from ..events import ConnectionLost, ErrorEvent, TransportEvent
from ..model import RealtimeSessionConfig
from ..transports._websocket import HandshakeRejected, WebSocket, WebSocketError, client_handshake
from ..transports.openai import USER_AGENT, OpenAIRealtimeTransport
from .fake import MethodName
from .server import LocalRealtimeServer
from .service_rules import ServiceSession

__all__ = ["LoopbackOpenAITransport", "OpenAIFaults", "openai_transport_factory"]

_KEY = "sk-suite-local-key"
_URL = "ws://127.0.0.1:9/v1/realtime"  # never dialled: the socket is a pipe


class _Pipe(anyio.abc.ByteStream):
    """One end of an in-memory byte stream pair."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send = send
        self._receive = receive
        self._pending = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._pending:
            try:
                self._pending = await self._receive.receive()
            except anyio.EndOfStream:
                raise
            except (anyio.ClosedResourceError, anyio.BrokenResourceError) as error:
                raise anyio.EndOfStream from error
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        try:
            await self._send.send(bytes(item))
        except anyio.ClosedResourceError as error:
            raise anyio.BrokenResourceError from error

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def _pipe_pair() -> tuple[_Pipe, _Pipe]:
    a_send, b_receive = anyio.create_memory_object_stream[bytes](math.inf)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](math.inf)
    return _Pipe(a_send, a_receive), _Pipe(b_send, b_receive)


_Behaviour = Callable[[], Awaitable[None]]


class LoopbackOpenAITransport(OpenAIRealtimeTransport):
    """The OpenAI transport, its socket an in-memory pipe to a local server, each
    call first running the behaviour its :class:`OpenAIFaults` scripted."""

    def __init__(self, server: LocalRealtimeServer, faults: OpenAIFaults) -> None:
        super().__init__(api_key=_KEY, url=_URL, close_timeout=1.0)
        self._server = server
        self._faults = faults
        self._leaving = False  # the transport's own exit: no scripted faults any more

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._leaving = True
        return await super().__aexit__(*exc_info)

    async def _open_socket(self, key: str, model: str) -> WebSocket:
        group = self._require_entered()
        client, served = _pipe_pair()
        group.start_soon(self._server._serve_client, served)
        headers = [
            (b"authorization", b"Bearer " + key.encode("utf-8")),
            (b"user-agent", USER_AGENT.encode("ascii")),
        ]
        try:
            return await client_handshake(
                client,
                host=self._endpoint.host_header,
                target=self._endpoint.target(model),
                headers=headers,
                max_message_size=self._max_message_size,
            )
        except HandshakeRejected as exc:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(client)
            raise self._rejection(exc.status_code, exc.body) from None
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(client)
            if isinstance(exc, WebSocketError):
                raise CharivoTransportError(f"WebSocket handshake failed: {exc}") from None
            raise

    def deliver(self, event: TransportEvent) -> None:
        """Deliver ``event`` as if the transport had mapped it from the server."""
        self._emit(event)

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._require_entered().start_soon(fn)

    async def connect(self, config: RealtimeSessionConfig) -> None:
        await self._faults.before("connect")
        await super().connect(config)
        self._faults.connected()

    async def update_session(self, config: RealtimeSessionConfig) -> None:
        await self._faults.before("update_session")
        await super().update_session(config)

    async def recover(self, config: RealtimeSessionConfig) -> None:
        await self._faults.before("recover")
        previous = self._server.last_session
        await super().recover(config)
        self._faults.recovered(previous)

    async def disconnect(self) -> None:
        # A disconnect that fails, hangs or is cancelled still closes the socket: the
        # transport's tasks never outlive the manager because of a scripted fault.
        try:
            if not self._leaving:
                await self._faults.before("disconnect")
        finally:
            with anyio.CancelScope(shield=True):
                await super().disconnect()

    async def send_text(self, text: str) -> None:
        await self._faults.before("send_text")
        await super().send_text(text)

    async def send_audio(self, audio: bytes) -> None:
        await self._faults.before("send_audio")
        await super().send_audio(audio)

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        await self._faults.before("send_tool_result")
        await super().send_tool_result(call_id, output)

    async def interrupt(self) -> None:
        await self._faults.before("interrupt")
        await super().interrupt()

    async def commit_audio(self) -> None:
        await self._faults.before("commit_audio")
        await super().commit_audio()

    async def clear_audio(self) -> None:
        await self._faults.before("clear_audio")
        await super().clear_audio()

    async def truncate_audio(self, item_id: str, audio_end_ms: int) -> None:
        await self._faults.before("truncate_audio")
        await super().truncate_audio(item_id, audio_end_ms)


class OpenAIFaults:
    """:class:`~charivo_fsm.testing.TransportFaults` and
    :class:`~charivo_fsm.testing.TransportRules` for :class:`LoopbackOpenAITransport`."""

    def __init__(self, server: LocalRealtimeServer) -> None:
        self.server = server
        self.transport: LoopbackOpenAITransport = None  # type: ignore[assignment]  # set below
        self._once: dict[str, deque[_Behaviour]] = {}
        self._always: dict[str, _Behaviour] = {}
        # The service sessions of the conversation since the last connect, and the
        # recovers whose replay the next check looks at: (previous, new) sessions.
        self._replays: list[tuple[ServiceSession, ServiceSession]] = []
        self._reported: set[int] = set()  # ids of the server errors already judged

    # ------------------------------------------------------------ scripting

    async def before(self, method: str) -> None:
        once = self._once.get(method)
        behaviour = once.popleft() if once else self._always.get(method)
        if behaviour is not None:
            await behaviour()

    def _queue(self, method: MethodName, behaviour: _Behaviour, *, always: bool) -> None:
        if always:
            self._always[method] = behaviour
        else:
            self._once.setdefault(method, deque()).append(behaviour)

    def fail_once(self, method: MethodName, exc: BaseException) -> None:
        self._queue(method, _raising(exc), always=False)

    def fail_always(self, method: MethodName, exc: BaseException) -> None:
        self._queue(method, _raising(exc), always=True)

    def hang(self, method: MethodName) -> None:
        self._queue(method, anyio.sleep_forever, always=False)

    def delay(self, method: MethodName, seconds: float, *, always: bool = False) -> None:
        async def slow() -> None:
            await anyio.sleep(seconds)

        self._queue(method, slow, always=always)

    def succeed(self, method: MethodName) -> None:
        self._once.pop(method, None)
        self._always.pop(method, None)

    def emit_then_raise(
        self, method: MethodName, event: TransportEvent, exc: BaseException
    ) -> None:
        async def behaviour() -> None:
            self.emit(event)
            raise exc

        self._queue(method, behaviour, always=False)

    def emit(self, event: TransportEvent) -> None:
        transport, server = self.transport, self.server
        if transport.connected and type(event) is ConnectionLost:
            transport.spawn(server.drop_connection)  # the transport reports the loss
        elif transport.connected and type(event) is ErrorEvent:
            message = str(event.error) or type(event.error).__name__
            error = {"type": "server_error", "code": None, "message": message, "param": None}
            transport.spawn(lambda: server.send_event({"type": "error", "error": error}))
        else:
            transport.deliver(event)

    # ------------------------------------------------------------ rules

    def connected(self) -> None:
        self._replays.clear()  # a new conversation

    def recovered(self, previous: ServiceSession | None) -> None:
        new = self.server.last_session
        if previous is not None and new is not None and new is not previous:
            self._replays.append((previous, new))

    def broken_rules(self, *, final: bool) -> Sequence[str]:
        broken: list[str] = []
        for event in self.server.sent:
            if event.get("type") != "error" or id(event) in self._reported:
                continue
            self._reported.add(id(event))
            error = event.get("error") or {}
            code, param = error.get("code"), error.get("param")
            if code == "conversation_already_has_active_response":
                broken.append("a second response.create while the service had a response in flight")
            elif param == "audio_end_ms":
                broken.append(f"a truncation past the audio produced: {error.get('message')}")
        for previous, new in self._replays:
            before, after = _user_texts(previous), _user_texts(new)
            if not _in_order(before, after):
                broken.append(
                    f"recover did not replay the conversation: the new service session "
                    f"holds {after!r}, the previous one held {before!r}"
                )
        self._replays.clear()
        return broken


def _raising(exc: BaseException) -> _Behaviour:
    async def behaviour() -> None:
        raise exc

    return behaviour


def _user_texts(session: ServiceSession) -> list[str]:
    """The texts of the user's text messages in a service session's conversation."""
    texts: list[str] = []
    for item in session.items:
        if item.get("type") != "message" or item.get("role") != "user":
            continue
        for part in item.get("content") or ():
            if part.get("type") == "input_text":
                texts.append(str(part.get("text")))
    return texts


def _in_order(wanted: list[str], found: list[str]) -> bool:
    """Whether ``wanted`` appears in ``found`` in order (not necessarily together)."""
    remaining = iter(found)
    return all(any(text == other for other in remaining) for text in wanted)


def openai_transport_factory() -> tuple[LoopbackOpenAITransport, OpenAIFaults]:
    """A :data:`~charivo_fsm.testing.TransportFactory`: the OpenAI transport and a
    fresh local server, joined by an in-memory pipe."""
    server = LocalRealtimeServer(api_key=_KEY)
    faults = OpenAIFaults(server)
    transport = LoopbackOpenAITransport(server, faults)
    faults.transport = transport
    return transport, faults
