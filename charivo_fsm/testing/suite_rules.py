"""Invariants of the reconnect loop's silence (D6), tool calls (D8), state updates
(D9), errors (D11), guards (D14) and the manager's lifetime (D15)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator

from ..errors import CharivoError, CharivoStateError
from ..events import StateUpdate, ToolCall, ToolResult
from ..model import ConnectionState
from .suite_base import (
    _ACTIVE,
    _CONNECTED,
    _CONNECTING,
    _MANAGED,
    _OVER,
    _STARTING,
    _STOPPING,
    SENDS,
    Broken,
    CallEntered,
    CallExited,
    Checkpoint,
    CommandReturned,
    Context,
    Delivered,
    Delivering,
    Emitted,
    Exited,
    Leaving,
    Observation,
    ToolRan,
    _invariant,
)


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


_SEND_COMMANDS = frozenset(
    {"send_message", "send_audio_chunk", "interrupt", "commit_audio", "clear_audio"}
)


@_invariant(
    "D14",
    "send_message, send_audio_chunk, interrupt, commit_audio and clear_audio reach the "
    "transport only while the "
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
            if command.kind in _SEND_COMMANDS:
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
