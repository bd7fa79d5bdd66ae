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
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs

from . import core_connection as _connection
from . import core_events as _events
from . import core_refresh as _refresh
from . import core_tools as _tools
from .config import build_realtime_session_config, merge_config, with_tools
from .core_events import _BETWEEN_SESSIONS, _RECONNECTING
from .core_tools import _ToolCallRecord
from .effects import (
    Cancel,
    Connect,
    Disconnect,
    Effect,
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
    Truncate,
    _tuple_new,
)
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
    ResponseState,
    ResponseStatus,
    SessionState,
    SessionStatus,
)
from .payloads import (
    ErrorPayload,
    LipsyncPayload,
    SessionBoundaryPayload,
    StatePayload,
    _new,
    _set_rms,
    _set_source,
)
from .tools import ToolRegistry
from .voice import NO_AUDIO
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
# Helpers
# --------------------------------------------------------------------------

_CONNECTION_VALUES = {s: ConnectionState(CONNECTION.public[s]) for s in CONNECTION.states}
_SESSION_VALUES = {s: SessionStatus(SESSION.public[s]) for s in SESSION.states}
_RESPONSE_VALUES = {s: ResponseStatus(s) for s in RESPONSE.states}
_LIPSYNC_THRESHOLD = 0.001

# The fields an update may set on the base config (tools come only from the registry).
_MERGED_FIELDS = tuple(
    field.name for field in attrs.fields(RealtimeSessionConfig) if field.name != "tools"
)

_OpCallback = Callable[[Any], None]


