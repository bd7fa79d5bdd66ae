"""Invariants of the session lifecycle: isolation (D1), session boundaries (D2),
the start (D3), the stop (D4) and the refresh (D5).

Each invariant is a generator sent every observation in order; it raises
:class:`~charivo_fsm.testing.suite_base.Broken` when its rule is violated.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..errors import CharivoError
from ..events import ConnectionLost, SessionEnded
from ..model import SessionStatus
from .suite_base import (
    _ACTIVE,
    _CONNECTED,
    _OVER,
    _STARTING,
    _STOPPING,
    CONFIG_CALLS,
    LIFECYCLE,
    Broken,
    CallEntered,
    CallExited,
    Checkpoint,
    Command,
    CommandIssued,
    CommandReturned,
    Context,
    Crashed,
    Delivering,
    Emitted,
    Exited,
    Leaving,
    Logged,
    Observation,
    TransportCall,
    _invariant,
)

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
    "config is the latest requested one, unless the last config-carrying call failed; "
    "a refused patch puts the requests it carried back to the config last accepted",
)
def latest_config_wins(ctx: Context) -> Generator[None, Observation, None]:
    last_failed = False
    wanted: str | None = ctx.requested_voice  # the base config's voice, as requested
    wanted_at = 0  # the seq of the request that set it
    accepted: str | None = wanted  # the voice of the config last committed
    carried_upto = 0  # the request the patch in flight carries (its wanted_at)
    while True:
        seen = yield
        kind = type(seen)
        if kind is CommandIssued:
            assert isinstance(seen, CommandIssued)
            command = seen.command
            if command.kind == "update_session" or (
                command.kind == "start_session" and command.before.session.status in _OVER
            ):
                wanted, wanted_at = command.voice, command.seq
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            if command.kind != "update_session" or command.error is not None:
                continue
            voice = command.voice
            state = ctx.manager.state
            if (
                command.seq == wanted_at
                and state.session.status == _ACTIVE
                and state.connection == _CONNECTED
                and state.session.config is not None
                and state.session.config.voice != voice
            ):
                raise Broken(
                    f"update_session(voice={voice!r}) returned on a live session whose "
                    f"committed voice is {state.session.config.voice!r}"
                )
        elif kind is Emitted:
            assert isinstance(seen, Emitted)
            if seen.name == "realtime:state":
                config = seen.payload.state.session.config
                if config is not None:
                    accepted = config.voice
        elif kind is Logged:
            assert isinstance(seen, Logged)
            event = seen.context.get("event")
            if event == "patch.started":
                carried_upto = wanted_at
            elif event == "patch.failed" and wanted_at == carried_upto:
                # A refused patch: its values are not requested any more.  (A request
                # made after the patch started would have stayed pending on top.)
                wanted = accepted
        elif kind is CallExited:
            assert isinstance(seen, CallExited)
            call = seen.call
            if call.method in CONFIG_CALLS:
                last_failed = call.outcome != "ok"
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
            if not last_failed and config.voice != wanted:
                raise Broken(
                    f"committed voice {config.voice!r} but the latest request was {wanted!r}"
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
