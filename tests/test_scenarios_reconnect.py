"""Upstream scenarios T23-T27 (SEMANTICS §3): reconnecting an active session.

Ported from ``realtime-core.test.ts`` of ``@charivo/realtime`` 0.7.2.  The fake clock
of the original ("advance N ms", "run all timers") is the virtual clock of the test
backends: ``await anyio.sleep(0.5)`` advances 500 ms at once, and ``settle()`` lets
the manager run what is already due without moving the clock.  Where a Decision
(D-rule) changes the upstream outcome, the test's docstring says which and how.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from charivo_fsm import (
    CharivoError,
    CharivoStateError,
    CharivoTransportError,
    ConnectionState,
    RealtimeManager,
    RealtimeSessionConfig,
    ResponseStatus,
    SessionStatus,
    create_realtime_manager,
)
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    ConnectionLost,
)
from charivo_fsm.payloads import (
    ReconnectAttemptPayload,
    ReconnectExhaustedPayload,
    ReconnectSuccessPayload,
)
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle

pytestmark = pytest.mark.anyio


def exact_manager(transport: Any, **options: Any) -> RealtimeManager:
    """A manager whose reconnect delays are exactly as configured (no jitter): these
    tests check the delays themselves.  Jitter has its own tests."""
    options.setdefault("reconnect_jitter", 0.0)
    return create_realtime_manager(transport, **options)

MARIN = {"provider": "openai", "voice": "marin"}
ALL_TIMERS = 60.0  # seconds of virtual time: more than every default delay together
LIMIT = 600.0  # virtual seconds: a test that hangs on a broken engine fails instead


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Fail (virtual-time ``TimeoutError``) instead of hanging when the engine stalls."""

    @functools.wraps(test)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        with anyio.fail_after(LIMIT):
            await test(*args, **kwargs)

    return wrapper


def voice_of(config: Any) -> str | None:
    assert isinstance(config, RealtimeSessionConfig)
    return config.voice


# ---------------------------------------------------------------------- T23


