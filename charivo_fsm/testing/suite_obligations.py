"""Invariants of obligations: what the engine *must do*, by when.

The lifecycle invariants mostly say "never X".  These say "Y happens, at the
right moment": the reconnect loop follows its delays (within the jitter bound)
and ends in time (D6), a session stays one session across a reconnect (D6),
what belongs to a lost link is ignored (D6, D10), usage is reported once even
after an interrupt (D7), a tool past its timeout gets a timeout outcome at its
deadline (D8), nothing between sessions changes anything (D9, D17.12), an
error ends the audio (D11), a remote end is cleaned up by exactly one bounded
disconnect (D17.13) and a start settles within its bound (D3).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..errors import CharivoError, CharivoStateError, CharivoTimeoutError
from ..events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    ConnectionLost,
    ErrorEvent,
    SessionEnded,
    SessionStarted,
    ToolCall,
)
from ..model import ConnectionState, RealtimeState, ResponseStatus
from .suite_base import (
    _ACTIVE,
    _CONNECTED,
    _CONNECTING,
    _OVER,
    _STARTING,
    _STOPPING,
    Broken,
    CallEntered,
    CallExited,
    Checkpoint,
    Command,
    CommandIssued,
    CommandReturned,
    Context,
    Delivered,
    Delivering,
    Emitted,
    Exited,
    Logged,
    Observation,
    Reaction,
    Reactions,
    ToolRan,
    ToolStopped,
    _invariant,
)

_EPS = 1e-3  # virtual seconds: clocks are exact, delays are rounded to milliseconds


def _reconnecting(state: RealtimeState) -> bool:
    """An active session whose connection says connecting is in its reconnect loop."""
    return state.session.status == _ACTIVE and state.connection == _CONNECTING


def _live(state: RealtimeState) -> bool:
    return state.session.status == _ACTIVE and state.connection == _CONNECTED


def _ignored(done: Reaction, after: RealtimeState, what: str) -> None:
    """An ignored event: it emitted nothing and changed nothing."""
    if done.emitted:
        raise Broken(f"{what} emitted {', '.join(done.names)}")
    if after != done.before:
        raise Broken(f"{what} changed the state")


def _loop_bound(ctx: Context) -> float:
    """How long a reconnect loop may take: every delay at its longest, each
    recover at its timeout (D6, D12)."""
    config = ctx.config
    jitter = config.reconnect_jitter
    delays = sum(delay * (1.0 + jitter) for delay in config.reconnect_delays)
    return delays + len(config.reconnect_delays) * config.transport_timeout


# ---------------------------------------------------------------------- D6


@_invariant(
    "D6",
    "reconnect attempts are numbered 1, 2, ... from each new loss (a loss after a "
    "success starts again at 1); attempt k waits reconnect_delays[k-1] scaled by "
    "the jitter, within [1-j, 1+j], and its recover begins exactly that long after "
    "the attempt was announced; a loss while active (or while starting, once the "
    "start commits) begins a loop at once",
)
def reconnect_follows_the_delays(ctx: Context) -> Generator[None, Observation, None]:
    delays = ctx.config.reconnect_delays
    jitter = ctx.config.reconnect_jitter
    in_loop = False
    expected = 1  # the number of the next attempt
    announced: tuple[int, float, float] | None = None  # attempt, at, delay (s)
    may_retry = False  # the last attempt's recover failed: the next one may follow
    owed = False  # a loss must start a loop (D6 trigger, D3 lost while starting)
    owed_now = False  # ... during the delivery being handled
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if name == "realtime:reconnect:attempt":
                attempt = seen.payload.attempt
                if not in_loop:
                    if not owed:
                        raise Broken(f"reconnect attempt {attempt} without a lost link")
                    if attempt != 1:
                        raise Broken(
                            f"a new reconnect loop began at attempt {attempt} (each new "
                            "loss starts again at attempt 1)"
                        )
                    in_loop, owed, owed_now = True, False, False
                elif attempt != expected:
                    raise Broken(f"reconnect attempt {attempt} follows attempt {expected - 1}")
                elif not may_retry:
                    raise Broken(f"reconnect attempt {attempt} before attempt {attempt - 1} failed")
                if attempt > len(delays):
                    continue  # cancelled_reconnect_is_silent reports it
                base = delays[attempt - 1]
                low, high = base * (1.0 - jitter), base * (1.0 + jitter)
                delay = seen.payload.delay_ms / 1000.0
                if not low - _EPS <= delay <= high + _EPS:
                    raise Broken(
                        f"reconnect attempt {attempt} waits {delay:g}s: outside "
                        f"{base:g}s ± {jitter:g} ([{low:g}s, {high:g}s])"
                    )
                announced = (attempt, seen.at, delay)
                expected, may_retry = attempt + 1, False
            elif name in ("realtime:reconnect:success", "realtime:reconnect:exhausted"):
                in_loop, announced, expected = False, None, 1
            elif name == "realtime:state":
                status = seen.payload.state.session.status
                if status == _STOPPING or status in _OVER:
                    in_loop, announced, expected, owed = False, None, 1, False
        elif kind is CallEntered:
            assert isinstance(seen, CallEntered)
            call = seen.call
            if call.method != "recover" or announced is None:
                continue
            attempt, at, delay = announced
            waited = call.entered_at - at
            if abs(waited - delay) > _EPS:
                raise Broken(
                    f"the recover of reconnect attempt {attempt} began {waited:g}s after "
                    f"the attempt, which announced a delay of {delay:g}s"
                )
            announced = None
        elif kind is CallExited:
            assert isinstance(seen, CallExited)
            if seen.call.method == "recover" and seen.call.outcome != "ok":
                may_retry = True
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            if type(seen.event) is ConnectionLost:
                state = seen.state
                if state.session.status == _ACTIVE and state.connection == _CONNECTED:
                    owed = owed_now = True
                elif state.session.status == _STARTING and state.connection == _CONNECTING:
                    owed = True  # remembered: the loop begins once the start commits
        elif kind is Delivered:
            assert isinstance(seen, Delivered)
            if owed_now and type(seen.event) is ConnectionLost:
                owed_now = False
                if not in_loop and seen.state.session.status == _ACTIVE:
                    raise Broken(
                        "connection.lost on an active, connected session began no "
                        "reconnect (no reconnect:attempt)"
                    )
        elif kind is Checkpoint:
            assert isinstance(seen, Checkpoint)
            if owed and not in_loop and _live(seen.state):
                raise Broken(
                    "the link was lost while starting, the start committed, and no "
                    "reconnect began: the session says connected over a lost link"
                )


@_invariant(
    "D6",
    "a reconnect loop ends (reconnect:success, reconnect:exhausted, or a stop) "
    "within its delays at their longest plus one transport_timeout per attempt",
)
def reconnect_loop_ends_in_time(ctx: Context) -> Generator[None, Observation, None]:
    bound = _loop_bound(ctx) + _EPS
    began: float | None = None
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if name == "realtime:reconnect:attempt" and began is None:
                began = seen.at
            elif began is not None and (
                name in ("realtime:reconnect:success", "realtime:reconnect:exhausted")
                or (name == "realtime:state" and seen.payload.state.session.status != _ACTIVE)
            ):
                if seen.at - began > bound:
                    raise Broken(f"the reconnect loop took {seen.at - began:g}s (bound {bound:g}s)")
                began = None
        elif kind is Checkpoint or kind is Exited:
            assert isinstance(seen, (Checkpoint, Exited))
            if began is not None and seen.now - began > bound:
                raise Broken(
                    f"the reconnect loop that began at t={began:g} has neither succeeded "
                    f"nor been exhausted at t={seen.now:g} (bound {bound:g}s)"
                )


@_invariant(
    "D6",
    "a session stays one session across its reconnect loop: no session boundary "
    "while reconnecting (except the end of an exhausted or stopped loop), and a "
    "success keeps the session id, says connected with no last_error and leaves "
    "the response status as it was",
)
def reconnect_keeps_the_session(ctx: Context) -> Generator[None, Observation, None]:
    session_id: str | None = None
    in_loop = False
    response: ResponseStatus | None = None  # in the last state emitted
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if name == "realtime:reconnect:attempt" and not in_loop:
                in_loop, session_id = True, ctx.manager.session_id
            elif not in_loop:
                if name == "realtime:state":
                    response = seen.payload.state.response.status
                continue
            elif name == "realtime:session:start":
                raise Broken("session:start while reconnecting")
            elif name == "realtime:session:end":
                if seen.payload.reason == "remote":
                    raise Broken("session:end (remote) while reconnecting")
                in_loop = False
            elif name == "realtime:state":
                state = seen.payload.state
                if state.session.status != _ACTIVE:
                    in_loop = False
                elif state.connection == _CONNECTED:
                    if state.response.status != response:
                        raise Broken(
                            f"the reconnect's success changed the response from "
                            f"{response} to {state.response.status}"
                        )
                    if state.last_error is not None:
                        raise Broken("the reconnect's success left last_error set")
                response = state.response.status
            elif name == "realtime:reconnect:success":
                in_loop = False
                sid = ctx.manager.session_id
                if sid != session_id:
                    raise Broken(
                        f"the reconnect's success changed the session id from "
                        f"{session_id!r} to {sid!r}"
                    )
                if not _live(ctx.manager.state):
                    state = ctx.manager.state
                    raise Broken(
                        f"reconnect:success while {state.session.status}/{state.connection}"
                    )


@_invariant(
    "D6, D10",
    "what belongs to a lost link is ignored: session.started (always, D10) and, "
    "while reconnecting, session.ended and connection.lost change nothing and emit "
    "nothing; an error event while reconnecting updates last_error (wrapped) and "
    "emits a state, no realtime:error",
)
def lost_link_events_are_ignored(ctx: Context) -> Generator[None, Observation, None]:
    reactions = Reactions()
    while True:
        seen = yield
        done = reactions.feed(seen)
        if type(seen) is Delivering:
            assert isinstance(seen, Delivering)
            event_type = type(seen.event)
            if event_type is SessionStarted or (
                _reconnecting(seen.state)
                and event_type in (SessionEnded, ConnectionLost, ErrorEvent)
            ):
                reactions.watch(seen)
        if done is None:
            continue
        assert isinstance(seen, Delivered)
        event, names = done.event, done.names
        where = "" if type(event) is SessionStarted else " while reconnecting"
        if type(event) is ErrorEvent:
            if "realtime:error" in names:
                raise Broken(f"realtime:error for an error event{where}")
            last = seen.state.last_error
            if not isinstance(last, CharivoError) or (
                last is not event.error and last.cause is not event.error
            ):
                raise Broken(
                    f"an error event{where} left last_error {last!r}, not the wrapped error"
                )
            if "realtime:state" not in names:
                raise Broken(f"an error event{where} emitted no state")
        else:
            _ignored(done, seen.state, f"{type(event).__name__}{where}")


# ---------------------------------------------------------------------- D7


@_invariant(
    "D7",
    "every completion with usage delivered while a session runs reports its usage "
    "exactly once (after an interrupt or a cancellation too), for the current "
    "session; no usage is reported otherwise",
)
def usage_reported_once(ctx: Context) -> Generator[None, Observation, None]:
    reactions = Reactions()
    completing = 0  # completions being delivered while a session runs
    while True:
        seen = yield
        done = reactions.feed(seen)
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            if seen.name == "realtime:usage" and not completing:
                raise Broken("realtime:usage with no completion being delivered")
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            event = seen.event
            if type(event) is AssistantResponseCompleted and seen.state.session.status not in _OVER:
                reactions.watch(seen, ctx.manager.session_id)
                completing += 1
        if done is None:
            continue
        completing -= 1
        event = done.event
        reports = [e.payload for e in done.emitted if e.name == "realtime:usage"]
        status = f"{event.status} after {done.before.response.status}"
        if event.usage is None:
            if reports:
                raise Broken(f"a completion ({status}) without usage reported usage")
            continue
        if len(reports) != 1:
            raise Broken(f"a completion ({status}) with usage reported it {len(reports)} times")
        report = reports[0]
        if report.usage != event.usage or report.session_id != done.note:
            raise Broken(
                f"usage reported as {report.usage!r} for session {report.session_id!r}, "
                f"delivered {event.usage!r} in session {done.note!r}"
            )


@_invariant(
    "D7",
    "responses: started opens one (text empty); a delta appends while responding, "
    "opens a new response after idle or completed, and is ignored after an "
    "interrupt; a completion from interrupted, or reported cancelled, ends "
    "interrupted without assistant:done; otherwise it completes once with its text "
    "(or the text so far)",
)
def responses_follow_d7(ctx: Context) -> Generator[None, Observation, None]:
    reactions = Reactions()
    responding = ResponseStatus.RESPONDING
    interrupted = ResponseStatus.INTERRUPTED
    while True:
        seen = yield
        done = reactions.feed(seen)
        if type(seen) is Delivering:
            assert isinstance(seen, Delivering)
            if (
                type(seen.event)
                in (
                    AssistantResponseStarted,
                    AssistantTextDelta,
                    AssistantResponseCompleted,
                )
                and seen.state.session.status not in _OVER
            ):
                reactions.watch(seen)
        if done is None:
            continue
        assert isinstance(seen, Delivered)
        event, names = done.event, done.names
        was, now = done.before.response, seen.state.response
        if type(event) is AssistantResponseStarted:
            if now.status != responding or now.text != "":
                raise Broken(f"response.started left the response {now.status} {now.text!r}")
            if names.count("realtime:assistant:start") != 1:
                raise Broken("response.started emitted no assistant:start")
        elif type(event) is AssistantTextDelta:
            if was.status == interrupted:
                if now != was or names:
                    raise Broken("a delta after an interrupt was not ignored")
            elif was.status == responding:
                if now.status != responding or now.text != was.text + event.text:
                    raise Broken(f"a delta while responding left {now.status} {now.text!r}")
            elif (
                now.status != responding
                or now.text != event.text
                or "realtime:assistant:start" not in names
            ):
                raise Broken(f"a delta after {was.status} opened no new response")
        else:
            finals = [e for e in done.emitted if e.name == "realtime:assistant:done"]
            if was.status == interrupted or event.status == "cancelled":
                why = "after an interrupt" if was.status == interrupted else "cancelled"
                if finals:
                    raise Broken(f"a completion {why} emitted assistant:done")
                if now.status != interrupted:
                    raise Broken(f"a completion {why} left the response {now.status}")
            else:
                text = event.text or was.text
                if len(finals) != 1 or finals[0].payload.text != text:
                    raise Broken(
                        f"a completion after {was.status} emitted {len(finals)} "
                        f"assistant:done (text {text!r} expected)"
                    )
                if now.status != ResponseStatus.COMPLETED or now.text != text:
                    raise Broken(f"a completion left the response {now.status}")


# ---------------------------------------------------------------------- D8


@_invariant(
    "D8",
    "a tool handler past its timeout is cancelled at its deadline and its call gets "
    "its one outcome there: a tool:error with a CharivoTimeoutError (no result of a "
    "handler that ran over); an outcome never comes after the deadline",
)
def tool_timeout_at_the_deadline(ctx: Context) -> Generator[None, Observation, None]:
    from .suite_driver import TIMED_TOOLS

    config = ctx.config
    running: dict[str, tuple[str, float]] = {}  # call id -> tool, deadline
    calls = 0  # tool calls being delivered (their refusals are not outcomes of a run)
    while True:
        seen = yield
        kind = type(seen)
        if kind is ToolRan:
            assert isinstance(seen, ToolRan)
            limit = (
                config.slow_tool_timeout
                if seen.name in TIMED_TOOLS
                else config.default_tool_timeout
            )
            running[seen.call_id] = (seen.name, seen.at + limit)
        elif kind is ToolStopped:
            assert isinstance(seen, ToolStopped)
            entry = running.get(seen.call_id)
            if entry is None:
                continue
            name, deadline = entry
            if seen.at > deadline + _EPS:
                raise Broken(
                    f"the {name!r} handler of call {seen.call_id!r} ran until "
                    f"t={seen.at:g}, past its deadline t={deadline:g}"
                )
            if seen.how != "cancelled" or seen.at < deadline - _EPS:
                # Ended in time: the outcome follows the result's send (bounded by
                # transport_timeout), or a reconnect, stop or end cancelled it (its
                # outcome is one_outcome_per_tool_call's business).
                del running[seen.call_id]
        elif kind is Delivering or kind is Delivered:
            assert isinstance(seen, (Delivering, Delivered))
            if type(seen.event) is ToolCall:
                calls += 1 if kind is Delivering else -1
        elif kind is Emitted:
            assert isinstance(seen, Emitted)
            if calls or seen.name not in ("realtime:tool:result", "realtime:tool:error"):
                continue
            call_id = seen.payload.call_id
            entry = running.pop(call_id, None)
            if entry is None:
                continue
            name, deadline = entry
            if seen.at > deadline + _EPS:
                raise Broken(
                    f"call {call_id!r} ({name}) got its outcome at t={seen.at:g}, after its "
                    f"deadline t={deadline:g}"
                )
            if seen.at >= deadline - _EPS:
                error = getattr(seen.payload, "error", None)
                if not isinstance(error, (CharivoTimeoutError, CharivoStateError)):
                    raise Broken(
                        f"call {call_id!r} ({name}) reached its deadline and got "
                        f"{seen.name} with {error!r}, not a timeout"
                    )
        elif kind is Checkpoint:
            assert isinstance(seen, Checkpoint)
            for call_id, (name, deadline) in running.items():
                if seen.now > deadline + _EPS:
                    raise Broken(
                        f"call {call_id!r} ({name}) has no outcome at t={seen.now:g}, "
                        f"past its deadline t={deadline:g}"
                    )


# ---------------------------------------------------------------------- D9, D17.12


@_invariant(
    "D9, D17.12",
    "between sessions (idle or stopped) transport events change nothing and emit "
    "nothing: response, audio, transcript, tool result, state update, speech, "
    "session and link events alike (an error still surfaces, D11; a tool call is "
    "refused, D8)",
)
def nothing_between_sessions(ctx: Context) -> Generator[None, Observation, None]:
    reactions = Reactions()
    while True:
        seen = yield
        done = reactions.feed(seen)
        if type(seen) is Delivering:
            assert isinstance(seen, Delivering)
            if seen.state.session.status in _OVER and type(seen.event) not in (
                ErrorEvent,
                ToolCall,
            ):
                reactions.watch(seen)
        if done is None:
            continue
        assert isinstance(seen, Delivered)
        _ignored(
            done, seen.state, f"{type(done.event).__name__} while {done.before.session.status}"
        )


# ---------------------------------------------------------------------- D11


@_invariant(
    "D11",
    "an error event that surfaces (not while reconnecting, not held by a patch) "
    "emits one realtime:error whose error wraps it, last_error becomes that very "
    "object, and audio that was playing ends (tts:audio:end)",
)
def error_event_ends_the_audio(ctx: Context) -> Generator[None, Observation, None]:
    reactions = Reactions()
    playing = False
    patching = False
    while True:
        seen = yield
        done = reactions.feed(seen)
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if name == "tts:audio:start":
                playing = True
            elif name == "tts:audio:end":
                playing = False
            elif name == "realtime:state" and not _live(seen.payload.state):
                patching = False  # a stop, a loss or an end discards the patch
        elif kind is Logged:
            assert isinstance(seen, Logged)
            event = seen.context.get("event")
            if event == "patch.started":
                patching = True
            elif event in ("patch.succeeded", "patch.failed"):
                patching = False
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            if type(seen.event) is ErrorEvent and not _reconnecting(seen.state):
                # Noted: whether audio was playing, and whether a patch holds it (D17.3).
                reactions.watch(seen, (playing, patching))
        if done is None:
            continue
        assert isinstance(seen, Delivered)
        was_playing, held = done.note
        if held:
            continue  # D17.3: surfaced (or folded) when the patch settles
        errors = [e.payload.error for e in done.emitted if e.name == "realtime:error"]
        if len(errors) != 1:
            raise Broken(f"an error event emitted {len(errors)} realtime:error")
        error = errors[0]
        if error is not done.event.error and error.cause is not done.event.error:
            raise Broken(f"realtime:error carries {error!r}, which does not wrap the event's")
        if seen.state.last_error is not error:
            raise Broken("last_error is not the object realtime:error carried")
        if was_playing and "tts:audio:end" not in done.names:
            raise Broken("an error event left the audio playing (no tts:audio:end)")


# ---------------------------------------------------------------------- D17.13


@_invariant(
    "D17.13",
    "a remote end (session:end, reason remote) leaves the connection idle and is "
    "followed by exactly one clean-up disconnect (the first disconnect after it; "
    "none other before the next start), which settles within transport_timeout and "
    "whose failure is not surfaced (unless a stop took it over, D17.14)",
)
def remote_end_cleans_up_once(ctx: Context) -> Generator[None, Observation, None]:
    limit = ctx.config.transport_timeout + _EPS
    owing = False  # a remote end happened, no new start since
    restarted = False  # a new start began: only the clean-up is still owed
    cleanups = 0
    cleanup: Any = None  # the clean-up call, while in flight
    adopted = False  # a stop took the clean-up over as its own disconnect (D4)
    failed = False  # the clean-up just failed: what follows must not surface it
    while True:
        seen = yield
        kind = type(seen)
        if failed and kind is not Emitted and kind is not Logged:
            failed = False
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            if seen.name == "realtime:session:end" and seen.payload.reason == "remote":
                if seen.payload.state.connection != ConnectionState.IDLE:
                    raise Broken(
                        f"after a remote end the connection is {seen.payload.state.connection}"
                    )
                owing, restarted, cleanups, cleanup = True, False, 0, None
            elif (
                cleanup is not None
                and seen.name == "realtime:state"
                and seen.payload.state.session.status == _STOPPING
            ):
                adopted = True  # its outcome is the stop's (D17.14)
            elif (
                owing
                and seen.name == "realtime:state"
                and seen.payload.state.session.status == _STARTING
            ):
                owing = cleanups == 0  # a start waits for a pending clean-up (D18.6)
                restarted = True
            elif failed and seen.name == "realtime:error":
                raise Broken("the failure of the clean-up disconnect was surfaced")
        elif kind is CallEntered:
            assert isinstance(seen, CallEntered)
            call = seen.call
            if call.method == "disconnect" and owing:
                cleanups += 1
                if cleanups > 1:
                    raise Broken("a second disconnect after a remote end")
                cleanup, adopted = call, False
                owing = not restarted
        elif kind is CallExited:
            assert isinstance(seen, CallExited)
            call = seen.call
            if call is cleanup:
                cleanup = None
                assert call.exited_at is not None
                if call.exited_at - call.entered_at > limit:
                    raise Broken(
                        f"the clean-up disconnect took {call.exited_at - call.entered_at:g}s "
                        f"(bound {ctx.config.transport_timeout:g}s)"
                    )
                failed = call.outcome != "ok" and not adopted
        elif kind is Checkpoint or kind is Exited:
            assert isinstance(seen, (Checkpoint, Exited))
            if owing and cleanups == 0:
                raise Broken("no clean-up disconnect after a remote end")
            if cleanup is not None and seen.now - cleanup.entered_at > limit:
                raise Broken(
                    f"the clean-up disconnect has been in flight for "
                    f"{seen.now - cleanup.entered_at:g}s (bound "
                    f"{ctx.config.transport_timeout:g}s)"
                )


# ---------------------------------------------------------------------- D3


@_invariant(
    "D3, D18.6",
    "a start settles in time: the session is never starting, and an accepted "
    "start_session never waits, longer than a pending clean-up disconnect plus the "
    "connect, each bounded by transport_timeout",
)
def start_settles_in_time(ctx: Context) -> Generator[None, Observation, None]:
    bound = 2 * ctx.config.transport_timeout + _EPS
    starting_since: float | None = None
    starts: list[Command] = []
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            if seen.name == "realtime:state":
                if seen.payload.state.session.status == _STARTING:
                    if starting_since is None:
                        starting_since = seen.at
                else:
                    starting_since = None
        elif kind is CommandIssued:
            assert isinstance(seen, CommandIssued)
            command = seen.command
            if command.kind == "start_session" and command.before.session.status in _OVER:
                starts.append(command)
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            if command in starts:
                starts.remove(command)
                assert command.returned_at is not None
                took = command.returned_at - command.issued_at
                if took > bound:
                    raise Broken(f"start_session took {took:g}s (bound {bound:g}s)")
        elif kind is Checkpoint:
            assert isinstance(seen, Checkpoint)
            if starting_since is not None and seen.now - starting_since > bound:
                raise Broken(
                    f"the session has been starting since t={starting_since:g} (bound {bound:g}s)"
                )
            for command in starts:
                if seen.now - command.issued_at > bound:
                    raise Broken(
                        f"start_session (step {command.step}) has not returned after "
                        f"{seen.now - command.issued_at:g}s (bound {bound:g}s)"
                    )
