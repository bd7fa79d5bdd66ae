"""A scriptable in-memory transport, a recording emitter and :func:`settle`.

Use these to test code built on :class:`~charivo_fsm.RealtimeManager` without a
network::

    fake = FakeTransport(emit_session_started_on_connect=True)
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        assert fake.count("connect") == 1
        fake.emit(ToolCall(name="wave", args={}, call_id="c1"))
        await settle()                      # let the tool run
        assert fake.calls_to("send_tool_result") == [("c1", {...})]

Recording
---------
Every transport method call is appended to :attr:`FakeTransport.calls` as a
:class:`Call` the moment it is entered, before any scripted behaviour (gate,
failure, hang) runs, so a call that is still parked or that fails is recorded
too.  :meth:`FakeTransport.calls_to`, :meth:`FakeTransport.count` and
:meth:`FakeTransport.methods` are shortcuts over that list.

Scripting
---------
Each of the eleven methods (:data:`METHODS`: the eight of
:class:`~charivo_fsm.RealtimeTransport` and the three of
:class:`~charivo_fsm.VoiceTransport`) has its own script.  With nothing
scripted a call records itself and returns at once, without yielding to the
event loop.  A call then runs, in this order:

1. the oldest pending *once* behaviour of that method, if any (each is used by
   exactly one call, first in first out), otherwise the method's *persistent*
   behaviour, if any (a later persistent behaviour replaces an earlier one);
2. if that did not raise, every event registered with :meth:`FakeTransport.emit_on`
   for the method, in registration order (``once=True`` ones are then dropped);
3. return.

Behaviours: :meth:`~FakeTransport.gate`, :meth:`~FakeTransport.fail_once`,
:meth:`~FakeTransport.fail_always`, :meth:`~FakeTransport.emit_then_raise`,
:meth:`~FakeTransport.hang` and :meth:`~FakeTransport.respond_with`.
:meth:`~FakeTransport.succeed` removes a method's behaviours and
:meth:`~FakeTransport.reset` removes everything scripted.

All waiting goes through anyio, so the fake works on asyncio and trio and
follows a virtual clock (looptime, trio's ``MockClock``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args

import anyio
import anyio.lowlevel
import attrs

from ..events import SessionEnded, SessionStarted, TransportEvent
from ..model import RealtimeSessionConfig
from ..transport import EventCallback

if TYPE_CHECKING:
    from ..transport import VoiceTransport

__all__ = [
    "METHODS",
    "Call",
    "FakeTransport",
    "Gate",
    "MethodName",
    "RecordingEmitter",
    "settle",
]

MethodName = Literal[
    "connect",
    "update_session",
    "recover",
    "disconnect",
    "send_text",
    "send_audio",
    "send_tool_result",
    "interrupt",
    "commit_audio",
    "clear_audio",
    "truncate_audio",
]
"""The name of a :class:`~charivo_fsm.VoiceTransport` method (``on_event`` aside)."""

METHODS: tuple[MethodName, ...] = get_args(MethodName)
"""All scriptable method names, in protocol order."""

Responder = Callable[..., Awaitable[object]]
"""A custom implementation for :meth:`FakeTransport.respond_with`: gets the call's args."""

ExceptionLike = BaseException | type[BaseException]


@attrs.frozen(slots=True)
class Call:
    """One recorded transport call: the method name and its positional arguments.

    ``connect(config)`` is ``Call("connect", (config,))``,
    ``send_tool_result(call_id, output)`` is ``Call("send_tool_result", (call_id, output))``
    and ``disconnect()`` is ``Call("disconnect", ())``.
    """

    method: str
    args: tuple[Any, ...]


_Behaviour = Callable[[Call], Awaitable[None]]


