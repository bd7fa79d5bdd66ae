"""The scriptable fake transport, the recording emitter and settle(), on both backends."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from charivo_fsm.events import (
    AssistantTextDelta,
    ConnectionLost,
    SessionEnded,
    SessionStarted,
    ToolCall,
    TransportEvent,
)
from charivo_fsm.model import RealtimeSessionConfig
from charivo_fsm.testing import METHODS, Call, FakeTransport, Gate, RecordingEmitter, settle
from charivo_fsm.transport import RealtimeTransport

pytestmark = pytest.mark.anyio

CONFIG = RealtimeSessionConfig(voice="alloy")


class Boom(Exception):
    pass


def listen(fake: FakeTransport) -> list[TransportEvent]:
    received: list[TransportEvent] = []
    fake.on_event(received.append)
    return received


async def call_everything(fake: FakeTransport) -> None:
    await fake.connect(CONFIG)
    await fake.update_session(CONFIG)
    await fake.recover(CONFIG)
    await fake.send_text("hello")
    await fake.send_audio(b"\x00\x01")
    await fake.send_tool_result("c1", {"ok": True})
    await fake.interrupt()
    await fake.commit_audio()
    await fake.clear_audio()
    await fake.truncate_audio("item_1", 250)
    await fake.disconnect()


# ---------------------------------------------------------------- recording


async def test_records_every_call_in_order(fake: FakeTransport) -> None:
    assert isinstance(fake, RealtimeTransport)
    start = anyio.current_time()
    await call_everything(fake)
    assert anyio.current_time() == start
    assert fake.calls == [
        Call("connect", (CONFIG,)),
        Call("update_session", (CONFIG,)),
        Call("recover", (CONFIG,)),
        Call("send_text", ("hello",)),
        Call("send_audio", (b"\x00\x01",)),
        Call("send_tool_result", ("c1", {"ok": True})),
        Call("interrupt", ()),
        Call("commit_audio", ()),
        Call("clear_audio", ()),
        Call("truncate_audio", ("item_1", 250)),
        Call("disconnect", ()),
    ]
    assert fake.methods() == [
        "connect",
        "update_session",
        "recover",
        "send_text",
        "send_audio",
        "send_tool_result",
        "interrupt",
        "commit_audio",
        "clear_audio",
        "truncate_audio",
        "disconnect",
    ]
    assert set(fake.methods()) == set(METHODS)
    assert fake.calls_to("send_tool_result") == [("c1", {"ok": True})]
    assert fake.count("disconnect") == 1
    assert fake.count("connect") == 1
    fake.clear()
    assert fake.calls == []
    assert fake.count("connect") == 0


async def test_unknown_method_names_are_rejected(fake: FakeTransport) -> None:
    with pytest.raises(ValueError, match="unknown transport method"):
        fake.fail_once("conect", Boom())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fake.count("on_event")  # type: ignore[arg-type]


async def test_wait_for_call(fake: FakeTransport) -> None:
    async with anyio.create_task_group() as tg:

        async def later() -> None:
            await anyio.sleep(2)
            await fake.send_text("a")
            await anyio.sleep(2)
            await fake.send_text("b")

        tg.start_soon(later)
        start = anyio.current_time()
        await fake.wait_for_call("send_text")
        assert anyio.current_time() - start == pytest.approx(2)
        await fake.wait_for_call("send_text", 2)
        assert anyio.current_time() - start == pytest.approx(4)
        await fake.wait_for_call("send_text", 1)  # already satisfied


# ------------------------------------------------------------------- events


async def test_emit_delivers_synchronously_to_every_callback(fake: FakeTransport) -> None:
    first = listen(fake)
    second = listen(fake)
    fake.emit(SessionStarted())
    assert first == [SessionStarted()]
    assert second == [SessionStarted()]


async def test_emit_without_callback_is_an_error(fake: FakeTransport) -> None:
    with pytest.raises(RuntimeError, match="no callback registered"):
        fake.emit(SessionStarted())


async def test_callback_exceptions_propagate(fake: FakeTransport) -> None:
    def explode(_event: TransportEvent) -> None:
        raise Boom

    fake.on_event(explode)
    with pytest.raises(Boom):
        fake.emit(SessionEnded())


# -------------------------------------------------------------------- gates


async def test_gate_parks_the_next_call_only(fake: FakeTransport) -> None:
    gate = fake.gate("connect")
    assert isinstance(gate, Gate)
    assert not gate.entered and not gate.is_waiting and not gate.is_open
    done = anyio.Event()

    async def connect() -> None:
        await fake.connect(CONFIG)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(connect)
        await gate.wait_entered()
        # recorded on entry, before the gate
        assert fake.calls_to("connect") == [(CONFIG,)]
        assert gate.entered and gate.is_waiting and gate.waiting == 1
        await anyio.sleep(100)  # virtual: the gate holds no matter how long
        assert not done.is_set()
        gate.open()
        await done.wait()
        assert gate.is_open and not gate.is_waiting
        assert gate.calls == [Call("connect", (CONFIG,))]

    # consumed: the next connect is not gated
    with anyio.fail_after(1):
        await fake.connect(CONFIG)
    assert gate.calls == [Call("connect", (CONFIG,))]


async def test_gate_opened_in_advance_lets_the_call_through(fake: FakeTransport) -> None:
    gate = fake.gate("disconnect")
    gate.open()
    with anyio.fail_after(1):
        await fake.disconnect()
    assert gate.entered and not gate.is_waiting
    await gate.wait_entered()


async def test_always_gate_parks_every_call_until_opened(fake: FakeTransport) -> None:
    gate = fake.gate("send_text", always=True)
    finished: list[str] = []

    async def send(text: str) -> None:
        await fake.send_text(text)
        finished.append(text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "a")
        tg.start_soon(send, "b")
        await settle()
        assert gate.waiting == 2 and finished == []
        assert sorted(fake.calls_to("send_text")) == [("a",), ("b",)]  # trio: any order
        gate.open()
    assert sorted(finished) == ["a", "b"]
    await fake.send_text("c")  # an open latch lets later calls through
    assert gate.calls[-1] == Call("send_text", ("c",))


async def test_parked_call_can_be_cancelled(fake: FakeTransport) -> None:
    gate = fake.gate("update_session")
    with anyio.move_on_after(3) as scope:
        await fake.update_session(CONFIG)
    assert scope.cancelled_caught
    assert gate.entered and not gate.is_waiting


# ----------------------------------------------------------------- failures


async def test_fail_once_then_default(fake: FakeTransport) -> None:
    error = Boom("once")
    fake.fail_once("connect", error)
    with pytest.raises(Boom) as info:
        await fake.connect(CONFIG)
    assert info.value is error
    await fake.connect(CONFIG)
    assert fake.count("connect") == 2  # the failed call is recorded too


async def test_fail_once_accepts_an_exception_class(fake: FakeTransport) -> None:
    fake.fail_once("interrupt", Boom)
    with pytest.raises(Boom):
        await fake.interrupt()


async def test_fail_once_queue_is_fifo(fake: FakeTransport) -> None:
    fake.fail_once("recover", Boom("first"))
    fake.fail_once("recover", Boom("second"))
    with pytest.raises(Boom, match="first"):
        await fake.recover(CONFIG)
    with pytest.raises(Boom, match="second"):
        await fake.recover(CONFIG)
    await fake.recover(CONFIG)


async def test_fail_always_until_succeed(fake: FakeTransport) -> None:
    error = Boom("down")
    fake.fail_always("recover", error)
    for _ in range(3):
        with pytest.raises(Boom) as info:
            await fake.recover(CONFIG)
        assert info.value is error
    fake.succeed("recover")
    await fake.recover(CONFIG)
    assert fake.count("recover") == 4


async def test_once_behaviours_come_before_the_persistent_one(fake: FakeTransport) -> None:
    fake.fail_always("send_text", Boom("always"))
    fake.fail_once("send_text", Boom("once"))
    with pytest.raises(Boom, match="once"):
        await fake.send_text("x")
    with pytest.raises(Boom, match="always"):
        await fake.send_text("x")


async def test_succeed_clears_pending_once_behaviours(fake: FakeTransport) -> None:
    fake.fail_once("send_audio", Boom())
    fake.hang("send_audio")
    fake.succeed("send_audio")
    with anyio.fail_after(1):
        await fake.send_audio(b"")


async def test_emit_then_raise(fake: FakeTransport) -> None:
    received = listen(fake)
    event = ConnectionLost(cause="socket-closed")
    fake.emit_then_raise("update_session", event, Boom("patch failed"))
    with pytest.raises(Boom, match="patch failed"):
        await fake.update_session(CONFIG)
    assert received == [event]
    await fake.update_session(CONFIG)  # once only
    assert received == [event]


# ------------------------------------------------------------------ emit_on


async def test_emit_on_persistent_and_once(fake: FakeTransport) -> None:
    received = listen(fake)
    fake.emit_on("connect", SessionStarted())
    fake.emit_on("connect", AssistantTextDelta(text="hi"), once=True)
    await fake.connect(CONFIG)
    assert received == [SessionStarted(), AssistantTextDelta(text="hi")]
    await fake.connect(CONFIG)
    assert received == [SessionStarted(), AssistantTextDelta(text="hi"), SessionStarted()]


async def test_emit_on_happens_before_the_call_returns(fake: FakeTransport) -> None:
    received = listen(fake)
    fake.emit_on("disconnect", SessionEnded())
    gate = fake.gate("disconnect")
    async with anyio.create_task_group() as tg:
        tg.start_soon(fake.disconnect)
        await gate.wait_entered()
        assert received == []  # not while parked
        gate.open()
    assert received == [SessionEnded()]


async def test_emit_on_skipped_when_the_call_fails(fake: FakeTransport) -> None:
    received = listen(fake)
    fake.emit_on("connect", SessionStarted(), once=True)
    fake.fail_once("connect", Boom())
    with pytest.raises(Boom):
        await fake.connect(CONFIG)
    assert received == []
    await fake.connect(CONFIG)  # the once-emit was not consumed by the failure
    assert received == [SessionStarted()]


async def test_appendix_b_constructor_options() -> None:
    fake = FakeTransport(
        emit_session_started_on_connect=True, emit_session_ended_on_disconnect=True
    )
    received = listen(fake)
    await fake.connect(CONFIG)
    assert received == [SessionStarted()]
    await fake.disconnect()
    assert received == [SessionStarted(), SessionEnded()]
    fake.succeed("connect")  # emit_on survives succeed()
    await fake.connect(CONFIG)
    assert received[-1] == SessionStarted()
    fake.reset()
    await fake.connect(CONFIG)
    await fake.disconnect()
    assert len(received) == 3


async def test_reset_one_method(fake: FakeTransport) -> None:
    fake.fail_always("connect", Boom())
    fake.fail_always("disconnect", Boom())
    fake.reset("connect")
    await fake.connect(CONFIG)
    with pytest.raises(Boom):
        await fake.disconnect()


# --------------------------------------------------------------------- hang


async def test_hang_times_out_on_virtual_time(fake: FakeTransport) -> None:
    fake.hang("connect")
    wall = time.monotonic()
    start = anyio.current_time()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(5):
            await fake.connect(CONFIG)
    assert anyio.current_time() - start == pytest.approx(5)
    assert time.monotonic() - wall < 1.0  # no real waiting
    assert fake.count("connect") == 1
    with anyio.fail_after(1):  # once only
        await fake.connect(CONFIG)


async def test_hang_always(fake: FakeTransport) -> None:
    fake.hang("disconnect", always=True)
    for _ in range(2):
        with anyio.move_on_after(30) as scope:
            await fake.disconnect()
        assert scope.cancelled_caught
    fake.succeed("disconnect")
    await fake.disconnect()


# -------------------------------------------------------------- respond_with


async def test_respond_with_receives_the_args(fake: FakeTransport) -> None:
    voices: list[str | None] = []

    async def recover(config: RealtimeSessionConfig) -> None:
        voices.append(config.voice)
        await anyio.sleep(1)
        if len(voices) == 1:
            raise Boom("first attempt fails")

    fake.respond_with("recover", recover)
    start = anyio.current_time()
    with pytest.raises(Boom):
        await fake.recover(RealtimeSessionConfig(voice="marin"))
    await fake.recover(RealtimeSessionConfig(voice="alloy"))
    assert voices == ["marin", "alloy"]
    assert anyio.current_time() - start == pytest.approx(2)


async def test_respond_with_once(fake: FakeTransport) -> None:
    seen: list[tuple[str, Any]] = []

    async def record(call_id: str, output: Any) -> str:
        seen.append((call_id, output))
        return "ignored"

    fake.respond_with("send_tool_result", record, once=True)
    await fake.send_tool_result("a", {"x": 1})
    await fake.send_tool_result("b", {"x": 2})
    assert seen == [("a", {"x": 1})]
    assert fake.calls_to("send_tool_result") == [("a", {"x": 1}), ("b", {"x": 2})]


# ------------------------------------------------------------------ settle


async def test_settle_runs_spawned_work_without_moving_the_clock(fake: FakeTransport) -> None:
    async with anyio.create_task_group() as tg:

        async def run_tool(event: ToolCall) -> None:
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            await fake.send_tool_result(event.call_id or "", {"ok": True})
            await anyio.sleep(1)  # a later step that needs the clock
            await fake.send_text("after a second")

        def on_event(event: TransportEvent) -> None:
            if isinstance(event, ToolCall):
                tg.start_soon(run_tool, event)

        fake.on_event(on_event)
        start = anyio.current_time()
        fake.emit(ToolCall(name="wave", args={}, call_id="c1"))
        assert fake.count("send_tool_result") == 0  # the task has not run yet
        await settle()
        assert fake.calls_to("send_tool_result") == [("c1", {"ok": True})]
        assert fake.count("send_text") == 0
        assert anyio.current_time() == start
        await anyio.sleep(1)
        await settle()  # the worker's timer is due at the same instant as ours
        assert fake.calls_to("send_text") == [("after a second",)]
        assert anyio.current_time() - start == pytest.approx(1)


async def test_settle_follows_chains_of_tasks_and_events(fake: FakeTransport) -> None:
    order: list[str] = []
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()

        async def producer() -> None:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            order.append("produced")
            ready.set()

        async def consumer() -> None:
            await ready.wait()
            order.append("consumed")
            await fake.interrupt()

        def on_event(_event: TransportEvent) -> None:
            tg.start_soon(consumer)
            tg.start_soon(producer)

        fake.on_event(on_event)
        start = anyio.current_time()
        await fake.emit_and_settle(SessionStarted())
        assert order == ["produced", "consumed"]
        assert fake.count("interrupt") == 1
        assert anyio.current_time() == start


async def test_settle_lets_due_timers_fire_but_not_future_ones() -> None:
    fired: list[float] = []
    async with anyio.create_task_group() as tg:

        async def sleeper(delay: float) -> None:
            await anyio.sleep(delay)
            fired.append(delay)

        tg.start_soon(sleeper, 0)
        tg.start_soon(sleeper, 0.5)
        start = anyio.current_time()
        await settle()
        assert fired == [0]
        assert anyio.current_time() == start
        tg.cancel_scope.cancel()


async def test_settle_with_nothing_to_do() -> None:
    start = anyio.current_time()
    await settle()
    assert anyio.current_time() == start


# -------------------------------------------------------------- the emitter


def test_recording_emitter(emitter: RecordingEmitter) -> None:
    emitter.emit("realtime:state", 1)
    emitter.emit("realtime:error", "e")
    emitter.emit("realtime:state", 2)
    assert emitter.events == [("realtime:state", 1), ("realtime:error", "e"), ("realtime:state", 2)]
    assert emitter.names() == ["realtime:state", "realtime:error", "realtime:state"]
    assert emitter.payloads("realtime:state") == [1, 2]
    assert emitter.payloads("realtime:usage") == []
    assert emitter.last("realtime:state") == 2
    with pytest.raises(LookupError):
        emitter.last("realtime:usage")
    emitter.clear()
    assert emitter.events == []


async def test_each_test_gets_a_fresh_virtual_clock(anyio_backend: tuple[str, Any]) -> None:
    # a new MockClock per test on trio; looptime starts a new loop per test too
    assert anyio.current_time() < 1.0
    await anyio.sleep(3600)
