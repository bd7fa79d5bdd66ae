"""The driver of the semantic suite: instruments, steps, and one program run.

* the instruments observe the manager from the outside: a recording proxy
  around the transport, an emitter and a logger (plus a tap on the module
  logger ``charivo_fsm``);
* the steps are what a program does (user commands, transport events and
  faults, time);
* :class:`Driver` runs one program against one manager in one ``anyio.run`` on
  a virtual clock, feeding every observation to a
  :class:`~charivo_fsm.testing.suite_base.Context`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ..errors import CharivoError
from ..events import AudioOutputDelta, ConnectionLost, ErrorEvent, TransportEvent
from ..manager import create_realtime_manager
from ..model import RealtimeTool, RealtimeToolContext, RealtimeToolRegistration
from ..transport import EventCallback, RealtimeTransport, VoiceTransport
from .fake import MethodName, settle
from .suite_base import (
    _OVER,
    VOICES,
    Backend,
    CallEntered,
    CallExited,
    Checkpoint,
    Command,
    CommandIssued,
    CommandReturned,
    Context,
    Crashed,
    Delivered,
    Delivering,
    Emitted,
    Exited,
    Invariant,
    InvariantViolation,
    Leaving,
    Logged,
    SuiteConfig,
    ToolRan,
    ToolStopped,
    TransportCall,
)
from .suite_faults import TransportFactory, TransportFaults

# ===========================================================================
# Instruments: the transport proxy, the emitter and the logger
# ===========================================================================


class ListenerFailure(RuntimeError):
    """Raised by the suite's listeners while the program makes them fail (D1)."""


class _Emitter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.failing = False

    def emit(self, name: str, payload: Any) -> None:
        self.ctx.observe(Emitted(name, payload, anyio.current_time()))
        if self.failing:
            raise ListenerFailure(f"listener failed on {name}")


class _Logger(logging.Logger):
    def __init__(self, ctx: Context) -> None:
        super().__init__("charivo_fsm.suite", logging.DEBUG)
        self.ctx = ctx
        self.failing = False

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        extra = kwargs.get("extra") or {}
        context = extra.get("charivo")
        if isinstance(context, Mapping):
            self.ctx.observe(Logged(context))
        if self.failing:
            raise ListenerFailure("logger failed")