class Gate:
    """A latch that parks calls until :meth:`open` is called.

    Made by :meth:`FakeTransport.gate`.  A call that reaches a closed gate waits
    (cancellably) until the gate is opened; once open, the gate stays open and
    lets every later call through at once.  Opening it before any call arrives
    is allowed.

    Typical use::

        gate = fake.gate("disconnect")
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.stop_session)
            await gate.wait_entered()     # disconnect is now in flight
            ...                           # observe the "stopping" state
            gate.open()
    """

    def __init__(self, method: MethodName) -> None:
        self.method: MethodName = method
        self.calls: list[Call] = []
        """The calls that reached this gate, in order."""
        self._open = False
        self._waiting = 0
        self._open_event: anyio.Event | None = None
        self._entered_event: anyio.Event | None = None

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` was called."""
        return self._open

    @property
    def entered(self) -> bool:
        """Whether at least one call reached the gate (parked or passed)."""
        return bool(self.calls)

    @property
    def is_waiting(self) -> bool:
        """Whether a call is parked at the gate right now."""
        return self._waiting > 0

    @property
    def waiting(self) -> int:
        """How many calls are parked at the gate right now."""
        return self._waiting

    def open(self) -> None:
        """Release the parked calls and let every later call through."""
        self._open = True
        if self._open_event is not None:
            self._open_event.set()

    async def wait_entered(self) -> None:
        """Wait until a call has reached the gate (returns at once if one has)."""
        if self.calls:
            return
        if self._entered_event is None:
            self._entered_event = anyio.Event()
        await self._entered_event.wait()

    async def _pass(self, call: Call) -> None:
        self.calls.append(call)
        if self._entered_event is not None:
            self._entered_event.set()
        if self._open:
            return
        if self._open_event is None:
            self._open_event = anyio.Event()
        self._waiting += 1
        try:
            await self._open_event.wait()
        finally:
            self._waiting -= 1

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Gate {self.method} {state} entered={len(self.calls)} waiting={self._waiting}>"


@attrs.define(slots=True)
class _Script:
    once: deque[_Behaviour] = attrs.field(factory=deque)
    persistent: _Behaviour | None = None
    emits: list[tuple[TransportEvent, bool]] = attrs.field(factory=list)

    def take_emits(self) -> list[TransportEvent]:
        events = [event for event, _ in self.emits]
        self.emits = [(event, once) for event, once in self.emits if not once]
        return events


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(
            f"unknown transport method {method!r}; expected one of {', '.join(METHODS)}"
        )


def _raiser(exc: ExceptionLike) -> _Behaviour:
    async def behaviour(_call: Call) -> None:
        raise exc

    return behaviour


async def _hang(_call: Call) -> None:
    await anyio.sleep_forever()


class FakeTransport:
    """A scriptable in-memory :class:`~charivo_fsm.RealtimeTransport`.

    See the module documentation for the recording and scripting rules.

    :param emit_session_started_on_connect: every successful ``connect`` emits
        :class:`~charivo_fsm.events.SessionStarted` before returning (the same as
        ``emit_on("connect", SessionStarted())``).
    :param emit_session_ended_on_disconnect: every successful ``disconnect``
        emits :class:`~charivo_fsm.events.SessionEnded` before returning.
    """

    def __init__(
        self,
        *,
        emit_session_started_on_connect: bool = False,
        emit_session_ended_on_disconnect: bool = False,
    ) -> None:
        self.calls: list[Call] = []
        """Every transport call, in the order they were entered."""
        self.callbacks: list[EventCallback] = []
        """The callbacks registered with :meth:`on_event`, in registration order."""
        # A method's script is made when something is first scripted for it (most
        # fakes script few methods; a test may make thousands of fakes).
        self._scripts: dict[str, _Script] = {}
        self._call_waiters: list[tuple[str, int, anyio.Event]] = []
        if emit_session_started_on_connect:
            self.emit_on("connect", SessionStarted())
        if emit_session_ended_on_disconnect:
            self.emit_on("disconnect", SessionEnded())

    # ------------------------------------------------------------------ events

    def on_event(self, callback: EventCallback) -> None:
        """Register ``callback``.  Every registered callback receives every event.

        The manager registers exactly one; registering more (for example a test
        spy) adds to the list rather than replacing.
        """
        self.callbacks.append(callback)

    def emit(self, event: TransportEvent) -> None:
        """Deliver ``event`` synchronously to every registered callback, in order.

        An exception raised by a callback propagates to the caller (later
        callbacks do not receive the event).  Raises :class:`RuntimeError` when
        no callback is registered.
        """
        if not self.callbacks:
            raise RuntimeError(
                f"FakeTransport.emit({event!r}): no callback registered; "
                "create the manager (which calls on_event) before emitting"
            )
        for callback in list(self.callbacks):
            callback(event)

    async def emit_and_settle(self, event: TransportEvent) -> None:
        """:meth:`emit` then :func:`settle`: deliver and let follow-up work run."""
        self.emit(event)
        await settle()

    # --------------------------------------------------------------- scripting

    def _script(self, method: str) -> _Script:
        script = self._scripts.get(method)
        if script is None:
            _check_method(method)
            script = self._scripts[method] = _Script()
        return script

    def _add(self, method: MethodName, behaviour: _Behaviour, *, once: bool) -> None:
        script = self._script(method)
        if once:
            script.once.append(behaviour)
        else:
            script.persistent = behaviour

    def gate(self, method: MethodName, *, always: bool = False) -> Gate:
        """Park the next call of ``method`` (every call with ``always=True``) at a gate.

        Returns the :class:`Gate`; the parked call continues when
        ``gate.open()`` is called.  A persistent (``always``) gate lets everything
        through once opened; remove it with :meth:`succeed`.
        """
        gate = Gate(method)
        self._add(method, gate._pass, once=not always)
        return gate

    def fail_once(self, method: MethodName, exc: ExceptionLike) -> None:
        """The next call of ``method`` raises ``exc``."""
        self._add(method, _raiser(exc), once=True)

    def fail_always(self, method: MethodName, exc: ExceptionLike) -> None:
        """Every call of ``method`` raises ``exc`` (the same object each time)
        until :meth:`succeed`."""
        self._add(method, _raiser(exc), once=False)

    def hang(self, method: MethodName, *, always: bool = False) -> None:
        """The next call of ``method`` (every call with ``always=True``) never returns.

        The call waits forever but can be cancelled (for example by a timeout).
        """
        self._add(method, _hang, once=not always)

    def emit_then_raise(
        self, method: MethodName, event: TransportEvent, exc: ExceptionLike
    ) -> None:
        """The next call of ``method`` emits ``event`` and then raises ``exc``."""

        async def behaviour(_call: Call) -> None:
            self.emit(event)
            raise exc

        self._add(method, behaviour, once=True)

    def respond_with(self, method: MethodName, fn: Responder, *, once: bool = False) -> None:
        """Run ``await fn(*args)`` as the implementation of ``method``.

        ``args`` are the call's positional arguments (``fn(config)`` for
        ``connect``, ``fn()`` for ``disconnect``); what ``fn`` raises, the call
        raises; its return value is ignored.  Persistent unless ``once=True``.
        """

        async def behaviour(call: Call) -> None:
            await fn(*call.args)

        self._add(method, behaviour, once=once)

    def emit_on(self, method: MethodName, event: TransportEvent, *, once: bool = False) -> None:
        """Emit ``event`` whenever a call of ``method`` succeeds, just before it returns.

        Independent of the behaviours above: it runs after a gate opens or a
        :meth:`respond_with` function returns, and not when the call raises or
        is cancelled.  With ``once=True`` only the next successful call emits.
        Cleared by :meth:`reset`, not by :meth:`succeed`.
        """
        self._script(method).emits.append((event, once))

    def succeed(self, method: MethodName) -> None:
        """From now on calls of ``method`` succeed: drop its pending once-behaviours
        and its persistent behaviour.  Calls already parked at a gate stay parked;
        :meth:`emit_on` registrations are kept."""
        script = self._script(method)
        script.once.clear()
        script.persistent = None

    def reset(self, method: MethodName | None = None) -> None:
        """Remove everything scripted (behaviours and :meth:`emit_on` events) for
        ``method``, or for every method.  Recorded calls are kept."""
        names: tuple[MethodName, ...] = METHODS if method is None else (method,)
        for name in names:
            _check_method(name)
            self._scripts.pop(name, None)

    # --------------------------------------------------------------- inspection

    def calls_to(self, method: MethodName) -> list[tuple[Any, ...]]:
        """The argument tuples of every recorded call of ``method``, in order."""
        _check_method(method)
        return [call.args for call in self.calls if call.method == method]

    def count(self, method: MethodName) -> int:
        """How many calls of ``method`` were recorded."""
        _check_method(method)
        return sum(1 for call in self.calls if call.method == method)

    def methods(self) -> list[str]:
        """The method names of all recorded calls, in order."""
        return [call.method for call in self.calls]

    def clear(self) -> None:
        """Forget the recorded calls (scripting is kept)."""
        self.calls.clear()

    async def wait_for_call(self, method: MethodName, count: int = 1) -> None:
        """Wait until at least ``count`` calls of ``method`` have been recorded."""
        if self.count(method) >= count:
            return
        event = anyio.Event()
        self._call_waiters.append((method, count, event))
        await event.wait()

    # ------------------------------------------------------ transport protocol

    async def _invoke(self, method: MethodName, args: tuple[Any, ...]) -> None:
        call = Call(method, args)
        self.calls.append(call)
        if self._call_waiters:
            self._wake_call_waiters()
        script = self._scripts.get(method)
        if script is None:  # nothing scripted for this method
            return
        behaviour = script.once.popleft() if script.once else script.persistent
        if behaviour is not None:
            await behaviour(call)
        for event in script.take_emits():
            self.emit(event)

    def _wake_call_waiters(self) -> None:
        pending: list[tuple[str, int, anyio.Event]] = []
        for method, count, event in self._call_waiters:
            if sum(1 for call in self.calls if call.method == method) >= count:
                event.set()
            else:
                pending.append((method, count, event))
        self._call_waiters = pending

    async def connect(self, config: RealtimeSessionConfig) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("connect", (config,))

    async def update_session(self, config: RealtimeSessionConfig) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("update_session", (config,))

    async def recover(self, config: RealtimeSessionConfig) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("recover", (config,))

    async def disconnect(self) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("disconnect", ())

    async def send_text(self, text: str) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("send_text", (text,))

    async def send_audio(self, audio: bytes) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("send_audio", (audio,))

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("send_tool_result", (call_id, output))

    async def interrupt(self) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("interrupt", ())

    async def commit_audio(self) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("commit_audio", ())

    async def clear_audio(self) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("clear_audio", ())

    async def truncate_audio(self, item_id: str, audio_end_ms: int) -> None:
        """Record the call, then run its script (succeeds by default)."""
        await self._invoke("truncate_audio", (item_id, audio_end_ms))

    def __repr__(self) -> str:
        return f"<FakeTransport calls={len(self.calls)} callbacks={len(self.callbacks)}>"


if TYPE_CHECKING:

    def _conforms(fake: FakeTransport) -> VoiceTransport:
        return fake


class RecordingEmitter:
    """An event emitter that records every ``emit(name, payload)`` in order.

    Pass it to ``manager.set_event_emitter``.  :attr:`events` holds the
    ``(name, payload)`` pairs; :meth:`payloads` and :meth:`names` filter them.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def emit(self, name: str, payload: Any) -> None:
        """Record ``(name, payload)`` in :attr:`events`."""
        self.events.append((name, payload))

    def payloads(self, name: str) -> list[Any]:
        """The payloads emitted under ``name``, in emission order."""
        return [payload for event_name, payload in self.events if event_name == name]

    def names(self) -> list[str]:
        """The names of all emitted events, in order."""
        return [name for name, _ in self.events]

    def last(self, name: str) -> Any:
        """The latest payload emitted under ``name`` (:class:`LookupError` if none)."""
        for event_name, payload in reversed(self.events):
            if event_name == name:
                return payload
        raise LookupError(f"no {name!r} event was emitted")

    def clear(self) -> None:
        """Forget the recorded events."""
        self.events.clear()

    def __repr__(self) -> str:
        return f"<RecordingEmitter events={len(self.events)}>"


# ------------------------------------------------------------------------ settle


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _asyncio_tasks_blocked(loop: asyncio.AbstractEventLoop) -> bool:
    this = asyncio.current_task(loop)
    for task in asyncio.all_tasks(loop):
        if task is this:
            continue
        # A task parked on a pending future is blocked; one with no waiter (just
        # created or scheduled to resume) or a completed waiter is about to run.
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter.done():
            return False
    return True


_QUIET_ROUNDS = 3


async def foreign_cancellation() -> NoReturn:
    """Raise a cancellation nobody around the caller requested: the cancelled exception
    of a scope that is already gone, as a tool handler or a transport call that
    awaited a future something else cancelled would.  For fault injection: the engine
    treats it as an error of that operation, not as its own cancellation."""
    caught: BaseException | None = None
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except BaseException as exc:
            caught = exc
            raise
    assert caught is not None
    raise caught


async def settle(*, max_rounds: int = 10_000) -> None:
    """Let every other task run until all of them are blocked; never moves the clock.

    "Blocked" means waiting for something that only a timer, I/O or another
    blocked task could provide: an event, a lock, a gate of the fake transport,
    a pending ``sleep``.  Timers that are already due fire; timers in the future
    do not, and virtual time (looptime on asyncio, ``MockClock`` on trio) stays
    where it was, so a test can still observe what happens *before* a timeout or
    a reconnect delay.

    * trio: :func:`trio.testing.wait_all_tasks_blocked` (cushion 0).  trio wakes
      such a waiter before it would autojump a ``MockClock``, so no time passes.
    * asyncio: ``anyio.wait_all_tasks_blocked`` sleeps 0.1 s between its polls,
      which a virtual clock turns into a jump, so this yields with zero-delay
      checkpoints instead and returns once every other task of the loop has
      been waiting on an unfinished future for three consecutive rounds.
      Raises :class:`RuntimeError` when that has not happened after
      ``max_rounds`` rounds (a task that never blocks).
    """
    loop = _running_asyncio_loop()
    if loop is None:
        await anyio.wait_all_tasks_blocked()
        return
    quiet = 0
    for _ in range(max_rounds):
        await anyio.lowlevel.checkpoint()
        if _asyncio_tasks_blocked(loop):
            quiet += 1
            if quiet >= _QUIET_ROUNDS:
                return
        else:
            quiet = 0
    raise RuntimeError(f"settle(): other tasks were still runnable after {max_rounds} rounds")
