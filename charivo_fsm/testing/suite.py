"""The semantic suite: driver programs over a real manager and their invariants.

This is tier 3 of the test plan (DESIGN §3): one *program* per Hypothesis
example, run by one ``anyio.run`` on a virtual clock, drawing its next step
inside the loop -- user commands, transport events, transport faults and
advancing time -- against a :class:`~charivo_fsm.RealtimeManager` wired to any
transport.  After every step (and at the end, after leaving ``async with``)
the named invariants of :data:`INVARIANTS` are checked; docs/invariants.md
says which decision (D-rule) each one comes from.

Rules of this file:

* Everything the suite knows about the engine it learns from the outside:
  the emitted events, the log records, the calls the manager makes on the
  transport (through a recording proxy), the events the transport delivers,
  the callers' outcomes and ``manager.state``.  Nothing here reads the core,
  so the suite checks any build of the engine and any transport.
* Each invariant is a generator function that is sent every observation
  (:data:`Observation`) in order and raises :class:`Broken` when its rule is
  violated.  Observations made inside the manager (an emit, a transport call)
  never raise there: the first violation is recorded and the program stops
  at the end of the step.
* Transports are driven through :class:`TransportFaults`, a small
  fault-injection interface; :class:`FakeTransportFaults` implements it over
  :class:`~charivo_fsm.testing.FakeTransport`.  A transport author implements
  it for their own transport and passes a :data:`TransportFactory`
  (``charivo-fsm check --transport MODULE:FACTORY``).

Hypothesis, trio and looptime are imported only when a program runs, so
importing :mod:`charivo_fsm.testing` does not need the test dependencies.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import anyio
import anyio.lowlevel
import attrs

from ..errors import CharivoError, CharivoStateError
from ..events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputEnded,
    AudioOutputStarted,
    ConnectionLost,
    ErrorEvent,
    SessionEnded,
    SessionStarted,
    StateUpdate,
    ToolCall,
    ToolResult,
    TransportEvent,
    UserTranscript,
)
from ..manager import RealtimeManager, create_realtime_manager
from ..model import (
    ConnectionState,
    RealtimeState,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
    ResponseStatus,
    SessionStatus,
)
from ..transport import EventCallback, RealtimeTransport
from .fake import FakeTransport, MethodName, settle

if TYPE_CHECKING:
    from hypothesis.strategies import DataObject, SearchStrategy

__all__ = [
    "BACKENDS",
    "INVARIANTS",
    "Advance",
    "Backend",
    "Broken",
    "ChangeTools",
    "Deliver",
    "FailingListeners",
    "FakeTransportFaults",
    "Fault",
    "Invariant",
    "InvariantViolation",
    "Latency",
    "ProgramResult",
    "Send",
    "StartSession",
    "Step",
    "StopSession",
    "SuiteConfig",
    "SuiteResult",
    "Together",
    "TransportFactory",
    "TransportFaults",
    "UpdateSession",
    "describe_invariants",
    "fake_transport_factory",
    "format_steps",
    "latency_strategy",
    "run_program",
    "run_steps",
    "run_suite",
    "step_strategy",
]

Backend = Literal["asyncio", "trio"]
BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")

# ===========================================================================
# Fault injection
# ===========================================================================


@runtime_checkable
class TransportFaults(Protocol):
    """How the suite scripts a transport: the provider's side of the link.

    ``method`` is one of the eight transport method names
    (:data:`charivo_fsm.testing.METHODS`).  Behaviours queue per method: each
    one-shot behaviour (``fail_once``, ``hang``, ``delay``, ``emit_then_raise``)
    is used by exactly one later call, oldest first; a persistent one
    (``fail_always``, ``delay(always=True)``; the later replaces the earlier)
    applies to every call that finds no one-shot behaviour, until ``succeed``.
    Waiting must go through anyio (the suite runs on a virtual clock) and must
    be cancellable.

    A method the transport cannot support may raise :class:`NotImplementedError`;
    the suite then skips that step.
    """

    def fail_once(self, method: MethodName, exc: BaseException) -> None:
        """The next call of ``method`` raises ``exc``."""

    def fail_always(self, method: MethodName, exc: BaseException) -> None:
        """Every call of ``method`` raises ``exc`` until :meth:`succeed`."""

    def hang(self, method: MethodName) -> None:
        """The next call of ``method`` never returns (until it is cancelled)."""

    def delay(self, method: MethodName, seconds: float, *, always: bool = False) -> None:
        """The next call of ``method`` (every call with ``always``, until
        :meth:`succeed` or ``fail_always``) succeeds after ``seconds`` (anyio time)."""

    def succeed(self, method: MethodName) -> None:
        """Drop every behaviour scripted for ``method``: its calls succeed again."""

    def emit(self, event: TransportEvent) -> None:
        """Deliver ``event`` to the manager now, as the provider would."""

    def emit_then_raise(
        self, method: MethodName, event: TransportEvent, exc: BaseException
    ) -> None:
        """The next call of ``method`` delivers ``event`` and then raises ``exc``."""


TransportFactory = Callable[[], "tuple[RealtimeTransport, TransportFaults]"]
"""Builds a fresh transport and its fault-injection handle (one per program).

