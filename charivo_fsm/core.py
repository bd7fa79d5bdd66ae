"""The pure core: inputs in, effects out.

Rules of this file:

* No I/O, no clock of its own, no awaiting.  The core is driven by calls --
  user commands (:meth:`Core.start`, :meth:`Core.update`, :meth:`Core.stop`,
  ...), transport events (:meth:`Core.on_event`) and the outcomes of effects
  it asked for (:meth:`Core.op_done`) -- and answers by appending effects
  (plain data, see the classes below) to :attr:`Core.out`.  A driver executes
  them in order; :class:`charivo_fsm.manager.RealtimeManager` is the anyio one,
  a test can be another.
* Lifecycle decisions are made by the declared machines of
  :mod:`charivo_fsm.machines`; this file supplies their guards and effects
  (methods named exactly as in the declarations).
* Every asynchronous effect carries a token.  A token is current until its
  outcome arrives or the core cancels it; an outcome whose token is no longer
  current is dropped.  That one rule is what keeps a cancelled reconnect, a
  discarded patch or a cancelled tool call from writing state.
* State is written before anything is emitted, so a listener that reads the
  manager's state sees the state the event announces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import attrs

from .config import build_realtime_session_config, merge_config, with_tools
from .errors import (
    CharivoError,
    CharivoStateError,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
    to_charivo_error,
)
from .events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputDelta,
    AudioOutputEnded,
    AudioOutputStarted,
    ConnectionLost,
    ErrorEvent,
    RateLimitsUpdated,
    SessionEnded,
    SessionStarted,
    StateUpdate,
    ToolCall,
    ToolResult,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
    UserTranscriptDelta,
)
from .machines import AUDIO, CONNECTION, MACHINES, REFRESH, RESPONSE, SESSION
from .model import (
    Character,
    ConnectionState,
    RealtimeSessionConfig,
    RealtimeState,
    RealtimeToolContext,
    ResponseState,
    ResponseStatus,
    SessionState,
    SessionStatus,
    ToolHandler,
)
from .payloads import (
    AssistantStartPayload,
    AudioDeltaPayload,
    EmptyPayload,
    ErrorPayload,
    LipsyncPayload,
    RateLimitsPayload,
    ReconnectAttemptPayload,
    ReconnectExhaustedPayload,
    ReconnectSuccessPayload,
    SessionBoundaryPayload,
    SpeechStartPayload,
    SpeechStopPayload,
    TextPayload,
    ToolCallPayload,
    ToolErrorPayload,
    ToolResultPayload,
    TranscriptDeltaPayload,
    UsagePayload,
    lipsync_payload,
    state_payload,
    text_payload,
)
from .tools import ToolRegistry, check_tool_output, validate_tool_arguments
from .voice import AudioItems, bytes_per_ms
from .wire import structure_config

__all__ = [
    "Cancel",
    "Connect",
    "Core",
    "Disconnect",
    "Effect",
    "Emit",
    "Log",
    "OpTimeout",
    "Patch",
    "Project",
    "Recover",
    "RunTool",
    "SendToolResult",
    "Settle",
    "Sleep",
    "Truncate",
]

# --------------------------------------------------------------------------
# Effects
# --------------------------------------------------------------------------


class Emit(NamedTuple):
    """Call the emitter: ``emitter.emit(name, payload)``."""

    name: str
    payload: Any


class Log(NamedTuple):
    """Write one log record (``context["event"]`` is ``event``)."""

    level: int
    message: str
    context: dict[str, Any]


class Connect(NamedTuple):
    token: int
    config: RealtimeSessionConfig


class Patch(NamedTuple):
    token: int
    config: RealtimeSessionConfig


class Recover(NamedTuple):
    token: int
    config: RealtimeSessionConfig


class Disconnect(NamedTuple):
    token: int
    cleanup: bool  # True: after a remote end / failure; the outcome is only logged


class Sleep(NamedTuple):
    token: int
    delay: float


class RunTool(NamedTuple):
    token: int
    name: str
    handler: ToolHandler
    args: dict[str, Any]
    context: RealtimeToolContext
    timeout: float


class SendToolResult(NamedTuple):
    token: int
    call_id: str
    output: Mapping[str, Any]


class Project(NamedTuple):
    """Run the result projectors for a tool result that was sent."""

    name: str
    output: Mapping[str, Any]
    call_id: str


class Truncate(NamedTuple):
    """Truncate the assistant audio item ``item_id`` at ``audio_end_ms`` (a voice
    transport's ``truncate_audio``); the outcome is only logged."""

    token: int
    item_id: str
    audio_end_ms: int


class Cancel(NamedTuple):
    """Cancel the pending effect with this token (its outcome will be ignored)."""

    token: int


class Settle(NamedTuple):
    """Wake a caller waiting on ``ticket``; raise ``error`` there if not None."""

    ticket: Any
    error: CharivoError | None


Effect = (
    Emit
    | Log
    | Connect
    | Patch
    | Recover
    | Disconnect
    | Sleep
    | RunTool
    | SendToolResult
    | Project
    | Truncate
    | Cancel
    | Settle
)


class OpTimeout(Exception):
    """Reported by a driver as the failure of an effect that ran out of time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g}s")
        self.seconds = seconds


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

_CONNECTION_VALUES = {s: ConnectionState(CONNECTION.public[s]) for s in CONNECTION.states}
_SESSION_VALUES = {s: SessionStatus(SESSION.public[s]) for s in SESSION.states}
_RESPONSE_VALUES = {s: ResponseStatus(s) for s in RESPONSE.states}
_RECONNECTING = frozenset({"backoff", "recovering"})
_BETWEEN_SESSIONS = frozenset({"idle", "stopped"})
_EMPTY = EmptyPayload()
_LIPSYNC_ZERO = LipsyncPayload(0.0)
_LIPSYNC_THRESHOLD = 0.001

# The fields an update may set on the base config (tools come only from the registry).
_MERGED_FIELDS = tuple(
    field.name for field in attrs.fields(RealtimeSessionConfig) if field.name != "tools"
)

_OpCallback = Callable[[Any], None]


def _no_randomness() -> float:
    return 0.5  # the middle of the jitter range: no jitter


class _ToolCallRecord:
    """Bookkeeping for one tool call id until its outcome and sends are done.

    The record is also what its pending operation (the handler, or a send) reports
    to: ``Core.op_done`` hands the outcome to ``Core._tool_op_done`` with the record,
    which goes on according to the phase.
    """

    __slots__ = ("call_id", "name", "output", "phase", "token")

    def __init__(self, name: str, call_id: str, phase: str) -> None:
        self.name = name
        self.call_id = call_id
        self.token = 0
        # running: the handler runs; sending: the success result is being sent;
        # failing: the outcome was emitted, the failure result is being sent.
        self.phase = phase
        self.output: Mapping[str, Any] | None = None  # the result being sent


# ``Emit(name, payload)`` without the Python-level ``__new__`` of a NamedTuple (the
# same object; the emits of a streamed response are the most frequent effects).
_tuple_new = tuple.__new__


# --------------------------------------------------------------------------
# The core
# --------------------------------------------------------------------------


class Core:
    """The synchronous engine of one manager.  See the module docstring."""

    __slots__ = (
        "_accepted_base",
        "_applied",
        "_attempt",
        "_auto_refresh_tools",
        "_base",
        "_base_changes",
        "_batch",
        "_calls",
        "_carried",
        "_cause",
        "_character",
        "_character_id",
        "_cleanup_op",
        "_clock",
        "_config",
        "_connect_op",
        "_default_tool_timeout",
        "_delays",
        "_disconnect_op",
        "_held_errors",
        "_input",
        "_jitter",
        "_last_error",
        "_link_op",
        "_loop_started",
        "_lost_error",
        "_new_session_id",
        "_next_token",
        "_op_base",
        "_ops",
        "_parts",
        "_patch_op",
        "_pending",
        "_random",
        "_recover_cause",
        "_recover_error",
        "_session_snap",
        "_start_ticket",
        "_stop_tickets",
        "_tool_error_detail",
        "_voice",
        "_waiters",
        "_want",
        "audio",
        "connection",
        "out",
        "refresh",
        "registry",
        "response",
        "session",
        "session_id",
    )

    def __init__(
        self,
        *,
        registry: ToolRegistry,
        default_config: RealtimeSessionConfig | None = None,
        reconnect_delays: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 5.0),
        default_tool_timeout: float = 10.0,
        auto_refresh_tools: bool = False,
        tool_error_detail: bool = False,
        reconnect_jitter: float = 0.0,
        random: Callable[[], float] = _no_randomness,
        clock: Callable[[], float],
        new_session_id: Callable[[], str],
        applied: Callable[[RealtimeSessionConfig], RealtimeSessionConfig] | None = None,
    ) -> None:
        self.out: list[Effect] = []
        self._tool_error_detail = tool_error_detail
        self._applied = applied
        self._jitter = reconnect_jitter
        self._random = random
        self.registry = registry
        self.session = SESSION.runner()
        self.connection = CONNECTION.runner()
        self.refresh = REFRESH.runner()
        self.response = RESPONSE.runner()
        self.audio = AUDIO.runner()
        self._clock = clock
        self._new_session_id = new_session_id
        self._delays = tuple(map(float, reconnect_delays))
        self._default_tool_timeout = float(default_tool_timeout)
        self._auto_refresh_tools = auto_refresh_tools

        self._base: RealtimeSessionConfig | None = default_config
        # The base a config operation in flight was built from, and the base of the
        # latest config the transport accepted: a refused patch puts the base back to
        # the accepted one, so a refused value is not re-sent by a reconnect (§11).
        self._op_base: RealtimeSessionConfig | None = default_config
        self._accepted_base: RealtimeSessionConfig | None = default_config
        # Fields of updates not yet folded into ``_base`` (None: nothing pending).  Folding
        # them once, when the base is needed, gives the same config as merging every
        # update in turn (the latest non-None value of each field wins).
        self._base_changes: dict[str, Any] | None = None
        self._character: Character | None = None
        self._character_id: str | None = None
        self._config: RealtimeSessionConfig | None = None
        self._last_error: CharivoError | None = None
        self._parts: list[str] = []
        self._session_snap: SessionState | None = None
        self.session_id: str | None = None

        self._next_token = 0
        self._ops: dict[int, tuple[_OpCallback, _OpCallback] | _ToolCallRecord] = {}
        self._connect_op: int | None = None
        self._link_op: int | None = None  # the reconnect's current sleep or recover
        self._patch_op: int | None = None
        self._disconnect_op: int | None = None
        self._cleanup_op: int | None = None  # a clean-up disconnect still pending

        # Refresh bookkeeping: every update request gets the next version; an
        # operation that carries the config (connect, patch, recover) records the
        # version it was built at, and settles the callers up to that version.
        self._want = 0
        self._carried = 0
        self._pending: RealtimeSessionConfig | None = None
        # The lists below are None while empty (most of the time): a manager is cheap
        # to create and keeps few objects for the garbage collector to visit.
        self._waiters: list[tuple[int, Any]] | None = None
        # Changes whenever a config operation starts carrying the requests made so far
        # or waiters are settled: waiters registered while it stays the same are always
        # settled together, by the same Settle batch (see ``waiter_batch``).
        self._batch = 0
        self._held_errors: list[CharivoError] | None = None
        self._start_ticket: Any = None
        self._stop_tickets: list[Any] | None = None

        self._cause = ""
        self._lost_error: BaseException | None = None
        self._attempt = 0
        self._loop_started = 0.0
        self._recover_error: CharivoError | None = None
        self._recover_cause: BaseException | None = None  # the raw last recover error

        self._calls: dict[str, _ToolCallRecord] = {}
        self._input: Any = None
        self._voice = AudioItems(clock)

    # ------------------------------------------------------------------ state

    def _session_state(self) -> SessionState:
        snap = self._session_snap
        if snap is None:
            snap = self._session_snap = SessionState(
                _SESSION_VALUES[self.session.state], self._config, self._character_id
            )
        return snap

    def _sync_character_id(self) -> None:
        """Rewrite ``character_id`` from the current character (R83) and drop the
        cached session snapshot."""
        character = self._character
        self._character_id = character.id if character is not None else None
        self._session_snap = None

    def _touch_session(self) -> None:
        self._session_snap = None

    def snapshot(self) -> RealtimeState:
        parts = self._parts
        if len(parts) > 1:
            parts = self._parts = ["".join(parts)]
        text = parts[0] if parts else ""
        return RealtimeState(
            _CONNECTION_VALUES[self.connection.state],
            self._session_state(),
            ResponseState(_RESPONSE_VALUES[self.response.state], text),
            self._last_error,
        )

    @property
    def text(self) -> str:
        return self.snapshot().response.text

    @property
    def last_error(self) -> CharivoError | None:
        return self._last_error

    @property
    def reconnecting_now(self) -> bool:
        return self.connection.state in _RECONNECTING

    # --------------------------------------------------------------- emitting

    def _emit(self, name: str, payload: Any) -> None:
        self.out.append(_tuple_new(Emit, (name, payload)))

    def _emit_state(self) -> None:
        # The state is captured now and materialised on first access: the pieces are
        # immutable, and the text is the first ``count`` parts (later deltas append).
        connection = _CONNECTION_VALUES[self.connection.state]
        session = self._session_snap
        if session is None:
            session = self._session_state()
        status = _RESPONSE_VALUES[self.response.state]
        parts = self._parts
        count = len(parts)
        last_error = self._last_error

        def build() -> RealtimeState:
            text = parts[0] if count == 1 else "".join(parts[:count])
            return RealtimeState(connection, session, ResponseState(status, text), last_error)

        self.out.append(_tuple_new(Emit, ("realtime:state", state_payload(build))))

    def _log(self, level: int, event: str, message: str, **context: Any) -> None:
        context["event"] = event
        if self.session_id is not None:
            context["session_id"] = self.session_id
        self.out.append(Log(level, message, context))

    def _drop(self, what: str) -> None:
        self._log(logging.DEBUG, "event.dropped", "Realtime input dropped", input=what)

    # ------------------------------------------------------------------- ops

    def _op(self, on_ok: _OpCallback, on_fail: _OpCallback) -> int:
        self._next_token += 1
        token = self._next_token
        self._ops[token] = (on_ok, on_fail)
        return token

    def _cancel(self, token: int | None) -> None:
        if token is not None and self._ops.pop(token, None) is not None:
            self.out.append(Cancel(token))

    def op_done(self, token: int, error: BaseException | None = None, value: Any = None) -> None:
        """Feed the outcome of the effect ``token``; stale tokens are ignored."""
        callbacks = self._ops.pop(token, None)
        if callbacks is None:
            return
        if isinstance(callbacks, _ToolCallRecord):
            self._tool_op_done(callbacks, error, value)
        elif error is None:
            callbacks[0](value)
        else:
            callbacks[1](error)

    def pending_ops(self) -> int:
        return len(self._ops)

    @property
    def cleanup_pending(self) -> bool:
        """Whether a clean-up ``disconnect`` (after a remote end, D17.13) is pending."""
        return self._cleanup_op is not None

    def _settle(self, ticket: Any, error: CharivoError | None = None) -> None:
        if ticket is not None:
            self.out.append(Settle(ticket, error))

    @property
    def waiter_batch(self) -> int:
        """Requests registered by :meth:`update` while this value does not change are
        settled together (same moment, same error): every later config operation
        carries all of them or none, and a settle of the waiters takes all or none."""
        return self._batch

    def _carry(self) -> None:
        """A config operation starts: it carries every request made so far."""
        self._carried = self._want
        self._batch += 1

    def _settle_waiters(self, upto: int | None, error: CharivoError | None = None) -> None:
        self._batch += 1
        waiters = self._waiters
        if not waiters:
            return
        keep: list[tuple[int, Any]] = []
        for version, ticket in waiters:
            if upto is None or version <= upto:
                self.out.append(Settle(ticket, error))
            else:
                keep.append((version, ticket))
        self._waiters = keep or None

    def _merge_base(self, override: RealtimeSessionConfig | None) -> None:
        """``merge_config(base, override)``, folded lazily (see ``_base_changes``)."""
        if override is None:
            return
        if not isinstance(override, RealtimeSessionConfig):
            override = structure_config(override)
        changes = self._base_changes
        if changes is None:
            changes = self._base_changes = {}
        for name in _MERGED_FIELDS:
            value = getattr(override, name)
            if value is not None:
                changes[name] = value

    def _base_config(self) -> RealtimeSessionConfig | None:
        """The base config with every update so far merged in (D13)."""
        changes = self._base_changes
        if changes is not None:
            self._base_changes = None
            base = self._base
            if base is None:
                base = RealtimeSessionConfig()
            self._base = merge_config(base, RealtimeSessionConfig(**changes)) if changes else base
        return self._base

    def _effective(self) -> RealtimeSessionConfig:
        """The config sent to the transport: base + character, tools from the registry.

        Only config operations (connect, patch, recover) call this; the base it was
        built from is remembered for :meth:`_accept_base` / :meth:`fail_patch`."""
        base = self._op_base = self._base_config()
        config = with_tools(
            build_realtime_session_config(self._character, base), self.registry.definitions()
        )
        applied = self._applied
        if applied is not None:
            # The transport says what it applies (its kind, the model it uses), so
            # the state shows the truth (a transport without the hook: as built).
            try:
                described = applied(config)
            except Exception as error:
                self._log(
                    logging.WARNING,
                    "transport.error",
                    "Realtime transport applied_config failed",
                    error=repr(error),
                )
            else:
                if isinstance(described, RealtimeSessionConfig):
                    config = described
        return config

    def _accept_base(self) -> None:
        self._accepted_base = self._op_base

    @staticmethod
    def _transport_error(error: BaseException, what: str) -> CharivoError:
        if isinstance(error, OpTimeout):
            return CharivoTimeoutError(
                f"Realtime transport {what} timed out after {error.seconds:g}s"
            )
        return to_charivo_error("transport", error)

    # =============================================================== commands

    def start(self, override: RealtimeSessionConfig | None, ticket: Any) -> None:
        """start_session: raises :class:`CharivoStateError` when refused (D14)."""
        self._input = (override, ticket)
        if not self.session.fire(self, "start"):
            if self.session.state in ("stopping", "cancelling"):
                raise CharivoStateError("Realtime session is stopping")
            raise CharivoStateError("Realtime session already active")

    def update(self, override: RealtimeSessionConfig | None, ticket: Any) -> None:
        """update_session: merge the base, then patch, coalesce or cache (D5, D17)."""
        self._merge_base(override)
        self._want += 1
        if ticket is not None:
            waiters = self._waiters
            if waiters is None:
                waiters = self._waiters = []
            waiters.append((self._want, ticket))
        self._input = ticket
        self.refresh.fire(self, "update")

    def stop(self, ticket: Any) -> None:
        """stop_session (D4)."""
        self._input = ticket
        self.session.fire(self, "stop")

    def check_send(self) -> None:
        """Guards of send_message / send_audio_chunk / interrupt (D14)."""
        state = self.session.state
        if state == "active":
            if self.connection.state == "connected":
                return
            raise CharivoStateError("Realtime session is reconnecting")
        if state in ("stopping", "cancelling"):
            raise CharivoStateError("Realtime session is stopping")
        raise CharivoStateError("Realtime session not active")

    def interrupted(self) -> None:
        """The transport accepted interrupt(): interrupt the turn, cut the audio
        (truncating the item being played at its played position, D7, §11)."""
        self.response.fire(self, "interrupt")
        self.audio.fire(self, "cut")
        self._emit_state()

    def mark_played(self, item_id: str, played_ms: int) -> None:
        """The app played ``item_id`` up to ``played_ms``; raises
        :class:`CharivoValidationError` for an item the engine never received."""
        self._input = item_id
        if not self.audio.fire(self, "mark"):
            raise CharivoValidationError(
                f"mark_played: unknown assistant audio item {item_id!r}"
                if self.session.state not in _BETWEEN_SESSIONS
                else "mark_played: no session is active"
            )
        self._voice.mark(item_id, played_ms)

    def input_audio_format(self) -> str | None:
        """The input audio format of the live session (None: the provider default)."""
        config = self._config
        return None if config is None else config.input_audio_format

    def set_character(self, character: Character | None) -> None:
        self._character = character
        self._character_id = character.id if character is not None else None
        self._touch_session()
        self._emit_state()

    @property
    def character(self) -> Character | None:
        return self._character

    def tools_changed(self) -> None:
        """The registry changed; refresh a live session when configured to (D16)."""
        if self._auto_refresh_tools and self.session.state == "active":
            self._want += 1
            self._input = None
            self.refresh.fire(self, "update")

    # ================================================================= guards

    def reconnecting(self) -> bool:
        return self.connection.state in _RECONNECTING

    def attempts_left(self) -> bool:
        return self._attempt < len(self._delays)

    def can_patch(self) -> bool:
        return self.session.state == "active" and self.connection.state == "connected"

    def has_item(self) -> bool:
        return self._voice.current is not None

    def unplayed_audio(self) -> bool:
        return self._voice.unplayed()

    def known_item(self) -> bool:
        return self.session.state not in _BETWEEN_SESSIONS and self._voice.known(self._input)

    def late_chunk(self) -> bool:
        """A chunk of an item that was cut, already on its way when it was cut (while
        muted, a chunk without an item id counts as one too)."""
        item_id: str | None = self._input.item_id
        if item_id is None:
            return self.audio.state == "muted"
        return self._voice.was_cut(item_id)

    def audible(self) -> bool:
        level: float = self._input.rms
        return level > _LIPSYNC_THRESHOLD

    def emit_level(self) -> None:
        event: AudioLipsync = self._input
        self.out.append(_tuple_new(Emit, ("tts:lipsync:update", lipsync_payload(event.rms))))

    def response_cancelled(self) -> bool:
        event: AssistantResponseCompleted = self._input
        return event.status == "cancelled"

    # ========================================================= session effects

    def begin_start(self) -> None:
        override, ticket = self._input
        self._merge_base(override)
        self._want += 1
        self.session_id = self._new_session_id()
        self._start_ticket = ticket
        config = self._effective()
        self._carry()
        self._pending = config
        self.connection.fire(self, "open")
        self.response.fire(self, "reset")
        self._parts = []
        self._config = None
        self._last_error = None
        self._sync_character_id()
        self._emit_state()
        token = self._connect_op = self._op(self._on_connect_ok, self._on_connect_failed)
        self.out.append(Connect(token, config))

    def _on_connect_ok(self, _value: Any) -> None:
        self._connect_op = None
        self.connection.fire(self, "connect_ok")
        self.session.fire(self, "connect_ok")

    def _on_connect_failed(self, error: BaseException) -> None:
        self._connect_op = None
        self._input = self._transport_error(error, "connect")
        self.connection.fire(self, "connect_failed")
        self.session.fire(self, "connect_failed")

    def commit_start(self) -> None:
        self._accept_base()
        self._config = self._pending
        self._sync_character_id()
        self._emit_state()
        self._log(
            logging.INFO,
            "session.started",
            "Realtime session started",
            reason="user",
            connection=CONNECTION.public[self.connection.state],
        )
        self._emit("realtime:session:start", SessionBoundaryPayload(self.snapshot(), "user"))
        self._settle(self._start_ticket)
        self._start_ticket = None
        self._settle_waiters(self._carried)
        if self.connection.state == "backoff":
            self._begin_reconnect_loop()
        else:
            self._refresh_if_owed()

    def _refresh_if_owed(self) -> None:
        if self._want > self._carried:
            self._input = None
            self.refresh.fire(self, "update")

    def _finish_session(self) -> None:
        """Common end of every session: status stopped, config None, response idle."""
        self._config = None
        self._sync_character_id()
        self.response.fire(self, "reset")
        self._parts = []
        self._touch_session()

    def _end_session_id(self) -> None:
        self.session_id = None

    def fail_start(self) -> None:
        error: CharivoError = self._input
        self._fail_start_with(error)

    def fail_start_remote(self) -> None:
        error = CharivoTransportError("Realtime session ended by the remote side while starting")
        self.connection.fire(self, "fail")
        self._fail_start_with(error)

    def _fail_start_with(self, error: CharivoError) -> None:
        self._last_error = error
        self._finish_session()
        self.audio.fire(self, "reset")
        self._emit("realtime:error", ErrorPayload(error))
        self._emit_state()
        self._log(logging.ERROR, "session.failed", "Realtime session failed", error=error.message)
        self._settle(self._start_ticket, error)
        self._start_ticket = None
        self._settle_waiters(None)
        self._end_session_id()

    def cancel_start(self) -> None:
        self._add_stop_ticket(self._input)
        self._settle_waiters(None)
        self.connection.fire(self, "close")
        self._touch_session()
        self._emit_state()

    def begin_stop(self) -> None:
        self._add_stop_ticket(self._input)
        self.refresh.fire(self, "abort")
        self._settle_waiters(None)
        self._cancel_tools("the session was stopped")
        self.connection.fire(self, "close")
        self._touch_session()
        self._emit_state()

    def join_stop(self) -> None:
        self._add_stop_ticket(self._input)

    def stop_noop(self) -> None:
        self._settle(self._input)

    def _on_disconnect_ok(self, _value: Any) -> None:
        self._disconnect_op = None
        self.connection.fire(self, "closed")
        self.session.fire(self, "disconnect_ok")

    def _on_disconnect_failed(self, error: BaseException) -> None:
        self._disconnect_op = None
        self._input = self._transport_error(error, "disconnect")
        self.connection.fire(self, "close_failed")
        self.session.fire(self, "disconnect_failed")

    def _add_stop_ticket(self, ticket: Any) -> None:
        tickets = self._stop_tickets
        if tickets is None:
            tickets = self._stop_tickets = []
        tickets.append(ticket)

    def _settle_stops(self, error: CharivoError | None) -> None:
        tickets, self._stop_tickets = self._stop_tickets, None
        for ticket in tickets or ():
            self._settle(ticket, error)

    def finish_stop(self) -> None:
        self._last_error = None
        self._end_with_boundary("user")
        self._settle_stops(None)

    def fail_stop(self) -> None:
        error: CharivoError = self._input
        self._last_error = error
        self._emit("realtime:error", ErrorPayload(error))
        self._end_with_boundary("error")
        self._settle_stops(error)

    def finish_cancel(self) -> None:
        self._last_error = None
        self._finish_session()
        self.audio.fire(self, "reset")
        self._emit_state()
        self._log(
            logging.INFO,
            "session.ended",
            "Realtime session start cancelled",
            reason="user",
            connection=CONNECTION.public[self.connection.state],
        )
        self._settle(
            self._start_ticket, CharivoStateError("Realtime session start was cancelled by stop")
        )
        self._start_ticket = None
        self._settle_stops(None)
        self._end_session_id()

    def fail_cancel(self) -> None:
        error: CharivoError = self._input
        self._last_error = error
        self._finish_session()
        self.audio.fire(self, "reset")
        self._emit("realtime:error", ErrorPayload(error))
        self._emit_state()
        self._log(logging.ERROR, "session.failed", "Realtime session failed", error=error.message)
        self._settle(
            self._start_ticket, CharivoStateError("Realtime session start was cancelled by stop")
        )
        self._start_ticket = None
        self._settle_stops(error)
        self._end_session_id()

    def _end_with_boundary(self, reason: Literal["user", "remote", "error"]) -> None:
        """End an active session: state, log, ``session:end`` (D2)."""
        self._finish_session()
        self.audio.fire(self, "reset")
        self._emit_state()
        if reason == "error":
            assert self._last_error is not None
            self._log(
                logging.ERROR,
                "session.failed",
                "Realtime session failed",
                error=self._last_error.message,
                reason=reason,
            )
        else:
            self._log(
                logging.INFO,
                "session.ended",
                "Realtime session ended",
                reason=reason,
                connection=CONNECTION.public[self.connection.state],
            )
        self._emit("realtime:session:end", SessionBoundaryPayload(self.snapshot(), reason))
        self._end_session_id()

    def end_remote(self) -> None:
        self.refresh.fire(self, "end")
        self._settle_waiters(None, CharivoStateError("Realtime session ended by the remote side"))
        self._cancel_tools("the session ended")
        self.connection.fire(self, "drop")
        self._last_error = None
        self._end_with_boundary("remote")

    def fail_exhausted(self) -> None:
        error = self._last_error
        assert error is not None
        self._settle_waiters(None, error)
        self._emit("realtime:error", ErrorPayload(error))
        self._end_with_boundary("error")

    # ====================================================== connection effects

    def note_lost_while_connecting(self) -> None:
        self._cause, self._lost_error = self._input
        self._log(
            logging.WARNING,
            "reconnect.started",
            "Realtime connection lost while starting",
            cause=self._cause,
            connection="connecting",
        )

    def begin_reconnect(self) -> None:
        if self.session.state == "active":
            self._cause, self._lost_error = self._input
            self._begin_reconnect_loop()
        # connect_ok from connecting_lost: commit_start begins the loop after
        # the session has committed (so session:start comes first, D3).

    def _begin_reconnect_loop(self) -> None:
        self.refresh.fire(self, "lost")
        if self._lost_error is not None:
            self._last_error = to_charivo_error("transport", self._lost_error)
            self._lost_error = None
        self.response.fire(self, "lost")
        self.audio.fire(self, "reset")
        self._emit_state()
        self._log(
            logging.WARNING,
            "reconnect.started",
            "Realtime reconnect started",
            cause=self._cause,
            connection="connecting",
        )
        self._cancel_tools("the connection was lost")
        self._attempt = 0
        self._recover_error = None
        self._loop_started = self._clock()
        self._next_attempt()

    def _next_attempt(self) -> None:
        self._attempt += 1
        delay = self._delays[self._attempt - 1]
        if self._jitter:
            # Bounded jitter: the configured delay scaled by a factor in
            # [1 - jitter, 1 + jitter], so sessions dropped together do not retry
            # in lockstep.
            delay *= 1.0 + self._jitter * (2.0 * self._random() - 1.0)
        delay_ms = round(delay * 1000)
        self._emit(
            "realtime:reconnect:attempt",
            ReconnectAttemptPayload(self._attempt, delay_ms, self._cause),
        )
        self._log(
            logging.INFO,
            "reconnect.attempt",
            "Realtime reconnect attempt",
            attempt=self._attempt,
            delay_ms=delay_ms,
            cause=self._cause,
        )
        token = self._link_op = self._op(self._on_backoff_elapsed, self._on_backoff_elapsed)
        self.out.append(Sleep(token, delay))

    def _on_backoff_elapsed(self, _value: Any) -> None:
        self._link_op = None
        self.connection.fire(self, "backoff_elapsed")

    def start_recover(self) -> None:
        config = self._effective()
        self._carry()
        self._pending = config
        token = self._link_op = self._op(self._on_recover_ok, self._on_recover_failed)
        self.out.append(Recover(token, config))

    def _on_recover_ok(self, _value: Any) -> None:
        self._link_op = None
        self.connection.fire(self, "recover_ok")

    def _on_recover_failed(self, error: BaseException) -> None:
        self._link_op = None
        self._recover_error = self._transport_error(error, "recover")
        self._recover_cause = self._recover_error if isinstance(error, OpTimeout) else error
        self.connection.fire(self, "recover_failed")

    def _total_ms(self) -> int:
        return round((self._clock() - self._loop_started) * 1000)

    def commit_recover(self) -> None:
        self._accept_base()
        self._config = self._pending
        self._last_error = None
        self._sync_character_id()
        self._emit_state()
        total = self._total_ms()
        self._emit(
            "realtime:reconnect:success",
            ReconnectSuccessPayload(self._attempt, total, self._cause),
        )
        self._log(
            logging.INFO,
            "reconnect.succeeded",
            "Realtime reconnect succeeded",
            attempts=self._attempt,
            total_ms=total,
            cause=self._cause,
        )
        self._settle_waiters(self._carried)
        self._refresh_if_owed()

    def retry_recover(self) -> None:
        self._last_error = self._recover_error
        self._emit_state()
        self._next_attempt()

    def exhaust_reconnect(self) -> None:
        last = self._recover_error
        error = CharivoTransportError(
            f"Realtime reconnect exhausted after {self._attempt} attempts"
            + (f": {last.message}" if last is not None else ""),
            cause=self._recover_cause,
        )
        self._last_error = error
        total = self._total_ms()
        self._emit(
            "realtime:reconnect:exhausted",
            ReconnectExhaustedPayload(self._attempt, total, self._cause, error),
        )
        self._log(
            logging.ERROR,
            "reconnect.exhausted",
            "Realtime reconnect exhausted",
            attempts=self._attempt,
            total_ms=total,
            cause=self._cause,
            error=error.message,
        )
        self._cleanup_disconnect()
        self.session.fire(self, "exhausted")

    def request_disconnect(self) -> None:
        self._cancel(self._connect_op)
        self._connect_op = None
        self._cancel(self._link_op)
        self._link_op = None
        cleanup = self._cleanup_op
        if cleanup is not None and cleanup in self._ops:
            # A clean-up disconnect is still pending (the start being cancelled was
            # waiting for it): that call closes the link, so the stop adopts its
            # outcome instead of queueing a second disconnect behind it (D3, D4).
            self._ops[cleanup] = (self._on_disconnect_ok, self._on_disconnect_failed)
            self._cleanup_op = None
            self._disconnect_op = cleanup
            return
        token = self._disconnect_op = self._op(self._on_disconnect_ok, self._on_disconnect_failed)
        self.out.append(Disconnect(token, False))

    def cleanup_link(self) -> None:
        self._cancel(self._connect_op)
        self._connect_op = None
        self._cancel(self._link_op)
        self._link_op = None
        self._cleanup_disconnect()

    def _cleanup_disconnect(self) -> None:
        if self._cleanup_op is not None:
            # One is still pending.  Lifecycle calls run one at a time in effect
            # order (D18.6), so nothing asked for after it (a start's connect, a
            # recover) has reached the transport: that pending call closes every
            # link there is, and clean-ups merge instead of queueing behind each
            # other (a stop adopts it, D4, D15).
            return
        token = self._cleanup_op = self._op(self._on_cleanup_ok, self._on_cleanup_failed)
        self.out.append(Disconnect(token, True))

    def _on_cleanup_ok(self, _value: Any) -> None:
        self._cleanup_op = None

    def _on_cleanup_failed(self, error: BaseException) -> None:
        self._cleanup_op = None
        self._log(
            logging.WARNING,
            "transport.error",
            "Realtime clean-up disconnect failed",
            error=self._transport_error(error, "disconnect").message,
        )

    # ========================================================= refresh effects

    def start_patch(self) -> None:
        config = self._effective()
        self._carry()
        self._pending = config
        self._last_error = None
        self._emit_state()
        self._log(
            logging.DEBUG,
            "patch.started",
            "Realtime session patch started",
            voice=config.voice,
            model=config.model,
        )
        token = self._patch_op = self._op(self._on_patch_ok, self._on_patch_failed)
        self.out.append(Patch(token, config))

    def cache_update(self) -> None:
        # Not patchable now.  While reconnecting, the waiting callers are served
        # by the reconnect (D17.4); otherwise they return at once (D17.5).
        if self.session.state == "active" and self.connection.state in _RECONNECTING:
            return
        self._settle_waiters(None)

    def _on_patch_ok(self, _value: Any) -> None:
        self._patch_op = None
        self.refresh.fire(self, "patch_ok")

    def _on_patch_failed(self, error: BaseException) -> None:
        self._patch_op = None
        self._input = self._transport_error(error, "session update")
        self.refresh.fire(self, "patch_failed")

    def commit_patch(self) -> None:
        self._accept_base()
        self._config = self._pending
        self._last_error = None
        self._sync_character_id()
        self._emit_state()
        config = self._config
        assert config is not None
        self._log(
            logging.INFO,
            "patch.succeeded",
            "Realtime session patch succeeded",
            voice=config.voice,
            model=config.model,
        )
        self._settle_waiters(self._carried)
        held, self._held_errors = self._held_errors, None
        for error in held or ():
            self._apply_error(error)

    def fail_patch(self) -> None:
        error: CharivoError = self._input
        # The provider refused these values: the base goes back to what it accepted
        # (requests made after this patch started stay pending on top of it), so a
        # later reconnect or session does not send the refused values again.
        self._base = self._accepted_base
        self._held_errors = None  # folded into this failure (D17.3)
        self._last_error = error
        self._emit("realtime:error", ErrorPayload(error))
        self._emit_state()
        self._log(
            logging.ERROR, "patch.failed", "Realtime session patch failed", error=error.message
        )
        self._settle_waiters(self._carried, error)

    def discard_patch_for_stop(self) -> None:
        self._cancel(self._patch_op)
        self._patch_op = None
        for _error in self._held_errors or ():
            self._drop("error held by a patch discarded by stop")
        self._held_errors = None

    def discard_patch_for_reconnect(self) -> None:
        self._cancel(self._patch_op)
        self._patch_op = None
        if self._held_errors:
            self._last_error = self._held_errors[-1]
        self._held_errors = None

    def discard_patch_for_end(self) -> None:
        self._cancel(self._patch_op)
        self._patch_op = None
        self._held_errors = None

    # ======================================================== response effects

    def open_response(self) -> None:
        self._parts = []
        self._emit("realtime:assistant:start", AssistantStartPayload(self.snapshot()))
        self._emit_state()

    def open_response_with_delta(self) -> None:
        text: str = self._input
        self._parts = [text]
        self._emit("realtime:assistant:start", AssistantStartPayload(self.snapshot()))
        payload = text_payload(text)
        out = self.out
        out.append(_tuple_new(Emit, ("realtime:text:delta", payload)))
        out.append(_tuple_new(Emit, ("realtime:assistant:delta", payload)))
        self._emit_state()

    def append_delta(self) -> None:
        text: str = self._input
        self._parts.append(text)
        payload = text_payload(text)
        out = self.out
        out.append(_tuple_new(Emit, ("realtime:text:delta", payload)))
        out.append(_tuple_new(Emit, ("realtime:assistant:delta", payload)))
        self._emit_state()

    def complete_response(self) -> None:
        event: AssistantResponseCompleted = self._input
        final = event.text or "".join(self._parts)
        self._parts = [final]
        self._report_usage(event)
        self._emit("realtime:assistant:done", TextPayload(final))
        self._emit_state()

    def cancel_response(self) -> None:
        """The service cancelled the response (the user's interrupt or its turn
        detection): the turn ends interrupted, its text kept, no assistant:done;
        usage is still reported (D7, §11)."""
        self._report_usage(self._input)
        self.audio.fire(self, "end")
        self._emit_state()

    def report_usage(self) -> None:
        self._report_usage(self._input)

    def _report_usage(self, event: AssistantResponseCompleted) -> None:
        if event.usage is None:
            return
        self._emit(
            "realtime:usage",
            UsagePayload(event.usage, event.model, event.response_id, self.session_id),
        )
        self._log(
            logging.DEBUG,
            "usage.reported",
            "Realtime usage reported",
            model=event.model,
            response_id=event.response_id,
        )

    def emit_audio_start(self) -> None:
        self._emit("tts:audio:start", _EMPTY)

    def emit_audio_end(self) -> None:
        self._emit("tts:lipsync:update", _LIPSYNC_ZERO)
        self._emit("tts:audio:end", _EMPTY)

    def note_chunk(self) -> None:
        event: AudioOutputDelta = self._input
        voice = self._voice
        config = self._config
        voice.bytes_per_ms = bytes_per_ms(None if config is None else config.output_audio_format)
        voice.chunk(event.item_id, len(event.audio))
        payload = AudioDeltaPayload(event.audio, event.item_id)
        self.out.append(_tuple_new(Emit, ("realtime:audio:delta", payload)))

    def truncate_item(self) -> None:
        item_id, played = self._voice.cut()
        token = self._op(self._on_truncate_done, self._on_truncate_failed)
        self.out.append(Truncate(token, item_id, played))

    def _on_truncate_done(self, _value: Any) -> None:
        pass

    def _on_truncate_failed(self, error: BaseException) -> None:
        self._log(
            logging.WARNING,
            "transport.error",
            "Realtime audio truncation failed",
            error=self._transport_error(error, "truncate_audio").message,
        )

    def forget_item(self) -> None:
        if self.session.state in _BETWEEN_SESSIONS or self.connection.state in _RECONNECTING:
            self._voice.clear()
        else:
            self._voice.forget_current()

    def record_played(self) -> None:
        pass  # the position itself is written by ``mark_played`` once accepted

    def drop_input(self) -> None:
        self._drop(type(self._input).__name__ if self._input is not None else "input")

    # ========================================================= transport events

    def on_event(self, event: Any) -> None:
        """Handle one transport event (D6-D11)."""
        handler = _EVENT_HANDLERS.get(type(event))
        if handler is None:
            self._log(
                logging.DEBUG,
                "event.dropped",
                "Realtime transport callback got a non-event",
                input=type(event).__name__,
            )
            return
        handler(self, event)

    def _between_sessions(self, event: Any) -> bool:
        if self.session.state in _BETWEEN_SESSIONS:
            self._log(
                logging.DEBUG,
                "event.dropped",
                "Realtime event dropped between sessions",
                input=event.type,
            )
            return True
        return False

    def _on_session_started(self, event: SessionStarted) -> None:
        # D10: meaningful only for an active, connected session that is neither
        # reconnecting nor patching; the connection is then already connected,
        # so nothing changes and nothing is emitted.
        if not (
            self.session.state == "active"
            and self.connection.state == "connected"
            and self.refresh.state == "idle"
        ):
            self._drop(event.type)

    def _on_session_ended(self, event: SessionEnded) -> None:
        self._input = event
        self.session.fire(self, "remote_end")

    def _on_connection_lost(self, event: ConnectionLost) -> None:
        self._input = (event.cause, event.error)
        self.connection.fire(self, "lost")

    def _on_user_transcript(self, event: UserTranscript) -> None:
        if not self._between_sessions(event):
            self._emit("realtime:user:transcript", TextPayload(event.text))

    def _on_response_started(self, event: AssistantResponseStarted) -> None:
        if not self._between_sessions(event):
            self.audio.fire(self, "unmute")  # audio of a new response is heard again
            self.response.fire(self, "started")

    def _on_text_delta(self, event: AssistantTextDelta) -> None:
        if self.session.state in _BETWEEN_SESSIONS:
            self._between_sessions(event)
            return
        self._input = event.text
        self.response.fire(self, "delta")

    def _on_response_completed(self, event: AssistantResponseCompleted) -> None:
        if not self._between_sessions(event):
            self._input = event
            self.response.fire(self, "completed")

    def _on_audio_started(self, event: AudioOutputStarted) -> None:
        if not self._between_sessions(event):
            self.audio.fire(self, "start")

    def _on_audio_ended(self, event: AudioOutputEnded) -> None:
        if not self._between_sessions(event):
            self.audio.fire(self, "end")

    def _on_lipsync(self, event: AudioLipsync) -> None:
        if self.session.state in _BETWEEN_SESSIONS:
            self._between_sessions(event)
            return
        self._input = event
        self.audio.fire(self, "level")

    def _on_audio_delta(self, event: AudioOutputDelta) -> None:
        if self.session.state in _BETWEEN_SESSIONS:
            self._between_sessions(event)
            return
        self._input = event
        self.audio.fire(self, "chunk")

    def _on_speech_started(self, event: UserSpeechStarted) -> None:
        if self._between_sessions(event):
            return
        self._emit(
            "realtime:user:speech:start", SpeechStartPayload(event.item_id, event.audio_start_ms)
        )
        if self._barge_in_enabled():
            self.audio.fire(self, "cut")

    def _barge_in_enabled(self) -> bool:
        """Barge-in applies unless the session's turn detection says speech does not
        interrupt the model (``interrupt_response=False``) or is manual."""
        config = self._config
        detection = None if config is None else config.turn_detection
        return detection is None or (detection.mode != "manual" and detection.interrupt_response)

    def _on_speech_stopped(self, event: UserSpeechStopped) -> None:
        if not self._between_sessions(event):
            self._emit(
                "realtime:user:speech:stop", SpeechStopPayload(event.item_id, event.audio_end_ms)
            )

    def _on_transcript_delta(self, event: UserTranscriptDelta) -> None:
        if not self._between_sessions(event):
            self._emit(
                "realtime:user:transcript:delta", TranscriptDeltaPayload(event.text, event.item_id)
            )

    def _on_rate_limits(self, event: RateLimitsUpdated) -> None:
        if not self._between_sessions(event):
            self._emit("realtime:rate_limits", RateLimitsPayload(tuple(event.limits)))

    def _on_tool_result(self, event: ToolResult) -> None:
        if not self._between_sessions(event):
            self._emit(
                "realtime:tool:result", ToolResultPayload(event.name, event.output, event.call_id)
            )

    def _on_state_update(self, event: StateUpdate) -> None:
        if self._between_sessions(event):
            return
        if event.response_status is not None:
            self.response.fire(self, "sync_" + str(event.response_status))
        if event.response_text is not None:
            self._parts = [event.response_text]
        self._emit_state()

    def _on_error(self, event: ErrorEvent) -> None:
        error = to_charivo_error("transport", event.error)
        if self.session.state == "active" and self.connection.state in _RECONNECTING:
            self._last_error = error  # D6: no realtime:error while reconnecting
            self._emit_state()
        elif self.refresh.state != "idle":
            held = self._held_errors
            if held is None:
                held = self._held_errors = []
            held.append(error)  # D17.3
        else:
            self._apply_error(error)

    def _apply_error(self, error: CharivoError) -> None:
        """D11: last_error, audio ended, the connection value kept."""
        self._last_error = error
        self.audio.fire(self, "end")
        self._emit("realtime:error", ErrorPayload(error))
        self._emit_state()
        self._log(
            logging.ERROR,
            "transport.error",
            "Realtime transport error surfaced",
            connection=CONNECTION.public[self.connection.state],
            error=error.message,
        )

    # ============================================================== tool calls

    def _on_tool_call(self, event: ToolCall) -> None:
        name, call_id = event.name, event.call_id
        self._emit("realtime:tool:call", ToolCallPayload(name, event.args, call_id))
        refusal: str | None = None
        if not call_id:
            refusal = f'Tool "{name}" is missing a call ID'
        elif self.session.state != "active":
            refusal = "Realtime session not active"
        elif self.connection.state != "connected":
            refusal = "Realtime session is reconnecting"
        elif call_id in self._calls:
            refusal = f'Tool call "{call_id}" is already running'
        if refusal is not None:
            self._tool_outcome_error(name, call_id, CharivoStateError(refusal))
            return
        assert call_id is not None
        entry = self.registry.get(name)
        if entry is None:
            error = CharivoValidationError(f'No realtime tool registered for "{name}"')
            self._tool_failed(name, call_id, error)
            return
        self._log(
            logging.DEBUG,
            "tool.started",
            "Realtime tool execution started",
            name=name,
            call_id=call_id,
        )
        try:
            args = validate_tool_arguments(name, entry.validator, event.args)
        except CharivoValidationError as invalid:
            self._tool_failed(name, call_id, invalid)
            return
        registration = entry.registration
        timeout = (
            registration.timeout if registration.timeout is not None else self._default_tool_timeout
        )
        context = RealtimeToolContext(self._character, self.snapshot(), call_id)
        record = self._calls[call_id] = _ToolCallRecord(name, call_id, "running")
        token = self._tool_op(record)
        self.out.append(RunTool(token, name, registration.handler, args, context, timeout))

    def _tool_op(self, record: _ToolCallRecord) -> int:
        """A token for the operation of ``record``'s current phase (see op_done)."""
        self._next_token += 1
        token = record.token = self._next_token
        self._ops[token] = record
        return token

    def _tool_op_done(
        self, record: _ToolCallRecord, error: BaseException | None, value: Any
    ) -> None:
        call_id, phase = record.call_id, record.phase
        if phase == "running":
            if error is None:
                self._on_tool_returned(call_id, value)
            else:
                self._on_tool_raised(call_id, error)
        elif phase == "sending":
            if error is None:
                assert record.output is not None
                self._on_tool_sent(call_id, record.output)
            else:
                self._on_tool_send_failed(call_id, error)
        elif error is None:  # failing
            self._on_tool_send_done(call_id)
        else:
            self._on_failure_send_failed(record.name, call_id, error)

    def _tool_outcome_error(self, name: str, call_id: str | None, error: CharivoError) -> None:
        self._log(
            logging.WARNING,
            "tool.failed",
            "Realtime tool execution failed",
            name=name,
            call_id=call_id,
            error=error.message,
        )
        self._emit("realtime:tool:error", ToolErrorPayload(name, error, call_id))

    def _tool_failed(
        self, name: str, call_id: str, error: CharivoError, sent: str | None = None
    ) -> None:
        """The failure path: one tool:error, one failure result sent (D8).

        The model gets ``{"success": False, "error": sent}``; ``sent`` defaults to the
        error's message (our own words: validation, timeout, a CharivoError the
        handler raised on purpose)."""
        self._tool_outcome_error(name, call_id, error)
        record = self._calls[call_id] = _ToolCallRecord(name, call_id, "failing")
        token = self._tool_op(record)
        message = error.message if sent is None else sent
        self.out.append(SendToolResult(token, call_id, {"success": False, "error": message}))

    def _on_tool_returned(self, call_id: str, output: Any) -> None:
        record = self._calls[call_id]
        try:
            checked = check_tool_output(record.name, output)
        except CharivoValidationError as invalid:
            self._tool_failed(record.name, call_id, invalid)
            return
        record.phase = "sending"
        record.output = checked
        token = self._tool_op(record)
        self.out.append(SendToolResult(token, call_id, checked))

    def _on_tool_raised(self, call_id: str, error: BaseException) -> None:
        record = self._calls[call_id]
        failure: CharivoError
        if isinstance(error, OpTimeout):
            failure = CharivoTimeoutError(
                f'Realtime tool "{record.name}" timed out after {error.seconds:g}s'
            )
        elif isinstance(error, CharivoError):
            failure = error
        else:
            # An unexpected exception: its text may hold anything (paths, secrets), so
            # the model gets a generic message unless tool_error_detail is set; the
            # detail stays in realtime:tool:error and the log.
            text = str(error)
            failure = CharivoError(text if text.strip() else type(error).__name__, cause=error)
            if not self._tool_error_detail:
                self._tool_failed(
                    record.name, call_id, failure, f'Realtime tool "{record.name}" failed'
                )
                return
        self._tool_failed(record.name, call_id, failure)

    def _on_tool_sent(self, call_id: str, output: Mapping[str, Any]) -> None:
        record = self._calls.pop(call_id)
        self._emit("realtime:tool:result", ToolResultPayload(record.name, output, call_id))
        self.out.append(Project(record.name, output, call_id))
        self._log(
            logging.INFO,
            "tool.succeeded",
            "Realtime tool execution succeeded",
            name=record.name,
            call_id=call_id,
        )

    def _on_tool_send_failed(self, call_id: str, error: BaseException) -> None:
        record = self._calls.pop(call_id)
        failure = self._transport_error(error, "send_tool_result")
        if not isinstance(failure, CharivoTransportError | CharivoTimeoutError):
            failure = CharivoTransportError(failure.message, cause=failure)
        self._tool_outcome_error(record.name, call_id, failure)

    def _on_tool_send_done(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def _on_failure_send_failed(self, name: str, call_id: str, error: BaseException) -> None:
        self._calls.pop(call_id, None)
        self._log(
            logging.WARNING,
            "tool.failed",
            "Realtime tool failure result could not be sent",
            name=name,
            call_id=call_id,
            error=self._transport_error(error, "send_tool_result").message,
        )

    def _cancel_tools(self, why: str) -> None:
        calls, self._calls = self._calls, {}
        for call_id, record in calls.items():
            self._cancel(record.token)
            if record.phase != "failing":
                self._tool_outcome_error(
                    record.name,
                    call_id,
                    CharivoStateError(f'Realtime tool "{record.name}" was cancelled: {why}'),
                )

    def running_tool_calls(self) -> int:
        return len(self._calls)


_EVENT_HANDLERS: dict[type, Callable[[Core, Any], None]] = {
    SessionStarted: Core._on_session_started,
    SessionEnded: Core._on_session_ended,
    ConnectionLost: Core._on_connection_lost,
    UserTranscript: Core._on_user_transcript,
    AssistantResponseStarted: Core._on_response_started,
    AssistantTextDelta: Core._on_text_delta,
    AssistantResponseCompleted: Core._on_response_completed,
    AudioOutputStarted: Core._on_audio_started,
    AudioOutputEnded: Core._on_audio_ended,
    AudioLipsync: Core._on_lipsync,
    AudioOutputDelta: Core._on_audio_delta,
    UserSpeechStarted: Core._on_speech_started,
    UserSpeechStopped: Core._on_speech_stopped,
    UserTranscriptDelta: Core._on_transcript_delta,
    RateLimitsUpdated: Core._on_rate_limits,
    ToolCall: Core._on_tool_call,
    ToolResult: Core._on_tool_result,
    StateUpdate: Core._on_state_update,
    ErrorEvent: Core._on_error,
}

for _spec in MACHINES.values():
    _spec.bind(Core)
