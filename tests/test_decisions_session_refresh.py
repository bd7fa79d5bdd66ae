"""Decisions about the session lifecycle and refresh: D2-D5, D13-D16, D17.1-D17.8,
D17.13-D17.15, D18.1, D18.3, D18.5 and D18.6 (SEMANTICS "Decisions").

Every test runs on asyncio and trio with virtual time; ``await anyio.sleep(x)`` moves
the clock by ``x`` seconds instantly.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from charivo_fsm import (
    CharivoError,
    CharivoStateError,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
    RealtimeManager,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolRegistration,
    create_realtime_manager,
)
from charivo_fsm.events import (
    AssistantTextDelta,
    ConnectionLost,
    ErrorEvent,
    SessionEnded,
    SessionStarted,
    ToolCall,
    UserTranscript,
)
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle

pytestmark = pytest.mark.anyio

# ------------------------------------------------------------------------------ helpers


def events_of(records: list[logging.LogRecord], event: str) -> list[logging.LogRecord]:
    found = []
    for record in records:
        context = getattr(record, "charivo", None)
        if isinstance(context, dict) and context.get("event") == event:
            found.append(record)
    return found


class TrackingEmitter(RecordingEmitter):
    """Records every emit together with the manager's session_id at that moment."""

    def __init__(self, manager: RealtimeManager) -> None:
        super().__init__()
        self.manager = manager
        self.session_ids: list[str | None] = []
        manager.set_event_emitter(self)

    def emit(self, name: str, payload: Any) -> None:
        super().emit(name, payload)
        self.session_ids.append(self.manager.session_id)

    def index(self, name: str, start: int = 0) -> int:
        for i in range(start, len(self.events)):
            if self.events[i][0] == name:
                return i
        raise LookupError(name)


def assert_boundaries(em: TrackingEmitter) -> None:
    """D2 invariant over everything emitted so far: session:start and session:end
    alternate, starting with a start (so each session has one start and at most one
    end, after it), and every session:start belongs to a distinct session_id."""
    boundaries = [
        (name, em.session_ids[i])
        for i, (name, _payload) in enumerate(em.events)
        if name in ("realtime:session:start", "realtime:session:end")
    ]
    for position, (name, _sid) in enumerate(boundaries):
        expected = "realtime:session:start" if position % 2 == 0 else "realtime:session:end"
        assert name == expected, f"boundary #{position} is {name}: {boundaries}"
    start_ids = [sid for name, sid in boundaries if name == "realtime:session:start"]
    assert None not in start_ids
    assert len(set(start_ids)) == len(start_ids)


def states(em: RecordingEmitter) -> list[Any]:
    return [p.state for p in em.payloads("realtime:state")]


def voice_of(manager: RealtimeManager) -> str | None:
    config = manager.state.session.config
    assert config is not None
    return config.voice


def make_tool(name: str) -> RealtimeToolRegistration:
    async def handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"success": True}

    return RealtimeToolRegistration(
        definition=RealtimeTool(
            name=name,
            description=f"The {name} tool.",
            parameters={"type": "object", "properties": {}},
        ),
        handler=handler,
    )


def names(config: RealtimeSessionConfig) -> list[str]:
    assert config.tools is not None
    return [t.name for t in config.tools]


class Outcome:
    """What a concurrently run manager call did."""

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self.finished_at: float | None = None