@bounded
async def test_t23_reconnects_without_synthetic_session_boundaries(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T23: a reconnect keeps the session; no synthetic session boundaries (R35, R39, R20).

    Upstream outcome kept.  Python names: ``send_message`` raises ``CharivoStateError``
    "Realtime session is reconnecting" (D14).  Virtual time (D12) makes ``total_ms``
    exact: the recover is released at the very instant the 500 ms delay ends, so
    ``reconnect:success.total_ms == 500``.
    """
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        session_id = manager.session_id
        gate = fake.gate("recover")
        emitter.clear()

        fake.emit(ConnectionLost(cause="offline"))

        state = manager.state
        assert state.connection == ConnectionState.CONNECTING
        assert state.session.status == SessionStatus.ACTIVE
        assert voice_of(state.session.config) == "marin"
        with pytest.raises(CharivoStateError, match="Realtime session is reconnecting"):
            await manager.send_message("hello")
        assert fake.count("send_text") == 0

        t0 = anyio.current_time()
        await anyio.sleep(0.5)  # advance 500 ms
        await gate.wait_entered()
        assert anyio.current_time() - t0 == pytest.approx(0.5)
        gate.open()
        await settle()
        await anyio.sleep(ALL_TIMERS)  # run all timers

        recovers = fake.calls_to("recover")
        assert len(recovers) == 1
        assert voice_of(recovers[0][0]) == "marin"
        state = manager.state
        assert state.connection == ConnectionState.CONNECTED
        assert state.session.status == SessionStatus.ACTIVE
        assert voice_of(state.session.config) == "marin"
        assert emitter.payloads("realtime:session:start") == []
        assert emitter.payloads("realtime:session:end") == []
        assert emitter.payloads("realtime:reconnect:attempt") == [
            ReconnectAttemptPayload(attempt=1, delay_ms=500, cause="offline")
        ]
        assert emitter.payloads("realtime:reconnect:success") == [
            ReconnectSuccessPayload(attempts=1, total_ms=500, cause="offline")
        ]
        assert manager.session_id == session_id


# ---------------------------------------------------------------------- T24


@bounded
async def test_t24_next_attempt_uses_latest_cached_config(fake: FakeTransport) -> None:
    """T24: each attempt uses the config as it is at that moment (R41, D6).

    D17.4 changes the upstream outcome: ``update_session`` during a reconnect no longer
    resolves at once.  It caches the config and returns only when the reconnect
    succeeds (the config reaches the transport through ``recover``, never through
    ``transport.update_session``).  Since the update arrived during the backoff, not
    while a recover was in flight, no follow-up patch runs.  ``total_ms`` is exact
    under virtual time: 500 + 1000.
    """
    voices: list[str | None] = []

    async def recover(config: RealtimeSessionConfig) -> None:
        voices.append(config.voice)
        if len(voices) == 1:
            raise RuntimeError("still offline")

    fake.respond_with("recover", recover)
    emitter = RecordingEmitter()
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    update_returned: list[float] = []

    async def update() -> None:
        await manager.update_session({"voice": "alloy"})
        update_returned.append(anyio.current_time())

    async with manager:
        await manager.start_session(MARIN)
        fake.emit(ConnectionLost(cause="offline"))
        await anyio.sleep(0.5)  # advance 500 ms: attempt 1 fails
        await settle()
        assert voices == ["marin"]

        async with anyio.create_task_group() as tg:
            tg.start_soon(update)
            await settle()
            assert update_returned == [], "update_session returned before the reconnect"
            await anyio.sleep(1.0)  # advance 1000 ms: attempt 2 succeeds
            await settle()

        assert voices == ["marin", "alloy"]
        assert voice_of(manager.state.session.config) == "alloy"
        assert manager.state.connection == ConnectionState.CONNECTED
        assert fake.count("update_session") == 0
        assert len(update_returned) == 1
        assert emitter.payloads("realtime:reconnect:success") == [
            ReconnectSuccessPayload(attempts=2, total_ms=1500, cause="offline")
        ]


# ---------------------------------------------------------------------- T25


@bounded
async def test_t25_stop_cancels_pending_recover_and_stays_stopped(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T25: a stop during a reconnect converges to idle/stopped (R42).

    D4 changes the upstream outcome: upstream, ``stopSession`` waited for the gated
    recover and ``disconnect`` was called only after the gate opened.  Here the stop
    cancels the pending recover at once: ``disconnect`` is called (once) and the stop
    returns without the gate being opened and without virtual time passing.  The final
    state is idle/stopped with config None, and the recover result arriving late (the
    gate opened afterwards) changes nothing: no state, no ``reconnect:success``.
    """
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        gate = fake.gate("recover")
        fake.emit(ConnectionLost(cause="offline"))
        await anyio.sleep(0.5)  # advance 500 ms
        await gate.wait_entered()
        assert fake.count("disconnect") == 0

        before_stop = anyio.current_time()
        with anyio.fail_after(1.0):  # virtual: the stop must not wait for the gate
            await manager.stop_session()
        assert anyio.current_time() == before_stop
        assert not gate.is_open
        assert fake.count("disconnect") == 1

        state = manager.state
        assert state.connection == ConnectionState.IDLE
        assert state.session.status == SessionStatus.STOPPED
        assert state.session.config is None
        ends = emitter.payloads("realtime:session:end")
        assert [end.reason for end in ends] == ["user"]

        # The late recover result changes nothing.
        emitted = len(emitter.events)
        gate.open()
        await settle()
        await anyio.sleep(ALL_TIMERS)
        assert manager.state == state
        assert len(emitter.events) == emitted
        assert emitter.payloads("realtime:reconnect:success") == []
        assert fake.count("recover") == 1
        assert fake.count("disconnect") == 1


# ---------------------------------------------------------------------- T26


@bounded
async def test_t26_exhausted_after_five_failed_recovers(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T26: five failed recovers exhaust the reconnect and end the session (R37).

    D6/D17.11 change the upstream outcome:

    * upstream, ``lastError`` and ``realtime:error`` carried the raw last recover error
      and no ``session:end`` was emitted (B12).  Here one ``CharivoTransportError``
      whose cause is the last recover error is ``reconnect:exhausted.last_error``,
      ``state.last_error`` and the ``realtime:error`` payload (the very same object),
      and ``session:end`` with reason ``"error"`` is emitted after them;
    * the exhausted error's message is the engine's own; it must mention
      "recover failed" (upstream pinned it equal);
    * the final state is connection error, status stopped, config None.

    Under virtual time ``total_ms`` is exactly 500 + 1000 + 2000 + 4000 + 5000.
    """
    raised: list[BaseException] = []

    async def recover(_config: RealtimeSessionConfig) -> None:
        error = RuntimeError("recover failed")
        raised.append(error)
        raise error

    fake.respond_with("recover", recover)
    manager = exact_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session(MARIN)
        emitter.clear()

        fake.emit(ConnectionLost(cause="offline"))
        await anyio.sleep(ALL_TIMERS)  # run all timers

        assert fake.count("recover") == 5
        exhausted = emitter.payloads("realtime:reconnect:exhausted")
        assert len(exhausted) == 1
        payload = exhausted[0]
        assert isinstance(payload, ReconnectExhaustedPayload)
        assert payload.attempts == 5
        assert payload.cause == "offline"
        assert payload.total_ms == 12_500
        error = payload.last_error
        assert isinstance(error, CharivoTransportError)
        assert "recover failed" in error.message
        # cause = the last recover error: the raw exception the fifth recover raised,
        # or the engine's CharivoError wrapping exactly that exception.
        cause = error.cause
        if isinstance(cause, CharivoError):
            cause = cause.cause
        assert cause is raised[-1]

        errors = emitter.payloads("realtime:error")
        assert len(errors) == 1
        assert errors[0].error is error

        state = manager.state
        assert state.last_error is error
        assert state.connection == ConnectionState.ERROR
        assert state.session.status == SessionStatus.STOPPED
        assert state.session.config is None

        ends = emitter.payloads("realtime:session:end")
        assert [end.reason for end in ends] == ["error"]
        names = emitter.names()
        assert (
            names.index("realtime:reconnect:exhausted")
            < names.index("realtime:error")
            < names.index("realtime:session:end")
        )
        assert ends[0].state.last_error is error
        assert manager.session_id is None


# ---------------------------------------------------------------------- T27


@bounded
async def test_t27_interrupted_response_survives_reconnect_until_fresh_turn(
    fake: FakeTransport,
) -> None:
    """T27: a reconnect interrupts a responding turn, keeps it through the recovery,
    and the next fresh turn resets it (R35, R39, R43; D6 begin/success, D7).

    Upstream outcome kept.  Added (D7): a late ``completed`` of the interrupted turn
    arriving after the reconnect is ignored.
    """
    manager = exact_manager(fake)
    async with manager:
        await manager.start_session()
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantTextDelta(text="partial"))

        fake.emit(ConnectionLost(cause="offline"))
        response = manager.state.response
        assert (response.status, response.text) == (ResponseStatus.INTERRUPTED, "partial")

        await anyio.sleep(ALL_TIMERS)  # run all timers: recover succeeds at attempt 1
        assert fake.count("recover") == 1
        assert manager.state.connection == ConnectionState.CONNECTED
        response = manager.state.response
        assert (response.status, response.text) == (ResponseStatus.INTERRUPTED, "partial")

        fake.emit(AssistantResponseCompleted(text="partial and late"))
        response = manager.state.response
        assert (response.status, response.text) == (ResponseStatus.INTERRUPTED, "partial")

        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantTextDelta(text="fresh"))
        fake.emit(AssistantResponseCompleted(text="fresh"))
        response = manager.state.response
        assert (response.status, response.text) == (ResponseStatus.COMPLETED, "fresh")