If the transport is an async context manager, the suite enters it before the
manager and leaves it after (like ``OpenAIRealtimeTransport``)."""


class FakeTransportFaults:
    """:class:`TransportFaults` over a :class:`~charivo_fsm.testing.FakeTransport`."""

    def __init__(self, fake: FakeTransport) -> None:
        self.fake = fake

    def fail_once(self, method: MethodName, exc: BaseException) -> None:
        self.fake.fail_once(method, exc)

    def fail_always(self, method: MethodName, exc: BaseException) -> None:
        self.fake.fail_always(method, exc)

    def hang(self, method: MethodName) -> None:
        self.fake.hang(method)

    def delay(self, method: MethodName, seconds: float, *, always: bool = False) -> None:
        async def slow(*_args: Any) -> None:
            await anyio.sleep(seconds)

        self.fake.respond_with(method, slow, once=not always)

    def succeed(self, method: MethodName) -> None:
        self.fake.succeed(method)

    def emit(self, event: TransportEvent) -> None:
        self.fake.emit(event)

    def emit_then_raise(
        self, method: MethodName, event: TransportEvent, exc: BaseException
    ) -> None:
        self.fake.emit_then_raise(method, event, exc)


def fake_transport_factory() -> tuple[FakeTransport, FakeTransportFaults]:
    """The default :data:`TransportFactory`: a fresh FakeTransport and its faults."""
    fake = FakeTransport()
    return fake, FakeTransportFaults(fake)


# ===========================================================================
# Configuration of the programs
# ===========================================================================


@attrs.frozen(slots=True)
class SuiteConfig:
    """The manager settings and program shape the suite uses (virtual seconds)."""

    transport_timeout: float = 5.0
    reconnect_delays: tuple[float, ...] = (0.5, 1.0)
    default_tool_timeout: float = 3.0
    slow_tool_timeout: float = 1.0
    lagging_tool_seconds: float = 2.0
    max_steps: int = 40
    watchdog: float = 10_000.0
    # A stop returns within this many seconds of being called (D4, D15); None:
    # transport_timeout.
    stop_bound: float | None = None

    @property
    def stop_limit(self) -> float:
        return self.stop_bound if self.stop_bound is not None else self.transport_timeout


VOICES = ("marin", "alloy", "verse")
CALL_IDS: tuple[str | None, ...] = ("c1", "c2", "c3", None, "")
LIFECYCLE = frozenset({"connect", "update_session", "recover", "disconnect"})
CONFIG_CALLS = frozenset({"connect", "update_session", "recover"})
SENDS = frozenset({"send_text", "send_audio", "interrupt"})
# Callers that wait on the manager (the sends wait on the transport, in the caller's task).
_MANAGED = frozenset({"start_session", "update_session", "stop_session"})

_ACTIVE = SessionStatus.ACTIVE
_STARTING = SessionStatus.STARTING
_STOPPING = SessionStatus.STOPPING
_OVER = frozenset({SessionStatus.IDLE, SessionStatus.STOPPED})
_CONNECTED = ConnectionState.CONNECTED
_CONNECTING = ConnectionState.CONNECTING

# ===========================================================================
# Observations
# ===========================================================================


@attrs.define(eq=False, slots=True)
class TransportCall:
    """One call the manager made on the transport, as seen by the proxy."""

    seq: int
    method: str
    args: tuple[Any, ...]
    entered_at: float
    state: RealtimeState  # manager.state when the call was entered
    outcome: Literal["ok", "error", "cancelled"] | None = None
    error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<{self.method} #{self.seq} {self.outcome or 'in flight'}>"


@attrs.define(eq=False, slots=True)
class Command:
    """One call of a manager method made by the program."""

    seq: int
    kind: str
    step: int
    issued_at: float
    before: RealtimeState  # manager.state just before the method was called
    task_id: int | None = None
    done: bool = False
    error: BaseException | None = None
    returned_at: float | None = None


@attrs.frozen(slots=True)
class Emitted:
    name: str
    payload: Any


@attrs.frozen(slots=True)
class Logged:
    context: Mapping[str, Any]


@attrs.frozen(slots=True)
class CallEntered:
    call: TransportCall


@attrs.frozen(slots=True)
class CallExited:
    call: TransportCall


@attrs.frozen(slots=True)
class Delivering:
    event: Any
    state: RealtimeState


@attrs.frozen(slots=True)
class Delivered:
    event: Any
    state: RealtimeState


@attrs.frozen(slots=True)
class ToolRan:
    call_id: str
    state: RealtimeState


@attrs.frozen(slots=True)
class CommandIssued:
    command: Command


@attrs.frozen(slots=True)
class CommandReturned:
    command: Command


@attrs.frozen(slots=True)
class Checkpoint:
    state: RealtimeState
    now: float


@attrs.frozen(slots=True)
class Crashed:
    where: str
    error: BaseException


@attrs.frozen(slots=True)
class Leaving:
    """The program is about to leave ``async with manager`` (which stops the session)."""

    state: RealtimeState
    now: float


@attrs.frozen(slots=True)
class Exited:
    state: RealtimeState
    now: float
    leftover_tasks: tuple[str, ...]
    waiting: tuple[Command, ...]


Observation = (
    Emitted
    | Logged
    | CallEntered
    | CallExited
    | Delivering
    | Delivered
    | ToolRan
    | CommandIssued
    | CommandReturned
    | Checkpoint
    | Crashed
    | Leaving
    | Exited
)

# ===========================================================================
# Invariants
# ===========================================================================


class Broken(Exception):
    """Raised by an invariant's generator when its rule is violated."""


class InvariantViolation(AssertionError):
    """An invariant failed; ``steps`` is the program that led there."""

    def __init__(self, invariant: Invariant, message: str, steps: Sequence[str] = ()) -> None:
        super().__init__(f"[{invariant.rule}] {invariant.name}: {message}")
        self.invariant = invariant
        self.message = message
        self.steps: list[str] = list(steps)


Checker = Callable[["Context"], Generator[None, Observation, None]]


@attrs.frozen(slots=True)
class Invariant:
    """A named rule, the decision it comes from and its checker."""

    name: str
    rule: str
    summary: str
    check: Checker = attrs.field(repr=False)


INVARIANTS: list[Invariant] = []
"""Every invariant the suite checks, in the order of docs/invariants.md."""


def _invariant(rule: str, summary: str) -> Callable[[Checker], Checker]:
    def register(check: Checker) -> Checker:
        INVARIANTS.append(Invariant(check.__name__, rule, summary, check))
        return check

    return register


_AFTER_END = frozenset(
    {
        "realtime:assistant:start",
        "realtime:assistant:delta",
        "realtime:text:delta",
        "realtime:assistant:done",
        "realtime:usage",
        "realtime:user:transcript",
        "realtime:tool:result",
        "tts:audio:start",
        "tts:audio:end",
        "tts:lipsync:update",
        "realtime:reconnect:attempt",
        "realtime:reconnect:success",
        "realtime:reconnect:exhausted",
    }
)


@_invariant(
    "D1",
    "listener, logger and engine failures never reach a caller, the transport or "
    "the task group; callers only ever see CharivoErrors",
)
def isolation(ctx: Context) -> Generator[None, Observation, None]:
    while True:
        seen = yield
        if type(seen) is Crashed:
            assert isinstance(seen, Crashed)
            raise Broken(f"{seen.where} raised {type(seen.error).__name__}: {seen.error}")
        if type(seen) is CommandReturned:
            assert isinstance(seen, CommandReturned)
            raised = seen.command.error
            if raised is not None and not isinstance(raised, CharivoError):
                raise Broken(
                    f"{seen.command.kind} raised {type(raised).__name__}: {raised} "
                    "(not a CharivoError)"
                )