class _ModuleTap(logging.Handler):
    """Observes the module logger ``charivo_fsm`` (D1 reports go there)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(logging.DEBUG)
        self.ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        context = getattr(record, "charivo", None)
        if isinstance(context, Mapping):
            self.ctx.observe(Logged(context))


@contextlib.contextmanager
def _tapped_module_logger(ctx: Context) -> Iterator[None]:
    """Route the module logger to the program (not to the application's handlers)."""
    logger = logging.getLogger("charivo_fsm")
    tap = _ModuleTap(ctx)
    propagate = logger.propagate
    logger.addHandler(tap)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(tap)
        logger.propagate = propagate


class RecordingTransport:
    """Wraps a transport: reports every call and every delivered event.

    ``on_enter(method)``, when set, runs right after a call was entered and
    before the transport is called (the driver delivers the events a program
    scheduled "while the next <method> is in flight" there).
    """

    def __init__(self, inner: RealtimeTransport, ctx: Context) -> None:
        self.inner = inner
        self.ctx = ctx
        self.on_enter: Callable[[str], None] | None = None

    def on_event(self, callback: EventCallback) -> None:
        ctx = self.ctx

        def deliver(event: TransportEvent) -> None:
            before = ctx.manager.state
            previous, ctx.delivery_state = ctx.delivery_state, before
            ctx.observe(Delivering(event, before, anyio.current_time()))
            try:
                callback(event)
            except Exception as error:
                ctx.observe(
                    Crashed(f"the manager's event callback ({type(event).__name__})", error)
                )
                raise
            finally:
                ctx.delivery_state = before
                ctx.observe(Delivered(event, ctx.manager.state))
                ctx.delivery_state = previous

        self.inner.on_event(deliver)

    async def _call(self, method: str, call: Callable[[], Awaitable[None]], *args: Any) -> None:
        # A call whose task was cancelled before it began never reaches the transport.
        await anyio.lowlevel.checkpoint_if_cancelled()
        ctx = self.ctx
        record = TransportCall(
            ctx.next_seq(), method, args, anyio.current_time(), ctx.manager.state
        )
        ctx.in_flight.append(record)
        ctx.observe(CallEntered(record))
        if self.on_enter is not None:
            self.on_enter(method)
        try:
            await call()
        except anyio.get_cancelled_exc_class():
            record.outcome = "cancelled"
            raise
        except BaseException as error:
            record.outcome, record.error = "error", error
            raise
        else:
            record.outcome = "ok"
        finally:
            record.exited_at = anyio.current_time()
            ctx.in_flight.remove(record)
            ctx.observe(CallExited(record))

    async def connect(self, config: Any) -> None:
        await self._call("connect", lambda: self.inner.connect(config), config)

    async def update_session(self, config: Any) -> None:
        await self._call("update_session", lambda: self.inner.update_session(config), config)

    async def recover(self, config: Any) -> None:
        await self._call("recover", lambda: self.inner.recover(config), config)

    async def disconnect(self) -> None:
        await self._call("disconnect", self.inner.disconnect)

    async def send_text(self, text: str) -> None:
        await self._call("send_text", lambda: self.inner.send_text(text), text)

    async def send_audio(self, audio: bytes) -> None:
        await self._call("send_audio", lambda: self.inner.send_audio(audio), audio)

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        await self._call(
            "send_tool_result",
            lambda: self.inner.send_tool_result(call_id, output),
            call_id,
            output,
        )

    async def interrupt(self) -> None:
        await self._call("interrupt", self.inner.interrupt)


class RecordingVoiceTransport(RecordingTransport):
    """:class:`RecordingTransport` for a :class:`~charivo_fsm.VoiceTransport`
    (the proxy is a voice transport exactly when the transport is one)."""

    inner: VoiceTransport

    async def commit_audio(self) -> None:
        await self._call("commit_audio", self.inner.commit_audio)

    async def clear_audio(self) -> None:
        await self._call("clear_audio", self.inner.clear_audio)

    async def truncate_audio(self, item_id: str, audio_end_ms: int) -> None:
        await self._call(
            "truncate_audio",
            lambda: self.inner.truncate_audio(item_id, audio_end_ms),
            item_id,
            audio_end_ms,
        )


def recording(inner: RealtimeTransport, ctx: Context) -> RecordingTransport:
    """The recording proxy for ``inner`` (a voice proxy for a voice transport)."""
    if isinstance(inner, VoiceTransport):
        return RecordingVoiceTransport(inner, ctx)
    return RecordingTransport(inner, ctx)


# ===========================================================================
# Steps
# ===========================================================================

_TOOL_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
}
TOOL_NAMES = ("quick", "lagging", "failing", "slow", "overtime", "nonjson")
# The tools registered with a timeout of their own (``SuiteConfig.slow_tool_timeout``);
# the others use the manager's ``default_tool_timeout``.
TIMED_TOOLS = frozenset({"slow", "overtime"})


class Step:
    """One step of a program.  ``repr`` is how the step reads in a counterexample."""

    async def run(self, driver: Driver) -> None:
        raise NotImplementedError

    async def run_inline(self, driver: Driver) -> None:
        """Run the step in the current task (a part of :class:`Together`)."""
        await self.run(driver)


@attrs.frozen(slots=True, repr=False)
class StartSession(Step):
    voice: str

    def __repr__(self) -> str:
        return f"start_session(voice={self.voice!r})"

    async def run(self, driver: Driver) -> None:
        driver.command("start_session", self.voice)

    async def run_inline(self, driver: Driver) -> None:
        await driver.run_command("start_session", self.voice)


@attrs.frozen(slots=True, repr=False)
class UpdateSession(Step):
    voice: str

    def __repr__(self) -> str:
        return f"update_session(voice={self.voice!r})"

    async def run(self, driver: Driver) -> None:
        driver.command("update_session", self.voice)

    async def run_inline(self, driver: Driver) -> None:
        await driver.run_command("update_session", self.voice)


@attrs.frozen(slots=True, repr=False)
class StopSession(Step):
    def __repr__(self) -> str:
        return "stop_session()"

    async def run(self, driver: Driver) -> None:
        driver.command("stop_session")

    async def run_inline(self, driver: Driver) -> None:
        await driver.run_command("stop_session")


