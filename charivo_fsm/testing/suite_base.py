"""The semantic suite's vocabulary: its settings, the observations the invariants
are sent, the invariant registry and the context that dispatches to them.

See :mod:`charivo_fsm.testing.suite` for what the suite is and how it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Literal

import attrs

from ..manager import RealtimeManager
from ..model import ConnectionState, RealtimeState, SessionStatus

__all__ = [
    "BACKENDS",
    "INVARIANTS",
    "Backend",
    "Broken",
    "Context",
    "Invariant",
    "InvariantViolation",
    "Observation",
    "Reaction",
    "Reactions",
    "SuiteConfig",
]

Backend = Literal["asyncio", "trio"]
BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")

# ===========================================================================
# Configuration of the programs
# ===========================================================================


@attrs.frozen(slots=True)
class SuiteConfig:
    """The manager settings and program shape the suite uses (virtual seconds)."""

    transport_timeout: float = 5.0
    reconnect_delays: tuple[float, ...] = (0.5, 1.0)
    # The manager's reconnect jitter (a fraction of each delay, D6).  The programs
    # draw the random values themselves (see ``Driver``), so they replay exactly.
    reconnect_jitter: float = 0.1
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
        """The bound a stop must finish within (``stop_bound``, else ``transport_timeout``)."""
        return self.stop_bound if self.stop_bound is not None else self.transport_timeout


VOICES = ("marin", "alloy", "verse")
CALL_IDS: tuple[str | None, ...] = ("c1", "c2", "c3", None, "")
LIFECYCLE = frozenset({"connect", "update_session", "recover", "disconnect"})
CONFIG_CALLS = frozenset({"connect", "update_session", "recover"})
# The send methods: called by a user command, in its task.
SENDS = frozenset({"send_text", "send_audio", "interrupt", "commit_audio", "clear_audio"})
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
    exited_at: float | None = None

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
    voice: str | None = None  # the voice a start or update asks for
    args: tuple[Any, ...] = ()  # mark_played: (item_id, played_ms)
    task_id: int | None = None
    done: bool = False
    error: BaseException | None = None
    returned_at: float | None = None


@attrs.frozen(slots=True)
class Emitted:
    name: str
    payload: Any
    at: float = 0.0  # anyio time of the emit


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
    at: float = 0.0


@attrs.frozen(slots=True)
class Delivered:
    event: Any
    state: RealtimeState


@attrs.frozen(slots=True)
class ToolRan:
    """A handler of the suite's tools started for ``call_id``."""

    call_id: str
    state: RealtimeState
    name: str = ""
    at: float = 0.0


@attrs.frozen(slots=True)
class ToolStopped:
    """A handler of the suite's tools ended: ``returned``, ``raised`` or ``cancelled``."""

    call_id: str
    name: str
    how: Literal["returned", "raised", "cancelled"]
    at: float


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
    | ToolStopped
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


@attrs.define(slots=True)
class Reaction:
    """What the manager emitted while it handled one delivered transport event."""

    event: Any
    before: RealtimeState  # manager.state when the event was delivered
    note: Any = None  # what the invariant noted when the delivery began
    emitted: list[Emitted] = attrs.Factory(list)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.emitted]


class Reactions:
    """The deliveries an invariant watches, and what each emitted.

    Feed every observation to :meth:`feed`; :meth:`watch` a delivery when it
    begins (at its :class:`Delivering`).  ``feed`` returns the :class:`Reaction`
    of a watched delivery when it ends (at its :class:`Delivered`), else None.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: list[Reaction] = []

    def watch(self, seen: Delivering, note: Any = None) -> None:
        self._open.append(Reaction(seen.event, seen.state, note))

    def feed(self, seen: Observation) -> Reaction | None:
        kind = type(seen)
        if kind is Emitted and self._open:
            assert isinstance(seen, Emitted)
            for reaction in self._open:
                reaction.emitted.append(seen)
        elif kind is Delivered and self._open:
            assert isinstance(seen, Delivered)
            if self._open[-1].event is seen.event:
                return self._open.pop()
        return None


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
        # Set by the driver: the transport's fault handle (TransportFaults, maybe
        # TransportRules) and whether the transport is a VoiceTransport.
        self.faults: Any = None
        self.voice = False
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