async def run(outcome: Outcome, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    try:
        await fn(*args)
    except Exception as error:
        outcome.error = error
    finally:
        outcome.done = True
        outcome.finished_at = anyio.current_time()


class Latch:
    """A responder for ``fake.respond_with``: waits until released, then raises or returns."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.entered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.configs: list[Any] = []
        self._release = anyio.Event()

    async def __call__(self, *args: Any) -> None:
        self.entered += 1
        self.configs.extend(args)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._release.wait()
        finally:
            self.in_flight -= 1
        if self.error is not None:
            raise self.error

    def release(self) -> None:
        self._release.set()


def live_tasks(backend: str) -> set[Any]:
    """Every task of the running event loop (asyncio) or of the trio task tree."""
    if backend == "asyncio":
        return set(asyncio.all_tasks())
    import trio

    found: set[Any] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


# ================================================================================== D2


async def test_d2_user_stop_one_start_then_one_end(fake: FakeTransport) -> None:
    """D2: a session stopped by the user has one session:start and, after it, one
    session:end (reason user); nothing about it is emitted after the end."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        sid = manager.session_id
        await manager.stop_session()
        end = em.index("realtime:session:end")
        assert em.index("realtime:session:start") < end
        assert em.session_ids[em.index("realtime:session:start")] == sid
        assert [p.reason for p in em.payloads("realtime:session:end")] == ["user"]
        await manager.stop_session()  # a second stop is a no-op
        fake.emit(SessionEnded())
        fake.emit(AssistantTextDelta(text="late"))
        fake.emit(ConnectionLost(cause="offline"))
        await anyio.sleep(10)
        assert em.events[end + 1 :] == []
        assert_boundaries(em)


async def test_d2_remote_end_reason_remote_and_nothing_after(fake: FakeTransport) -> None:
    """D2: a transport session.ended while active ends the session once with reason
    "remote"; later stray events (a second session.ended, deltas, tool results, a lost
    link) emit nothing about that session."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        fake.emit(SessionEnded())
        await settle()
        ends = em.payloads("realtime:session:end")
        assert [p.reason for p in ends] == ["remote"]
        assert ends[0].state.session.status == "stopped"
        end = em.index("realtime:session:end")
        assert em.index("realtime:session:start") < end

        fake.emit(SessionEnded())
        fake.emit(AssistantTextDelta(text="late"))
        fake.emit(UserTranscript(text="late"))
        fake.emit(ConnectionLost(cause="offline"))
        await manager.stop_session()
        await anyio.sleep(10)
        assert em.events[end + 1 :] == []
        assert_boundaries(em)


async def test_d2_exhaustion_ends_with_reason_error_once(fake: FakeTransport) -> None:
    """D2/D6: an exhausted reconnect ends the session with one session:end, reason
    "error", after its session:start; nothing about the session follows."""
    fake.fail_always("recover", RuntimeError("recover failed"))
    manager = create_realtime_manager(fake, reconnect_delays=(0.5, 1.0))
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        fake.emit(ConnectionLost(cause="offline"))
        await anyio.sleep(5)
        await settle()
        ends = em.payloads("realtime:session:end")
        assert [p.reason for p in ends] == ["error"]
        assert manager.state.session.status == "stopped"
        end = em.index("realtime:session:end")
        assert em.index("realtime:reconnect:exhausted") < end
        await manager.stop_session()
        fake.emit(SessionEnded())
        await anyio.sleep(10)
        assert em.events[end + 1 :] == []
        assert_boundaries(em)


async def test_d2_failed_start_emits_no_boundary_and_next_session_is_separate(
    fake: FakeTransport,
) -> None:
    """D2: a start that fails emits neither session:start nor session:end; two later
    sessions each get exactly one start and one end, under distinct session ids."""
    fake.fail_once("connect", RuntimeError("no route"))
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        with pytest.raises(CharivoTransportError):
            await manager.start_session()
        assert em.payloads("realtime:session:start") == []
        assert em.payloads("realtime:session:end") == []
        assert len(em.payloads("realtime:error")) == 1

        await manager.start_session()
        first = manager.session_id
        await manager.stop_session()
        await manager.start_session()
        second = manager.session_id
        fake.emit(SessionEnded())
        await settle()
        assert first != second
        starts = [i for i, (n, _) in enumerate(em.events) if n == "realtime:session:start"]
        assert [em.session_ids[i] for i in starts] == [first, second]
        assert [p.reason for p in em.payloads("realtime:session:end")] == ["user", "remote"]
        assert_boundaries(em)


# ================================================================================== D3


async def test_d3_session_ended_while_starting_fails_the_start(fake: FakeTransport) -> None:
    """D3: a transport session.ended during connect fails the start with
    CharivoTransportError; no session:start (nor end) is emitted (0.7.2 resurrected
    the session, B2)."""
    fake.emit_on("connect", SessionEnded(), once=True)
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        with pytest.raises(CharivoTransportError):
            await manager.start_session()
        await settle()
        assert em.payloads("realtime:session:start") == []
        assert em.payloads("realtime:session:end") == []
        assert manager.state.session.status == "stopped"
        assert manager.session_id is None
        assert_boundaries(em)


async def test_d3_session_ended_while_connect_pending_fails_the_start(
    fake: FakeTransport,
) -> None:
    """D3: the same with connect still parked: the start fails with
    CharivoTransportError without waiting for connect, and no boundary is emitted."""
    gate = fake.gate("connect")
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        start = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, start, manager.start_session)
            await gate.wait_entered()
            fake.emit(SessionEnded())
            await settle()
            assert start.done
            gate.open()
        assert isinstance(start.error, CharivoTransportError)
        await settle()
        assert em.payloads("realtime:session:start") == []
        assert em.payloads("realtime:session:end") == []
        assert manager.state.session.status == "stopped"


async def test_d3_connection_lost_while_starting_commits_then_reconnects(
    fake: FakeTransport,
) -> None:
    """D3: a connection.lost during connect is remembered; when connect succeeds the
    session becomes active (session:start) and a reconnect begins at once.  No emitted
    state (nor the session:start state) reports ``connected`` until the reconnect
    succeeds."""
    gate = fake.gate("connect")
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        start = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, start, manager.start_session)
            await gate.wait_entered()
            fake.emit(ConnectionLost(cause="offline"))
            gate.open()
        assert start.error is None
        assert manager.state.session.status == "active"
        assert manager.state.connection == "connecting"
        started = em.index("realtime:session:start")
        attempt = em.index("realtime:reconnect:attempt")
        assert started < attempt
        assert em.payloads("realtime:reconnect:attempt")[0].attempt == 1
        assert em.payloads("realtime:session:start")[0].state.connection != "connected"
        assert fake.count("recover") == 0

        await anyio.sleep(1.0)
        await settle()
        assert fake.count("recover") == 1
        assert manager.state.connection == "connected"
        # the first state reporting "connected" is the reconnect's commit, emitted
        # right before reconnect:success (R36)
        success = em.index("realtime:reconnect:success")
        connected = [
            i
            for i, (name, payload) in enumerate(em.events)
            if name in ("realtime:state", "realtime:session:start")
            and payload.state.connection == "connected"
        ]
        assert connected[0] == success - 1
        assert_boundaries(em)


async def test_d3_update_while_starting_patches_latest_after_commit(fake: FakeTransport) -> None:
    """D3 (with D17.5/D18.9): update_session during connect caches and returns at once;
    right after the start commits, one patch carries the latest config."""
    gate = fake.gate("connect")
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        start = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, start, manager.start_session, {"voice": "marin"})
            await gate.wait_entered()
            before = anyio.current_time()
            await manager.update_session({"voice": "alloy"})
            await manager.update_session({"model": "gpt-realtime-mini"})
            assert anyio.current_time() == before
            assert fake.count("update_session") == 0
            gate.open()
        assert start.error is None
        await settle()
        assert fake.calls_to("connect")[0][0].voice == "marin"
        patches = fake.calls_to("update_session")
        assert len(patches) == 1
        assert patches[0][0].voice == "alloy"
        assert patches[0][0].model == "gpt-realtime-mini"
        assert fake.methods() == ["connect", "update_session"]
        assert voice_of(manager) == "alloy"
        started = em.index("realtime:session:start")
        committed = [
            i
            for i, (n, p) in enumerate(em.events)
            if n == "realtime:state"
            and p.state.session.config is not None
            and p.state.session.config.voice == "alloy"
        ]
        assert committed and committed[0] > started


async def test_d3_stop_while_starting_wins(fake: FakeTransport) -> None:
    """D3: stop_session during connect: disconnect exactly once, start_session raises
    CharivoStateError, the final state is idle/stopped and no boundary is emitted
    (0.7.2 made this stop a silent no-op, B3)."""
    gate = fake.gate("connect")
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        start = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, start, manager.start_session)
            await gate.wait_entered()
            await manager.stop_session()
            gate.open()
        await settle()
        assert isinstance(start.error, CharivoStateError)
        assert fake.count("disconnect") == 1
        assert fake.count("connect") == 1
        state = manager.state
        assert state.connection == "idle"
        assert state.session.status == "stopped"
        assert em.payloads("realtime:session:start") == []
        assert em.payloads("realtime:session:end") == []
        assert manager.session_id is None


async def test_d3_connect_is_bounded_by_transport_timeout(fake: FakeTransport) -> None:
    """D3: a connect that never returns fails after transport_timeout with
    CharivoTimeoutError (the very object in last_error and realtime:error, R13); no
    session:start."""
    fake.hang("connect")
    manager = create_realtime_manager(fake, transport_timeout=2.0)
    em = TrackingEmitter(manager)
    async with manager:
        before = anyio.current_time()
        with pytest.raises(CharivoTimeoutError) as info:
            await manager.start_session()
        elapsed = anyio.current_time() - before
        assert 2.0 <= elapsed < 3.0
        assert manager.state.session.status == "stopped"
        assert manager.state.last_error is info.value
        assert [p.error for p in em.payloads("realtime:error")] == [info.value]
        assert em.payloads("realtime:session:start") == []


# ================================================================================== D4


async def test_d4_concurrent_stops_join_one_stop(fake: FakeTransport) -> None:
    """D4: three concurrent stop_session calls share one disconnect and one session:end;
    none returns before the disconnect completes (0.7.2 disconnected twice, B10)."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        gate = fake.gate("disconnect")
        stops = [Outcome(), Outcome(), Outcome()]
        async with anyio.create_task_group() as tg:
            for outcome in stops:
                tg.start_soon(run, outcome, manager.stop_session)
            await gate.wait_entered()
            await settle()
            assert not any(o.done for o in stops)
            gate.open()
        assert all(o.error is None for o in stops)
        assert fake.count("disconnect") == 1
        assert [p.reason for p in em.payloads("realtime:session:end")] == ["user"]
        assert manager.state.session.status == "stopped"
        assert_boundaries(em)


async def test_d4_concurrent_stops_get_the_same_error_object(fake: FakeTransport) -> None:
    """D4: when the shared disconnect fails, every joined stop_session raises the same
    CharivoTransportError object, which is last_error and the realtime:error payload;
    the session ends once with reason error."""
    latch = Latch(RuntimeError("disconnect boom"))
    fake.respond_with("disconnect", latch, once=True)
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        stops = [Outcome(), Outcome(), Outcome()]
        async with anyio.create_task_group() as tg:
            for outcome in stops:
                tg.start_soon(run, outcome, manager.stop_session)
            await settle()
            assert latch.entered == 1
            latch.release()
        error = stops[0].error
        assert isinstance(error, CharivoTransportError)
        assert all(o.error is error for o in stops)
        assert fake.count("disconnect") == 1
        assert manager.state.last_error is error
        assert [p.error for p in em.payloads("realtime:error")] == [error]
        assert [p.reason for p in em.payloads("realtime:session:end")] == ["error"]
        assert_boundaries(em)


async def test_d4_stop_during_backoff_does_not_wait_out_the_delay(fake: FakeTransport) -> None:
    """D4: a stop during a reconnect's backoff returns at once (less virtual time than
    the delay), calls disconnect once and never recover; the cancelled loop writes no
    state and emits nothing more (0.7.2 waited out the sleep, B11)."""
    manager = create_realtime_manager(fake, reconnect_delays=(2.0, 2.0))
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        fake.emit(ConnectionLost(cause="offline"))
        await settle()
        before = anyio.current_time()
        await manager.stop_session()
        assert anyio.current_time() - before < 2.0
        end = em.index("realtime:session:end")
        assert em.payloads("realtime:session:end")[0].reason == "user"
        await anyio.sleep(10)
        await settle()
        assert fake.count("recover") == 0
        assert fake.count("disconnect") == 1
        assert em.events[end + 1 :] == []
        assert len(em.payloads("realtime:reconnect:attempt")) == 1
        assert em.payloads("realtime:reconnect:success") == []
        assert em.payloads("realtime:reconnect:exhausted") == []
        assert manager.state.session.status == "stopped"
        assert manager.state.connection == "idle"


async def test_d4_stop_during_pending_recover(fake: FakeTransport) -> None:
    """D4: a stop while recover is pending cancels it at once; a late recover result is
    ignored (no reconnect:success, no state written); disconnect once; final
    idle/stopped."""
    manager = create_realtime_manager(fake, reconnect_delays=(0.5,))
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        gate = fake.gate("recover")
        fake.emit(ConnectionLost(cause="offline"))
        await gate.wait_entered()
        before = anyio.current_time()
        await manager.stop_session()
        assert anyio.current_time() - before < 0.5
        end = em.index("realtime:session:end")
        gate.open()
        await anyio.sleep(10)
        await settle()
        assert em.events[end + 1 :] == []
        assert em.payloads("realtime:reconnect:success") == []
        assert fake.count("disconnect") == 1
        assert manager.state.session.status == "stopped"
        assert manager.state.connection == "idle"
        assert manager.state.session.config is None


async def test_d4_stop_during_refresh_releases_update_callers(fake: FakeTransport) -> None:
    """D4: a stop during a refresh discards the in-flight patch and drops the queued
    one; both waiting update_session callers return without raising; no state ever shows
    the patched config committed."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session({"voice": "marin"})
        gate = fake.gate("update_session")
        first, second, stop = Outcome(), Outcome(), Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, first, manager.update_session, {"voice": "alloy"})
            await gate.wait_entered()
            tg.start_soon(run, second, manager.update_session, {"voice": "nova"})
            await settle()
            tg.start_soon(run, stop, manager.stop_session)
            await settle()
            gate.open()
        assert first.error is None
        assert second.error is None
        assert stop.error is None
        await settle()
        assert fake.count("update_session") == 1
        assert fake.count("disconnect") == 1
        assert manager.state.session.status == "stopped"
        for s in states(em):
            if s.session.config is not None:
                assert s.session.config.voice == "marin"


async def test_d4_update_while_stopping_only_caches(fake: FakeTransport) -> None:
    """D4/D17.5: update_session while a stop is in progress returns at once without a
    transport call; the cached config is used by the next start."""
    manager = create_realtime_manager(fake)
    async with manager:
        await manager.start_session({"voice": "marin"})
        gate = fake.gate("disconnect")
        stop = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, stop, manager.stop_session)
            await gate.wait_entered()
            before = anyio.current_time()
            await manager.update_session({"voice": "alloy"})
            assert anyio.current_time() == before
            assert fake.count("update_session") == 0
            gate.open()
        assert stop.error is None
        await settle()
        assert fake.count("update_session") == 0
        assert manager.state.session.status == "stopped"
        await manager.start_session()
        assert fake.calls_to("connect")[-1][0].voice == "alloy"


async def test_d4_disconnect_failure_ends_session_with_error(fake: FakeTransport) -> None:
    """D4: a failing disconnect still ends the session (connection error, status
    stopped, session:end reason error); stop_session raises a CharivoTransportError that
    is the very object in last_error and in realtime:error (0.7.2 emitted the raw error
    and threw another, B12)."""
    raw = RuntimeError("disconnect boom")
    fake.fail_once("disconnect", raw)
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        with pytest.raises(CharivoTransportError) as info:
            await manager.stop_session()
        error = info.value
        assert error.cause is raw
        state = manager.state
        assert state.connection == "error"
        assert state.session.status == "stopped"
        assert state.last_error is error
        assert [p.error for p in em.payloads("realtime:error")] == [error]
        assert [p.reason for p in em.payloads("realtime:session:end")] == ["error"]
        assert_boundaries(em)


async def test_d4_disconnect_timeout_ends_session_with_error(fake: FakeTransport) -> None:
    """D4: a disconnect exceeding transport_timeout ends the session the same way and
    stop_session raises CharivoTimeoutError (same object in last_error and
    realtime:error) after transport_timeout."""
    fake.hang("disconnect")
    manager = create_realtime_manager(fake, transport_timeout=2.0)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        before = anyio.current_time()
        with pytest.raises(CharivoTimeoutError) as info:
            await manager.stop_session()
        assert 2.0 <= anyio.current_time() - before < 3.0
        error = info.value
        state = manager.state
        assert state.connection == "error"
        assert state.session.status == "stopped"
        assert state.last_error is error
        assert [p.error for p in em.payloads("realtime:error")] == [error]
        assert [p.reason for p in em.payloads("realtime:session:end")] == ["error"]


# ================================================================================== D5


async def test_d5_one_patch_in_flight_and_coalescing_to_latest(fake: FakeTransport) -> None:
    """D5: at most one patch is in flight; three requests arriving meanwhile coalesce
    into one follow-up patch carrying the latest base config; every caller returns."""
    latch = Latch()
    fake.respond_with("update_session", latch)
    manager = create_realtime_manager(fake)
    async with manager:
        await manager.start_session({"voice": "marin"})
        callers = [Outcome() for _ in range(4)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, callers[0], manager.update_session, {"voice": "alloy"})
            await settle()
            assert latch.entered == 1
            # one at a time: trio does not promise to run new tasks in spawn order
            for caller, change in zip(
                callers[1:], ({"voice": "echo"}, {"model": "m2"}, {"voice": "nova"}), strict=True
            ):
                tg.start_soon(run, caller, manager.update_session, change)
                await settle()
            assert latch.entered == 1
            assert not any(c.done for c in callers)
            latch.release()
        assert all(c.error is None for c in callers)
        assert latch.max_in_flight == 1
        assert [(c.voice, c.model) for c in latch.configs] == [("alloy", None), ("nova", "m2")]
        assert voice_of(manager) == "nova"


async def test_d5_each_caller_returns_when_its_patch_settles(fake: FakeTransport) -> None:
    """D5: the caller whose config rides the first patch returns when that patch
    settles, while the coalesced caller waits for the follow-up patch."""
    first_gate = fake.gate("update_session")
    second_gate = fake.gate("update_session")
    manager = create_realtime_manager(fake)
    async with manager:
        await manager.start_session({"voice": "marin"})
        first, second = Outcome(), Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, first, manager.update_session, {"voice": "alloy"})
            await first_gate.wait_entered()
            tg.start_soon(run, second, manager.update_session, {"voice": "nova"})
            await settle()
            assert not first.done and not second.done
            first_gate.open()
            await second_gate.wait_entered()
            await settle()
            assert first.done and first.error is None
            assert not second.done
            assert voice_of(manager) == "alloy"
            second_gate.open()
        assert second.error is None
        assert voice_of(manager) == "nova"


async def test_d5_failed_patch_raises_to_its_callers_and_keeps_follow_up(
    fake: FakeTransport,
) -> None:
    """D5: a failed patch raises its error to the callers it carried; a follow-up queued
    meanwhile still runs with the latest config, and its caller returns (0.7.2 dropped
    it and rejected every caller, B14)."""
    latch = Latch(RuntimeError("patch rejected"))
    fake.respond_with("update_session", latch, once=True)
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session({"voice": "marin"})
        first, second = Outcome(), Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, first, manager.update_session, {"voice": "alloy"})
            await settle()
            tg.start_soon(run, second, manager.update_session, {"voice": "nova"})
            await settle()
            latch.release()
        assert isinstance(first.error, CharivoTransportError)
        assert first.error.message == "patch rejected"
        assert second.error is None
        assert [c[0].voice for c in fake.calls_to("update_session")] == ["alloy", "nova"]
        assert voice_of(manager) == "nova"
        assert [p.error for p in em.payloads("realtime:error")] == [first.error]


async def test_d5_failed_patch_keeps_session_with_previous_config(fake: FakeTransport) -> None:
    """D5: a failed patch leaves the session active with its previous config and the
    connection as it was (connected); last_error is the raised object and exactly one
    realtime:error carries it."""
    fake.fail_once("update_session", RuntimeError("nope"))
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session({"voice": "marin"})
        with pytest.raises(CharivoTransportError) as info:
            await manager.update_session({"voice": "alloy"})
        state = manager.state
        assert state.session.status == "active"
        assert state.connection == "connected"
        assert voice_of(manager) == "marin"
        assert state.last_error is info.value
        assert [p.error for p in em.payloads("realtime:error")] == [info.value]
        assert em.payloads("realtime:session:end") == []


async def test_d5_connection_lost_during_patch_callers_served_by_reconnect(
    fake: FakeTransport,
) -> None:
    """D5: connection.lost during a patch discards the patch result (no commit even when
    the transport later answers); the waiting caller returns when the reconnect, which
    carries the latest config, succeeds; no state shows ``connected`` in between."""
    manager = create_realtime_manager(fake, reconnect_delays=(0.5,))
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session({"voice": "marin"})
        gate = fake.gate("update_session")
        caller = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, caller, manager.update_session, {"voice": "alloy"})
            await gate.wait_entered()
            lost_at = len(em.events)
            fake.emit(ConnectionLost(cause="offline"))
            gate.open()
            await settle()
            assert not caller.done
            assert voice_of(manager) == "marin"
            assert manager.state.connection == "connecting"
        assert caller.error is None
        (recover,) = fake.calls_to("recover")
        assert recover[0].voice == "alloy"
        assert voice_of(manager) == "alloy"
        assert fake.count("update_session") == 1
        success = em.index("realtime:reconnect:success")
        connected = [
            i
            for i, (name, payload) in enumerate(em.events)
            if i >= lost_at and name == "realtime:state" and payload.state.connection == "connected"
        ]
        assert connected[0] == success - 1  # the reconnect's commit (R36)


async def test_d5_connection_lost_during_patch_then_exhausted_raises(
    fake: FakeTransport,
) -> None:
    """D5/D18.3: when that reconnect is exhausted the waiting caller raises the
    exhaustion error (the D17.11 object in last_error)."""
    fake.fail_always("recover", RuntimeError("still offline"))
    manager = create_realtime_manager(fake, reconnect_delays=(0.5,))
    async with manager:
        await manager.start_session({"voice": "marin"})
        gate = fake.gate("update_session")
        caller = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, caller, manager.update_session, {"voice": "alloy"})
            await gate.wait_entered()
            fake.emit(ConnectionLost(cause="offline"))
            gate.open()
        assert isinstance(caller.error, CharivoTransportError)
        assert caller.error is manager.state.last_error
        assert manager.state.session.status == "stopped"


async def test_d5_session_ended_during_patch_callers_raise_state_error(
    fake: FakeTransport,
) -> None:
    """D5: session.ended during a patch ends the session (reason remote) and the waiting
    update_session callers raise CharivoStateError; the patch is not committed (0.7.2
    ignored the end, B8)."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session({"voice": "marin"})
        gate = fake.gate("update_session")
        first, second = Outcome(), Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, first, manager.update_session, {"voice": "alloy"})
            await gate.wait_entered()
            tg.start_soon(run, second, manager.update_session, {"voice": "nova"})
            await settle()
            fake.emit(SessionEnded())
            gate.open()
        assert isinstance(first.error, CharivoStateError)
        assert isinstance(second.error, CharivoStateError)
        assert [p.reason for p in em.payloads("realtime:session:end")] == ["remote"]
        assert fake.count("update_session") == 1
        for s in states(em):
            if s.session.config is not None:
                assert s.session.config.voice == "marin"
        assert_boundaries(em)