@_invariant(
    "D2",
    "per session one session:start then at most one session:end after it, with a "
    "fresh session id; an ended session is always announced; nothing about a "
    "session (response, audio, transcript, usage, tool result, reconnect, log "
    "record) after its end",
)
def session_boundaries(ctx: Context) -> Generator[None, Observation, None]:
    is_open = False
    open_id: str | None = None
    seen_ids: set[str] = set()
    ended_ids: set[str] = set()
    between = True  # after an end (or before the first start), until the next start
    window_calls: set[str | None] = set()
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if name == "realtime:session:start":
                if is_open:
                    raise Broken("a second session:start before the first session ended")
                sid = ctx.manager.session_id
                if sid is None:
                    raise Broken("session:start emitted without a session id")
                if sid in seen_ids:
                    raise Broken(f"session id {sid!r} started twice")
                if seen.payload.state.session.status != _ACTIVE:
                    raise Broken("session:start announces a session that is not active")
                seen_ids.add(sid)
                open_id, is_open, between = sid, True, False
            elif name == "realtime:session:end":
                if not is_open:
                    raise Broken("session:end without a session:start before it")
                if seen.payload.reason not in ("user", "remote", "error"):
                    raise Broken(f"session:end with reason {seen.payload.reason!r}")
                if open_id is not None:
                    ended_ids.add(open_id)
                is_open, open_id, between = False, None, True
                window_calls.clear()
            elif name == "realtime:state":
                status = seen.payload.state.session.status
                if status == _STARTING:
                    between = False
                elif status in _OVER and not is_open:
                    if not between:
                        window_calls.clear()
                    between = True  # a start that failed or was cancelled
            elif between:
                if name in _AFTER_END:
                    raise Broken(f"{name} emitted while no session is running")
                if name == "realtime:tool:call":
                    window_calls.add(seen.payload.call_id)
                elif name == "realtime:tool:error" and seen.payload.call_id not in window_calls:
                    raise Broken(
                        f"tool:error for call {seen.payload.call_id!r} of an ended session "
                        "after its end"
                    )
            if name == "realtime:usage" and seen.payload.session_id in ended_ids:
                raise Broken("usage reported for a session that has ended")
        elif kind is Logged:
            assert isinstance(seen, Logged)
            sid = seen.context.get("session_id")
            if sid is not None and sid in ended_ids:
                raise Broken(
                    f"log record {seen.context.get('event')!r} about session {sid!r} after its end"
                )
        elif kind is Checkpoint or kind is Exited:
            assert isinstance(seen, (Checkpoint, Exited))
            status = seen.state.session.status
            if is_open and status in _OVER:
                raise Broken(f"the session is {status} but no session:end was emitted")
            if not is_open and status == _ACTIVE:
                raise Broken("the session is active but no session:start was emitted")


@_invariant(
    "D3",
    "after the transport reports connection.lost for a starting or active session, "
    "the connection is never reported connected until a recover succeeds (or a new "
    "connect begins)",
)
def no_connected_over_a_lost_link(ctx: Context) -> Generator[None, Observation, None]:
    lost = False
    while True:
        seen = yield
        kind = type(seen)
        if kind is Delivering:
            assert isinstance(seen, Delivering)
            if type(seen.event) is ConnectionLost and seen.state.session.status in (
                _STARTING,
                _ACTIVE,
            ):
                lost = True
        elif kind is CallEntered:
            assert isinstance(seen, CallEntered)
            if seen.call.method == "connect":
                lost = False
        elif kind is CallExited:
            assert isinstance(seen, CallExited)
            if seen.call.method == "recover" and seen.call.outcome == "ok":
                lost = False
        elif kind is Emitted:
            assert isinstance(seen, Emitted)
            if lost and seen.name == "realtime:state":
                state = seen.payload.state
                if state.connection == _CONNECTED:
                    raise Broken("realtime:state reports connected over a link reported lost")
        elif kind is Checkpoint:
            assert isinstance(seen, Checkpoint)
            if lost and seen.state.connection == _CONNECTED:
                raise Broken("the connection is connected although the link was reported lost")


@_invariant(
    "D4",
    "once a stop is requested for a starting or active session (stop_session "
    "or leaving `async with`), no state reports it starting or active again and no "
    "session:start follows; manager.state says stopping until it is stopped",
)
def stop_wins(ctx: Context) -> Generator[None, Observation, None]:
    requested = False
    while True:
        seen = yield
        kind = type(seen)
        if kind is CommandIssued or kind is Leaving:
            if kind is CommandIssued:
                assert isinstance(seen, CommandIssued)
                if seen.command.kind != "stop_session":
                    continue
                status = seen.command.before.session.status
            else:
                assert isinstance(seen, Leaving)
                status = seen.state.session.status
            if status in (_STARTING, _ACTIVE) and not requested:
                requested = True
        elif not requested:
            continue
        elif kind is Emitted:
            assert isinstance(seen, Emitted)
            if seen.name == "realtime:session:start":
                raise Broken("session:start after a stop was requested (stop wins)")
            if seen.name == "realtime:state":
                status = seen.payload.state.session.status
                if status in _OVER:
                    requested = False
                elif status in (_ACTIVE, _STARTING):
                    raise Broken(f"realtime:state reports {status} after a stop was requested")
        elif kind is Checkpoint:
            assert isinstance(seen, Checkpoint)
            status = seen.state.session.status
            if status in _OVER:
                requested = False
            elif status in (_ACTIVE, _STARTING):
                raise Broken(f"manager.state says {status} while a stop is in progress")


@_invariant(
    "D4",
    "stop_session returns within transport_timeout with the session stopped; "
    "concurrent stops join one stop: one disconnect per session, one outcome object "
    "for every joined caller",
)
def stop_converges(ctx: Context) -> Generator[None, Observation, None]:
    limit = ctx.config.stop_limit + 1e-6
    pending: list[Command] = []
    episode: list[Command] = []
    owed = 0  # disconnects the engine may still make
    closes = False  # the current start will close its link (stop or remote end)
    status_was: Any = SessionStatus.IDLE
    while True:
        seen = yield
        kind = type(seen)
        if kind is Leaving:
            closes = True
        elif kind is CommandIssued:
            assert isinstance(seen, CommandIssued)
            command = seen.command
            if command.kind == "stop_session":
                closes = True
                pending.append(command)
                status = command.before.session.status
                if status in (_ACTIVE, _STARTING):
                    episode = [command]
                elif status == _STOPPING:
                    episode.append(command)
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            if command.kind != "stop_session":
                continue
            pending.remove(command)
            assert command.returned_at is not None
            took = command.returned_at - command.issued_at
            if took > limit:
                raise Broken(f"stop_session took {took:g}s (bound {ctx.config.stop_limit:g}s)")
            state = ctx.manager.state
            if state.session.status not in _OVER:
                raise Broken(f"stop_session returned while the session is {state.session.status}")
            if command in episode and all(c.done for c in episode):
                first = episode[0].error
                for other in episode[1:]:
                    if other.error is not first:
                        raise Broken(
                            "joined stop_session callers got different outcomes: "
                            f"{first!r} and {other.error!r}"
                        )
        elif kind is Emitted:
            assert isinstance(seen, Emitted)
            if seen.name == "realtime:state":
                # Every accepted start may close its link once (stop, remote end,
                # exhaustion); a start that fails on its own closes nothing.
                status = seen.payload.state.session.status
                if status != status_was:
                    if status == _STARTING:
                        owed += 1
                        closes = False
                    elif status == _STOPPING:
                        closes = True
                    elif status in _OVER and status_was == _STARTING and not closes:
                        owed -= 1
                    status_was = status
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            if type(seen.event) is SessionEnded and seen.state.session.status == _STARTING:
                closes = True
        elif kind is CallEntered:
            assert isinstance(seen, CallEntered)
            if seen.call.method == "disconnect":
                owed -= 1
                if owed < 0:
                    raise Broken(
                        "a disconnect no session owed (a stop did not join, or a session "
                        "closed its link twice)"
                    )
        elif kind is Checkpoint:
            assert isinstance(seen, Checkpoint)
            for command in pending:
                if seen.now - command.issued_at > limit:
                    raise Broken(
                        f"stop_session (step {command.step}) has not returned after "
                        f"{seen.now - command.issued_at:g}s (bound {ctx.config.stop_limit:g}s)"
                    )


