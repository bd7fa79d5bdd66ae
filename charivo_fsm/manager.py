"""The anyio driver: :class:`RealtimeManager`.

The manager owns a task group (``async with manager:``), feeds user commands
and transport events to the pure :class:`~charivo_fsm.core.Core` and executes
the effects it returns: emits and log records synchronously, transport
lifecycle calls and sleeps in tasks of their own, each in a cancel scope the
core can cancel.  Every wait goes through anyio, so the manager runs on asyncio
and trio and under a virtual clock.

Tool handlers and tool-result sends are *operations* run by workers: see
:mod:`charivo_fsm.operations`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random as _random
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from . import lifecycle as _lifecycle_calls
from . import operations as _operations
from .core import (
    _EVENT_HANDLERS,
    Cancel,
    Connect,
    Core,
    Disconnect,
    Emit,
    Log,
    Patch,
    Project,
    Recover,
    RunTool,
    SendToolResult,
    Settle,
    Sleep,
    Truncate,
)
from .effects import _tuple_new
from .errors import (
    CharivoError,
    CharivoStateError,
    CharivoTransportError,
    CharivoValidationError,
    to_charivo_error,
)
from .lifecycle import _Turn
from .model import (
    Character,
    RealtimeSessionConfig,
    RealtimeState,
    RealtimeTool,
    RealtimeToolRegistration,
)
from .operations import (
    _FATAL,
    _as_error,
    _handled_as_error,
    _Op,
    _op_name,
)
from .streams import EventStream
from .tools import ProjectorContext, ResultProjector, ToolRegistry
from .transport import RealtimeTransport, VoiceTransport
from .voice import check_input_audio, check_played_ms
from .wire import structure_character, structure_config

__all__ = ["EventEmitter", "RealtimeManager", "create_realtime_manager"]

_module_logger = logging.getLogger("charivo_fsm")


class EventEmitter(Protocol):
    """Anything with ``emit(name, payload)``."""

    def emit(self, name: str, payload: Any, /) -> None: ...


class _Ticket:
    """A caller waiting for the core to settle its request.

    Several ``update_session`` callers may share one ticket: requests made while
    the core's ``waiter_batch`` stays the same are always settled together.
    """

    __slots__ = ("batch", "done", "error", "event")

    def __init__(self, batch: int = -1) -> None:
        self.batch = batch
        self.done = False
        self.error: CharivoError | None = None
        self.event: anyio.Event | None = None

    def settle(self, error: CharivoError | None) -> None:
        if self.done:
            return
        self.done = True
        self.error = error
        if self.event is not None:
            self.event.set()

    async def wait(self) -> None:
        if not self.done:
            event = self.event
            if event is None:
                event = self.event = anyio.Event()
            await event.wait()
        if self.error is not None:
            raise self.error


_DEFAULT_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 5.0)


def _check_seconds(name: str, value: Any, *, allow_zero: bool = True) -> float:
    if type(value) is float and 0.0 < value < math.inf:  # the common case, decided at once
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CharivoValidationError(f"{name} must be a number of seconds (got {value!r})")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise CharivoValidationError(f"{name} must be a finite positive number (got {value!r})")
    return float(value)


def _now() -> float:
    try:
        return anyio.current_time()
    except Exception:  # outside an event loop (never while a session runs)
        return 0.0


def _check_jitter(value: Any) -> float:
    if type(value) is float and 0.0 <= value <= 0.5:  # the common case, decided at once
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 0.5:
        raise CharivoValidationError(
            f"reconnect_jitter must be a fraction between 0 and 0.5 (got {value!r})"
        )
    return float(value)


def _applied_hook(
    transport: Any,
) -> Callable[[RealtimeSessionConfig], RealtimeSessionConfig] | None:
    """A transport's optional ``applied_config(config)``: the config as the transport
    applies it (its kind, the model it uses), which the state then shows."""
    hook = getattr(transport, "applied_config", None)
    return hook if callable(hook) else None


_IDENTS: dict[int, int] = {}


def _thread_ident() -> int:
    """``threading.get_ident()``, one int object per thread (a manager keeps it)."""
    ident = threading.get_ident()
    if len(_IDENTS) > 64:  # threads come and go: keep a few
        _IDENTS.clear()
    return _IDENTS.setdefault(ident, ident)


_LoopRef = weakref.ref[asyncio.AbstractEventLoop]
_last_token: tuple[_LoopRef, anyio.lowlevel.EventLoopToken] | None = None


def _current_token() -> anyio.lowlevel.EventLoopToken:
    """``anyio.lowlevel.current_token()``, one per asyncio event loop (the managers
    entered in one loop share it)."""
    global _last_token
    loop = asyncio._get_running_loop()
    last = _last_token
    if loop is not None and last is not None and last[0]() is loop:
        return last[1]
    token = anyio.lowlevel.current_token()
    if loop is not None:
        _last_token = (weakref.ref(loop), token)
    return token


class _ListenerFailed(NamedTuple):
    """The listener failed on emitting ``name`` in the transport callback's own loop
    (see ``_on_transport_event``): the drain reports it, then goes on."""

    name: str
    payload: Any
    error: BaseException


def _new_session_id() -> str:
    return str(uuid.uuid4())


class RealtimeManager:
    """A realtime session manager: see CONTRACT §4 and the README."""

    __slots__ = (
        "__weakref__",
        "_core",
        "_draining",
        "_emitter",
        "_entered",
        "_exited",
        "_free",
        "_idle",
        "_lifecycle_queue",
        "_logger",
        "_logger_failures",
        "_loop_thread",
        "_loop_token",
        "_ops",
        "_projectors",
        "_quiet",
        "_ready",
        "_scopes",
        "_streams",
        "_tg",
        "_transport",
        "_transport_timeout",
        "_update_ticket",
    )

    def __init__(
        self,
        transport: RealtimeTransport,
        *,
        default_session_config: RealtimeSessionConfig | Mapping[str, Any] | None = None,
        tools: Iterable[RealtimeToolRegistration] = (),
        default_tool_timeout: float = 10.0,
        result_projectors: Iterable[ResultProjector] = (),
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        reconnect_delays: Sequence[float] = _DEFAULT_DELAYS,
        transport_timeout: float = 30.0,
        auto_refresh_tools: bool = False,
        tool_error_detail: bool = False,
        reconnect_jitter: float = 0.1,
    ) -> None:
        for method in ("connect", "update_session", "recover", "disconnect", "on_event"):
            if not callable(getattr(transport, method, None)):
                raise CharivoValidationError(f"transport lacks the method {method!r}")
        if reconnect_delays is _DEFAULT_DELAYS:
            delays = _DEFAULT_DELAYS  # already checked
        else:
            delays = tuple(_check_seconds("reconnect_delays[]", d) for d in reconnect_delays)
        if not delays:
            raise CharivoValidationError("reconnect_delays must hold at least one delay")
        self._transport_timeout = _check_seconds(
            "transport_timeout", transport_timeout, allow_zero=False
        )
        tool_timeout = _check_seconds("default_tool_timeout", default_tool_timeout)
        projectors = tuple(result_projectors)
        for projector in projectors:
            if not callable(projector):
                raise CharivoValidationError("result_projectors must be callables")
        self._projectors = projectors
        self._logger: logging.Logger | logging.LoggerAdapter[Any] = (
            logger if logger is not None else _module_logger
        )
        self._logger_failures = 0
        self._transport = transport
        self._emitter: EventEmitter | None = None
        self._core = Core(
            registry=ToolRegistry(),
            default_config=structure_config(default_session_config),
            reconnect_delays=delays,
            default_tool_timeout=tool_timeout,
            auto_refresh_tools=bool(auto_refresh_tools),
            tool_error_detail=bool(tool_error_detail),
            reconnect_jitter=_check_jitter(reconnect_jitter),
            random=_random.random,
            clock=_now,
            new_session_id=_new_session_id,
            applied=_applied_hook(transport),
        )
        if type(self._logger) is logging.Logger:  # the records it drops are not made
            self._core.logger = self._logger
        self._core.projecting = bool(projectors)
        for registration in tools:
            self._core.registry.register(registration)
        self._tg: anyio.abc.TaskGroup | None = None
        self._entered = False
        self._exited = False
        self._lifecycle_queue: list[_Turn] | None = None  # created when first needed
        self._scopes: dict[int, anyio.CancelScope] | None = None  # created when first needed
        self._draining = False
        # Operations run by workers: queued ones, and every one not finished yet.
        self._ready: deque[_Op] | None = None
        self._ops: dict[int, _Op] = {}
        # Workers serving the queue: spawned, running it, or parked (at most one, on
        # _idle).  A worker whose operation suspended is that operation's and not counted.
        self._free = 0
        self._idle: anyio.Event | None = None
        self._update_ticket: _Ticket | None = None
        self._streams: list[EventStream] | None = None  # open pull streams, if any
        self._quiet: anyio.Event | None = None  # set when no clean-up disconnect is pending
        # The event loop the manager runs in (set on entering): transport events from
        # other threads are handed to it.
        self._loop_thread = _thread_ident()
        self._loop_token: anyio.lowlevel.EventLoopToken | None = None
        transport.on_event(self._on_transport_event)

    # ---------------------------------------------------------------- lifetime

    async def __aenter__(self) -> RealtimeManager:
        if self._entered:
            raise CharivoStateError("A RealtimeManager can be entered only once")
        self._entered = True
        self._loop_thread = _thread_ident()
        self._loop_token = _current_token()
        self._core.emits = []  # the drain executes the most frequent emits as pairs
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        tg = self._tg
        assert tg is not None
        try:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self._transport_timeout + 1.0):
                    try:
                        await self.stop_session()
                    except CharivoError as error:
                        self._module_log(
                            logging.ERROR,
                            "session.failed",
                            "Realtime session did not stop cleanly on exit",
                            error=error.message,
                        )
                    # D17.13: a clean-up disconnect after a remote end still reaches
                    # the transport (it is bounded by transport_timeout itself).
                    while self._core.cleanup_pending:
                        quiet = self._quiet = anyio.Event()
                        await quiet.wait()
        finally:
            self._exited = True
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            self._tg = None
            for stream in tuple(self._streams or ()):
                stream.end()
        return False

    def _require_entered(self) -> None:
        if not self._entered or self._exited or self._tg is None:
            raise CharivoStateError(
                "RealtimeManager is not running: use it inside 'async with manager:'"
            )

    # ------------------------------------------------------------------ public

    @property
    def state(self) -> RealtimeState:
        """An immutable snapshot of the current state."""
        return self._core.snapshot()

    @property
    def session_id(self) -> str | None:
        """The id of the current session (a uuid4 string), or ``None`` between sessions.

        It is set when :meth:`start_session` begins (visible while starting), kept
        across reconnects, and cleared when the session ends (D17.15).  Log records and
        ``realtime:usage`` payloads carry it.
        """
        return self._core.session_id

    def events(self, max_buffer: int = 1024) -> EventStream:
        """Pull the emitted events: an async iterator of ``(name, payload)``.

        Use it as ``async with manager.events() as stream: async for name, payload
        in stream:``.  It receives every event from this call on, in emit order,
        alongside the emitter and any other stream; it holds at most
        ``max_buffer`` unread events and, rather than drop one, delivers what it
        holds and then raises :class:`CharivoStateError` naming the overflow.  It
        ends when the manager exits.  Events emitted by result projectors go to
        the emitter only.  See :mod:`charivo_fsm.streams`.
        """
        stream = EventStream(max_buffer, self._detach_stream)
        if self._exited:
            stream.end()
            return stream
        streams = self._streams
        if streams is None:
            streams = self._streams = []
        streams.append(stream)
        return stream

    def _detach_stream(self, stream: EventStream) -> None:
        streams = self._streams
        if streams is not None and stream in streams:
            streams.remove(stream)
            if not streams:
                self._streams = None

    def set_event_emitter(self, emitter: EventEmitter | None) -> None:
        """Send every emitted event to ``emitter.emit(name, payload)``; ``None`` stops it.

        The emitter is called synchronously, in emit order; whatever it raises is
        logged (``listener.failed``) and never reaches the engine or a caller (D1).
        Raises :class:`CharivoValidationError` for an object without ``emit``.
        """
        if emitter is not None and not callable(getattr(emitter, "emit", None)):
            raise CharivoValidationError(
                "the event emitter must have an emit(name, payload) method"
            )
        self._emitter = emitter

    def set_character(self, character: Character | Mapping[str, Any] | None) -> None:
        """Set (or clear, with ``None``) the character the sessions speak as.

        A :class:`Character` or a mapping with the same keys.  The character's voice
        and instructions fill what the base config leaves unset
        (:func:`build_realtime_session_config`); ``state.session.character_id``
        follows at once, and the effective config takes it at the next start, update
        or reconnect.  Raises :class:`CharivoValidationError` for bad input.
        """
        value = None if character is None else structure_character(character)
        self._core.set_character(value)
        self._drain()

    def register_tool(self, registration: RealtimeToolRegistration) -> None:
        """Add a tool, or replace the registered tool of the same name.

        The tool's JSON Schema is compiled here: an invalid schema or a handler that
        is not async raises :class:`CharivoValidationError` and leaves the registry
        as it was.  A live session learns the new tool at its next update or
        reconnect, or at once with ``auto_refresh_tools=True`` (D16).  See
        :func:`charivo_fsm.tool` to build a registration from a typed function.
        """
        self._core.registry.register(registration)
        self._core.tools_changed()
        self._drain()

    def unregister_tool(self, name: str) -> None:
        """Remove the tool called ``name`` (nothing happens if there is none).

        Calls the model makes to it afterwards fail as unknown tools (D8); a live
        session is told as for :meth:`register_tool`.
        """
        if self._core.registry.unregister(name):
            self._core.tools_changed()
            self._drain()

    def registered_tools(self) -> list[RealtimeTool]:
        """The definitions of the registered tools, in registration order."""
        return list(self._core.registry.definitions())

    async def start_session(
        self, config: RealtimeSessionConfig | Mapping[str, Any] | None = None
    ) -> None:
        """Start a session: connect the transport with the effective config.

        ``config`` (a :class:`RealtimeSessionConfig` or a mapping with the same keys)
        is merged into the base config, which persists across sessions; ``None``
        fields never clear anything (D13).  Returns once the transport is connected
        and ``realtime:session:start`` was emitted.

        Raises :class:`CharivoStateError` outside ``async with`` or while a session
        is starting, active or stopping (D14), and if a stop wins over the start
        (D3); :class:`CharivoTransportError` / :class:`CharivoTimeoutError` when
        ``connect`` fails or exceeds ``transport_timeout``.
        """
        self._require_entered()
        override = structure_config(config)
        ticket = _Ticket()
        self._core.start(override, ticket)
        self._drain()
        await ticket.wait()

    async def update_session(
        self, config: RealtimeSessionConfig | Mapping[str, Any] | None = None
    ) -> None:
        """Merge ``config`` into the base config and patch a live session in place.

        At most one patch is in flight; calls made meanwhile coalesce into one
        follow-up patch with the latest config.  Returns when a patch carrying this
        config (or a newer one) has settled and raises that patch's error if it
        failed (the session stays active with its previous config).  While no
        session exists, or while stopping, the config is only stored for the next
        start and the call returns at once; while starting, one patch with the
        latest config follows the start if it committed an older one (D3); while
        reconnecting, the reconnect carries it and the call returns when that
        succeeds (D5, D17.4, D17.5).
        """
        self._require_entered()
        override = structure_config(config)
        core = self._core
        batch = core.waiter_batch
        ticket = self._update_ticket
        if ticket is None or ticket.batch != batch or ticket.done:
            # Requests of one batch are settled together, so they share one ticket.
            ticket = self._update_ticket = _Ticket(batch)
        core.update(override, ticket)
        self._drain()
        await ticket.wait()

    async def stop_session(self) -> None:
        """Stop the session: disconnect the transport and emit ``realtime:session:end``.

        A stop wins over a start, a patch or a reconnect in flight; concurrent calls
        join one stop.  Returns at once when no session is active.  If
        ``disconnect`` fails or exceeds ``transport_timeout`` the session still ends
        (reason ``error``) and that error is raised (D4).
        """
        self._require_entered()
        ticket = _Ticket()
        self._core.stop(ticket)
        self._drain()
        await ticket.wait()

    async def send_message(self, text: str) -> None:
        """Send a user text message to the model (it answers with a response).

        Raises :class:`CharivoStateError` unless the session is active and connected
        (distinct messages for not active, reconnecting and stopping, D14), and the
        transport's error if the send fails.
        """
        if not isinstance(text, str):
            raise CharivoValidationError("send_message expects a str")
        await self._send("send_text", self._transport.send_text, text)

    async def send_audio_chunk(self, audio: bytes) -> None:
        """Send microphone audio in the session's input format (PCM16 mono 24 kHz
        little-endian unless ``input_audio_format`` says otherwise).  Audio that
        cannot be in that format (an odd byte count for PCM16) raises
        :class:`CharivoValidationError` before anything is sent."""
        if not isinstance(audio, (bytes, bytearray, memoryview)):
            raise CharivoValidationError("send_audio_chunk expects bytes")
        data = bytes(audio)
        self._require_entered()
        self._core.check_send()  # state errors first (D14), then the format
        check_input_audio(data, self._core.input_audio_format())
        await self._send("send_audio", self._transport.send_audio, data)

    async def interrupt(self) -> None:
        """Interrupt the assistant: the transport cancels the response in flight;
        the turn becomes ``interrupted``, audio ends, and an assistant audio item
        still playing is truncated at its played position (voice transports)."""
        await self._send("interrupt", self._transport.interrupt)
        self._core.interrupted()
        self._drain()

    async def commit_audio(self) -> None:
        """Push to talk: commit the input audio sent so far as the user's turn and
        ask for a response.  Needs a :class:`~charivo_fsm.VoiceTransport`
        (:class:`CharivoStateError` otherwise) and a live session (D14)."""
        transport = self._voice_transport("commit_audio")
        await self._send("commit_audio", transport.commit_audio)

    async def clear_audio(self) -> None:
        """Drop the input audio sent since the last commit (voice transports)."""
        transport = self._voice_transport("clear_audio")
        await self._send("clear_audio", transport.clear_audio)

    def mark_played(self, item_id: str, played_ms: int) -> None:
        """Report that the app has played the assistant audio item ``item_id`` up to
        ``played_ms`` milliseconds.  A truncation (``interrupt()``, barge-in) then
        cuts the item there, never past the audio received.  Without reports the
        engine assumes real-time playback from the item's first chunk.

        Raises :class:`CharivoValidationError` for an empty or unknown item id, or
        a ``played_ms`` that is not a non-negative integer.
        """
        check_played_ms(item_id, played_ms)
        self._core.mark_played(item_id, played_ms)

    def _voice_transport(self, what: str) -> VoiceTransport:
        transport = self._transport
        if not isinstance(transport, VoiceTransport):
            raise CharivoStateError(
                f"{what} needs a voice transport (VoiceTransport); "
                f"{type(transport).__name__} has no {what}()"
            )
        return transport

    async def _send(self, what: str, call: Callable[..., Awaitable[None]], *args: Any) -> None:
        self._require_entered()
        self._core.check_send()
        try:
            # anyio.fail_after without its generator-based context manager (every
            # microphone chunk comes through here)
            with anyio.CancelScope(
                deadline=anyio.current_time() + self._transport_timeout
            ) as bound:
                await call(*args)
            if bound.cancelled_caught:
                raise TimeoutError
        except TimeoutError as error:
            raise to_charivo_error(
                "timeout", error, f"Realtime transport {what} timed out"
            ) from error
        except Exception as error:
            raise to_charivo_error("transport", error) from error
        except BaseException as error:
            if not _handled_as_error(error):
                raise  # the caller's own cancellation, or the process exiting
            failure = _as_error(error, f"transport {what}")
            raise CharivoTransportError(str(failure), cause=error) from error

    # -------------------------------------------------------------- transport

    def _on_transport_event(self, event: Any) -> None:
        if threading.get_ident() != self._loop_thread:
            self._from_other_thread(event)
            return
        try:
            core = self._core
            handler = _EVENT_HANDLERS.get(type(event))  # what Core.on_event does
            if handler is not None:
                handler(core, event)
            else:
                core.on_event(event)  # logs the non-event
        except Exception as error:  # a bug in the engine must not reach the transport
            self._module_log(
                logging.ERROR,
                "transport.error",
                "Realtime transport event could not be handled",
                error=repr(error),
            )
        emits = core.emits
        if not emits or self._draining or core.out:
            self._drain()
            return
        # Only pairs to emit and no drain under way: emitted here, as the drain would
        # (a listener's call meanwhile queues its effects behind them).
        self._draining = True
        pairs = iter(emits)
        try:
            for name, payload in pairs:
                emitter = self._emitter
                if emitter is not None:
                    emitter.emit(name, payload)
                if self._streams is not None:
                    for stream in tuple(self._streams):
                        stream.put(name, payload)
        except _FATAL:  # the rest waits in ``out``, in order
            core.out[0:0] = [_tuple_new(Emit, pair) for pair in pairs]
            raise
        except BaseException as error:  # D1: the drain reports it and goes on, in order
            out: list[Any] = core.out
            out[0:0] = [
                _ListenerFailed(name, payload, error),
                *[_tuple_new(Emit, pair) for pair in pairs],
            ]
        finally:
            emits.clear()
            self._draining = False
        if core.out:
            self._drain()

    def _do_listener_failed(self, effect: _ListenerFailed) -> None:
        self._listener_failed(effect.name, effect.error)
        streams = self._streams
        if streams is not None:
            for stream in tuple(streams):
                stream.put(effect.name, effect.payload)

    def _from_other_thread(self, event: Any) -> None:
        """A transport reported ``event`` from a thread other than the manager's event
        loop (callback-based SDKs do): the event is handed to the loop, and this thread
        waits until the manager has handled it, so events keep their order.  Before the
        manager is entered or after it exited there is no loop to hand it to: the event
        is dropped (``event.dropped``)."""
        token = self._loop_token
        if token is not None and not self._exited:
            try:
                anyio.from_thread.run_sync(self._on_transport_event, event, token=token)
                return
            except RuntimeError:  # the loop has closed meanwhile
                pass
        self._module_log(
            logging.DEBUG,
            "event.dropped",
            "Realtime event from another thread dropped: the manager is not running",
            input=type(event).__name__,
        )

    # ---------------------------------------------------------------- effects

    def _drain(self) -> None:
        if self._draining:
            return  # the outer drain picks up what was appended
        self._draining = True
        core = self._core
        out = core.out
        done = 0
        try:
            emits = core.emits
            if emits:
                # The pairs the core made while ``out`` was empty come first (and those
                # a listener's call adds meanwhile); ``out`` holds what came after.
                pairs = iter(emits)
                try:
                    for name, payload in pairs:
                        emitter = self._emitter
                        if emitter is not None:
                            try:
                                emitter.emit(name, payload)
                            except _FATAL:
                                raise
                            except BaseException as error:  # D1, as below
                                self._listener_failed(name, error)
                        if self._streams is not None:
                            for stream in tuple(self._streams):
                                stream.put(name, payload)
                except BaseException:  # escaped (_FATAL): the rest waits in ``out``, in order
                    out[0:0] = [_tuple_new(Emit, pair) for pair in pairs]
                    raise
                finally:
                    emits.clear()
            if not out:
                return
            execute = _EXECUTE
            for effect in out:  # also visits what executing an effect appends
                done += 1
                if type(effect) is Emit:  # the most frequent effect, executed in line
                    emitter = self._emitter
                    if emitter is not None:
                        try:
                            emitter.emit(effect[0], effect[1])
                        except _FATAL:
                            raise
                        except BaseException as error:  # D1; a sync listener cannot
                            self._listener_failed(effect[0], error)  # get our cancel
                    streams = self._streams
                    if streams is not None:
                        for stream in tuple(streams):
                            stream.put(effect[0], effect[1])
                else:
                    execute[type(effect)](self, effect)
        finally:
            if done:
                del out[:done]
            self._draining = False

    def _do_emit(self, effect: Emit) -> None:
        emitter = self._emitter
        if emitter is None:
            return
        try:
            emitter.emit(effect.name, effect.payload)
        except _FATAL:
            raise
        except BaseException as error:
            self._listener_failed(effect.name, error)

    def _listener_failed(self, name: str, error: BaseException) -> None:
        self._module_log(
            logging.WARNING,
            "listener.failed",
            "Realtime event listener failed",
            name=name,
            error=repr(error),
        )

    def _module_log(self, level: int, event: str, message: str, **context: Any) -> None:
        context["event"] = event
        sid = self._core.session_id
        if sid is not None:
            context["session_id"] = sid
        try:
            _module_logger.log(level, message, extra={"charivo": context})
        except Exception:  # pragma: no cover - the stdlib logger itself failing
            pass

    def _do_log(self, effect: Log) -> None:
        self._log(effect.level, effect.message, effect.context)

    def _log(self, level: int, message: str, context: dict[str, Any]) -> None:
        logger = self._logger
        try:
            if type(logger) is logging.Logger:
                if logger.isEnabledFor(level):  # what Logger.log checks first
                    logger.log(level, message, extra={"charivo": context})
            elif isinstance(logger, logging.LoggerAdapter):
                if not logger.isEnabledFor(level):
                    return
                msg, kwargs = logger.process(message, {"extra": {}})
                extra = dict(kwargs.get("extra") or {})
                extra["charivo"] = context
                kwargs["extra"] = extra
                logger.logger.log(level, msg, **kwargs)
            else:
                logger.log(level, message, extra={"charivo": context})
        except _FATAL:
            raise
        except BaseException as error:
            self._logger_failures += 1
            if self._logger_failures <= 3:
                self._module_log(
                    logging.WARNING,
                    "logger.failed",
                    "Realtime logger failed",
                    error=repr(error),
                    failures=self._logger_failures,
                )

    def _do_settle(self, effect: Settle) -> None:
        effect.ticket.settle(effect.error)

    def _do_cancel(self, effect: Cancel) -> None:
        op = self._ops.pop(effect.token, None)
        if op is not None:
            op.cancelled = True
            if op.scope is not None:
                op.scope.cancel()
            # else: queued or in its first step -- cancelled when it starts/suspends
            return
        scopes = self._scopes
        scope = None if scopes is None else scopes.pop(effect.token, None)
        if scope is not None:
            scope.cancel()

    def _spawn(self, token: int, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        tg = self._tg
        if tg is None:
            # Not running (after exit): nothing can be awaited any more.
            self._core.op_done(token, CharivoStateError("RealtimeManager is not running"))
            return
        scope = anyio.CancelScope()
        scopes = self._scopes
        if scopes is None:
            scopes = self._scopes = {}
        scopes[token] = scope
        tg.start_soon(self._run_op, token, scope, fn, *args)

    async def _run_op(
        self,
        token: int,
        scope: anyio.CancelScope,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
    ) -> None:
        error: BaseException | None = None
        value: Any = None
        with scope:
            try:
                value = await fn(*args)
            except Exception as raised:
                error = raised
            except BaseException as raised:
                if not _handled_as_error(raised):
                    raise
                call = args[1] if fn == self._lifecycle else fn
                error = _as_error(raised, _op_name(call))
        scopes = self._scopes
        if scopes is not None:
            scopes.pop(token, None)
            if not scopes:  # a dict emptied keeps its table: most of the time none is needed
                self._scopes = None
        if not scope.cancel_called:  # else cancelled by the core: it forgot the token
            self._core.op_done(token, error, value)
            self._drain()
        quiet = self._quiet
        if quiet is not None and not self._core.cleanup_pending:
            self._quiet = None
            quiet.set()

    # (in charivo_fsm/lifecycle.py)
    _queue_lifecycle = _lifecycle_calls._queue_lifecycle
    _release_lifecycle = _lifecycle_calls._release_lifecycle
    _lifecycle = _lifecycle_calls._lifecycle
    _do_connect = _lifecycle_calls._do_connect
    _do_patch = _lifecycle_calls._do_patch
    _do_recover = _lifecycle_calls._do_recover
    _do_disconnect = _lifecycle_calls._do_disconnect
    _spawn_lifecycle = _lifecycle_calls._spawn_lifecycle

    def _do_sleep(self, effect: Sleep) -> None:
        self._spawn(effect.token, anyio.sleep, effect.delay)

    def _do_run_tool(self, effect: RunTool) -> None:
        self._enqueue(effect.token, effect.handler, (effect.args, effect.context), effect.timeout)

    def _do_truncate(self, effect: Truncate) -> None:
        transport = self._transport
        if not isinstance(transport, VoiceTransport):
            self._core.op_done(effect.token)  # nothing to truncate with
            return
        self._enqueue(
            effect.token,
            transport.truncate_audio,
            (effect.item_id, effect.audio_end_ms),
            self._transport_timeout,
        )

    def _do_send_tool_result(self, effect: SendToolResult) -> None:
        self._enqueue(
            effect.token,
            self._transport.send_tool_result,
            (effect.call_id, effect.output),
            self._transport_timeout,
        )

    # ------------------------------------------------------------- operations
    # (in charivo_fsm/operations.py)
    _enqueue = _operations._enqueue
    _worker = _operations._worker
    _handoff = _operations._handoff
    _first_step = _operations._first_step
    _run_rest = _operations._run_rest
    _run_guarded = _operations._run_guarded
    _resume = _operations._resume
    _finish = _operations._finish
    _complete = _operations._complete

    def _do_project(self, effect: Project) -> None:
        if not self._projectors:
            return
        context = ProjectorContext(
            effect.name, effect.output, effect.call_id, self._emit_from_projector
        )
        for projector in self._projectors:
            try:
                projector(context)
            except _FATAL:
                raise
            except BaseException as error:
                self._log(
                    logging.WARNING,
                    "Realtime result projector failed",
                    self._context(
                        "projector.failed",
                        name=effect.name,
                        call_id=effect.call_id,
                        error=str(error) or repr(error),
                    ),
                )

    def _emit_from_projector(self, name: str, payload: Any) -> None:
        self._do_emit(Emit(name, payload))

    def _context(self, event: str, **context: Any) -> dict[str, Any]:
        context["event"] = event
        sid = self._core.session_id
        if sid is not None:
            context["session_id"] = sid
        return context


_EXECUTE: dict[type, Callable[[RealtimeManager, Any], None]] = {
    Emit: RealtimeManager._do_emit,
    Log: RealtimeManager._do_log,
    Settle: RealtimeManager._do_settle,
    Cancel: RealtimeManager._do_cancel,
    Connect: RealtimeManager._do_connect,
    Patch: RealtimeManager._do_patch,
    Recover: RealtimeManager._do_recover,
    Disconnect: RealtimeManager._do_disconnect,
    Sleep: RealtimeManager._do_sleep,
    RunTool: RealtimeManager._do_run_tool,
    SendToolResult: RealtimeManager._do_send_tool_result,
    Project: RealtimeManager._do_project,
    Truncate: RealtimeManager._do_truncate,
    _ListenerFailed: RealtimeManager._do_listener_failed,
}
"""How each effect is executed (the emit is also executed in line by ``_drain``)."""


def create_realtime_manager(
    transport: RealtimeTransport,
    *,
    default_session_config: RealtimeSessionConfig | Mapping[str, Any] | None = None,
    tools: Iterable[RealtimeToolRegistration] = (),
    default_tool_timeout: float = 10.0,
    result_projectors: Iterable[ResultProjector] = (),
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    reconnect_delays: Sequence[float] = _DEFAULT_DELAYS,
    transport_timeout: float = 30.0,
    auto_refresh_tools: bool = False,
    tool_error_detail: bool = False,
    reconnect_jitter: float = 0.1,
) -> RealtimeManager:
    """Build a :class:`RealtimeManager` (same arguments)."""
    return RealtimeManager(
        transport,
        default_session_config=default_session_config,
        tools=tools,
        default_tool_timeout=default_tool_timeout,
        result_projectors=result_projectors,
        logger=logger,
        reconnect_delays=reconnect_delays,
        transport_timeout=transport_timeout,
        auto_refresh_tools=auto_refresh_tools,
        tool_error_detail=tool_error_detail,
        reconnect_jitter=reconnect_jitter,
    )