# ================================================================================= D13


async def test_d13_none_never_clears_a_field(fake: FakeTransport) -> None:
    """D13: a None field (in a config object or an explicit None in a mapping) means
    "not specified": the merge keeps the earlier value (0.7.2 cleared it, R6/B20)."""
    async with create_realtime_manager(fake) as manager:
        await manager.start_session({"voice": "marin", "model": "m1", "temperature": 0.5})
        await manager.update_session(RealtimeSessionConfig(voice=None, model="m2"))
        await manager.update_session({"temperature": None, "instructions": None})
        last = fake.calls_to("update_session")[-1][0]
        assert last.voice == "marin"
        assert last.model == "m2"
        assert last.temperature == 0.5
        assert manager.state.session.config == last


async def test_d13_base_config_is_sticky_across_sessions(fake: FakeTransport) -> None:
    """D13/R7: the base persists across stop/start and a failed start: a later
    start_session(voice) keeps provider and model merged earlier."""
    async with create_realtime_manager(fake) as manager:
        await manager.start_session({"provider": "openai", "model": "m1", "voice": "marin"})
        await manager.stop_session()
        fake.fail_once("connect", RuntimeError("down"))
        with pytest.raises(CharivoTransportError):
            await manager.start_session({"max_tokens": 100})
        await manager.start_session({"voice": "nova"})
        config = fake.calls_to("connect")[-1][0]
        assert (config.provider, config.model, config.voice, config.max_tokens) == (
            "openai",
            "m1",
            "nova",
            100,
        )


