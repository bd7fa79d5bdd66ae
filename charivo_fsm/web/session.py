"""One browser connection: a :class:`~charivo_fsm.RealtimeManager` behind a page socket.

:func:`serve_page` runs the page protocol (:mod:`charivo_fsm.web.protocol`,
``docs/web.md``) over any :class:`PageSocket` -- the Starlette WebSocket of
:func:`charivo_fsm.web.create_app`, or an in-memory pair in tests -- and uses
nothing but anyio, so it runs on asyncio and on trio.

Rules of this file:

* Each connection gets a fresh transport from the factory (entered with
  ``async with`` when it has a lifetime of its own, as
  :class:`~charivo_fsm.transports.openai.OpenAIRealtimeTransport` has) and a
  manager of its own; the page never sees the API key, the config, the
  instructions or the tool schemas.
* Every emitted event (``manager.events()``) goes to the page, in emit order,
  as an ``event`` message.  A page that cannot keep up (more than
  ``max_event_buffer`` events unread) gets an ``overflow`` error and its socket
  is closed.
* ``start`` and ``stop`` run as tasks of their own (a stop can overtake a start
  in flight, as the engine allows); audio, text, commit, clear and interrupt
  run one after the other, in arrival order, on one lane (a slow transport
  pushes back on the socket); ``played`` reports are applied at once.
* A bad message gets an ``error`` message and the session goes on; a message
  above ``max_frame_bytes`` closes that socket (code 1009).  Repeats of the
  same audio error are not sent again until an audio chunk goes through.
* When the page goes away (at any moment, mid-response included), the tasks of
  the connection are cancelled, the manager stops the session within its
  ``transport_timeout``, the transport is closed, and :func:`serve_page`
  returns: no task is left and no exception escapes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Protocol, cast

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import CharivoError, CharivoStateError, CharivoValidationError
from ..manager import RealtimeManager, create_realtime_manager
from ..model import (
    Character,
    RealtimeSessionConfig,
    RealtimeToolRegistration,
    TurnDetection,
)
from ..streams import EventStream
from ..transport import RealtimeTransport, VoiceTransport
from ..wire import structure_character, structure_config
from .protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    Audio,
    Command,
    PageProtocolError,
    Played,
    Simple,
    Start,
    Text,
    done_message,
    error_message,
    event_message,
    hello_message,
    parse_page_message,
)

__all__ = [
    "PageGone",
    "PageSettings",
    "PageSocket",
    "TransportFactory",
    "serve_page",
]

logger = logging.getLogger("charivo_fsm.web")

TransportFactory = Callable[[], RealtimeTransport]
"""Makes a fresh transport for each browser connection."""

CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
_LANE_SIZE = 64


class PageGone(Exception):
    """Raised by :meth:`PageSocket.send_text` when the page has gone away."""


class PageSocket(Protocol):
    """What :func:`serve_page` needs of a WebSocket to the page."""

    async def receive(self) -> str | bytes | None:
        """The next message (text or binary); ``None`` once the page has gone away."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one text message; raise :class:`PageGone` if the page has gone away."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (never raises)."""
        ...


def _positive_int(name: str) -> Callable[[Any, Any, int], None]:
    def check(_instance: Any, _attribute: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CharivoValidationError(f"{name} must be a positive integer (got {value!r})")

    return check


def _callable(_instance: Any, _attribute: Any, value: Any) -> None:
    if not callable(value):
        raise CharivoValidationError("transport_factory must be callable")


def _seconds(value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise CharivoValidationError(f"transport_timeout must be positive seconds (got {value!r})")
    return float(value)


ConfigLike = RealtimeSessionConfig | Mapping[str, Any] | None


def _as_config(value: ConfigLike) -> RealtimeSessionConfig | None:
    return structure_config(value)


def _as_character(value: Character | Mapping[str, Any] | None) -> Character | None:
    return structure_character(value)


def _as_tools(value: Iterable[RealtimeToolRegistration]) -> tuple[RealtimeToolRegistration, ...]:
    return tuple(value)


def _as_delays(value: Sequence[float]) -> tuple[float, ...]:
    return tuple(value)


def _as_info(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


@attrs.frozen(slots=True, kw_only=True)
class PageSettings:
    """How each browser connection is served (the options of
    :func:`~charivo_fsm.web.create_app`, which documents them)."""

    transport_factory: TransportFactory = attrs.field(validator=_callable)
    tools: tuple[RealtimeToolRegistration, ...] = attrs.field(default=(), converter=_as_tools)
    session_config: RealtimeSessionConfig | None = attrs.field(default=None, converter=_as_config)
    character: Character | None = attrs.field(default=None, converter=_as_character)
    transport_timeout: float = attrs.field(default=10.0, converter=_seconds)
    reconnect_delays: tuple[float, ...] = attrs.field(
        default=(0.5, 1.0, 2.0, 4.0, 5.0), converter=_as_delays
    )
    max_frame_bytes: int = attrs.field(
        default=DEFAULT_MAX_FRAME_BYTES, validator=_positive_int("max_frame_bytes")
    )
    max_event_buffer: int = attrs.field(default=4096, validator=_positive_int("max_event_buffer"))
    info: Mapping[str, Any] = attrs.field(factory=dict, converter=_as_info)

    def voice_turns(self) -> TurnDetection:
        """Turn detection of a session that is not push to talk."""
        configured = self.session_config.turn_detection if self.session_config else None
        if configured is not None and configured.mode != "manual":
            return configured
        return TurnDetection(mode="server_vad")


def _size(message: str | bytes) -> int:
    if isinstance(message, str):
        return len(message.encode("utf-8", "surrogatepass"))
    return len(message)


def _dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


class _Connection:
    """The state of one page connection while :func:`serve_page` runs."""

    def __init__(self, socket: PageSocket, settings: PageSettings) -> None:
        self.socket = socket
        self.settings = settings
        self.send_lock = anyio.Lock()
        self.scope: anyio.CancelScope | None = None  # the connection's task group
        self.gone = False
        self.manager: RealtimeManager | None = None
        self.audio_error: str | None = None  # the last audio error sent

    # ------------------------------------------------------------ sending

    async def send(self, message: Mapping[str, Any]) -> None:
        if self.gone:
            return
        text = _dumps(message)
        try:
            async with self.send_lock:
                await self.socket.send_text(text)
        except PageGone:
            self.page_gone()

    async def close(self, code: int, reason: str) -> None:
        if not self.gone:
            self.gone = True
            with anyio.CancelScope(shield=True):
                await self.socket.close(code, reason)
        if self.scope is not None:
            self.scope.cancel()

    def page_gone(self) -> None:
        self.gone = True
        if self.scope is not None:
            self.scope.cancel()

    async def refuse(self, error: PageProtocolError) -> None:
        await self.send(error_message(error.code, error.message, command=error.command))

    async def failed(self, command: str, error: CharivoError) -> None:
        await self.send(
            error_message("command_failed", error.message, command=command, error=error)
        )

    # ------------------------------------------------------------ the session

    async def run(self) -> None:
        settings = self.settings
        try:
            transport = settings.transport_factory()
        except Exception as error:
            logger.warning("charivo_fsm.web: the transport factory failed: %r", error)
            await self.send(error_message("command_failed", "the backend cannot reach the model"))
            await self.close(CLOSE_INTERNAL, "transport unavailable")
            return
        async with AsyncExitStack() as stack:
            if hasattr(type(transport), "__aenter__"):
                await stack.enter_async_context(cast("Any", transport))
            manager = create_realtime_manager(
                transport,
                tools=settings.tools,
                default_session_config=settings.session_config,
                transport_timeout=settings.transport_timeout,
                reconnect_delays=settings.reconnect_delays,
            )
            if settings.character is not None:
                manager.set_character(settings.character)
            await stack.enter_async_context(manager)
            self.manager = manager
            stream = await stack.enter_async_context(manager.events(settings.max_event_buffer))
            await self.send(
                hello_message(
                    tools=[tool.name for tool in manager.registered_tools()],
                    push_to_talk=isinstance(transport, VoiceTransport),
                    max_frame_bytes=settings.max_frame_bytes,
                    info=settings.info,
                )
            )
            lane_in, lane_out = anyio.create_memory_object_stream[Command](_LANE_SIZE)
            async with anyio.create_task_group() as group:
                self.scope = group.cancel_scope
                if self.gone:
                    group.cancel_scope.cancel()
                group.start_soon(self.forward, stream)
                group.start_soon(self.lane, lane_out)
                try:
                    await self.read(group, lane_in)
                finally:
                    group.cancel_scope.cancel()
        # Leaving the stack: the stream closes, the manager stops the session
        # (bounded by transport_timeout) and the transport closes.

    async def read(self, group: anyio.abc.TaskGroup, lane: MemoryObjectSendStream[Command]) -> None:
        limit = self.settings.max_frame_bytes
        async with lane:
            while not self.gone:
                message = await self.socket.receive()
                if message is None:
                    self.gone = True
                    return
                if _size(message) > limit:
                    await self.close(CLOSE_TOO_BIG, f"message above {limit} bytes")
                    return
                try:
                    command = parse_page_message(message)
                except PageProtocolError as error:
                    await self.refuse(error)
                    continue
                if isinstance(command, Start) or (
                    isinstance(command, Simple) and command.type == "stop"
                ):
                    group.start_soon(self.control, command)
                elif isinstance(command, Played):
                    await self.played(command)
                else:
                    await lane.send(command)

    async def forward(self, stream: EventStream) -> None:
        """Every emitted event to the page, in emit order."""
        try:
            async for name, payload in stream:
                await self.send(event_message(name, payload))
        except CharivoStateError as overflow:
            await self.send(error_message("overflow", overflow.message))
            await self.close(CLOSE_INTERNAL, "the page did not keep up with the events")

    async def lane(self, lane: MemoryObjectReceiveStream[Command]) -> None:
        async with lane:
            async for command in lane:
                await self.perform(command)

    # ------------------------------------------------------------ commands

    async def control(self, command: Start | Simple) -> None:
        manager = self.manager
        assert manager is not None
        try:
            if isinstance(command, Start):
                turns = (
                    TurnDetection(mode="manual")
                    if command.push_to_talk
                    else self.settings.voice_turns()
                )
                await manager.start_session({"turn_detection": turns})
            else:
                await manager.stop_session()
        except CharivoError as error:
            await self.failed(command.type, error)
            return
        await self.send(done_message(command.type))

    async def played(self, command: Played) -> None:
        manager = self.manager
        assert manager is not None
        try:
            manager.mark_played(command.item_id, command.played_ms)
        except CharivoError as error:
            await self.failed("played", error)

    async def perform(self, command: Command) -> None:
        manager = self.manager
        assert manager is not None
        try:
            if isinstance(command, Audio):
                await manager.send_audio_chunk(command.audio)
                self.audio_error = None
                return
            if isinstance(command, Text):
                await manager.send_message(command.text)
            elif command == Simple("interrupt"):
                await manager.interrupt()
            elif command == Simple("commit"):
                await manager.commit_audio()
            elif command == Simple("clear"):
                await manager.clear_audio()
            else:  # pragma: no cover - read() routes the rest elsewhere
                raise AssertionError(command)
        except CharivoError as error:
            if isinstance(command, Audio):
                if error.message == self.audio_error:
                    return  # already said
                self.audio_error = error.message
            await self.failed(command.type, error)
            return
        await self.send(done_message(command.type))


async def serve_page(socket: PageSocket, settings: PageSettings) -> None:
    """Serve one page connection until the page goes away (see the module docs).

    Never raises (an unexpected failure is logged and closes the socket with
    code 1011); returns once the manager has stopped and the transport is closed.
    """
    connection = _Connection(socket, settings)
    try:
        await connection.run()
    except Exception:
        logger.exception("charivo_fsm.web: a page session failed")
        await connection.close(CLOSE_INTERNAL, "internal error")