@_invariant(
    "D5",
    "the transport's lifecycle calls (connect, update_session, recover, disconnect) "
    "never overlap: at most one patch in flight (D18.6)",
)
def one_lifecycle_call_at_a_time(ctx: Context) -> Generator[None, Observation, None]:
    while True:
        seen = yield
        if type(seen) is CallEntered:
            assert isinstance(seen, CallEntered)
            call = seen.call
            if call.method in LIFECYCLE:
                for other in ctx.in_flight:
                    if other is not call and other.method in LIFECYCLE:
                        raise Broken(f"{call.method} called while {other.method} is in flight")


@_invariant(
    "D5",
    "an update_session that returns on a live session while it is still "
    "the latest request has its config committed; once quiescent (active, connected, "
    "no lifecycle call in flight) no update_session caller is waiting and the committed "
    "config is the latest requested one, unless the last config-carrying call failed",
)
def latest_config_wins(ctx: Context) -> Generator[None, Observation, None]:
    last_failed = False
    voices: dict[int, str | None] = {}
    while True:
        seen = yield
        kind = type(seen)
        if kind is CommandIssued:
            assert isinstance(seen, CommandIssued)
            if seen.command.kind == "update_session":
                voices[seen.command.seq] = ctx.requested_voice
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            if command.kind != "update_session" or command.error is not None:
                continue
            voice = voices.pop(command.seq)
            state = ctx.manager.state
            if (
                voice == ctx.requested_voice
                and state.session.status == _ACTIVE
                and state.connection == _CONNECTED
                and state.session.config is not None
                and state.session.config.voice != voice
            ):
                raise Broken(
                    f"update_session(voice={voice!r}) returned on a live session whose "
                    f"committed voice is {state.session.config.voice!r}"
                )
        elif kind is CallExited:
            assert isinstance(seen, CallExited)
            if seen.call.method in CONFIG_CALLS:
                last_failed = seen.call.outcome != "ok"
        elif kind is Checkpoint:
            assert isinstance(seen, Checkpoint)
            state = seen.state
            if (
                state.session.status != _ACTIVE
                or state.connection != _CONNECTED
                or any(c.method in LIFECYCLE for c in ctx.in_flight)
            ):
                continue
            for command in ctx.waiting():
                if command.kind == "update_session":
                    raise Broken(
                        f"update_session (step {command.step}) is still waiting on a "
                        "quiescent session"
                    )
            config = state.session.config
            if config is None:
                raise Broken("an active, connected session has no config")
            if not last_failed and config.voice != ctx.requested_voice:
                raise Broken(
                    f"committed voice {config.voice!r} but the latest request was "
                    f"{ctx.requested_voice!r}"
                )


@_invariant(
    "D5",
    "a config is committed only when a connect, patch or recover carrying it was "
    "acknowledged, and a patch only if no stop, loss or remote end happened while it "
    "was in flight",
)
def config_commits_only_on_ack(ctx: Context) -> Generator[None, Observation, None]:
    epoch = 0
    entered_in: dict[int, int] = {}
    last_ok: TransportCall | None = None
    consumed = True
    previous: Any = None
    previous_status: Any = None
    while True:
        seen = yield
        kind = type(seen)
        if kind is CallEntered:
            assert isinstance(seen, CallEntered)
            if seen.call.method in CONFIG_CALLS:
                entered_in[seen.call.seq] = epoch
        elif kind is CallExited:
            assert isinstance(seen, CallExited)
            if seen.call.method in CONFIG_CALLS and seen.call.outcome == "ok":
                last_ok, consumed = seen.call, False
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            if type(seen.event) in (ConnectionLost, SessionEnded) and (
                seen.state.session.status == _ACTIVE
            ):
                epoch += 1
        elif kind is Emitted:
            assert isinstance(seen, Emitted)
            if seen.name == "realtime:session:end":
                epoch += 1
            elif seen.name == "realtime:state":
                state = seen.payload.state
                status = state.session.status
                if status == _STOPPING and previous_status != _STOPPING:
                    epoch += 1
                previous_status = status
                config = state.session.config
                if config is not None and config != previous:
                    if status != _ACTIVE:
                        raise Broken(f"a config was committed while the session is {status}")
                    if last_ok is None or consumed:
                        raise Broken(
                            f"config (voice {config.voice!r}) committed without an "
                            "acknowledged transport call"
                        )
                    if not last_ok.args or last_ok.args[0] != config:
                        raise Broken(
                            f"committed config (voice {config.voice!r}) is not the one the "
                            f"last acknowledged {last_ok.method} carried"
                        )
                    if last_ok.method == "update_session" and state.connection != _CONNECTED:
                        raise Broken(f"a patch was committed while {state.connection}")
                    if last_ok.method == "update_session" and entered_in.get(last_ok.seq) != epoch:
                        raise Broken(
                            "a patch was committed although a stop, a lost link or a remote "
                            "end happened while it was in flight"
                        )
                    consumed = True
                previous = config


@_invariant(
    "D6",
    "a reconnect cancelled by a stop (or ended) is silent: no reconnect event and no "
    "recover call after the stop began; recover is only called while reconnecting; "
    "attempts never exceed reconnect_delays",
)
def cancelled_reconnect_is_silent(ctx: Context) -> Generator[None, Observation, None]:
    silenced = True
    attempts = len(ctx.config.reconnect_delays)
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if name == "realtime:state":
                status = seen.payload.state.session.status
                if status == _STARTING:
                    silenced = False
                elif status == _STOPPING or status in _OVER:
                    silenced = True
            elif name.startswith("realtime:reconnect:"):
                if silenced:
                    raise Broken(f"{name} after the session began stopping or ended")
                if name == "realtime:reconnect:attempt" and seen.payload.attempt > attempts:
                    raise Broken(f"reconnect attempt {seen.payload.attempt} of {attempts}")
        elif kind is CallEntered:
            assert isinstance(seen, CallEntered)
            if seen.call.method == "recover":
                if silenced:
                    raise Broken("recover called after the session began stopping or ended")
                state = seen.call.state
                if state.session.status != _ACTIVE or state.connection != _CONNECTING:
                    raise Broken(
                        f"recover called while {state.session.status}/{state.connection} "
                        "(not reconnecting)"
                    )