def _no_randomness() -> float:
    return 0.5  # the middle of the jitter range: no jitter


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
        "_tool_state",
        "_voice",
        "_waiters",
        "_want",
        "audio",
        "connection",
        "emits",
        "logger",
        "out",
        "projecting",
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
        # A driver that executes emits as (name, payload) pairs sets this to a list
        # (the manager does): the most frequent emits (a text delta's, a lipsync
        # level's) made while ``out`` is empty are appended to it as pairs instead of
        # to ``out`` as Emit effects; they come before everything in ``out``.
        self.emits: list[tuple[str, Any]] | None = None
        # A driver may give the core its logger, so that the tool log records it would
        # drop are not made (``logger.isEnabledFor(level)`` false), and tell it that it
        # has no result projectors (``projecting`` false: no Project effect is made).
        self.logger: logging.Logger | None = None
        self.projecting = True
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
        self._tool_state: tuple[Any, ...] | None = None  # see core_tools._tool_snapshot
        self._input: Any = None
        self._voice = NO_AUDIO  # its own AudioItems from the first audio chunk

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
        self.out.append(_tuple_new(Emit, ("realtime:state", self._state_payload())))

    def _state_payload(self) -> StatePayload:
        """The state now, captured as its pieces and materialised on first access: the
        pieces are immutable, and the text is the first ``count`` parts (later deltas
        append to the same list)."""
        session = self._session_snap
        if session is None:
            session = self._session_state()
        parts = self._parts
        payload: StatePayload = _new(StatePayload)
        _set_source(
            payload,
            (
                _CONNECTION_VALUES[self.connection.state],
                session,
                _RESPONSE_VALUES[self.response.state],
                parts,
                len(parts),
                self._last_error,
            ),
        )
        return payload

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
        payload: LipsyncPayload = _new(LipsyncPayload)  # LipsyncPayload(event.rms)
        _set_rms(payload, event.rms)
        emits = self.emits
        if emits is not None and not self.out:
            emits.append(("tts:lipsync:update", payload))
        else:
            self.out.append(_tuple_new(Emit, ("tts:lipsync:update", payload)))

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
    # (in charivo_fsm/core_connection.py)
    note_lost_while_connecting = _connection.note_lost_while_connecting
    begin_reconnect = _connection.begin_reconnect
    _begin_reconnect_loop = _connection._begin_reconnect_loop
    _next_attempt = _connection._next_attempt
    _on_backoff_elapsed = _connection._on_backoff_elapsed
    start_recover = _connection.start_recover
    _on_recover_ok = _connection._on_recover_ok
    _on_recover_failed = _connection._on_recover_failed
    _total_ms = _connection._total_ms
    commit_recover = _connection.commit_recover
    retry_recover = _connection.retry_recover
    exhaust_reconnect = _connection.exhaust_reconnect
    request_disconnect = _connection.request_disconnect
    cleanup_link = _connection.cleanup_link
    _cleanup_disconnect = _connection._cleanup_disconnect
    _on_cleanup_ok = _connection._on_cleanup_ok
    _on_cleanup_failed = _connection._on_cleanup_failed

    # ========================================================= refresh effects
    # (in charivo_fsm/core_refresh.py)
    start_patch = _refresh.start_patch
    cache_update = _refresh.cache_update
    _on_patch_ok = _refresh._on_patch_ok
    _on_patch_failed = _refresh._on_patch_failed
    commit_patch = _refresh.commit_patch
    fail_patch = _refresh.fail_patch
    discard_patch_for_stop = _refresh.discard_patch_for_stop
    discard_patch_for_reconnect = _refresh.discard_patch_for_reconnect
    discard_patch_for_end = _refresh.discard_patch_for_end

    # ======================================================== response effects
    # (response effects and transport events: charivo_fsm/core_events.py)
    open_response = _events.open_response
    open_response_with_delta = _events.open_response_with_delta
    append_delta = _events.append_delta
    complete_response = _events.complete_response
    cancel_response = _events.cancel_response
    report_usage = _events.report_usage
    _report_usage = _events._report_usage
    emit_audio_start = _events.emit_audio_start
    emit_audio_end = _events.emit_audio_end
    note_chunk = _events.note_chunk
    truncate_item = _events.truncate_item
    _on_truncate_done = _events._on_truncate_done
    _on_truncate_failed = _events._on_truncate_failed
    forget_item = _events.forget_item
    record_played = _events.record_played
    drop_input = _events.drop_input
    _between_sessions = _events._between_sessions
    _on_session_started = _events._on_session_started
    _on_session_ended = _events._on_session_ended
    _on_connection_lost = _events._on_connection_lost
    _on_user_transcript = _events._on_user_transcript
    _on_response_started = _events._on_response_started
    _on_text_delta = _events._on_text_delta
    _on_response_completed = _events._on_response_completed
    _on_audio_started = _events._on_audio_started
    _on_audio_ended = _events._on_audio_ended
    _on_lipsync = _events._on_lipsync
    _on_audio_delta = _events._on_audio_delta
    _on_speech_started = _events._on_speech_started
    _barge_in_enabled = _events._barge_in_enabled
    _on_speech_stopped = _events._on_speech_stopped
    _on_transcript_delta = _events._on_transcript_delta
    _on_rate_limits = _events._on_rate_limits
    _on_tool_result = _events._on_tool_result
    _on_state_update = _events._on_state_update
    _on_error = _events._on_error
    _apply_error = _events._apply_error

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

    # ============================================================== tool calls
    # (in charivo_fsm/core_tools.py)
    _on_tool_call = _tools._on_tool_call
    _tool_snapshot = _tools._tool_snapshot
    _tool_op = _tools._tool_op
    _tool_outcome_error = _tools._tool_outcome_error
    _on_tool_raised = _tools._on_tool_raised
    _on_tool_send_failed = _tools._on_tool_send_failed
    _on_tool_send_done = _tools._on_tool_send_done
    _on_failure_send_failed = _tools._on_failure_send_failed
    _cancel_tools = _tools._cancel_tools
    running_tool_calls = _tools.running_tool_calls
    _tool_op_done = _tools._tool_op_done
    _tool_failed = _tools._tool_failed


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