async def test_d13_effective_config_is_complete_with_registry_tools(
    fake: FakeTransport,
) -> None:
    """D13/R5: every config sent (connect, patch, recover) and the active config carry
    transport, instructions, tool_choice and tools; tools always come from the registry
    (tools given in a config are ignored)."""
    stray = RealtimeTool(name="stray", description="not registered")
    manager = create_realtime_manager(
        fake,
        default_session_config={"tools": [stray]},
        tools=[make_tool("toolA"), make_tool("toolB")],
        reconnect_delays=(0.5,),
    )
    async with manager:
        await manager.start_session(RealtimeSessionConfig(tools=(stray,)))
        await manager.update_session(RealtimeSessionConfig(voice="alloy", tools=(stray,)))
        fake.emit(ConnectionLost(cause="offline"))
        await anyio.sleep(1.0)
        await settle()
        sent = [
            *fake.calls_to("connect"),
            *fake.calls_to("update_session"),
            *fake.calls_to("recover"),
        ]
        assert len(sent) == 3
        registry = tuple(manager.registered_tools())
        for (config,) in [*sent, (manager.state.session.config,)]:
            assert config.transport == "webrtc"
            assert config.tool_choice == "auto"
            assert isinstance(config.instructions, str) and config.instructions
            assert config.tools == registry
            assert names(config) == ["toolA", "toolB"]