@_invariant(
    "D8",
    "exactly one outcome (tool:result or tool:error) per tool call and at most one "
    "send_tool_result per call; calls without an id or arriving while the session is "
    "not active and connected are refused (CharivoStateError, no handler, no send); a "
    "tool:result only after its result was sent",
)
def one_outcome_per_tool_call(ctx: Context) -> Generator[None, Observation, None]:
    delivered: Counter[str | None] = Counter()
    sendable: Counter[str | None] = Counter()
    runnable: Counter[str | None] = Counter()
    outcomes: Counter[str | None] = Counter()
    sends: Counter[str | None] = Counter()
    sent_ok: Counter[str | None] = Counter()
    results: Counter[str | None] = Counter()
    runs: Counter[str | None] = Counter()
    reaction: list[Emitted] | None = None
    passthrough = False  # a transport ToolResult is being delivered
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            if reaction is not None:
                reaction.append(seen)
            name = seen.name
            if passthrough and name == "realtime:tool:result":
                continue
            if name == "realtime:tool:result" or name == "realtime:tool:error":
                call_id = seen.payload.call_id
                outcomes[call_id] += 1
                if outcomes[call_id] > delivered[call_id]:
                    raise Broken(f"a second outcome ({name}) for tool call {call_id!r}")
                if name == "realtime:tool:result":
                    results[call_id] += 1
                    if results[call_id] > sent_ok[call_id]:
                        raise Broken(f"tool:result for {call_id!r} before its result was sent")
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            if type(seen.event) is ToolCall:
                delivered[seen.event.call_id] += 1
                reaction = []
            elif type(seen.event) is ToolResult:
                passthrough = True
        elif kind is Delivered:
            assert isinstance(seen, Delivered)
            event = seen.event
            if type(event) is ToolResult:
                passthrough = False
            if type(event) is not ToolCall or reaction is None:
                continue
            call_id = event.call_id
            names = [e.name for e in reaction]
            if "realtime:tool:call" not in names:
                raise Broken(f"no tool:call emitted for tool call {call_id!r}")
            after = names[names.index("realtime:tool:call") + 1 :]
            errors = [e for e in reaction if e.name == "realtime:tool:error"]
            refused = bool(errors) and isinstance(errors[-1].payload.error, CharivoStateError)
            must_refuse = not call_id or not (
                ctx.delivery_state.session.status == _ACTIVE
                and ctx.delivery_state.connection == _CONNECTED
            )
            if must_refuse and not refused:
                raise Broken(
                    f"tool call {call_id!r} was not refused although "
                    + (
                        "it has no call id"
                        if not call_id
                        else f"the session is {ctx.delivery_state.session.status}/"
                        f"{ctx.delivery_state.connection}"
                    )
                )
            if not refused:
                sendable[call_id] += 1
                if "realtime:tool:error" not in after:
                    runnable[call_id] += 1
            reaction = None
        elif kind is ToolRan:
            assert isinstance(seen, ToolRan)
            runs[seen.call_id] += 1
            if runs[seen.call_id] > runnable[seen.call_id]:
                raise Broken(f"the handler ran for tool call {seen.call_id!r}, which was refused")
        elif kind is CallEntered:
            assert isinstance(seen, CallEntered)
            if seen.call.method == "send_tool_result":
                call_id = seen.call.args[0]
                sends[call_id] += 1
                if sends[call_id] > sendable[call_id]:
                    raise Broken(f"a second send_tool_result for tool call {call_id!r}")
        elif kind is CallExited:
            assert isinstance(seen, CallExited)
            if seen.call.method == "send_tool_result" and seen.call.outcome == "ok":
                sent_ok[seen.call.args[0]] += 1
        elif kind is Exited:
            for call_id, count in delivered.items():
                if outcomes[call_id] != count:
                    raise Broken(
                        f"tool call {call_id!r}: {count} call(s) but {outcomes[call_id]} "
                        "outcome(s) after the manager exited"
                    )


@_invariant(
    "D9",
    "a transport StateUpdate changes only the response (never the connection, the "
    "session status, its config or character)",
)
def state_updates_touch_only_the_response(ctx: Context) -> Generator[None, Observation, None]:
    while True:
        seen = yield
        if type(seen) is Delivered:
            assert isinstance(seen, Delivered)
            if type(seen.event) is not StateUpdate:
                continue
            before, after = ctx.delivery_state, seen.state
            if before.connection != after.connection or before.session != after.session:
                raise Broken(
                    f"StateUpdate changed {before.connection}/{before.session.status} to "
                    f"{after.connection}/{after.session.status}"
                )


@_invariant(
    "D11",
    "last_error is always a CharivoError or None; every realtime:error carries a "
    "CharivoError and is followed (audio events aside) by a realtime:state holding "
    "that very object; an error raised to a start/update/stop caller (state errors "
    "aside) was announced exactly once",
)
def errors_are_announced(ctx: Context) -> Generator[None, Observation, None]:
    awaiting: CharivoError | None = None
    announced: list[CharivoError] = []
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if awaiting is not None and not name.startswith("tts:"):
                if name != "realtime:state":
                    raise Broken(f"realtime:error is followed by {name}, not by its state")
                if seen.payload.state.last_error is not awaiting:
                    raise Broken("the state after realtime:error does not hold that error object")
                awaiting = None
            if name == "realtime:error":
                error = seen.payload.error
                if not isinstance(error, CharivoError):
                    raise Broken(f"realtime:error carries {type(error).__name__}")
                awaiting = error
                announced.append(error)
            elif name == "realtime:state":
                last = seen.payload.state.last_error
                if last is not None and not isinstance(last, CharivoError):
                    raise Broken(f"realtime:state holds last_error {type(last).__name__}")
        elif kind is Checkpoint or kind is Exited:
            assert isinstance(seen, (Checkpoint, Exited))
            last = seen.state.last_error
            if last is not None and not isinstance(last, CharivoError):
                raise Broken(f"last_error is {type(last).__name__}: {last}")
            if awaiting is not None:
                raise Broken("realtime:error was not followed by a realtime:state")
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            error = command.error
            if (
                command.kind in ("start_session", "update_session", "stop_session")
                and isinstance(error, CharivoError)
                and not isinstance(error, CharivoStateError)
            ):
                count = sum(1 for e in announced if e is error)
                if count != 1:
                    raise Broken(
                        f"{command.kind} raised {error!r}, announced {count} time(s) in "
                        "realtime:error (expected once, the same object)"
                    )


