"""Workloads a (transport events), e (one long response) and the emit floor."""

from __future__ import annotations

from typing import Any

import anyio.lowlevel

from charivo_fsm import create_realtime_manager
from charivo_fsm.events import AssistantResponseStarted, AssistantTextDelta
from charivo_fsm.testing import FakeTransport

from .common import CountingEmitter, Stopwatch, fresh_heap, mix, quiet_logger
from .settings import DELTAS, EVENTS


class RecordingNames:
    """Records the ``(name, payload)`` pairs of one mix cycle (to build the floor)."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, Any]] = []

    def emit(self, name: str, payload: Any) -> None:
        self.pairs.append((name, payload))


async def events_workload(count: int = EVENTS, drain_every: int = 0) -> dict[str, float]:
    """Push ``count`` mix events through the transport callback of an active session.

    ``drain_every=0``: one burst; otherwise the event loop runs (a checkpoint) after
    every ``drain_every`` events.  Returns µs/event (wall and CPU) and the number of
    emit calls the emitter received.
    """
    transport = FakeTransport()
    emitter = CountingEmitter()
    events = mix(count)
    async with create_realtime_manager(transport, logger=quiet_logger()) as manager:
        await manager.start_session({"voice": "marin"})
        manager.set_event_emitter(emitter)
        callback = transport.callbacks[0]  # what the transport calls with each event
        fresh_heap()
        watch = Stopwatch()
        if drain_every:
            checkpoint = anyio.lowlevel.checkpoint
            watch.start()
            for index in range(0, count, drain_every):
                for event in events[index : index + drain_every]:
                    callback(event)
                await checkpoint()
            wall, cpu = watch.stop()
        else:
            watch.start()
            for event in events:
                callback(event)
            wall, cpu = watch.stop()
        manager.set_event_emitter(None)
    return {
        "us_per_event": wall / count * 1e6,
        "cpu_us_per_event": cpu / count * 1e6,
        "emits": emitter.count,
    }


async def emit_pairs_of_one_cycle() -> list[tuple[str, Any]]:
    """The exact ``(name, payload)`` pairs a steady-state mix cycle emits."""
    transport = FakeTransport()
    recorder = RecordingNames()
    events = mix(40)
    async with create_realtime_manager(transport, logger=quiet_logger()) as manager:
        await manager.start_session({"voice": "marin"})
        callback = transport.callbacks[0]
        for event in events[:20]:  # the first cycle also starts the audio
            callback(event)
        manager.set_event_emitter(recorder)
        for event in events[20:]:
            callback(event)
        manager.set_event_emitter(None)
    return recorder.pairs


def emit_floor(emits: int, pairs_of_cycle: list[tuple[str, Any]]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``emits`` bare ``emitter.emit(name, payload)`` calls with
    pre-built payloads (the names and payload objects a mix cycle emits), nothing else."""
    cycles, rest = divmod(emits, len(pairs_of_cycle))
    pairs = pairs_of_cycle * cycles + pairs_of_cycle[:rest]
    emit = CountingEmitter().emit
    fresh_heap()
    watch = Stopwatch().start()
    for name, payload in pairs:
        emit(name, payload)
    return watch.stop()


async def long_response(count: int = DELTAS) -> dict[str, float]:
    """One response of ``count`` deltas: cost per delta over the first and the last 10%
    (wall clock, and CPU time: a 10% window is short enough for another process's load
    to distort its wall time)."""
    transport = FakeTransport()
    emitter = CountingEmitter()
    delta = AssistantTextDelta("x")
    tenth = count // 10
    watch = Stopwatch()
    async with create_realtime_manager(transport, logger=quiet_logger()) as manager:
        await manager.start_session({"voice": "marin"})
        manager.set_event_emitter(emitter)
        callback = transport.callbacks[0]
        callback(AssistantResponseStarted())
        fresh_heap()
        watch.start()
        for _ in range(tenth):
            callback(delta)
        first_wall, first_cpu = watch.stop()
        for _ in range(count - 2 * tenth):
            callback(delta)
        watch.start()
        for _ in range(tenth):
            callback(delta)
        last_wall, last_cpu = watch.stop()
        manager.set_event_emitter(None)
        text = manager.state.response.text
    assert len(text) == count, len(text)
    return {
        "first_us": first_wall / tenth * 1e6,
        "last_us": last_wall / tenth * 1e6,
        "first_cpu_us": first_cpu / tenth * 1e6,
        "last_cpu_us": last_cpu / tenth * 1e6,
        "ratio": last_wall / first_wall,
        "cpu_ratio": last_cpu / first_cpu,
    }