SendKind = Literal["send_message", "send_audio_chunk", "interrupt", "commit_audio", "clear_audio"]
_SEND_ARGS = {"send_message": "'hello'", "send_audio_chunk": "b'\\x00\\x01'"}


@attrs.frozen(slots=True, repr=False)
class Send(Step):
    what: SendKind

    def __repr__(self) -> str:
        return f"{self.what}({_SEND_ARGS.get(self.what, '')})"

    async def run(self, driver: Driver) -> None:
        driver.command(self.what)

    async def run_inline(self, driver: Driver) -> None:
        await driver.run_command(self.what)


@attrs.frozen(slots=True, repr=False)
class ChangeTools(Step):
    register: bool
    name: str

    def __repr__(self) -> str:
        verb = "register_tool" if self.register else "unregister_tool"
        return f"{verb}({self.name!r})"

    async def run(self, driver: Driver) -> None:
        try:
            if self.register:
                driver.manager.register_tool(driver.registrations[self.name])
            else:
                driver.manager.unregister_tool(self.name)
        except CharivoError:
            pass
        except Exception as error:
            driver.ctx.observe(Crashed(repr(self), error))


@attrs.frozen(slots=True, repr=False)
class FailingListeners(Step):
    failing: bool

    def __repr__(self) -> str:
        return "listeners and logger start raising" if self.failing else "listeners recover"

    async def run(self, driver: Driver) -> None:
        driver.emitter.failing = self.failing
        driver.logger.failing = self.failing


@attrs.frozen(slots=True, repr=False)
class Deliver(Step):
    event: Any

    def __repr__(self) -> str:
        return f"transport emits {_event_repr(self.event)}"

    async def run(self, driver: Driver) -> None:
        with contextlib.suppress(Exception):  # the proxy reports a crash
            driver.faults.emit(self.event)


@attrs.frozen(slots=True, repr=False)
class Fault(Step):
    method: MethodName
    action: Literal[
        "fail_once", "fail_always", "hang", "delay", "slow", "succeed", "emit_then_raise"
    ]
    seconds: float = 0.0
    event: Any = None

    def __repr__(self) -> str:
        if self.action == "delay":
            return f"fault: next {self.method} takes {self.seconds:g}s"
        if self.action == "slow":
            return f"fault: every {self.method} takes {self.seconds:g}s"
        if self.action == "emit_then_raise":
            return f"fault: next {self.method} emits {_event_repr(self.event)} then fails"
        text = {
            "fail_once": "next {} fails",
            "fail_always": "every {} fails",
            "hang": "next {} hangs",
            "succeed": "{} succeeds again",
        }[self.action]
        return "fault: " + text.format(self.method)

    async def run(self, driver: Driver) -> None:
        faults = driver.faults
        error = RuntimeError(f"injected {self.method} failure")
        try:
            if self.action == "fail_once":
                faults.fail_once(self.method, error)
            elif self.action == "fail_always":
                faults.fail_always(self.method, error)
            elif self.action == "hang":
                faults.hang(self.method)
            elif self.action == "delay":
                faults.delay(self.method, self.seconds)
            elif self.action == "slow":
                faults.delay(self.method, self.seconds, always=True)
            elif self.action == "succeed":
                faults.succeed(self.method)
            else:
                faults.emit_then_raise(self.method, self.event, error)
        except NotImplementedError:
            pass


@attrs.frozen(slots=True, repr=False)
class Latency(Step):
    """How long the transport's lifecycle calls take from now on (0: at once)."""

    seconds: tuple[tuple[MethodName, float], ...]

    def __repr__(self) -> str:
        slow = [f"{method} {delay:g}s" for method, delay in self.seconds if delay]
        return "latency: " + (", ".join(slow) if slow else "none")

    async def run(self, driver: Driver) -> None:
        for method, delay in self.seconds:
            if delay:
                with contextlib.suppress(NotImplementedError):
                    driver.faults.delay(method, delay, always=True)


@attrs.frozen(slots=True, repr=False)
class Together(Step):
    """Several steps issued at once, before any of their follow-up work runs."""

    steps: tuple[Step, ...]

    def __repr__(self) -> str:
        return "together: " + "; ".join(repr(step) for step in self.steps)

    async def run(self, driver: Driver) -> None:
        for step in self.steps:
            driver.spawn(step.run_inline)