@_invariant(
    "D14",
    "send_message, send_audio_chunk and interrupt reach the transport only while the "
    "session is active and connected, and raise CharivoStateError otherwise; "
    "start_session is refused while starting, active or stopping",
)
def guards(ctx: Context) -> Generator[None, Observation, None]:
    while True:
        seen = yield
        kind = type(seen)
        if kind is CallEntered:
            assert isinstance(seen, CallEntered)
            call = seen.call
            if call.method in SENDS:
                state = call.state
                if state.session.status != _ACTIVE or state.connection != _CONNECTED:
                    raise Broken(
                        f"{call.method} reached the transport while "
                        f"{state.session.status}/{state.connection}"
                    )
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            before = command.before
            if command.kind in ("send_message", "send_audio_chunk", "interrupt"):
                live = before.session.status == _ACTIVE and before.connection == _CONNECTED
                if not live and not isinstance(command.error, CharivoStateError):
                    raise Broken(
                        f"{command.kind} while {before.session.status}/{before.connection} "
                        f"did not raise CharivoStateError (got {command.error!r})"
                    )
            elif command.kind == "start_session":
                if before.session.status in (_STARTING, _ACTIVE, _STOPPING) and not isinstance(
                    command.error, CharivoStateError
                ):
                    raise Broken(f"start_session while {before.session.status} was not refused")


@_invariant(
    "D15",
    "leaving `async with` takes at most transport_timeout; after it no task of the "
    "manager is left, no caller is still waiting, and the session is stopped (or "
    "idle) with the link closed",
)
def exit_leaves_nothing_running(ctx: Context) -> Generator[None, Observation, None]:
    limit = ctx.config.stop_limit + 1e-6
    left_at: float | None = None
    while True:
        seen = yield
        if type(seen) is Leaving:
            assert isinstance(seen, Leaving)
            left_at = seen.now
        elif type(seen) is Exited:
            assert isinstance(seen, Exited)
            if left_at is not None and seen.now - left_at > limit:
                raise Broken(
                    f"leaving `async with` took {seen.now - left_at:g}s "
                    f"(bound {ctx.config.stop_limit:g}s)"
                )
            if seen.leftover_tasks:
                raise Broken(f"tasks left running after exit: {', '.join(seen.leftover_tasks)}")
            waiting = [c for c in seen.waiting if c.kind in _MANAGED]
            if waiting:
                names = ", ".join(f"{c.kind} (step {c.step})" for c in waiting)
                raise Broken(f"callers still waiting after exit: {names}")
            state = seen.state
            if state.session.status not in _OVER:
                raise Broken(f"the session is {state.session.status} after exit")
            if state.connection not in (ConnectionState.IDLE, ConnectionState.ERROR):
                raise Broken(f"the connection is {state.connection} after exit")
            calls = [c for c in ctx.in_flight if c.method not in SENDS]
            if calls:
                raise Broken(f"transport calls still in flight after exit: {calls}")


# ===========================================================================
# The context: dispatching observations to the invariants
# ===========================================================================


class Context:
    """What the invariants can read, and the dispatcher that feeds them."""

    def __init__(self, config: SuiteConfig, invariants: Sequence[Invariant]) -> None:
        self.config = config
        self.manager: RealtimeManager = None  # type: ignore[assignment]  # set by the driver
        self.in_flight: list[TransportCall] = []
        self.commands: list[Command] = []
        self.requested_voice: str | None = VOICES[0]
        self.delivery_state: RealtimeState = RealtimeState()
        self.violation: InvariantViolation | None = None
        self._seq = 0
        self._live: list[tuple[Invariant, Generator[None, Observation, None]]] = []
        for invariant in invariants:
            checker = invariant.check(self)
            next(checker)
            self._live.append((invariant, checker))

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def waiting(self) -> list[Command]:
        return [c for c in self.commands if not c.done]

    def observe(self, seen: Observation) -> None:
        if self.violation is not None:
            return
        for entry in self._live:
            invariant, checker = entry
            try:
                checker.send(seen)
            except Broken as broken:
                self.violation = InvariantViolation(invariant, str(broken))
                return
            except StopIteration:  # pragma: no cover - checkers loop forever
                self._live.remove(entry)
            except Exception as error:  # a bug in a checker: report it as such
                self.violation = InvariantViolation(
                    invariant, f"the checker itself raised {type(error).__name__}: {error}"
                )
                return


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
        self.ctx.observe(Emitted(name, payload))
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
    """Wraps a transport: reports every call and every delivered event."""

    def __init__(self, inner: RealtimeTransport, ctx: Context) -> None:
        self.inner = inner
        self.ctx = ctx

    def on_event(self, callback: EventCallback) -> None:
        ctx = self.ctx

        def deliver(event: TransportEvent) -> None:
            before = ctx.manager.state
            previous, ctx.delivery_state = ctx.delivery_state, before
            ctx.observe(Delivering(event, before))
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


# ===========================================================================
# Steps
# ===========================================================================

_TOOL_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
}
TOOL_NAMES = ("quick", "lagging", "failing", "slow", "nonjson")


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


@attrs.frozen(slots=True, repr=False)
class Send(Step):
    what: Literal["send_message", "send_audio_chunk", "interrupt"]

    def __repr__(self) -> str:
        args = {"send_message": "'hello'", "send_audio_chunk": "b'\\x00\\x01'", "interrupt": ""}
        return f"{self.what}({args[self.what]})"

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


