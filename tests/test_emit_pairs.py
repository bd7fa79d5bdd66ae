"""The manager's fast lane for the most frequent emits (``Core.emits``: text deltas,
lipsync levels, a response's start and end made while ``Core.out`` is empty go to the
drain as (name, payload) pairs) emits exactly what the Emit effects would: the same
events, in the same order, with the same payloads, also when a listener calls back
into the manager or a fatal exception escapes a listener mid-batch; and the compiled
per-trigger steps (``MachineSpec.steps``) follow a rebind of the machines."""

from __future__ import annotations

from typing import Any

import pytest

from charivo_fsm import Character, create_realtime_manager
from charivo_fsm.core import Core
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
)
from charivo_fsm.machines import MACHINES, RESPONSE
from charivo_fsm.testing import FakeTransport

pytestmark = pytest.mark.anyio

TURN: list[Any] = [
    AssistantResponseStarted(),
    AssistantTextDelta("a"),
    AudioLipsync(0.5),
    AssistantTextDelta("b"),
    AudioLipsync(0.0005),
    AssistantTextDelta("c"),
    AssistantResponseCompleted(text="abc"),
    AssistantTextDelta("d"),  # a delta after a finished turn opens a new one
    AssistantResponseCompleted(),
]


class Reentrant:
    """Records every emit; on the first ``trigger`` event it calls back into the
    manager (a new character: a state emit of its own), then raises ``raises`` if
    given (a fatal one: the rest of that batch waits for the next drain; another: the
    listener failure is logged and the rest goes on)."""

    def __init__(self, trigger: str, raises: type[BaseException] | None = None) -> None:
        self.trigger = trigger
        self.raises = raises
        self.manager: Any = None
        self.seen: list[tuple[str, Any]] = []
        self.done = False

    def emit(self, name: str, payload: Any) -> None:
        self.seen.append((name, payload))
        if name == self.trigger and not self.done:
            self.done = True
            self.manager.set_character(Character(id="bob", name="Bob"))
            if self.raises is not None:
                raise self.raises("listener bug")


async def _run(pairs: bool, trigger: str, fatal: bool) -> list[tuple[str, Any]]:
    transport = FakeTransport()
    listener = Reentrant(trigger, KeyboardInterrupt if fatal else None)
    async with create_realtime_manager(transport) as manager:
        await manager.start_session({"voice": "marin"})
        if not pairs:
            manager._core.emits = None  # every emit as an Emit effect
        listener.manager = manager
        manager.set_event_emitter(listener)
        callback = transport.callbacks[0]
        for event in TURN:
            try:
                callback(event)
            except KeyboardInterrupt:
                pass
        seen = list(listener.seen)
        manager.set_event_emitter(None)
    return seen


def _values(seen: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    # payloads compare by value (a state payload by the state it holds)
    return [(name, payload) for name, payload in seen]


@pytest.mark.parametrize(
    "trigger",
    [
        "realtime:assistant:start",
        "realtime:text:delta",
        "realtime:assistant:delta",
        "tts:lipsync:update",
        "realtime:assistant:done",
    ],
)
@pytest.mark.parametrize("fatal", [False, True])
async def test_pairs_emit_what_the_effects_emit(trigger: str, fatal: bool) -> None:
    fast = await _run(True, trigger, fatal)
    slow = await _run(False, trigger, fatal)
    assert _values(fast) == _values(slow)
    names = [name for name, _ in fast]
    assert names.count("realtime:text:delta") == 4
    # the listener's own state change comes after the event's state, never before
    character_states = [
        i
        for i, (name, payload) in enumerate(fast)
        if name == "realtime:state" and payload.state.session.character_id == "bob"
    ]
    first_trigger = names.index(trigger)
    assert character_states and all(i > first_trigger for i in character_states)


async def test_direct_steps_follow_a_rebind(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = RESPONSE.steps("delta")
    assert steps["responding"] is Core.append_delta  # staying with one effect: the effect
    calls: list[str] = []

    def planted(self: Core) -> None:
        calls.append(self._input)

    monkeypatch.setattr(Core, "append_delta", planted)
    for spec in MACHINES.values():
        spec.bind(Core)
    try:
        assert RESPONSE.steps("delta") is steps  # the same mapping, refilled
        assert steps["responding"] is planted
        transport = FakeTransport()
        async with create_realtime_manager(transport) as manager:
            await manager.start_session({"voice": "marin"})
            callback = transport.callbacks[0]
            callback(AssistantResponseStarted())
            callback(AssistantTextDelta("x"))
        assert calls == ["x"]
    finally:
        monkeypatch.undo()
        for spec in MACHINES.values():
            spec.bind(Core)
    assert steps["responding"] is Core.append_delta


@pytest.mark.parametrize(
    "trigger", ["realtime:text:delta", "realtime:assistant:delta", "tts:lipsync:update"]
)
async def test_a_failing_listener_sees_the_same_events(
    trigger: str, caplog: pytest.LogCaptureFixture
) -> None:
    """D1 on the transport callback's own loop over the pairs: the failure is logged
    once, the rest of the batch still reaches the listener and the pull streams, in
    the order the Emit effects give."""
    results = []
    for pairs in (True, False):
        transport = FakeTransport()
        listener = Reentrant(trigger, ValueError)
        caplog.clear()
        async with create_realtime_manager(transport) as manager:
            await manager.start_session({"voice": "marin"})
            if not pairs:
                manager._core.emits = None
            listener.manager = manager
            manager.set_event_emitter(listener)
            stream = manager.events()
            callback = transport.callbacks[0]
            for event in TURN:
                callback(event)
            streamed = [await stream.__anext__() for _ in range(stream.pending)]
            manager.set_event_emitter(None)
        failures = [r for r in caplog.records if "listener failed" in r.getMessage()]
        emitted = [tuple(e) for e in streamed]
        results.append((list(listener.seen), emitted, len(failures)))
    assert results[0] == results[1]
    assert results[0][2] == 1