# ================================================================================= D14


async def test_d14_send_guards_have_distinct_messages(fake: FakeTransport) -> None:
    """D14: send_message, send_audio_chunk and interrupt raise CharivoStateError with
    distinct messages for not active, reconnecting and stopping, and make no transport
    call."""

    async def refusals(manager: RealtimeManager) -> set[str]:
        messages = set()
        for call in (
            lambda: manager.send_message("hi"),
            lambda: manager.send_audio_chunk(b"\x00"),
            manager.interrupt,
        ):
            with pytest.raises(CharivoStateError) as info:
                await call()
            messages.add(info.value.message)
        return messages

    manager = create_realtime_manager(fake, reconnect_delays=(5.0,))
    async with manager:
        (not_active,) = await refusals(manager)

        await manager.start_session()
        fake.emit(ConnectionLost(cause="offline"))
        (reconnecting,) = await refusals(manager)
        await manager.stop_session()

        await manager.start_session()
        gate = fake.gate("disconnect")
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.stop_session)
            await gate.wait_entered()
            (stopping,) = await refusals(manager)
            gate.open()

        assert not_active == "Realtime session not active"
        assert reconnecting == "Realtime session is reconnecting"
        assert "stopping" in stopping
        assert len({not_active, reconnecting, stopping}) == 3
        assert fake.count("send_text") == 0
        assert fake.count("send_audio") == 0
        assert fake.count("interrupt") == 0


async def test_d14_start_refused_while_starting_active_or_stopping(fake: FakeTransport) -> None:
    """D14: start_session raises CharivoStateError while starting, active and stopping,
    without another connect."""
    manager = create_realtime_manager(fake)
    async with manager:
        connect_gate = fake.gate("connect")
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.start_session)
            await connect_gate.wait_entered()
            with pytest.raises(CharivoStateError):
                await manager.start_session()
            connect_gate.open()
        assert manager.state.session.status == "active"
        with pytest.raises(CharivoStateError):
            await manager.start_session()
        disconnect_gate = fake.gate("disconnect")
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.stop_session)
            await disconnect_gate.wait_entered()
            with pytest.raises(CharivoStateError):
                await manager.start_session()
            disconnect_gate.open()
        assert fake.count("connect") == 1
        assert manager.state.session.status == "stopped"


# ================================================================================= D15


async def test_d15_methods_outside_async_with_raise(fake: FakeTransport) -> None:
    """D15: every session method raises CharivoStateError before the manager is entered
    and after it was left, without touching the transport."""
    manager = create_realtime_manager(fake)
    calls: list[Callable[[], Awaitable[None]]] = [
        manager.start_session,
        manager.update_session,
        manager.stop_session,
        lambda: manager.send_message("hi"),
        lambda: manager.send_audio_chunk(b"\x00"),
        manager.interrupt,
    ]
    for call in calls:
        with pytest.raises(CharivoStateError):
            await call()
    async with manager:
        pass
    for call in calls:
        with pytest.raises(CharivoStateError):
            await call()
    assert fake.calls == []


