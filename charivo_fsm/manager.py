"""The anyio driver: :class:`RealtimeManager`.

The manager owns a task group (``async with manager:``), feeds user commands
and transport events to the pure :class:`~charivo_fsm.core.Core` and executes
the effects it returns: emits and log records synchronously, transport calls,
sleeps and tool handlers in tasks of its own, each in a cancel scope the core
can cancel.  Every wait goes through anyio, so the manager runs on asyncio and
trio and under a virtual clock.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.abc

from .core import (
    Cancel,
    Connect,
    Core,
    Disconnect,
    Emit,
    Log,
    OpTimeout,
    Patch,
    Project,
    Recover,
    RunTool,
    SendToolResult,
    Settle,
    Sleep,
)
from .errors import CharivoError, CharivoStateError, CharivoValidationError, to_charivo_error
from .model import (
    Character,
    RealtimeSessionConfig,
    RealtimeState,
    RealtimeTool,
    RealtimeToolRegistration,
)
from .tools import ProjectorContext, ResultProjector, ToolRegistry
from .transport import RealtimeTransport
from .wire import structure_character, structure_config

__all__ = ["EventEmitter", "RealtimeManager", "create_realtime_manager"]

_module_logger = logging.getLogger("charivo_fsm")


class EventEmitter(Protocol):
    """Anything with ``emit(name, payload)``."""

    def emit(self, name: str, payload: Any, /) -> None: ...


class _Ticket:
    """A caller waiting for the core to settle its request."""

    __slots__ = ("done", "error", "event")

    def __init__(self) -> None:
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
            self.event = anyio.Event()
            await self.event.wait()
        if self.error is not None:
            raise self.error


class _Turn:
    """A lifecycle call's place in line (see ``RealtimeManager._queue_lifecycle``)."""

    __slots__ = ("event", "ready")

    def __init__(self, *, ready: bool) -> None:
        self.ready = ready
        self.event: anyio.Event | None = None


