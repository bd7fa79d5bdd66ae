"""Decisions about reconnecting (SEMANTICS D6, D10, D12, D17.4, D17.11, D18.2, D18.3, B11).

All timing is virtual (D12): ``await anyio.sleep(x)`` advances the clock by ``x``
seconds at once, ``settle()`` lets the manager run what is already due without moving
the clock.  Default delays are 0.5, 1, 2, 4, 5 s, so with a recover that returns at
once attempt ``k`` calls ``recover`` exactly ``sum(delays[:k])`` after the loss.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import pytest

from charivo_fsm import (
    Character,
    CharacterVoice,
    CharivoError,
    CharivoStateError,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
    ConnectionState,
    RealtimeManager,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolRegistration,
    ResponseStatus,
    SessionStatus,
    build_realtime_session_config,
    create_realtime_manager,
)
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioOutputStarted,
    ConnectionLost,
    ErrorEvent,
    SessionEnded,
    SessionStarted,
    ToolCall,
)
from charivo_fsm.payloads import (
    LipsyncPayload,
    ReconnectAttemptPayload,
    ReconnectExhaustedPayload,
    ReconnectSuccessPayload,
    ToolErrorPayload,
)
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle

pytestmark = pytest.mark.anyio


def exact_manager(transport: Any, **options: Any) -> RealtimeManager:
    """A manager whose reconnect delays are exactly as configured (no jitter): these
    tests check the delays themselves.  Jitter has its own tests."""
    options.setdefault("reconnect_jitter", 0.0)
    return create_realtime_manager(transport, **options)

DEFAULT_DELAYS = (0.5, 1.0, 2.0, 4.0, 5.0)
MARIN = {"provider": "openai", "voice": "marin"}
ALL_TIMERS = 60.0  # virtual seconds: longer than every default delay together
LIMIT = 600.0  # virtual seconds: a test that hangs on a broken engine fails instead


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Fail (virtual-time ``TimeoutError``) instead of hanging when the engine stalls."""

    @functools.wraps(test)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        with anyio.fail_after(LIMIT):
            await test(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------- helpers


class TimedEmitter(RecordingEmitter):
    """A recording emitter that also notes the virtual time of every emit."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[str, float]] = []

    def emit(self, name: str, payload: Any) -> None:
        super().emit(name, payload)
        self.times.append((name, anyio.current_time()))

    def times_of(self, name: str) -> list[float]:
        return [at for event_name, at in self.times if event_name == name]


class Background:
    """The outcome of a call run in a task: done, raised error, virtual finish time."""

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self.at: float | None = None

    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await fn(*args)
        except Exception as error:
            self.error = error
        finally:
            self.done = True
            self.at = anyio.current_time()


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def capture_logger(name: str) -> tuple[logging.Logger, ListHandler]:
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler = ListHandler()
    logger.addHandler(handler)
    return logger, handler


def tool(name: str, handler: Any, timeout: float | None = None) -> RealtimeToolRegistration:
    return RealtimeToolRegistration(
        definition=RealtimeTool(
            name=name,
            description=f"{name} tool",
            parameters={"type": "object", "properties": {}},
        ),
        handler=handler,
        timeout=timeout,
    )


async def noop_handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"success": True}


def lost(cause: str = "offline", error: BaseException | None = None) -> ConnectionLost:
    return ConnectionLost(cause=cause, error=error)


def states(emitter: RecordingEmitter) -> list[Any]:
    return [payload.state for payload in emitter.payloads("realtime:state")]


def recover_voices(fake: FakeTransport) -> list[str | None]:
    return [args[0].voice for args in fake.calls_to("recover")]


def failing_recover(fake: FakeTransport, failures: int, log: list[float] | None = None) -> None:
    """The first ``failures`` recovers raise; later ones succeed."""
    count = 0

    async def recover(_config: RealtimeSessionConfig) -> None:
        nonlocal count
        count += 1
        if log is not None:
            log.append(anyio.current_time())
        if count <= failures:
            raise RuntimeError(f"recover failed #{count}")

    fake.respond_with("recover", recover)


# ------------------------------------------------------------- D6 trigger


@bounded
async def test_d6_loss_while_idle_or_stopped_is_ignored(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 trigger: ``connection.lost`` starts a reconnect only while the session is
    active.  Before the first start and after a stop it changes nothing: no state,
    no ``reconnect:attempt``, no ``recover`` even after every delay has passed."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        initial = manager.state
        fake.emit(lost())
        await anyio.sleep(ALL_TIMERS)
        assert manager.state == initial
        assert emitter.events == []

        await manager.start_session()
        await manager.stop_session()
        stopped = manager.state
        emitter.clear()
        fake.emit(lost())
        await anyio.sleep(ALL_TIMERS)
        assert manager.state == stopped
        assert emitter.events == []
        assert fake.count("recover") == 0


@bounded
async def test_d6_loss_while_stopping_is_ignored(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 trigger: a loss while a stop is closing the link does not start a reconnect;
    the stop completes normally (one disconnect, one ``session:end`` reason user)."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        gate = fake.gate("disconnect")
        async with anyio.create_task_group() as tg:
            stop = Background()
            tg.start_soon(stop.run, manager.stop_session)
            await gate.wait_entered()
            assert manager.state.session.status == SessionStatus.STOPPING
            fake.emit(lost())
            await settle()
            assert emitter.payloads("realtime:reconnect:attempt") == []
            gate.open()
        assert stop.error is None
        await anyio.sleep(ALL_TIMERS)
        assert fake.count("recover") == 0
        assert fake.count("disconnect") == 1
        assert emitter.payloads("realtime:reconnect:attempt") == []
        state = manager.state
        assert (state.connection, state.session.status) == (
            ConnectionState.IDLE,
            SessionStatus.STOPPED,
        )
        assert [end.reason for end in emitter.payloads("realtime:session:end")] == ["user"]


@bounded
async def test_d6_loss_while_reconnecting_is_ignored(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 trigger / while reconnecting: a second ``connection.lost`` during the backoff
    or while a recover is in flight belongs to the lost link and is ignored: one loop,
    one attempt, the first cause kept, ``total_ms`` unaffected."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        gate = fake.gate("recover")
        emitter.clear()
        fake.emit(lost("offline"))
        await anyio.sleep(0.2)
        fake.emit(lost("ice-failed", RuntimeError("second loss")))
        await gate.wait_entered()
        fake.emit(lost("connection-failed"))
        await settle()
        assert manager.state.last_error is None
        gate.open()
        await settle()
        await anyio.sleep(ALL_TIMERS)

        assert fake.count("recover") == 1
        assert emitter.payloads("realtime:reconnect:attempt") == [
            ReconnectAttemptPayload(attempt=1, delay_ms=500, cause="offline")
        ]
        assert emitter.payloads("realtime:reconnect:success") == [
            ReconnectSuccessPayload(attempts=1, total_ms=500, cause="offline")
        ]
        assert manager.state.connection == ConnectionState.CONNECTED


# --------------------------------------------------------------- D6 begin


@bounded
async def test_d6_begin_interrupts_responding_turn_and_ends_audio(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 begin: a ``responding`` response becomes ``interrupted`` with its text kept;
    active audio is ended (``tts:lipsync:update`` rms 0, ``tts:audio:end``); the state
    emitted at the begin already shows connecting/interrupted; status stays active."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.gate("recover")
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantTextDelta(text="hel"))
        fake.emit(AssistantTextDelta(text="lo"))
        fake.emit(AudioOutputStarted())
        emitter.clear()

        fake.emit(lost())

        response = manager.state.response
        assert (response.status, response.text) == (ResponseStatus.INTERRUPTED, "hello")
        assert len(emitter.payloads("tts:audio:end")) == 1
        assert emitter.payloads("tts:lipsync:update") == [LipsyncPayload(0.0)]
        begin = states(emitter)[0]
        assert begin.connection == ConnectionState.CONNECTING
        assert begin.session.status == SessionStatus.ACTIVE
        assert (begin.response.status, begin.response.text) == (
            ResponseStatus.INTERRUPTED,
            "hello",
        )
        assert manager.state.session.status == SessionStatus.ACTIVE


@bounded
async def test_d6_begin_ends_audio_and_keeps_a_completed_turn(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 begin: audio still playing after a completed turn is ended too (B16 fixed),
    and a response that is not ``responding`` keeps its status and text."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantResponseCompleted(text="done"))
        fake.emit(AudioOutputStarted())
        emitter.clear()

        fake.emit(lost())

        assert len(emitter.payloads("tts:audio:end")) == 1
        response = manager.state.response
        assert (response.status, response.text) == (ResponseStatus.COMPLETED, "done")


@bounded
async def test_d6_begin_cancels_running_tool_calls(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 begin / D8 / D18.4: tool calls still running when the link is lost are
    cancelled: each gets exactly one ``realtime:tool:error`` carrying a
    ``CharivoStateError``, and no result is ever sent for them (not even after the
    handler's own duration and the reconnect have passed)."""
    started: list[str] = []

    async def slow(args: dict[str, Any], context: Any) -> dict[str, Any]:
        started.append(context.call_id)
        await anyio.sleep(1.0)
        return {"success": True}

    manager = exact_manager(fake, tools=[tool("slowA", slow), tool("slowB", slow)])
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(ToolCall(name="slowA", args={}, call_id="c1"))
        fake.emit(ToolCall(name="slowB", args={}, call_id="c2"))
        await settle()
        assert sorted(started) == ["c1", "c2"]

        fake.emit(lost())
        await settle()

        errors = emitter.payloads("realtime:tool:error")
        assert sorted((e.name, e.call_id) for e in errors) == [("slowA", "c1"), ("slowB", "c2")]
        assert all(isinstance(e.error, CharivoStateError) for e in errors)

        await anyio.sleep(ALL_TIMERS)
        assert manager.state.connection == ConnectionState.CONNECTED
        assert fake.count("send_tool_result") == 0
        assert emitter.payloads("realtime:tool:result") == []
        assert len(emitter.payloads("realtime:tool:error")) == 2


@bounded
async def test_d6_begin_last_error_is_wrapped_event_error(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 begin: ``last_error`` becomes the wrapped ``event.error``: a
    ``CharivoTransportError`` with the raw error as cause, visible in the state
    emitted at the begin."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.gate("recover")
        emitter.clear()
        raw = OSError("network")
        fake.emit(lost("offline", raw))
        error = manager.state.last_error
        assert isinstance(error, CharivoTransportError)
        assert error.cause is raw
        assert error.message == "network"
        assert states(emitter)[0].last_error is error


@bounded
async def test_d6_begin_charivo_error_kept_as_is(fake: FakeTransport) -> None:
    """D6 begin: an ``event.error`` that already is a ``CharivoError`` is stored
    unchanged (wrapping returns the very object)."""
    manager = exact_manager(fake)
    async with manager:
        await manager.start_session()
        fake.gate("recover")
        given = CharivoTransportError("socket closed")
        fake.emit(lost("socket-closed", given))
        assert manager.state.last_error is given


@bounded
async def test_d6_begin_without_error_keeps_last_error(fake: FakeTransport) -> None:
    """D6 begin: without ``event.error`` the ``last_error`` is left as it was."""
    manager = exact_manager(fake)
    async with manager:
        await manager.start_session()
        fake.gate("recover")
        fake.emit(ErrorEvent(error=RuntimeError("earlier")))
        earlier = manager.state.last_error
        assert earlier is not None
        fake.emit(lost())
        assert manager.state.connection == ConnectionState.CONNECTING
        assert manager.state.last_error is earlier


# ------------------------------------------------------------ D6 attempts


@bounded
async def test_d6_attempts_follow_delays_announced_before_each_delay(
    fake: FakeTransport,
) -> None:
    """D6 attempts / D12: one ``reconnect:attempt`` per delay of ``reconnect_delays``
    (1-based ``attempt``, ``delay_ms`` in ms, the loss cause), each emitted before its
    delay: attempt k at ``t0 + sum(delays[:k-1])``, its recover at
    ``t0 + sum(delays[:k])`` exactly (virtual clock)."""
    emitter = TimedEmitter()
    recover_times: list[float] = []
    failing_recover(fake, failures=99, log=recover_times)
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        t0 = anyio.current_time()
        fake.emit(lost("ice-disconnected"))
        assert emitter.payloads("realtime:reconnect:attempt") == [
            ReconnectAttemptPayload(attempt=1, delay_ms=500, cause="ice-disconnected")
        ]
        await anyio.sleep(ALL_TIMERS)

        assert emitter.payloads("realtime:reconnect:attempt") == [
            ReconnectAttemptPayload(attempt=k + 1, delay_ms=ms, cause="ice-disconnected")
            for k, ms in enumerate((500, 1000, 2000, 4000, 5000))
        ]
        attempt_offsets = [at - t0 for at in emitter.times_of("realtime:reconnect:attempt")]
        recover_offsets = [at - t0 for at in recover_times]
        assert attempt_offsets == pytest.approx([0.0, 0.5, 1.5, 3.5, 7.5], abs=1e-9)
        assert recover_offsets == pytest.approx([0.5, 1.5, 3.5, 7.5, 12.5], abs=1e-9)


@bounded
async def test_d6_each_attempt_builds_effective_config_at_that_moment(
    fake: FakeTransport,
) -> None:
    """D6 attempts: each recover gets the effective config built when the attempt
    runs: the latest base (an ``update_session`` during the backoff), the current
    character (``set_character`` during the backoff) and the current registry
    (``register_tool`` during the backoff).  D6 success: the committed config is that
    attempt's config."""
    hiyori = Character(id="c-1", name="Hiyori", voice=CharacterVoice(voice_id="marin"))
    mika = Character(id="c-2", name="Mika", personality="cheerful")
    failing_recover(fake, failures=1)
    manager = exact_manager(
        fake,
        default_session_config={"provider": "openai", "model": "gpt-realtime"},
        tools=[tool("toolA", noop_handler)],
    )
    manager.set_character(hiyori)
    async with manager:
        await manager.start_session()
        fake.emit(lost())
        await anyio.sleep(0.5)
        await settle()
        assert fake.count("recover") == 1
        first = fake.calls_to("recover")[0][0]
        assert first.voice == "marin"
        assert "Hiyori" in (first.instructions or "")
        assert [t.name for t in first.tools or ()] == ["toolA"]

        async with anyio.create_task_group() as tg:
            update = Background()
            tg.start_soon(update.run, manager.update_session, {"voice": "alloy"})
            await settle()
            manager.set_character(mika)
            manager.register_tool(tool("toolB", noop_handler))
            await anyio.sleep(1.0)
            await settle()
        assert update.error is None

        second = fake.calls_to("recover")[1][0]
        expected = attrs.evolve(
            build_realtime_session_config(
                mika, RealtimeSessionConfig(provider="openai", model="gpt-realtime", voice="alloy")
            ),
            tools=tuple(manager.registered_tools()),
        )
        assert second == expected
        assert [t.name for t in second.tools or ()] == ["toolA", "toolB"]
        assert "Mika" in (second.instructions or "")
        assert manager.state.session.config == second
        assert manager.state.session.character_id == "c-2"
        assert fake.count("update_session") == 0


@bounded
async def test_d6_each_recover_bounded_by_transport_timeout(fake: FakeTransport) -> None:
    """D6 attempts: every ``recover`` is bounded by ``transport_timeout``.  A hanging
    recover fails with ``CharivoTimeoutError`` after exactly ``transport_timeout``
    (virtual), the next attempt follows; after the last, the exhausted error's cause
    is that timeout error and ``total_ms`` counts delays plus timeouts."""
    emitter = TimedEmitter()
    fake.hang("recover", always=True)
    manager = exact_manager(fake, reconnect_delays=(0.1, 0.2), transport_timeout=2.0)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        t0 = anyio.current_time()
        fake.emit(lost())
        await anyio.sleep(2.15)  # recover 1 ran from 0.1 to 2.1
        await settle()
        assert fake.count("recover") == 1
        assert isinstance(manager.state.last_error, CharivoTimeoutError)
        assert manager.state.connection == ConnectionState.CONNECTING
        attempts = emitter.payloads("realtime:reconnect:attempt")
        assert [a.attempt for a in attempts] == [1, 2]
        assert emitter.times_of("realtime:reconnect:attempt")[1] - t0 == pytest.approx(2.1)

        await anyio.sleep(ALL_TIMERS)
        assert fake.count("recover") == 2
        [exhausted] = emitter.payloads("realtime:reconnect:exhausted")
        assert exhausted.attempts == 2
        assert exhausted.total_ms == 4300
        assert isinstance(exhausted.last_error, CharivoTransportError)
        assert isinstance(exhausted.last_error.cause, CharivoTimeoutError)
        assert emitter.times_of("realtime:reconnect:exhausted")[0] - t0 == pytest.approx(4.3)


# ------------------------------------------------------------- D6 success


@bounded
async def test_d6_success_continues_the_same_session(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 success: connected, config = that attempt's config, ``last_error`` None,
    ``reconnect:success`` (after the committing state); no session boundary, same
    session_id, the response status unchanged."""
    failing_recover(fake, failures=1)
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        session_id = manager.session_id
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantResponseCompleted(text="done"))
        emitter.clear()

        fake.emit(lost("visibility", RuntimeError("hidden")))
        assert manager.state.last_error is not None
        await anyio.sleep(ALL_TIMERS)

        state = manager.state
        assert state.connection == ConnectionState.CONNECTED
        assert state.session.status == SessionStatus.ACTIVE
        assert state.session.config == fake.calls_to("recover")[-1][0]
        assert state.last_error is None
        assert (state.response.status, state.response.text) == (ResponseStatus.COMPLETED, "done")
        assert manager.session_id == session_id
        assert emitter.payloads("realtime:reconnect:success") == [
            ReconnectSuccessPayload(attempts=2, total_ms=1500, cause="visibility")
        ]
        assert emitter.payloads("realtime:session:start") == []
        assert emitter.payloads("realtime:session:end") == []
        names = emitter.names()
        success_at = names.index("realtime:reconnect:success")
        assert names[success_at - 1] == "realtime:state"
        committed = emitter.events[success_at - 1][1].state
        assert committed.connection == ConnectionState.CONNECTED
        assert committed.last_error is None


# ----------------------------------------------------------- D6 exhausted


@bounded
async def test_d6_d17_11_exhausted_ends_session_with_one_error_object(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 exhausted / D17.11: ``reconnect:exhausted``, then ``realtime:error``, the
    final state, ``session:end`` reason error.  One ``CharivoTransportError`` whose
    cause is the last recover error (here the transport raises ``CharivoError``
    objects, which are never re-wrapped, so the identity is exact) is
    ``reconnect:exhausted.last_error``, the ``realtime:error`` payload, ``last_error``
    and the ``last_error`` of the final state and of ``session:end``.  Final state:
    error / stopped / config None; session_id cleared; no ``session:start``."""
    raised: list[CharivoTransportError] = []

    async def recover(_config: RealtimeSessionConfig) -> None:
        error = CharivoTransportError(f"down #{len(raised) + 1}")
        raised.append(error)
        raise error

    fake.respond_with("recover", recover)
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        emitter.clear()
        fake.emit(lost("pagehide"))
        await anyio.sleep(ALL_TIMERS)

        assert len(raised) == 5
        [exhausted] = emitter.payloads("realtime:reconnect:exhausted")
        assert isinstance(exhausted, ReconnectExhaustedPayload)
        assert (exhausted.attempts, exhausted.total_ms, exhausted.cause) == (5, 12_500, "pagehide")
        error = exhausted.last_error
        assert isinstance(error, CharivoTransportError)
        assert error.cause is raised[-1]
        [reported] = emitter.payloads("realtime:error")
        assert reported.error is error
        state = manager.state
        assert state.last_error is error
        assert (state.connection, state.session.status, state.session.config) == (
            ConnectionState.ERROR,
            SessionStatus.STOPPED,
            None,
        )
        [end] = emitter.payloads("realtime:session:end")
        assert end.reason == "error"
        assert end.state.last_error is error
        assert end.state.connection == ConnectionState.ERROR
        assert emitter.payloads("realtime:session:start") == []
        assert manager.session_id is None

        names = emitter.names()
        i_exhausted = names.index("realtime:reconnect:exhausted")
        i_error = names.index("realtime:error")
        i_end = names.index("realtime:session:end")
        assert i_exhausted < i_error < i_end
        final_states = [p.state for n, p in emitter.events[i_error:i_end] if n == "realtime:state"]
        assert final_states, "no realtime:state between realtime:error and session:end"
        assert final_states[-1].session.status == SessionStatus.STOPPED
        assert final_states[-1].last_error is error
        assert names[i_end + 1 :] == [], "emitted after the session's session:end (D2)"


# ------------------------------------------------------- D6 while reconnecting


@bounded
async def test_d6_session_started_and_ended_ignored_while_reconnecting(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 while reconnecting / D10 / D18.1: ``session.started`` and ``session.ended``
    belong to the lost link: during the backoff and during an in-flight recover they
    change nothing and emit nothing (no state, no ``session:end``); each is logged at
    debug as ``event.dropped``.  The reconnect then succeeds into the same session."""
    logger, handler = capture_logger("test.reconnect.dropped")
    manager = exact_manager(fake, logger=logger)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        session_id = manager.session_id
        gate = fake.gate("recover")
        fake.emit(lost())
        before = manager.state
        emitter.clear()
        handler.records.clear()

        fake.emit(SessionStarted())
        fake.emit(SessionEnded())
        assert manager.state == before
        assert emitter.events == []

        await gate.wait_entered()
        emitter.clear()
        fake.emit(SessionStarted())
        fake.emit(SessionEnded())
        assert manager.state == before
        assert emitter.events == []

        dropped = [
            r for r in handler.records if getattr(r, "charivo", {}).get("event") == "event.dropped"
        ]
        assert len(dropped) == 4
        assert all(r.levelno == logging.DEBUG for r in dropped)

        gate.open()
        await anyio.sleep(ALL_TIMERS)
        assert manager.state.connection == ConnectionState.CONNECTED
        assert manager.state.session.status == SessionStatus.ACTIVE
        assert manager.session_id == session_id
        assert emitter.payloads("realtime:session:end") == []


@bounded
async def test_d6_tool_call_refused_while_reconnecting(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 while reconnecting / D8 / D17.10: a ``tool.call`` is refused: one
    ``tool:call``, one ``tool:error`` with ``CharivoStateError``, the handler never
    runs and nothing is sent, neither during the backoff nor during a recover, nor
    after the reconnect succeeds."""
    calls: list[str] = []

    async def handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(context.call_id)
        return {"success": True}

    manager = exact_manager(fake, tools=[tool("wave", handler)])
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        gate = fake.gate("recover")
        fake.emit(lost())
        emitter.clear()

        fake.emit(ToolCall(name="wave", args={}, call_id="during-backoff"))
        await settle()
        await gate.wait_entered()
        fake.emit(ToolCall(name="wave", args={}, call_id="during-recover"))
        await settle()
        gate.open()
        await anyio.sleep(ALL_TIMERS)

        assert manager.state.connection == ConnectionState.CONNECTED
        assert calls == []
        assert fake.count("send_tool_result") == 0
        assert [p.call_id for p in emitter.payloads("realtime:tool:call")] == [
            "during-backoff",
            "during-recover",
        ]
        errors = emitter.payloads("realtime:tool:error")
        assert [(e.name, e.call_id) for e in errors] == [
            ("wave", "during-backoff"),
            ("wave", "during-recover"),
        ]
        assert all(isinstance(e, ToolErrorPayload) for e in errors)
        assert all(isinstance(e.error, CharivoStateError) for e in errors)
        assert emitter.payloads("realtime:tool:result") == []


@bounded
async def test_d6_error_event_while_reconnecting_updates_last_error_only(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 while reconnecting / D11: an ``error`` event sets ``last_error`` to the
    wrapped error (a ``CharivoError`` stays the same object) and emits one state, but
    no ``realtime:error`` -- during the backoff and during an in-flight recover.  The
    success then clears ``last_error``."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        gate = fake.gate("recover")
        fake.emit(lost())
        emitter.clear()

        raw = RuntimeError("glitch")
        fake.emit(ErrorEvent(error=raw))
        wrapped = manager.state.last_error
        assert isinstance(wrapped, CharivoTransportError)
        assert wrapped.cause is raw
        assert emitter.names() == ["realtime:state"]
        assert states(emitter)[0].last_error is wrapped
        assert states(emitter)[0].connection == ConnectionState.CONNECTING

        await gate.wait_entered()
        emitter.clear()
        given = CharivoError("provider hiccup")
        fake.emit(ErrorEvent(error=given))
        assert manager.state.last_error is given
        assert emitter.names() == ["realtime:state"]
        assert states(emitter)[0].last_error is given

        gate.open()
        await anyio.sleep(ALL_TIMERS)
        assert emitter.payloads("realtime:error") == []
        assert manager.state.connection == ConnectionState.CONNECTED
        assert manager.state.last_error is None


@bounded
async def test_d6_later_loss_after_success_starts_fresh_loop(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6: after a successful reconnect, a new ``connection.lost`` starts a fresh loop
    at attempt 1 (delay 500 ms) with its own cause and its own ``total_ms``."""
    failing_recover(fake, failures=1)
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(lost("offline"))
        await anyio.sleep(ALL_TIMERS)
        assert emitter.payloads("realtime:reconnect:success") == [
            ReconnectSuccessPayload(attempts=2, total_ms=1500, cause="offline")
        ]
        emitter.clear()

        fake.emit(lost("online"))
        await anyio.sleep(ALL_TIMERS)
        assert emitter.payloads("realtime:reconnect:attempt") == [
            ReconnectAttemptPayload(attempt=1, delay_ms=500, cause="online")
        ]
        assert emitter.payloads("realtime:reconnect:success") == [
            ReconnectSuccessPayload(attempts=1, total_ms=500, cause="online")
        ]
        assert fake.count("recover") == 3


# ------------------------------------------------------ custom reconnect delays


@bounded
async def test_custom_reconnect_delays_exhaust_after_their_count(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 attempts with ``reconnect_delays=(0.1, 0.2)``: two attempts announced with
    ``delay_ms`` 100 and 200, two recovers, exhaustion after 300 virtual ms."""
    fake.fail_always("recover", RuntimeError("still down"))
    manager = exact_manager(fake, reconnect_delays=(0.1, 0.2))
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(lost("offline"))
        await anyio.sleep(ALL_TIMERS)
        assert emitter.payloads("realtime:reconnect:attempt") == [
            ReconnectAttemptPayload(attempt=1, delay_ms=100, cause="offline"),
            ReconnectAttemptPayload(attempt=2, delay_ms=200, cause="offline"),
        ]
        assert fake.count("recover") == 2
        [exhausted] = emitter.payloads("realtime:reconnect:exhausted")
        assert (exhausted.attempts, exhausted.total_ms) == (2, 300)
        assert manager.state.session.status == SessionStatus.STOPPED


@bounded
async def test_custom_reconnect_delays_success_total_ms(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D6 success with ``reconnect_delays=(0.1, 0.2)``: the second attempt succeeds,
    ``total_ms`` 300 (100 + 200 of virtual time)."""
    failing_recover(fake, failures=1)
    manager = exact_manager(fake, reconnect_delays=(0.1, 0.2))
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(lost("offline"))
        await anyio.sleep(ALL_TIMERS)
        assert emitter.payloads("realtime:reconnect:success") == [
            ReconnectSuccessPayload(attempts=2, total_ms=300, cause="offline")
        ]


def test_empty_reconnect_delays_rejected() -> None:
    """D17.15: ``reconnect_delays`` must hold at least one delay."""
    with pytest.raises(CharivoValidationError):
        exact_manager(FakeTransport(), reconnect_delays=())


# ----------------------------------------------------------------------- D10


@bounded
async def test_d10_session_started_ignored_before_start_and_after_stop(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D10 (B5 fixed): ``session.started`` while idle or stopped is ignored: the
    connection stays idle, nothing is emitted."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        initial = manager.state
        fake.emit(SessionStarted())
        assert manager.state == initial
        assert manager.state.connection == ConnectionState.IDLE
        assert emitter.events == []

        await manager.start_session()
        await manager.stop_session()
        stopped = manager.state
        emitter.clear()
        fake.emit(SessionStarted())
        assert manager.state == stopped
        assert manager.state.connection == ConnectionState.IDLE
        assert emitter.events == []


@bounded
async def test_d10_session_started_ignored_while_starting(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D10: ``session.started`` while the start is still connecting is ignored: the
    connection stays ``connecting``, no state and no ``session:start`` are emitted for
    it; the start then commits normally with one ``session:start``."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        gate = fake.gate("connect")
        async with anyio.create_task_group() as tg:
            start = Background()
            tg.start_soon(start.run, manager.start_session)
            await gate.wait_entered()
            emitter.clear()
            fake.emit(SessionStarted())
            assert manager.state.connection == ConnectionState.CONNECTING
            assert manager.state.session.status == SessionStatus.STARTING
            assert emitter.events == []
            gate.open()
        assert start.error is None
        assert len(emitter.payloads("realtime:session:start")) == 1


@bounded
async def test_d10_session_started_while_connected_emits_nothing(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D10: on an active, connected session ``session.started`` changes nothing, so
    no state is emitted."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        before = manager.state
        emitter.clear()
        fake.emit(SessionStarted())
        assert manager.state == before
        assert emitter.events == []


@bounded
async def test_d10_session_started_ignored_while_patching(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D10: ``session.started`` during an in-flight patch is ignored (no state emitted
    for it); the patch then commits as usual."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        gate = fake.gate("update_session")
        async with anyio.create_task_group() as tg:
            update = Background()
            tg.start_soon(update.run, manager.update_session, {"voice": "alloy"})
            await gate.wait_entered()
            before = manager.state
            emitter.clear()
            fake.emit(SessionStarted())
            assert manager.state == before
            assert emitter.events == []
            gate.open()
        assert update.error is None
        assert manager.state.session.config is not None
        assert manager.state.session.config.voice == "alloy"


# ----------------------------------------------------------------------- D12


@bounded
async def test_d12_full_exhaustion_is_virtual_time(
    fake: FakeTransport,
) -> None:
    """D12: every wait of the reconnect uses anyio time.  A full exhaustion with the
    default delays completes with ``anyio.current_time()`` advanced by exactly
    12.5 s between the loss and ``reconnect:exhausted``, ``total_ms == 12500``, and
    takes (far) less than 12.5 s of wall time."""
    emitter = TimedEmitter()
    fake.fail_always("recover", RuntimeError("down"))
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    wall = time.monotonic()
    async with manager:
        await manager.start_session()
        t0 = anyio.current_time()
        fake.emit(lost())
        await anyio.sleep(ALL_TIMERS)
        [at] = emitter.times_of("realtime:reconnect:exhausted")
        assert at - t0 == 12.5
        [exhausted] = emitter.payloads("realtime:reconnect:exhausted")
        assert exhausted.total_ms == 12_500
        assert manager.state.session.status == SessionStatus.STOPPED
    assert time.monotonic() - wall < 5.0


# -------------------------------------------------------------------- D17.4


@bounded
async def test_d17_4_update_while_reconnecting_returns_when_reconnect_succeeds(
    fake: FakeTransport,
) -> None:
    """D17.4: ``update_session`` during a reconnect caches its config and returns when
    the reconnect succeeds (at that virtual instant, not before); the config reaches
    the transport through ``recover``; ``transport.update_session`` is never called and
    no follow-up patch runs (the config did not change while a recover was in flight)."""
    emitter = TimedEmitter()
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        fake.emit(lost())
        async with anyio.create_task_group() as tg:
            update = Background()
            tg.start_soon(update.run, manager.update_session, {"voice": "alloy"})
            await anyio.sleep(0.3)
            assert not update.done
        assert update.error is None
        [success_at] = emitter.times_of("realtime:reconnect:success")
        assert update.at == success_at
        assert recover_voices(fake) == ["alloy"]
        assert manager.state.session.config is not None
        assert manager.state.session.config.voice == "alloy"
        await anyio.sleep(ALL_TIMERS)
        assert fake.count("update_session") == 0


@bounded
async def test_d17_4_d18_3_update_while_reconnecting_raises_exhaustion_error(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D17.4 / D18.3: an ``update_session`` waiting on a reconnect that is exhausted
    raises the D17.11 error object: the very ``reconnect:exhausted.last_error``."""
    fake.fail_always("recover", RuntimeError("down"))
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        fake.emit(lost())
        async with anyio.create_task_group() as tg:
            update = Background()
            tg.start_soon(update.run, manager.update_session, {"voice": "alloy"})
            await anyio.sleep(1.0)
            assert not update.done
        [exhausted] = emitter.payloads("realtime:reconnect:exhausted")
        assert update.error is exhausted.last_error
        assert manager.state.last_error is update.error
        assert fake.count("update_session") == 0


@bounded
async def test_d17_4_config_changed_during_recover_gets_one_follow_up_patch(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D17.4 / D5: callers arriving while a ``recover`` is in flight (their config is
    newer than the one the recover carries) wait for one follow-up patch with the
    latest config, run right after the reconnect commits; they return after that
    patch settles, not at the reconnect success.  Two such callers coalesce into one
    patch."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        recover_gate = fake.gate("recover")
        patch_gate = fake.gate("update_session")
        fake.emit(lost())
        await recover_gate.wait_entered()
        async with anyio.create_task_group() as tg:
            first = Background()
            second = Background()
            tg.start_soon(first.run, manager.update_session, {"voice": "alloy"})
            await settle()
            tg.start_soon(second.run, manager.update_session, {"voice": "nova"})
            await settle()
            assert fake.count("update_session") == 0

            recover_gate.open()
            await patch_gate.wait_entered()
            await settle()
            assert len(emitter.payloads("realtime:reconnect:success")) == 1
            assert manager.state.connection == ConnectionState.CONNECTED
            assert manager.state.session.config is not None
            assert manager.state.session.config.voice == "marin"  # the recover's config
            assert [args[0].voice for args in fake.calls_to("update_session")] == ["nova"]
            assert not first.done
            assert not second.done

            patch_gate.open()
        assert first.error is None
        assert second.error is None
        assert fake.count("update_session") == 1
        assert manager.state.session.config.voice == "nova"
        success_at = emitter.names().index("realtime:reconnect:success")
        later = [p.state for n, p in emitter.events[success_at:] if n == "realtime:state"]
        assert [st.session.config.voice for st in later][-1] == "nova"
        assert all(st.session.config.voice != "alloy" for st in later)


@bounded
async def test_d18_9_only_callers_during_recover_wait_for_follow_up(
    fake: FakeTransport,
) -> None:
    """D18.9 / D17.4: a caller that arrived during the backoff (its config is carried
    by the recover) returns when the reconnect succeeds, while the follow-up patch is
    still in flight; a caller that arrived while the recover was in flight returns only
    after that patch."""
    manager = exact_manager(fake)
    async with manager:
        await manager.start_session(MARIN)
        recover_gate = fake.gate("recover")
        patch_gate = fake.gate("update_session")
        fake.emit(lost())
        async with anyio.create_task_group() as tg:
            early = Background()
            late = Background()
            tg.start_soon(early.run, manager.update_session, {"voice": "alloy"})
            await recover_gate.wait_entered()
            tg.start_soon(late.run, manager.update_session, {"voice": "nova"})
            await settle()

            recover_gate.open()
            await patch_gate.wait_entered()
            await settle()
            assert recover_voices(fake) == ["alloy"]
            assert early.done and early.error is None
            assert not late.done

            patch_gate.open()
        assert late.error is None
        assert [args[0].voice for args in fake.calls_to("update_session")] == ["nova"]
        assert manager.state.session.config is not None
        assert manager.state.session.config.voice == "nova"


# -------------------------------------------------------------------- D18.2


@bounded
async def test_d18_2_errors_held_by_patch_discarded_by_loss_update_last_error(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D18.2 / D17.3 / D5: an ``error`` event held by an in-flight patch, when a
    connection loss discards that patch, becomes ``last_error`` (wrapped) as D6 says
    for errors during a reconnect: no ``realtime:error`` for it.  The patch's caller
    is served by the reconnect (returns when it succeeds, its config carried by the
    recover), and the discarded patch is not retried."""
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        patch_gate = fake.gate("update_session")
        recover_gate = fake.gate("recover")
        async with anyio.create_task_group() as tg:
            update = Background()
            tg.start_soon(update.run, manager.update_session, {"voice": "alloy"})
            await patch_gate.wait_entered()
            raw = RuntimeError("held while patching")
            fake.emit(ErrorEvent(error=raw))
            assert emitter.payloads("realtime:error") == []

            fake.emit(lost())
            error = manager.state.last_error
            assert isinstance(error, CharivoTransportError)
            assert error.cause is raw
            assert states(emitter)[-1].last_error is error
            assert manager.state.connection == ConnectionState.CONNECTING

            await recover_gate.wait_entered()
            assert not update.done
            recover_gate.open()
        assert update.error is None
        assert emitter.payloads("realtime:error") == []
        assert recover_voices(fake) == ["alloy"]
        assert manager.state.session.config is not None
        assert manager.state.session.config.voice == "alloy"
        await anyio.sleep(ALL_TIMERS)
        assert fake.count("update_session") == 1
        assert emitter.payloads("realtime:error") == []


# -------------------------------------------------------------------- D18.3


@bounded
async def test_d18_3_update_waiting_on_reconnect_returns_when_stop_cancels_it(
    fake: FakeTransport,
) -> None:
    """D18.3 / D4: ``update_session`` callers waiting on a reconnect return without
    raising when a stop cancels the reconnect -- one that called during the backoff
    and one whose patch the connection loss discarded (D5)."""
    manager = exact_manager(fake)
    async with manager:
        await manager.start_session(MARIN)
        patch_gate = fake.gate("update_session")
        async with anyio.create_task_group() as tg:
            patched = Background()
            tg.start_soon(patched.run, manager.update_session, {"voice": "alloy"})
            await patch_gate.wait_entered()
            fake.emit(lost())
            cached = Background()
            tg.start_soon(cached.run, manager.update_session, {"voice": "nova"})
            await anyio.sleep(0.2)
            assert not patched.done
            assert not cached.done
            await manager.stop_session()
            await settle()
            assert patched.done
            assert cached.done
        assert patched.error is None
        assert cached.error is None
        assert fake.count("recover") == 0
        state = manager.state
        assert (state.connection, state.session.status) == (
            ConnectionState.IDLE,
            SessionStatus.STOPPED,
        )


# ----------------------------------------------------------------- B11 fixed


@bounded
async def test_b11_stop_during_backoff_cancels_loop_at_once(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """B11 fixed / D4: a stop during the backoff cancels the sleep at once (the stop
    takes no virtual time) and the cancelled loop never acts again: well past every
    delay there is no further ``reconnect:attempt``, no state write, no event and no
    ``recover`` call."""
    failing_recover(fake, failures=1)
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(lost())
        await anyio.sleep(0.7)  # attempt 1 failed at 0.5; attempt 2 sleeps until 1.5
        assert fake.count("recover") == 1
        assert len(emitter.payloads("realtime:reconnect:attempt")) == 2

        before = anyio.current_time()
        await manager.stop_session()
        assert anyio.current_time() == before
        stopped = manager.state
        assert (stopped.connection, stopped.session.status, stopped.last_error) == (
            ConnectionState.IDLE,
            SessionStatus.STOPPED,
            None,
        )
        emitted = list(emitter.events)

        await anyio.sleep(ALL_TIMERS)
        assert fake.count("recover") == 1
        assert emitter.events == emitted
        assert manager.state == stopped
        assert len(emitter.payloads("realtime:reconnect:attempt")) == 2
        assert emitter.payloads("realtime:reconnect:exhausted") == []


@bounded
async def test_b11_late_recover_failure_after_stop_writes_nothing(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """B11 fixed / D4: a recover that ignores cancellation and rejects after the stop
    (upstream: it still wrote ``lastError``, emitted state and one more
    ``reconnect:attempt``) changes nothing: no attempt 2, no state carrying its error,
    ``last_error`` None, no further ``recover``; the session ends stopped with one
    ``session:end`` reason user."""

    async def stubborn(_config: RealtimeSessionConfig) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(1.0)
        raise RuntimeError("late failure")

    fake.respond_with("recover", stubborn)
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(lost())
        await anyio.sleep(0.6)  # recover in flight since 0.5, rejects at 1.5
        assert fake.count("recover") == 1
        emitter.clear()

        await manager.stop_session()
        await anyio.sleep(ALL_TIMERS)

        assert fake.count("recover") == 1
        assert emitter.payloads("realtime:reconnect:attempt") == []
        assert emitter.payloads("realtime:reconnect:exhausted") == []
        assert emitter.payloads("realtime:error") == []
        assert all(s.last_error is None for s in states(emitter))
        state = manager.state
        assert (state.connection, state.session.status, state.last_error) == (
            ConnectionState.IDLE,
            SessionStatus.STOPPED,
            None,
        )
        assert [end.reason for end in emitter.payloads("realtime:session:end")] == ["user"]
        assert emitter.names()[-1] == "realtime:session:end"