async def test_d15_leaving_the_block_stops_and_leaves_no_task(
    fake: FakeTransport, anyio_backend: Any
) -> None:
    """D15: leaving ``async with`` stops an active session (one disconnect, session:end
    reason user) well within transport_timeout, cancels a running tool handler and
    leaves no task behind."""
    handler_cancelled = anyio.Event()

    async def forever(args: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            await anyio.sleep_forever()
        finally:
            handler_cancelled.set()
        raise AssertionError("unreachable")

    registration = RealtimeToolRegistration(
        definition=RealtimeTool(name="forever", parameters={"type": "object", "properties": {}}),
        handler=forever,
        timeout=1000.0,
    )
    manager = create_realtime_manager(fake, tools=[registration], transport_timeout=5.0)
    em = TrackingEmitter(manager)
    backend = anyio_backend[0]
    tasks_before = live_tasks(backend)
    async with manager:
        await manager.start_session()
        fake.emit(ToolCall(name="forever", args={}, call_id="c1"))
        await settle()
        assert live_tasks(backend) > tasks_before  # the handler's task is running
        entered_at = anyio.current_time()
    assert anyio.current_time() - entered_at < 5.0
    assert handler_cancelled.is_set()
    assert fake.count("disconnect") == 1
    assert [p.reason for p in em.payloads("realtime:session:end")] == ["user"]
    assert manager.state.session.status == "stopped"
    assert fake.count("send_tool_result") == 0
    assert live_tasks(backend) == tasks_before


async def test_d15_entering_twice_raises(fake: FakeTransport) -> None:
    """D15/D17.15: a manager is entered once; entering it again (after leaving, or
    while inside) raises CharivoStateError."""
    manager = create_realtime_manager(fake)
    async with manager:
        with pytest.raises(CharivoStateError):
            async with manager:
                pass
        await manager.start_session()
        assert manager.state.session.status == "active"
    with pytest.raises(CharivoStateError):
        async with manager:
            pass


class Boom(Exception):
    pass


async def test_d15_body_exception_propagates_as_itself(fake: FakeTransport) -> None:
    """D15/D17.6: an exception from the body propagates as itself (not wrapped in an
    exception group) and the active session is still stopped with reason user."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    with pytest.raises(Boom) as info:
        async with manager:
            await manager.start_session()
            raise Boom("body failed")
    assert type(info.value) is Boom
    assert str(info.value) == "body failed"
    assert fake.count("disconnect") == 1
    assert [p.reason for p in em.payloads("realtime:session:end")] == ["user"]


# ================================================================================= D16


async def test_d16_auto_refresh_coalesces_registry_changes(fake: FakeTransport) -> None:
    """D16: with auto_refresh_tools=True, register/unregister on an active session
    request a refresh; changes arriving while that patch is in flight coalesce into one
    follow-up carrying the registry as it is then."""
    manager = create_realtime_manager(fake, tools=[make_tool("toolA")], auto_refresh_tools=True)
    async with manager:
        await manager.start_session()
        gate = fake.gate("update_session")
        manager.register_tool(make_tool("toolB"))
        await gate.wait_entered()
        manager.register_tool(make_tool("toolC"))
        manager.unregister_tool("toolA")
        await settle()
        assert fake.count("update_session") == 1
        gate.open()
        await settle()
        patches = [c[0] for c in fake.calls_to("update_session")]
        assert [names(p) for p in patches] == [["toolA", "toolB"], ["toolB", "toolC"]]
        config = manager.state.session.config
        assert config is not None
        assert names(config) == ["toolB", "toolC"]


async def test_d16_default_makes_no_transport_call(fake: FakeTransport) -> None:
    """D16: with the default auto_refresh_tools=False, registry changes on an active
    session make no transport call and leave the session config as it was."""
    manager = create_realtime_manager(fake, tools=[make_tool("toolA")])
    async with manager:
        await manager.start_session()
        fake.clear()
        manager.register_tool(make_tool("toolB"))
        manager.unregister_tool("toolA")
        await settle()
        await anyio.sleep(1)
        assert fake.calls == []
        config = manager.state.session.config
        assert config is not None
        assert names(config) == ["toolA"]


async def test_d16_auto_refresh_inactive_makes_no_call(fake: FakeTransport) -> None:
    """D16: auto refresh applies to an active session only: a registry change before
    any session makes no transport call; the next start carries the new registry."""
    manager = create_realtime_manager(fake, auto_refresh_tools=True)
    async with manager:
        manager.register_tool(make_tool("toolA"))
        await settle()
        assert fake.calls == []
        await manager.start_session()
        assert names(fake.calls_to("connect")[0][0]) == ["toolA"]
        assert fake.count("update_session") == 0


# ================================================================================= D17


async def test_d17_1_update_session_is_async_def(fake: FakeTransport) -> None:
    """D17.1: update_session is an ordinary ``async def`` (T21's shared-awaitable
    identity does not carry over); calling it without awaiting does nothing."""
    manager = create_realtime_manager(fake)
    assert inspect.iscoroutinefunction(manager.update_session)
    async with manager:
        await manager.start_session({"voice": "marin"})
        coroutine = manager.update_session({"voice": "alloy"})
        await settle()
        assert fake.count("update_session") == 0
        await coroutine
        assert fake.count("update_session") == 1
        assert voice_of(manager) == "alloy"


async def test_d17_2_patch_emits_two_states_first_clears_last_error(
    fake: FakeTransport,
) -> None:
    """D17.2: a patch emits realtime:state twice: before it (last_error cleared, old
    config) and after the commit (new config)."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session({"voice": "marin"})
        fake.emit(ErrorEvent(error=RuntimeError("earlier")))
        assert manager.state.last_error is not None
        em.clear()
        em.session_ids.clear()
        await manager.update_session({"voice": "alloy"})
        first, second = states(em)
        assert first.last_error is None
        assert first.session.config.voice == "marin"
        assert second.last_error is None
        assert second.session.config.voice == "alloy"


async def test_d17_3_errors_during_failed_patch_fold_into_one(fake: FakeTransport) -> None:
    """D17.3: error events arriving during a patch that then fails are folded into its
    failure: exactly one realtime:error, carrying the object update_session raises and
    last_error holds."""
    latch = Latch(RuntimeError("patch failed"))
    fake.respond_with("update_session", latch, once=True)
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        caller = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, caller, manager.update_session, {"voice": "alloy"})
            await settle()
            fake.emit(ErrorEvent(error=RuntimeError("first")))
            fake.emit(ErrorEvent(error=RuntimeError("second")))
            assert em.payloads("realtime:error") == []
            latch.release()
        assert isinstance(caller.error, CharivoTransportError)
        assert [p.error for p in em.payloads("realtime:error")] == [caller.error]
        assert manager.state.last_error is caller.error