def _event_repr(event: Any) -> str:
    if isinstance(event, ErrorEvent):
        return f"ErrorEvent({type(event.error).__name__}({str(event.error)!r}))"
    if isinstance(event, ConnectionLost) and event.error is not None:
        return f"ConnectionLost(cause={event.cause!r}, error={type(event.error).__name__})"
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
        self.manager = create_realtime_manager(
            RecordingTransport(transport, self.ctx),
            default_session_config={"provider": "suite", "voice": VOICES[0]},
            tools=[self.registrations[name] for name in TOOL_NAMES],
            default_tool_timeout=config.default_tool_timeout,
            logger=self.logger,
            reconnect_delays=config.reconnect_delays,
            transport_timeout=config.transport_timeout,
            auto_refresh_tools=True,
            # Programs must replay exactly (Hypothesis shrinks and re-runs them): the
            # delays are the configured ones, without the default random jitter.
            reconnect_jitter=0.0,
        )
        self.manager.set_event_emitter(self.emitter)
        self.ctx.manager = self.manager
        self._callers: anyio.abc.TaskGroup | None = None
        self._caller_tasks: set[int] = set()

    # ------------------------------------------------------------------ tools

    def _tools(self) -> dict[str, RealtimeToolRegistration]:
        ctx, config = self.ctx, self.config

        def ran(context: RealtimeToolContext) -> None:
            ctx.observe(ToolRan(context.call_id, ctx.manager.state))

        async def quick(args: dict[str, Any], context: RealtimeToolContext) -> Any:
            ran(context)
            return {"success": True, "n": args["n"]}

        async def lagging(args: dict[str, Any], context: RealtimeToolContext) -> Any:
            ran(context)
            await anyio.sleep(config.lagging_tool_seconds)
            return {"success": True, "n": args["n"]}

        async def failing(args: dict[str, Any], context: RealtimeToolContext) -> Any:
            ran(context)
            raise RuntimeError("the tool failed")

        async def slow(args: dict[str, Any], context: RealtimeToolContext) -> Any:
            ran(context)
            await anyio.sleep_forever()

        async def nonjson(args: dict[str, Any], context: RealtimeToolContext) -> Any:
            ran(context)
            return {"success": True, "value": {1, 2}}

        handlers = {
            "quick": quick,
            "lagging": lagging,
            "failing": failing,
            "slow": slow,
            "nonjson": nonjson,
        }
        return {
            name: RealtimeToolRegistration(
                definition=RealtimeTool(name=name, description=name, parameters=_TOOL_SCHEMA),
                handler=handler,
                timeout=config.slow_tool_timeout if name == "slow" else None,
            )
            for name, handler in handlers.items()
        }

    # --------------------------------------------------------------- commands

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
        command = Command(ctx.next_seq(), kind, self.step_no, anyio.current_time(), before)
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


# ===========================================================================
# Hypothesis glue
# ===========================================================================


def step_strategy() -> SearchStrategy[Step]:
    """The Hypothesis strategy for one step (weighted towards interesting ones)."""
    global _STEP_STRATEGY
    if _STEP_STRATEGY is None:
        _STEP_STRATEGY = _build_step_strategy()
    strategy: SearchStrategy[Step] = _STEP_STRATEGY
    return strategy


_STEP_STRATEGY: Any = None


def latency_strategy() -> SearchStrategy[Latency]:
    """The strategy for the latency of each lifecycle call (mostly none)."""
    from hypothesis import strategies as st

    delay = st.sampled_from((0.0, 0.0, 0.0, 0.5, 2.0))
    return st.builds(
        Latency,
        st.tuples(*(st.tuples(st.just(method), delay) for method in _LIFECYCLE_ORDER)),
    )


_LIFECYCLE_ORDER: tuple[MethodName, ...] = ("connect", "update_session", "recover", "disconnect")


def _build_step_strategy() -> SearchStrategy[Step]:
    from hypothesis import strategies as st

    def _weighted(choices: Sequence[SearchStrategy[Step]]) -> SearchStrategy[Step]:
        # One of ``choices``, each as likely as it is repeated there.
        choose = st.sampled_from(tuple(choices))

        @st.composite
        def pick(draw: Callable[[SearchStrategy[Any]], Any]) -> Step:
            chosen: SearchStrategy[Step] = draw(choose)
            drawn: Step = draw(chosen)
            return drawn

        return pick()

    voices = st.sampled_from(VOICES)
    lost = st.one_of(
        st.just(ConnectionLost(cause="network")),
        st.builds(
            ConnectionLost,
            cause=st.just("network"),
            error=st.builds(OSError, st.just("connection reset")),
        ),
    )
    tool_call = st.builds(
        ToolCall,
        name=st.sampled_from(("quick", "quick", "lagging", *TOOL_NAMES[2:], "ghost")),
        args=st.sampled_from(({"n": 1}, {"n": 1}, {"n": 1}, {"n": "x"}, {})),
        call_id=st.sampled_from(("c1", *CALL_IDS)),
    )
    response = st.one_of(
        st.just(AssistantResponseStarted()),
        st.builds(AssistantTextDelta, text=st.sampled_from(("Hel", "lo"))),
        st.just(AssistantResponseCompleted()),
        st.just(
            AssistantResponseCompleted(
                text="Hello", usage={"total_tokens": 7}, model="m", response_id="r1"
            )
        ),
    )
    audio = st.one_of(
        st.just(AudioOutputStarted()),
        st.just(AudioOutputEnded()),
        st.builds(AudioLipsync, rms=st.sampled_from((0.0, 0.4))),
    )
    error_event = st.builds(ErrorEvent, error=st.builds(RuntimeError, st.just("provider error")))
    state_update = st.builds(
        StateUpdate,
        response_status=st.sampled_from((None, *ResponseStatus)),
        response_text=st.sampled_from((None, "synced")),
    )
    misc = st.one_of(
        st.just(UserTranscript(text="hi")),
        st.just(ToolResult(name="remote", output={"success": True}, call_id="remote-1")),
    )
    fault_event = st.one_of(
        lost,
        st.just(SessionEnded()),
        st.just(SessionStarted()),
        error_event,
    )
    methods: SearchStrategy[MethodName] = st.sampled_from(
        (
            *("connect", "update_session", "recover", "disconnect") * 2,
            "recover",
            *("send_tool_result",) * 4,
            "send_text",
            "interrupt",
        )
    )
    fail_once = st.builds(Fault, method=methods, action=st.just("fail_once"))
    delay = st.builds(
        Fault,
        method=methods,
        action=st.just("delay"),
        seconds=st.sampled_from((0.5, 1.0, 2.0, 4.0)),
    )
    slow = st.builds(
        Fault, method=methods, action=st.just("slow"), seconds=st.sampled_from((0.5, 1.0, 2.0))
    )
    fail_always = st.builds(Fault, method=methods, action=st.just("fail_always"))
    fault: SearchStrategy[Step] = _weighted(
        (
            fail_once,
            fail_once,
            fail_once,
            delay,
            delay,
            slow,
            st.builds(Fault, method=methods, action=st.just("hang")),
            fail_always,
            fail_always,
            fail_always,
            st.builds(Fault, method=methods, action=st.just("succeed")),
            st.builds(Fault, method=methods, action=st.just("emit_then_raise"), event=fault_event),
        )
    )
    start = st.builds(StartSession, voice=voices)
    update = st.builds(UpdateSession, voice=voices)
    stop = st.just(StopSession())
    concurrent: SearchStrategy[Step] = _weighted(
        (
            start,
            start,
            update,
            update,
            update,
            stop,
            stop,
            st.builds(Deliver, lost),
            st.builds(Deliver, tool_call),
            st.just(Deliver(SessionEnded())),
            st.builds(Deliver, error_event),
        )
    )
    # Weights (out of ~120): what the rules are about -- commands racing each
    # other (Together), faults, lost links, tool calls and time -- comes often;
    # the response and audio traffic that no lifecycle rule depends on, rarely.
    # Shrinking moves towards the first entry of each list: the simplest step is
    # "advance 5s" (longer than every delay and timeout but the watchdog's).
    weighted: list[tuple[int, SearchStrategy[Step]]] = [
        (12, st.builds(Advance, seconds=st.sampled_from((5.0, 0.25, 0.5, 1.0, 2.0, 10.0, 30.0)))),
        (9, start),
        (9, update),
        (6, stop),
        (14, st.builds(Together, st.lists(concurrent, min_size=2, max_size=4).map(tuple))),
        (4, st.builds(Together, st.lists(update, min_size=2, max_size=4).map(tuple))),
        (14, fault),
        (7, st.builds(Deliver, lost)),
        (12, st.builds(Deliver, tool_call)),
        (3, st.just(Deliver(SessionEnded()))),
        (2, st.just(Deliver(SessionStarted()))),
        (5, st.builds(Deliver, response)),
        (2, st.builds(Deliver, audio)),
        (4, st.builds(Deliver, error_event)),
        (2, st.builds(Deliver, state_update)),
        (2, st.builds(Deliver, misc)),
        (3, st.builds(Send, st.sampled_from(("send_message", "send_audio_chunk", "interrupt")))),
        (2, st.builds(ChangeTools, register=st.booleans(), name=st.sampled_from(TOOL_NAMES))),
        (2, st.builds(FailingListeners, st.booleans())),
    ]
    table: list[SearchStrategy[Step]] = []
    for weight, strategy in weighted:
        table.extend([strategy] * weight)
    return _weighted(table)