def _check_seconds(name: str, value: Any, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CharivoValidationError(f"{name} must be a number of seconds (got {value!r})")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise CharivoValidationError(f"{name} must be a finite positive number (got {value!r})")
    return float(value)


class RealtimeManager:
    """A realtime session manager: see CONTRACT §4 and the README."""

    def __init__(
        self,
        transport: RealtimeTransport,
        *,
        default_session_config: RealtimeSessionConfig | Mapping[str, Any] | None = None,
        tools: Iterable[RealtimeToolRegistration] = (),
        default_tool_timeout: float = 10.0,
        result_projectors: Iterable[ResultProjector] = (),
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        reconnect_delays: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 5.0),
        transport_timeout: float = 30.0,
        auto_refresh_tools: bool = False,
    ) -> None:
        for method in ("connect", "update_session", "recover", "disconnect", "on_event"):
            if not callable(getattr(transport, method, None)):
                raise CharivoValidationError(f"transport lacks the method {method!r}")
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
            clock=self._now,
            new_session_id=lambda: str(uuid.uuid4()),
        )
        for registration in tools:
            self._core.registry.register(registration)
        self._tg: anyio.abc.TaskGroup | None = None
        self._entered = False
        self._exited = False
        self._lifecycle_queue: list[_Turn] = []
        self._scopes: dict[int, anyio.CancelScope] = {}
        self._draining = False
        self._execute: dict[type, Callable[[Any], None]] = {
            Emit: self._do_emit,
            Log: self._do_log,
            Settle: self._do_settle,
            Cancel: self._do_cancel,
            Connect: self._do_connect,
            Patch: self._do_patch,
            Recover: self._do_recover,
            Disconnect: self._do_disconnect,
            Sleep: self._do_sleep,
            RunTool: self._do_run_tool,
            SendToolResult: self._do_send_tool_result,
            Project: self._do_project,
        }
        transport.on_event(self._on_transport_event)

    # ---------------------------------------------------------------- lifetime

    async def __aenter__(self) -> RealtimeManager:
        if self._entered:
            raise CharivoStateError("A RealtimeManager can be entered only once")
        self._entered = True
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
        finally:
            self._exited = True
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            self._tg = None
        return False

    def _now(self) -> float:
        try:
            return anyio.current_time()
        except Exception:  # outside an event loop (never while a session runs)
            return 0.0

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
        return self._core.session_id

    def set_event_emitter(self, emitter: EventEmitter | None) -> None:
        if emitter is not None and not callable(getattr(emitter, "emit", None)):
            raise CharivoValidationError(
                "the event emitter must have an emit(name, payload) method"
            )
        self._emitter = emitter

    def set_character(self, character: Character | Mapping[str, Any] | None) -> None:
        value = None if character is None else structure_character(character)
        self._core.set_character(value)
        self._drain()

    def register_tool(self, registration: RealtimeToolRegistration) -> None:
        self._core.registry.register(registration)
        self._core.tools_changed()
        self._drain()

    def unregister_tool(self, name: str) -> None:
        if self._core.registry.unregister(name):
            self._core.tools_changed()
            self._drain()

    def registered_tools(self) -> list[RealtimeTool]:
        return list(self._core.registry.definitions())

    async def start_session(
        self, config: RealtimeSessionConfig | Mapping[str, Any] | None = None
    ) -> None:
        self._require_entered()
        override = structure_config(config)
        ticket = _Ticket()
        self._core.start(override, ticket)
        self._drain()
        await ticket.wait()

    async def update_session(
        self, config: RealtimeSessionConfig | Mapping[str, Any] | None = None
    ) -> None:
        self._require_entered()
        override = structure_config(config)
        ticket = _Ticket()
        self._core.update(override, ticket)
        self._drain()
        await ticket.wait()

    async def stop_session(self) -> None:
        self._require_entered()
        ticket = _Ticket()
        self._core.stop(ticket)
        self._drain()
        await ticket.wait()

    async def send_message(self, text: str) -> None:
        if not isinstance(text, str):
            raise CharivoValidationError("send_message expects a str")
        await self._send("send_text", self._transport.send_text, text)

    async def send_audio_chunk(self, audio: bytes) -> None:
        if not isinstance(audio, (bytes, bytearray, memoryview)):
            raise CharivoValidationError("send_audio_chunk expects bytes")
        await self._send("send_audio", self._transport.send_audio, bytes(audio))

    async def interrupt(self) -> None:
        await self._send("interrupt", self._transport.interrupt)
        self._core.interrupted()
        self._drain()

    async def _send(self, what: str, call: Callable[..., Awaitable[None]], *args: Any) -> None:
        self._require_entered()
        self._core.check_send()
        try:
            with anyio.fail_after(self._transport_timeout):
                await call(*args)
        except TimeoutError as error:
            raise to_charivo_error(
                "timeout", error, f"Realtime transport {what} timed out"
            ) from error
        except Exception as error:
            raise to_charivo_error("transport", error) from error

    # -------------------------------------------------------------- transport

    def _on_transport_event(self, event: Any) -> None:
        try:
            self._core.on_event(event)
        except Exception as error:  # a bug in the engine must not reach the transport
            self._module_log(
                logging.ERROR,
                "transport.error",
                "Realtime transport event could not be handled",
                error=repr(error),
            )
        self._drain()

    # ---------------------------------------------------------------- effects

    def _drain(self) -> None:
        if self._draining:
            return  # the outer drain picks up what was appended
        self._draining = True
        out = self._core.out
        execute = self._execute
        index = 0
        try:
            while index < len(out):
                effect = out[index]
                index += 1
                execute[type(effect)](effect)
        finally:
            del out[:index]
            self._draining = False

    def _do_emit(self, effect: Emit) -> None:
        emitter = self._emitter
        if emitter is None:
            return
        try:
            emitter.emit(effect.name, effect.payload)
        except Exception as error:
            self._module_log(
                logging.WARNING,
                "listener.failed",
                "Realtime event listener failed",
                name=effect.name,
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
            if isinstance(logger, logging.LoggerAdapter):
                if not logger.isEnabledFor(level):
                    return
                msg, kwargs = logger.process(message, {"extra": {}})
                extra = dict(kwargs.get("extra") or {})
                extra["charivo"] = context
                kwargs["extra"] = extra
                logger.logger.log(level, msg, **kwargs)
            else:
                logger.log(level, message, extra={"charivo": context})
        except Exception as error:
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
        scope = self._scopes.pop(effect.token, None)
        if scope is not None:
            scope.cancel()

    def _spawn(self, token: int, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        tg = self._tg
        if tg is None:
            # Not running (after exit): nothing can be awaited any more.
            self._core.op_done(token, CharivoStateError("RealtimeManager is not running"))
            return
        scope = anyio.CancelScope()
        self._scopes[token] = scope
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
        self._scopes.pop(token, None)
        if scope.cancel_called:
            return  # cancelled by the core: it has already forgotten the token
        self._core.op_done(token, error, value)
        self._drain()

    def _queue_lifecycle(self) -> _Turn:
        """Take a turn for a lifecycle call, in the order the core asked for them.

        Transport lifecycle calls never overlap (D18.6) and run in effect order,
        whatever order the event loop starts their tasks in.
        """
        turn = _Turn(ready=not self._lifecycle_queue)
        self._lifecycle_queue.append(turn)
        return turn

    def _release_lifecycle(self, turn: _Turn) -> None:
        queue = self._lifecycle_queue
        if turn not in queue:
            return
        was_head = queue[0] is turn
        queue.remove(turn)
        if was_head and queue:
            head = queue[0]
            head.ready = True
            if head.event is not None:
                head.event.set()

    async def _lifecycle(
        self, turn: _Turn, call: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        try:
            if not turn.ready:
                turn.event = anyio.Event()
                await turn.event.wait()
            with anyio.move_on_after(self._transport_timeout) as bound:
                await call(*args)
            if bound.cancelled_caught:
                raise OpTimeout(self._transport_timeout)
        finally:
            self._release_lifecycle(turn)

    def _do_connect(self, effect: Connect) -> None:
        self._spawn_lifecycle(effect.token, self._transport.connect, effect.config)

    def _do_patch(self, effect: Patch) -> None:
        self._spawn_lifecycle(effect.token, self._transport.update_session, effect.config)

    def _do_recover(self, effect: Recover) -> None:
        self._spawn_lifecycle(effect.token, self._transport.recover, effect.config)

    def _do_disconnect(self, effect: Disconnect) -> None:
        self._spawn_lifecycle(effect.token, self._transport.disconnect)

    def _spawn_lifecycle(
        self, token: int, call: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        turn = self._queue_lifecycle() if self._tg is not None else _Turn(ready=True)
        self._spawn(token, self._lifecycle, turn, call, *args)

    def _do_sleep(self, effect: Sleep) -> None:
        self._spawn(effect.token, anyio.sleep, effect.delay)

    def _do_run_tool(self, effect: RunTool) -> None:
        self._spawn(effect.token, self._run_handler, effect)

    async def _run_handler(self, effect: RunTool) -> Any:
        with anyio.move_on_after(effect.timeout) as bound:
            return await effect.handler(effect.args, effect.context)
        if bound.cancelled_caught:
            raise OpTimeout(effect.timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    def _do_send_tool_result(self, effect: SendToolResult) -> None:
        self._spawn(effect.token, self._send_tool_result, effect.call_id, effect.output)

    async def _send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        with anyio.move_on_after(self._transport_timeout) as bound:
            await self._transport.send_tool_result(call_id, output)
        if bound.cancelled_caught:
            raise OpTimeout(self._transport_timeout)

    def _do_project(self, effect: Project) -> None:
        if not self._projectors:
            return
        context = ProjectorContext(
            effect.name, effect.output, effect.call_id, self._emit_from_projector
        )
        for projector in self._projectors:
            try:
                projector(context)
            except Exception as error:
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


def create_realtime_manager(
    transport: RealtimeTransport,
    *,
    default_session_config: RealtimeSessionConfig | Mapping[str, Any] | None = None,
    tools: Iterable[RealtimeToolRegistration] = (),
    default_tool_timeout: float = 10.0,
    result_projectors: Iterable[ResultProjector] = (),
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    reconnect_delays: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 5.0),
    transport_timeout: float = 30.0,
    auto_refresh_tools: bool = False,
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
    )