async def test_d17_3_errors_during_successful_patch_surface_after_commit(
    fake: FakeTransport,
) -> None:
    """D17.3: when the patch succeeds, each held error event is surfaced afterwards as
    D11 says: one realtime:error each (after the commit state), last_error the wrapped
    error, the connection kept."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session({"voice": "marin"})
        gate = fake.gate("update_session")
        raw = RuntimeError("held")
        caller = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, caller, manager.update_session, {"voice": "alloy"})
            await gate.wait_entered()
            fake.emit(ErrorEvent(error=raw))
            assert em.payloads("realtime:error") == []
            gate.open()
        assert caller.error is None
        (payload,) = em.payloads("realtime:error")
        assert isinstance(payload.error, CharivoError)
        assert payload.error.cause is raw
        assert manager.state.last_error is payload.error
        assert manager.state.connection == "connected"
        assert voice_of(manager) == "alloy"
        error_at = em.index("realtime:error")
        commit_at = max(
            i
            for i, (n, p) in enumerate(em.events[:error_at])
            if n == "realtime:state"
            and p.state.session.config is not None
            and p.state.session.config.voice == "alloy"
        )
        assert commit_at < error_at


async def test_d17_4_update_while_reconnecting_served_by_recover(fake: FakeTransport) -> None:
    """D17.4: update_session during a reconnect's backoff caches the config and returns
    when the reconnect succeeds; the config reaches the transport through recover, with
    no update_session call."""
    manager = create_realtime_manager(fake, reconnect_delays=(1.0,))
    async with manager:
        await manager.start_session({"voice": "marin"})
        fake.emit(ConnectionLost(cause="offline"))
        caller = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, caller, manager.update_session, {"voice": "alloy"})
            await settle()
            assert not caller.done
        assert caller.error is None
        assert fake.count("update_session") == 0
        assert [c[0].voice for c in fake.calls_to("recover")] == ["alloy"]
        assert voice_of(manager) == "alloy"
        assert manager.state.connection == "connected"


async def test_d17_4_update_while_reconnecting_raises_when_exhausted(
    fake: FakeTransport,
) -> None:
    """D17.4/D17.11/D18.3: a caller waiting on a reconnect raises the exhaustion error:
    the very object in last_error, realtime:error and reconnect:exhausted.last_error."""
    fake.fail_always("recover", RuntimeError("recover failed"))
    manager = create_realtime_manager(fake, reconnect_delays=(0.5, 0.5))
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        fake.emit(ConnectionLost(cause="offline"))
        caller = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, caller, manager.update_session, {"voice": "alloy"})
        error = caller.error
        assert isinstance(error, CharivoTransportError)
        assert manager.state.last_error is error
        assert [p.error for p in em.payloads("realtime:error")] == [error]
        assert [p.last_error for p in em.payloads("realtime:reconnect:exhausted")] == [error]


async def test_d17_4_config_changed_during_recover_gets_follow_up_patch(
    fake: FakeTransport,
) -> None:
    """D17.4: if the config changes while a recover is in flight, one follow-up patch
    with the latest config runs right after the reconnect commits; the caller returns
    after it."""
    manager = create_realtime_manager(fake, reconnect_delays=(0.5,))
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session({"voice": "marin"})
        recover_gate = fake.gate("recover")
        patch_gate = fake.gate("update_session")
        fake.emit(ConnectionLost(cause="offline"))
        await recover_gate.wait_entered()
        caller = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, caller, manager.update_session, {"voice": "alloy"})
            await settle()
            recover_gate.open()
            await patch_gate.wait_entered()
            await settle()
            assert len(em.payloads("realtime:reconnect:success")) == 1
            assert voice_of(manager) == "marin"
            assert not caller.done
            patch_gate.open()
        assert caller.error is None
        assert [c[0].voice for c in fake.calls_to("recover")] == ["marin"]
        assert [c[0].voice for c in fake.calls_to("update_session")] == ["alloy"]
        assert voice_of(manager) == "alloy"
        assert fake.methods().index("recover") < fake.methods().index("update_session")


async def test_d17_5_update_with_no_session_returns_at_once(fake: FakeTransport) -> None:
    """D17.5: update_session before any session and after one ended caches and returns
    at once with no transport call; the next start uses it."""
    async with create_realtime_manager(fake) as manager:
        before = anyio.current_time()
        await manager.update_session({"voice": "marin"})
        await manager.start_session()
        await manager.stop_session()
        fake.clear()
        await manager.update_session({"voice": "alloy"})
        assert anyio.current_time() == before
        assert fake.calls == []
        await manager.start_session()
        assert fake.calls_to("connect")[0][0].voice == "alloy"


async def test_d17_6_exit_with_failing_disconnect_does_not_raise(
    fake: FakeTransport,
    module_records: list[logging.LogRecord],
) -> None:
    """D17.6: leaving ``async with`` when the disconnect fails ends the session with
    reason error, logs the failure and does not raise."""
    fake.fail_once("disconnect", RuntimeError("disconnect boom"))
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
    assert [p.reason for p in em.payloads("realtime:session:end")] == ["error"]
    assert manager.state.session.status == "stopped"
    assert manager.state.connection == "error"
    assert any(
        r.levelno >= logging.ERROR and "disconnect boom" in str(getattr(r, "charivo", {}))
        for r in module_records
    )


async def test_d17_6_exit_with_hanging_disconnect_is_bounded(fake: FakeTransport) -> None:
    """D17.6/D15: a disconnect that never returns does not block the exit beyond about
    transport_timeout; the session ends with reason error and nothing is raised."""
    fake.hang("disconnect")
    manager = create_realtime_manager(fake, transport_timeout=2.0)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        before = anyio.current_time()
    assert 2.0 <= anyio.current_time() - before < 4.0
    assert [p.reason for p in em.payloads("realtime:session:end")] == ["error"]
    assert isinstance(manager.state.last_error, CharivoTimeoutError)


async def test_d17_7_logger_adapter_extra_is_merged(
    fake: FakeTransport,
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    """D17.7: a LoggerAdapter works as the logger; its extra appears on the records
    next to ``charivo``, and the manager's ``charivo`` key wins over the adapter's."""
    logger, records = captured
    adapter = logging.LoggerAdapter(logger, {"request_id": "r-1", "charivo": "adapter"})
    async with create_realtime_manager(fake, logger=adapter) as manager:
        await manager.start_session()
        (record,) = events_of(records, "session.started")
        assert record.__dict__["request_id"] == "r-1"
        assert record.__dict__["charivo"]["session_id"] == manager.session_id
        assert record.getMessage() == "Realtime session started"
        assert all(isinstance(r.__dict__.get("charivo"), dict) for r in records)


class ExplodingLogger(logging.Logger):
    def _log(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        raise RuntimeError("logger boom")


async def test_d17_8_failing_logger_reported_through_module_logger(
    fake: FakeTransport, module_records: list[logging.LogRecord]
) -> None:
    """D17.8 (D18.9 allows rate limiting): a configured logger that raises never reaches
    the caller nor changes the flow; the failure is reported through the module logger
    ``charivo_fsm`` with event logger.failed."""
    bad = ExplodingLogger("test.decisions.exploding")
    bad.setLevel(logging.DEBUG)
    manager = create_realtime_manager(fake, logger=bad)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        await manager.update_session({"voice": "alloy"})
        await manager.stop_session()
    failures = events_of(module_records, "logger.failed")
    assert 1 <= len(failures)
    assert any("logger boom" in str(r.__dict__["charivo"]) for r in failures)
    assert [p.reason for p in em.payloads("realtime:session:end")] == ["user"]
    assert len(em.payloads("realtime:session:start")) == 1


async def test_d17_13_remote_end_cleans_up_with_one_disconnect(fake: FakeTransport) -> None:
    """D17.13: after a remote end the manager calls disconnect once for clean-up; the
    final connection is idle."""
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        fake.emit(SessionEnded())
        await settle()
        assert fake.count("disconnect") == 1
        assert manager.state.connection == "idle"
        assert manager.state.session.status == "stopped"
        assert [p.reason for p in em.payloads("realtime:session:end")] == ["remote"]
        assert em.payloads("realtime:session:end")[0].state.connection == "idle"


async def test_d17_13_remote_end_cleanup_failure_is_logged_not_surfaced(
    fake: FakeTransport,
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    """D17.13: a failing clean-up disconnect is logged, not surfaced: no realtime:error,
    no last_error, connection idle, and the next start works."""
    logger, records = captured
    fake.fail_once("disconnect", RuntimeError("cleanup boom"))
    manager = create_realtime_manager(fake, logger=logger)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        fake.emit(SessionEnded())
        await settle()
        assert fake.count("disconnect") == 1
        assert em.payloads("realtime:error") == []
        assert manager.state.last_error is None
        assert manager.state.connection == "idle"
        assert any("cleanup boom" in str(getattr(r, "charivo", {})) for r in records)
        await manager.start_session()
        assert manager.state.session.status == "active"


async def test_d17_13_remote_end_cleanup_bounded_by_transport_timeout(
    fake: FakeTransport,
) -> None:
    """D17.13: a clean-up disconnect that never returns is abandoned after
    transport_timeout; a start issued meanwhile connects once it was abandoned (D18.6),
    and nothing is surfaced."""
    fake.hang("disconnect")
    manager = create_realtime_manager(fake, transport_timeout=2.0)
    em = TrackingEmitter(manager)
    async with manager:
        await manager.start_session()
        fake.emit(SessionEnded())
        await settle()
        assert fake.count("disconnect") == 1
        before = anyio.current_time()
        await manager.start_session()
        assert 2.0 <= anyio.current_time() - before < 3.0
        assert fake.count("connect") == 2
        assert em.payloads("realtime:error") == []
        assert manager.state.session.status == "active"


async def test_d17_14_d18_5_stop_during_start_with_failing_disconnect(
    fake: FakeTransport,
) -> None:
    """D17.14/D18.5: stop during start whose clean-up disconnect fails: stop_session
    raises that error, start_session raises CharivoStateError, the state is
    error/stopped, no session boundary, and exactly one realtime:error carries the
    raised object (also last_error)."""
    gate = fake.gate("connect")
    fake.fail_once("disconnect", RuntimeError("disconnect boom"))
    manager = create_realtime_manager(fake)
    em = TrackingEmitter(manager)
    async with manager:
        start = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, start, manager.start_session)
            await gate.wait_entered()
            with pytest.raises(CharivoTransportError) as info:
                await manager.stop_session()
            gate.open()
        assert isinstance(start.error, CharivoStateError)
        error = info.value
        state = manager.state
        assert state.connection == "error"
        assert state.session.status == "stopped"
        assert state.last_error is error
        assert [p.error for p in em.payloads("realtime:error")] == [error]
        assert em.payloads("realtime:session:start") == []
        assert em.payloads("realtime:session:end") == []
        assert fake.count("disconnect") == 1


async def test_d17_15_reconnect_delays_must_not_be_empty(fake: FakeTransport) -> None:
    """D17.15: an empty reconnect_delays is refused at construction."""
    with pytest.raises(CharivoValidationError):
        create_realtime_manager(fake, reconnect_delays=())


async def test_d17_15_session_id_lifetime(fake: FakeTransport) -> None:
    """D17.15: session_id is set when start_session begins (visible while starting),
    kept when the session commits and cleared when it ends; a failed start clears it."""
    manager = create_realtime_manager(fake)
    async with manager:
        assert manager.session_id is None
        gate = fake.gate("connect")
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.start_session)
            await gate.wait_entered()
            starting_id = manager.session_id
            assert isinstance(starting_id, str) and starting_id
            assert manager.state.session.status == "starting"
            gate.open()
        assert manager.session_id == starting_id
        await manager.stop_session()
        assert manager.session_id is None
        fake.fail_once("connect", RuntimeError("down"))
        with pytest.raises(CharivoTransportError):
            await manager.start_session()
        assert manager.session_id is None


# ================================================================================= D18


async def test_d18_1_dropped_input_is_logged_at_debug(
    fake: FakeTransport,
    captured: tuple[logging.Logger, list[logging.LogRecord]],
    module_records: list[logging.LogRecord],
) -> None:
    """D18.1: input dropped between sessions, events that D6 ignores while reconnecting
    and a non-event handed to the callback are each logged at debug with event
    event.dropped, and emit nothing."""
    logger, records = captured
    manager = create_realtime_manager(fake, logger=logger, reconnect_delays=(5.0,))
    em = TrackingEmitter(manager)
    async with manager:

        def dropped() -> list[logging.LogRecord]:
            return [
                r
                for r in events_of(records, "event.dropped")
                + events_of(module_records, "event.dropped")
                if r.levelno == logging.DEBUG
            ]

        fake.emit(AssistantTextDelta(text="early"))
        assert len(dropped()) == 1
        assert em.events == []

        await manager.start_session()
        fake.emit(ConnectionLost(cause="offline"))
        await settle()
        count = len(dropped())
        mark = len(em.events)
        fake.emit(SessionStarted())
        fake.emit(SessionEnded())
        fake.emit(ConnectionLost(cause="online"))
        assert len(dropped()) == count + 3
        assert em.events[mark:] == []

        fake.emit("not an event")  # type: ignore[arg-type]
        assert len(dropped()) == count + 4
        assert em.events[mark:] == []
        assert manager.state.session.status == "active"


async def test_d18_3_update_waiting_on_reconnect_returns_when_stopped(
    fake: FakeTransport,
) -> None:
    """D18.3: an update_session caller waiting on a reconnect returns without raising
    when a stop cancels that reconnect."""
    manager = create_realtime_manager(fake, reconnect_delays=(5.0,))
    async with manager:
        await manager.start_session({"voice": "marin"})
        fake.emit(ConnectionLost(cause="offline"))
        caller = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, caller, manager.update_session, {"voice": "alloy"})
            await settle()
            assert not caller.done
            before = anyio.current_time()
            await manager.stop_session()
            await settle()
            assert caller.done
            assert anyio.current_time() - before < 5.0
        assert caller.error is None
        assert fake.count("recover") == 0
        assert fake.count("update_session") == 0
        assert manager.state.session.status == "stopped"


async def test_d18_6_start_waits_for_pending_cleanup_disconnect(fake: FakeTransport) -> None:
    """D18.6: a start_session issued while the clean-up disconnect after a remote end is
    still pending waits for it: connect is entered only after disconnect returned."""
    disconnect = Latch()
    fake.respond_with("disconnect", disconnect, once=True)
    overlap: list[int] = []

    async def connect(config: Any) -> None:
        overlap.append(disconnect.in_flight)

    manager = create_realtime_manager(fake)
    async with manager:
        await manager.start_session()
        fake.respond_with("connect", connect)
        fake.emit(SessionEnded())
        await settle()
        assert disconnect.entered == 1
        start = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, start, manager.start_session)
            await settle()
            assert fake.count("connect") == 1
            assert not start.done
            disconnect.release()
        assert start.error is None
        assert overlap == [0]
        assert fake.methods() == ["connect", "disconnect", "connect"]
        assert manager.state.session.status == "active"


async def test_d18_6_start_in_the_same_step_as_remote_end_waits_for_cleanup(
    fake: FakeTransport,
) -> None:
    """D18.6: a start_session issued right after the remote end, before the manager's
    tasks had a chance to run, still waits for the clean-up disconnect: in every round the
    transport sees the clean-up disconnect (gated, then released) before the new connect,
    so the clean-up can never close the new session's link.  Repeated because trio does
    not run newly spawned tasks in a fixed order."""
    manager = create_realtime_manager(fake)
    async with manager:
        for _round in range(20):
            await manager.start_session()
            gate = fake.gate("disconnect")
            fake.clear()
            start = Outcome()

            async def end_then_start(outcome: Outcome = start) -> None:
                fake.emit(SessionEnded())
                await run(outcome, manager.start_session)

            async with anyio.create_task_group() as tg:
                tg.start_soon(end_then_start)
                await settle()
                assert fake.methods() == ["disconnect"], f"round {_round}: {fake.methods()}"
                assert not start.done
                gate.open()
            assert start.error is None
            assert fake.methods() == ["disconnect", "connect"]
            assert manager.state.session.status == "active"
            await manager.stop_session()