class _Stats:
    """How many programs ran, and which one first violated an invariant."""

    def __init__(self) -> None:
        self.examples = 0
        self.first_failure: int | None = None
        self.last_failure: ProgramResult | None = None


def run_program(
    data: DataObject,
    *,
    backend: Backend = "trio",
    factory: TransportFactory | None = None,
    config: SuiteConfig | None = None,
    invariants: Sequence[Invariant] | None = None,
    stats: _Stats | None = None,
) -> ProgramResult:
    """Run one program drawn from ``data`` (inside ``@given(st.data())``).

    Raises :class:`InvariantViolation` (with the program's steps as a note) when
    an invariant fails.
    """
    config = config or SuiteConfig()
    steps = step_strategy()
    from hypothesis import strategies as st

    length = data.draw(st.integers(1, config.max_steps), label="steps")
    problem: list[BaseException] = []

    def draw(index: int) -> Step | None:
        if index > length or problem:
            return None
        try:
            if index == 1:
                # The link's latency comes first: slow lifecycle calls open the
                # windows (starting, patching, recovering, stopping) races need.
                latency = data.draw(latency_strategy(), label="latency")
                if any(delay for _method, delay in latency.seconds):
                    return latency
            step: Step = data.draw(steps, label=f"step {index}")
        except BaseException as error:  # Hypothesis' own control flow: re-raised below
            problem.append(error)
            return None
        return step

    driver = Driver(
        draw,
        factory or fake_transport_factory,
        config,
        INVARIANTS if invariants is None else invariants,
    )
    if stats is not None:
        stats.examples += 1
    with _tapped_module_logger(driver.ctx):
        _run_backend(backend, driver.main)
    if problem:
        raise problem[0]
    result = ProgramResult(driver.steps, driver.ctx.violation)
    violation = driver.ctx.violation
    if violation is not None:
        violation.steps = list(driver.steps)
        if stats is not None:
            if stats.first_failure is None:
                stats.first_failure = stats.examples
            stats.last_failure = result
        violation.add_note(format_steps(driver.steps))
        raise violation
    return result


def run_steps(
    steps: Sequence[Step],
    *,
    backend: Backend = "trio",
    factory: TransportFactory | None = None,
    config: SuiteConfig | None = None,
    invariants: Sequence[Invariant] | None = None,
) -> ProgramResult:
    """Run one fixed program (a regression test, a counterexample replayed).

    Raises :class:`InvariantViolation` like :func:`run_program`.
    """
    config = config or SuiteConfig()
    queue = list(steps)

    def draw(index: int) -> Step | None:
        return queue[index - 1] if index <= len(queue) else None

    driver = Driver(
        draw,
        factory or fake_transport_factory,
        attrs.evolve(config, max_steps=max(len(queue), 1)),
        INVARIANTS if invariants is None else invariants,
    )
    with _tapped_module_logger(driver.ctx):
        _run_backend(backend, driver.main)
    violation = driver.ctx.violation
    if violation is not None:
        violation.steps = list(driver.steps)
        violation.add_note(format_steps(driver.steps))
        raise violation
    return ProgramResult(driver.steps, None)


def format_steps(steps: Sequence[str]) -> str:
    """A counterexample as a numbered step list."""
    lines = ["program:"]
    lines += [f"  {number:>2}. {text}" for number, text in enumerate(steps, 1)]
    return "\n".join(lines)


@attrs.define(slots=True)
class SuiteResult:
    """The outcome of :func:`run_suite` on one backend."""

    backend: Backend
    examples: int
    seconds: float
    violation: InvariantViolation | None = None
    first_failure: int | None = None  # the example that first failed (1-based)
    error: BaseException | None = None  # a failure that is not an invariant (flaky, ...)

    @property
    def ok(self) -> bool:
        return self.violation is None and self.error is None


def run_suite(
    *,
    backend: Backend = "trio",
    examples: int = 100,
    seed: int | None = None,
    factory: TransportFactory | None = None,
    config: SuiteConfig | None = None,
    shrink: bool = True,
    invariants: Sequence[Invariant] | None = None,
) -> SuiteResult:
    """Run ``examples`` programs on ``backend`` and report the first violation.

    With ``shrink`` the violation's steps are Hypothesis' shrunk counterexample;
    without, the first failing program as generated (faster, used to count how
    many examples a planted bug needs).
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seed_with
    from hypothesis import strategies as st

    stats = _Stats()
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=phases,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(data=st.data())
    def program(data: DataObject) -> None:
        run_program(
            data,
            backend=backend,
            factory=factory,
            config=config,
            invariants=invariants,
            stats=stats,
        )

    test = seed_with(seed)(program) if seed is not None else program
    started = time.perf_counter()
    violation: InvariantViolation | None = None
    error: BaseException | None = None
    try:
        test()
    except InvariantViolation as raised:
        violation = raised
    except Exception as raised:
        error = raised
        if stats.last_failure is not None:
            violation = stats.last_failure.violation
    examples_run = stats.examples if stats.first_failure is None else stats.first_failure
    return SuiteResult(
        backend,
        examples_run,
        time.perf_counter() - started,
        violation,
        stats.first_failure,
        error,
    )


def describe_invariants() -> list[str]:
    """One line per invariant: ``[rule] name: summary``."""
    return [f"[{inv.rule}] {inv.name}: {inv.summary}" for inv in INVARIANTS]


assert len({inv.name for inv in INVARIANTS}) == len(INVARIANTS)