@attrs.frozen(slots=True, repr=False)
class Advance(Step):
    seconds: float

    def __repr__(self) -> str:
        return f"advance {self.seconds:g}s"

    async def run(self, driver: Driver) -> None:
        await anyio.sleep(self.seconds)


@attrs.frozen(slots=True, repr=False)
class MarkPlayed(Step):
    """The app reports how far it has played an assistant audio item (voice)."""

    item_id: str
    played_ms: int

    def __repr__(self) -> str:
        return f"mark_played({self.item_id!r}, {self.played_ms})"

    async def run(self, driver: Driver) -> None:
        driver.mark_played(self.item_id, self.played_ms)


@attrs.frozen(slots=True, repr=False)
class DuringNext(Step):
    """Deliver ``event`` while the next call of ``method`` is in flight: right after
    the manager entered it, before the transport answers (a recover in flight when
    ``session.started`` arrives, a loss during a patch, ...)."""

    method: MethodName
    event: Any

    def __repr__(self) -> str:
        return f"transport emits {_event_repr(self.event)} during the next {self.method}"

    async def run(self, driver: Driver) -> None:
        driver.armed.setdefault(self.method, []).append(self.event)


@attrs.frozen(slots=True, repr=False)
class Chain(Step):
    """A short story told as one step: each part runs and the manager settles."""

    steps: tuple[Step, ...]

    def __repr__(self) -> str:
        return " -> ".join(repr(step) for step in self.steps)

    async def run(self, driver: Driver) -> None:
        for step in self.steps:
            await step.run(driver)
            await driver._settle()


def _event_repr(event: Any) -> str:
    if isinstance(event, ErrorEvent):
        return f"ErrorEvent({type(event.error).__name__}({str(event.error)!r}))"
    if isinstance(event, ConnectionLost) and event.error is not None:
        return f"ConnectionLost(cause={event.cause!r}, error={type(event.error).__name__})"
    if isinstance(event, AudioOutputDelta):
        return f"AudioOutputDelta({len(event.audio)} bytes, item_id={event.item_id!r})"
    return repr(event)


# ===========================================================================
# The driver: one program, one anyio.run
# ===========================================================================


@attrs.define(slots=True)
class ProgramResult:
    steps: list[str]
    violation: InvariantViolation | None
    examples: int = 1


class Driver:
    """Runs one program against one manager and feeds the observations to a Context."""

    def __init__(
        self,
        draw: Callable[[int], Step | None],
        factory: TransportFactory,
        config: SuiteConfig,
        invariants: Sequence[Invariant],
        jitter: Sequence[float] = (0.5,),
    ) -> None:
        self.draw = draw
        self.config = config
        self.ctx = Context(config, invariants)
        transport, faults = factory()
        if not isinstance(faults, TransportFaults):
            raise TypeError(
                f"the transport factory returned {type(faults).__name__} as faults, which "
                "does not implement charivo_fsm.testing.TransportFaults"
            )
        self.transport = transport
        self.faults = faults
        self.emitter = _Emitter(self.ctx)
        self.logger = _Logger(self.ctx)
        self.steps: list[str] = []
        self.step_no = 0
        self.registrations = self._tools()
        self.jitter = tuple(jitter)
        proxy = recording(transport, self.ctx)
        proxy.on_enter = self._entered
        # Events to deliver while the next call of a method is in flight (DuringNext).
        self.armed: dict[str, list[Any]] = {}
        self.manager = create_realtime_manager(
            proxy,
            default_session_config={"provider": "suite", "voice": VOICES[0]},
            tools=[self.registrations[name] for name in TOOL_NAMES],
            default_tool_timeout=config.default_tool_timeout,
            logger=self.logger,
            reconnect_delays=config.reconnect_delays,
            transport_timeout=config.transport_timeout,
            auto_refresh_tools=True,
            reconnect_jitter=config.reconnect_jitter,
        )
        # Programs must replay exactly (Hypothesis shrinks and re-runs them), so the
        # jitter's random values are the program's own: drawn with it, used in turn.
        _use_random_source(self.manager, _cycle(jitter))
        self.manager.set_event_emitter(self.emitter)
        self.ctx.manager = self.manager
        self.ctx.faults = faults
        self.ctx.voice = isinstance(proxy, RecordingVoiceTransport)
        self._callers: anyio.abc.TaskGroup | None = None
        self._caller_tasks: set[int] = set()

    # ------------------------------------------------------------------ tools

    def _tools(self) -> dict[str, RealtimeToolRegistration]:
        ctx, config = self.ctx, self.config

        async def quick(args: dict[str, Any]) -> Any:
            return {"success": True, "n": args["n"]}

        async def lagging(args: dict[str, Any]) -> Any:
            await anyio.sleep(config.lagging_tool_seconds)  # within its timeout
            return {"success": True, "n": args["n"]}

        async def failing(args: dict[str, Any]) -> Any:
            raise RuntimeError("the tool failed")

        async def slow(args: dict[str, Any]) -> Any:
            await anyio.sleep_forever()  # past its timeout, whatever it is

        async def overtime(args: dict[str, Any]) -> Any:
            # Would return half its timeout too late: the result must not count (D8).
            await anyio.sleep(config.slow_tool_timeout * 1.5)
            return {"success": True, "n": args["n"]}

        async def nonjson(args: dict[str, Any]) -> Any:
            return {"success": True, "value": {1, 2}}

        handlers = {
            "quick": quick,
            "lagging": lagging,
            "failing": failing,
            "slow": slow,
            "overtime": overtime,
            "nonjson": nonjson,
        }

        def observed(name: str, body: Callable[[dict[str, Any]], Awaitable[Any]]) -> Any:
            async def handler(args: dict[str, Any], context: RealtimeToolContext) -> Any:
                call_id = context.call_id
                ctx.observe(ToolRan(call_id, ctx.manager.state, name, anyio.current_time()))
                how: Literal["returned", "raised", "cancelled"] = "raised"
                try:
                    result = await body(args)
                    how = "returned"
                    return result
                except anyio.get_cancelled_exc_class():
                    how = "cancelled"
                    raise
                finally:
                    ctx.observe(ToolStopped(call_id, name, how, anyio.current_time()))

            return handler

        return {
            name: RealtimeToolRegistration(
                definition=RealtimeTool(name=name, description=name, parameters=_TOOL_SCHEMA),
                handler=observed(name, body),
                timeout=config.slow_tool_timeout if name in TIMED_TOOLS else None,
            )
            for name, body in handlers.items()
        }

    # --------------------------------------------------------------- commands

    def _entered(self, method: str) -> None:
        events = self.armed.pop(method, None)
        for event in events or ():
            with contextlib.suppress(Exception):  # the proxy reports a crash
                self.faults.emit(event)

    def mark_played(self, item_id: str, played_ms: int) -> None:
        """``manager.mark_played``, observed as a command (it returns at once)."""
        ctx = self.ctx
        now = anyio.current_time()
        command = Command(
            ctx.next_seq(),
            "mark_played",
            self.step_no,
            now,
            self.manager.state,
            args=(item_id, played_ms),
        )
        ctx.commands.append(command)
        ctx.observe(CommandIssued(command))
        try:
            self.manager.mark_played(item_id, played_ms)
        except Exception as error:
            command.error = error
        command.done, command.returned_at = True, now
        ctx.observe(CommandReturned(command))

    def spawn(self, fn: Callable[[Driver], Awaitable[None]]) -> None:
        """Run ``fn(driver)`` in a task of the program (its callers' task group)."""
        assert self._callers is not None
        self._callers.start_soon(self._caller, fn)

    async def _caller(self, fn: Callable[[Driver], Awaitable[None]]) -> None:
        self._caller_tasks.add(anyio.get_current_task().id)
        await fn(self)

    def command(self, kind: str, voice: str | None = None) -> None:
        """Call a manager method in a task of its own (the program goes on)."""
        assert self._callers is not None
        self._callers.start_soon(self.run_command, kind, voice, name=kind)

    async def run_command(self, kind: str, voice: str | None = None) -> None:
        """Call a manager method in the current task and observe its outcome."""
        ctx, manager = self.ctx, self.manager
        before = manager.state
        command = Command(
            ctx.next_seq(), kind, self.step_no, anyio.current_time(), before, voice=voice
        )
        command.task_id = anyio.get_current_task().id
        self._caller_tasks.add(command.task_id)
        ctx.commands.append(command)
        call: Callable[[], Awaitable[None]]
        if kind == "start_session":
            if before.session.status in _OVER:
                ctx.requested_voice = voice
            call = lambda: manager.start_session({"voice": voice})  # noqa: E731
        elif kind == "update_session":
            ctx.requested_voice = voice
            call = lambda: manager.update_session({"voice": voice})  # noqa: E731
        elif kind == "stop_session":
            call = manager.stop_session
        elif kind == "send_message":
            call = lambda: manager.send_message("hello")  # noqa: E731
        elif kind == "send_audio_chunk":
            call = lambda: manager.send_audio_chunk(b"\x00\x01")  # noqa: E731
        elif kind == "commit_audio":
            call = manager.commit_audio
        elif kind == "clear_audio":
            call = manager.clear_audio
        else:
            call = manager.interrupt
        ctx.observe(CommandIssued(command))
        try:
            await call()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as error:
            command.error = error
        command.done = True
        command.returned_at = anyio.current_time()
        ctx.observe(CommandReturned(command))

    # ---------------------------------------------------------------- running

    def checkpoint(self) -> None:
        self.ctx.observe(Checkpoint(self.manager.state, anyio.current_time()))

    async def _settle(self) -> None:
        try:
            await settle()
        except RuntimeError as error:
            self.ctx.observe(Crashed("settling the tasks", error))

    async def main(self) -> None:
        ctx = self.ctx
        with anyio.move_on_after(self.config.watchdog) as watchdog:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if hasattr(self.transport, "__aenter__"):
                        await stack.enter_async_context(self.transport)  # type: ignore[arg-type]
                    async with anyio.create_task_group() as callers:
                        self._callers = callers
                        await self._program()
                        callers.cancel_scope.cancel()
            except Exception as error:
                ctx.observe(Crashed("the manager's task group", _unwrap(error)))
        if watchdog.cancelled_caught:
            ctx.observe(Crashed("the program", TimeoutError("stalled past the watchdog")))

    async def _program(self) -> None:
        ctx = self.ctx
        baseline = {task.id for task in anyio.get_running_tasks()}
        if any(value != 0.5 for value in self.jitter):
            draws = ", ".join(f"{value:g}" for value in self.jitter)
            self.steps.append(f"[t=0] reconnect jitter: random() returns {draws} in turn")
        async with self.manager:
            for index in range(1, self.config.max_steps + 1):
                step = self.draw(index)
                if step is None:
                    break
                self.step_no = index
                self.steps.append(f"[t={anyio.current_time():g}] {step!r}")
                await step.run(self)
                await self._settle()
                self.checkpoint()
                if ctx.violation is not None:
                    break
            broke = ctx.violation is not None  # the program ends at the step that broke
            if not broke:
                ctx.observe(Leaving(self.manager.state, anyio.current_time()))
                self.steps.append(f"[t={anyio.current_time():g}] leave `async with manager`")
        if ctx.violation is not None:
            return
        await self._settle()
        current = anyio.get_current_task().id
        leftover = tuple(
            task.name or f"task {task.id}"
            for task in anyio.get_running_tasks()
            if task.id not in baseline and task.id not in self._caller_tasks and task.id != current
        )
        ctx.observe(
            Exited(
                self.manager.state,
                anyio.current_time(),
                leftover,
                tuple(ctx.waiting()),
            )
        )


def _cycle(values: Sequence[float]) -> Callable[[], float]:
    """A random source that returns ``values`` in turn, over and over."""
    items = tuple(values) or (0.5,)
    position = [0]

    def source() -> float:
        value = items[position[0] % len(items)]
        position[0] += 1
        return value

    return source


def _use_random_source(manager: Any, source: Callable[[], float]) -> None:
    """Give the manager's reconnect jitter (D6) the program's random values.

    This is the suite's one private hook into the engine: the manager's core
    draws the jitter from ``_random`` (``random.random`` by default).
    """
    core = getattr(manager, "_core", None)
    if core is None or not hasattr(core, "_random"):
        raise TypeError("the manager has no jitter random source to replace (core._random)")
    core._random = source


def _unwrap(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _run_backend(backend: Backend, main: Callable[[], Awaitable[None]]) -> None:
    if backend == "asyncio":
        import looptime

        anyio.run(
            main, backend="asyncio", backend_options={"loop_factory": looptime.new_event_loop}
        )
    else:
        import trio.testing

        clock = trio.testing.MockClock(autojump_threshold=0)
        anyio.run(main, backend="trio", backend_options={"clock": clock})
