"""Hostile handlers and transports (reliability, second round), on asyncio and trio.

* A cancellation the engine did not request (a handler or transport that awaited
  something else's cancelled future, or re-raised a cancellation it caught) is an
  error of that operation, never a cancellation of the manager or of the caller.
* Other ``BaseException`` subclasses raised by a handler or a transport call are
  errors of that operation; ``KeyboardInterrupt`` and ``SystemExit`` propagate.
* A handler's raw exception text is not sent to the model (unless
  ``tool_error_detail=True``); it stays in ``realtime:tool:error`` and the log.
* Reconnect delays carry a bounded jitter by default.
"""

from __future__ import annotations

from typing import Any, NoReturn

import anyio
import pytest

from charivo_fsm import (
    CharivoError,
    CharivoStateError,
    CharivoValidationError,
    ConnectionState,
    RealtimeTool,
    RealtimeToolRegistration,
    SessionStatus,
    create_realtime_manager,
)
from charivo_fsm.events import ConnectionLost, SessionEnded, ToolCall
from charivo_fsm.testing import FakeTransport, RecordingEmitter, foreign_cancellation, settle

pytestmark = pytest.mark.anyio


class Custom(BaseException):
    """A BaseException that is neither a cancellation nor a process exit."""


def tool(name: str, handler: Any) -> RealtimeToolRegistration:
    return RealtimeToolRegistration(
        RealtimeTool(name=name, parameters={"type": "object", "properties": {}}), handler
    )


# ----------------------------------------------------------------------------- handlers


@pytest.mark.parametrize(
    "raise_it",
    [foreign_cancellation, None],
    ids=["foreign_cancellation", "custom_base_exception"],
)
async def test_a_handler_raising_a_base_exception_gets_one_failure(raise_it: Any) -> None:
    async def handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
        await anyio.sleep(0.01)
        if raise_it is None:
            raise Custom("odd")
        await raise_it()

    fake = FakeTransport()
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake, tools=[tool("probe", handler)])
    manager.set_event_emitter(emitter)
    body_finished = False
    async with manager:
        await manager.start_session()
        fake.emit(ToolCall(name="probe", args={}, call_id="c1"))
        await anyio.sleep(0.1)
        await settle()
        errors = emitter.payloads("realtime:tool:error")
        assert len(errors) == 1 and not emitter.payloads("realtime:tool:result")
        assert "cancelled" not in errors[0].error.message or raise_it is not None
        assert "session was stopped" not in errors[0].error.message
        assert fake.calls_to("send_tool_result") == [
            ("c1", {"success": False, "error": 'Realtime tool "probe" failed'})
        ]
        assert manager.state.session.status == SessionStatus.ACTIVE
        body_finished = True
    assert body_finished


async def test_process_exits_are_never_handled_as_errors() -> None:
    """``KeyboardInterrupt`` and ``SystemExit`` stop the process: a handler or
    transport raising them is not a tool or transport failure; they propagate."""
    from charivo_fsm.manager import _handled_as_error

    # (outside an event loop: nothing here is a cancellation)
    assert not _handled_as_error(KeyboardInterrupt())
    assert not _handled_as_error(SystemExit(3))
    assert _handled_as_error(GeneratorExit())
    assert _handled_as_error(Custom("odd"))


async def test_the_detail_goes_to_the_model_only_when_asked() -> None:
    async def handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("db password=hunter2 rejected")

    for detail, sent in (
        (False, 'Realtime tool "probe" failed'),
        (True, "db password=hunter2 rejected"),
    ):
        fake = FakeTransport()
        emitter = RecordingEmitter()
        manager = create_realtime_manager(
            fake, tools=[tool("probe", handler)], tool_error_detail=detail
        )
        manager.set_event_emitter(emitter)
        async with manager:
            await manager.start_session()
            fake.emit(ToolCall(name="probe", args={}, call_id="c1"))
            await settle()
            assert fake.calls_to("send_tool_result") == [
                ("c1", {"success": False, "error": sent})
            ]
            (error,) = emitter.payloads("realtime:tool:error")
            assert error.error.message == "db password=hunter2 rejected"


async def test_a_charivo_error_raised_on_purpose_reaches_the_model() -> None:
    async def handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
        raise CharivoValidationError("city must be a real city")

    fake = FakeTransport()
    async with create_realtime_manager(fake, tools=[tool("probe", handler)]) as manager:
        await manager.start_session()
        fake.emit(ToolCall(name="probe", args={}, call_id="c1"))
        await settle()
        assert fake.calls_to("send_tool_result") == [
            ("c1", {"success": False, "error": "city must be a real city"})
        ]


# ----------------------------------------------------------------------------- transports


async def _raise_foreign(*_args: Any) -> NoReturn:
    await foreign_cancellation()


async def _raise_custom(*_args: Any) -> NoReturn:
    raise Custom("odd transport")


@pytest.mark.parametrize("behaviour", [_raise_foreign, _raise_custom], ids=["cancel", "custom"])
async def test_a_connect_raising_a_base_exception_fails_the_start(behaviour: Any) -> None:
    fake = FakeTransport()
    fake.respond_with("connect", behaviour, once=True)
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake, transport_timeout=5.0)
    manager.set_event_emitter(emitter)
    start = anyio.current_time()
    async with manager:
        with pytest.raises(CharivoError, match="transport connect raised"):
            await manager.start_session()
        assert manager.state.session.status == SessionStatus.STOPPED
        assert manager.state.connection == ConnectionState.ERROR
        # the manager still works
        await manager.start_session()
        assert manager.state.session.status == SessionStatus.ACTIVE
    assert anyio.current_time() - start < 1.0  # no waiting out transport_timeout


@pytest.mark.parametrize("behaviour", [_raise_foreign, _raise_custom], ids=["cancel", "custom"])
async def test_a_disconnect_raising_a_base_exception_fails_the_stop(behaviour: Any) -> None:
    fake = FakeTransport()
    manager = create_realtime_manager(fake, transport_timeout=5.0)
    start = anyio.current_time()
    async with manager:
        await manager.start_session()
        fake.respond_with("disconnect", behaviour, once=True)
        with pytest.raises(CharivoError, match="transport disconnect raised"):
            await manager.stop_session()
        assert manager.state.session.status == SessionStatus.STOPPED
    assert anyio.current_time() - start < 1.0


@pytest.mark.parametrize("behaviour", [_raise_foreign, _raise_custom], ids=["cancel", "custom"])
async def test_a_failing_recover_is_retried(behaviour: Any) -> None:
    fake = FakeTransport()
    fake.respond_with("recover", behaviour, once=True)
    manager = create_realtime_manager(fake, reconnect_delays=(0.1, 0.1))
    async with manager:
        await manager.start_session()
        fake.emit(ConnectionLost("offline"))
        await anyio.sleep(1)
        await settle()
        assert fake.count("recover") == 2
        assert manager.state.connection == ConnectionState.CONNECTED


@pytest.mark.parametrize("behaviour", [_raise_foreign, _raise_custom], ids=["cancel", "custom"])
async def test_a_failing_tool_result_send_is_one_tool_error(behaviour: Any) -> None:
    async def handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"ok": True}

    fake = FakeTransport()
    fake.respond_with("send_tool_result", behaviour, once=True)
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake, tools=[tool("probe", handler)])
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(ToolCall(name="probe", args={}, call_id="c1"))
        await settle()
        assert fake.count("send_tool_result") == 1
        (error,) = emitter.payloads("realtime:tool:error")
        assert "send_tool_result raised" in error.error.message
        assert manager.state.session.status == SessionStatus.ACTIVE


async def test_a_remote_end_cleanup_disconnect_survives_leaving_the_block() -> None:
    """D17.13: the clean-up disconnect after a remote end reaches the transport even
    when the remote end came during a patch and the app stops and leaves at once."""
    fake = FakeTransport()

    async def slow_patch(_config: Any) -> None:
        await anyio.sleep(0.5)

    fake.respond_with("update_session", slow_patch, once=True)
    manager = create_realtime_manager(fake, transport_timeout=2.0)

    async def update() -> None:
        with pytest.raises(CharivoStateError, match="remote"):
            await manager.update_session({"voice": "cedar"})

    async with anyio.create_task_group() as group:
        async with manager:
            await manager.start_session()
            group.start_soon(update)
            await fake.wait_for_call("update_session")
            fake.emit(SessionEnded())
            await manager.stop_session()  # a no-op: the session has ended
    assert fake.methods() == ["connect", "update_session", "disconnect"]
    assert manager.state.connection == ConnectionState.IDLE


# ----------------------------------------------------------------------------- jitter


async def test_reconnect_delays_carry_bounded_jitter_by_default() -> None:
    delays: list[int] = []
    for _ in range(12):
        fake = FakeTransport()
        fake.fail_always("recover", RuntimeError("down"))
        emitter = RecordingEmitter()
        manager = create_realtime_manager(fake, reconnect_delays=(1.0, 2.0))
        manager.set_event_emitter(emitter)
        async with manager:
            await manager.start_session()
            fake.emit(ConnectionLost("offline"))
            await anyio.sleep(5)
        attempts = emitter.payloads("realtime:reconnect:attempt")
        assert [a.attempt for a in attempts] == [1, 2]
        assert 900 <= attempts[0].delay_ms <= 1100
        assert 1800 <= attempts[1].delay_ms <= 2200
        delays.append(attempts[0].delay_ms)
    assert len(set(delays)) > 1, "every session retried in lockstep"


async def test_jitter_can_be_turned_off_and_is_checked() -> None:
    fake = FakeTransport()
    fake.fail_always("recover", RuntimeError("down"))
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake, reconnect_delays=(1.0,), reconnect_jitter=0)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        fake.emit(ConnectionLost("offline"))
        await anyio.sleep(3)
    assert [a.delay_ms for a in emitter.payloads("realtime:reconnect:attempt")] == [1000]
    for bad in (-0.1, 0.6, True, "0.1"):
        with pytest.raises(CharivoValidationError, match="reconnect_jitter"):
            create_realtime_manager(FakeTransport(), reconnect_jitter=bad)


# ----------------------------------------------------------------------------- sync handlers


def test_a_plain_function_handler_is_refused_at_registration() -> None:
    def blocking(args: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"ok": True}

    class SyncCallable:
        def __call__(self, args: dict[str, Any], context: Any) -> dict[str, Any]:
            return {}

    for handler in (blocking, SyncCallable(), lambda args, context: {}, "not callable"):
        with pytest.raises(CharivoValidationError, match='tool "probe": the handler must be an'):
            create_realtime_manager(FakeTransport(), tools=[tool("probe", handler)])
        manager = create_realtime_manager(FakeTransport())
        with pytest.raises(CharivoValidationError, match="async def"):
            manager.register_tool(tool("probe", handler))
        assert manager.registered_tools() == []


def test_async_callables_of_every_shape_are_accepted() -> None:
    import functools

    async def handler(args: dict[str, Any], context: Any, extra: int = 0) -> dict[str, Any]:
        return {"extra": extra}

    class AsyncCallable:
        async def __call__(self, args: dict[str, Any], context: Any) -> dict[str, Any]:
            return {}

    class Holder:
        async def method(self, args: dict[str, Any], context: Any) -> dict[str, Any]:
            return {}

    manager = create_realtime_manager(FakeTransport())
    for index, accepted in enumerate(
        (handler, functools.partial(handler, extra=1), AsyncCallable(), Holder().method)
    ):
        manager.register_tool(tool(f"t{index}", accepted))
    assert len(manager.registered_tools()) == 4


# ----------------------------------------------------------------------------- listeners


async def test_a_listener_raising_a_base_exception_is_a_listener_failure(
    module_records: list[Any],
) -> None:
    class Emitter:
        def __init__(self) -> None:
            self.names: list[str] = []

        def emit(self, name: str, payload: Any) -> None:
            self.names.append(name)
            if name == "realtime:session:start":
                raise Custom("listener blew up")
            if name == "realtime:session:end":
                raise GeneratorExit

    fake = FakeTransport()
    emitter = Emitter()
    manager = create_realtime_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session()
        await manager.stop_session()
    assert emitter.names.count("realtime:session:end") == 1
    failures = [r for r in module_records if r.charivo.get("event") == "listener.failed"]
    assert len(failures) == 2
    assert manager.state.session.status == SessionStatus.STOPPED


# ----------------------------------------------------------------------------- threads


async def test_events_from_another_thread_are_handed_to_the_loop() -> None:
    """A transport that reports from a worker thread (callback-based SDKs do): the
    events reach the manager on its own loop, in order, and a lost link reconnects."""
    import threading

    fake = FakeTransport()
    emitter = RecordingEmitter()
    manager = create_realtime_manager(fake, reconnect_delays=(0.1,), reconnect_jitter=0)
    manager.set_event_emitter(emitter)
    loop_thread = threading.get_ident()
    seen_on: set[int] = set()
    original = emitter.emit

    def emit(name: str, payload: Any) -> None:
        seen_on.add(threading.get_ident())
        original(name, payload)

    emitter.emit = emit  # type: ignore[method-assign]

    def report_from_a_thread() -> None:
        from charivo_fsm.events import AssistantResponseStarted, AssistantTextDelta

        fake.emit(AssistantResponseStarted())
        for word in ("one ", "two ", "three"):
            fake.emit(AssistantTextDelta(word))
        fake.emit(ConnectionLost("offline"))

    async with manager:
        await manager.start_session()
        await anyio.to_thread.run_sync(report_from_a_thread)
        await anyio.sleep(1)
        await settle()
        assert manager.state.response.text == "one two three"
        assert fake.count("recover") == 1
        assert manager.state.connection == ConnectionState.CONNECTED
    assert seen_on == {loop_thread}


def test_events_from_another_thread_reach_the_manager_in_each_event_loop() -> None:
    """The managers entered in one asyncio event loop share its loop token; a manager
    entered in a later loop (the first one still alive) gets that loop's."""
    import asyncio

    from charivo_fsm.events import AssistantResponseStarted, AssistantTextDelta

    loops: list[asyncio.AbstractEventLoop] = []

    async def one_session(word: str) -> str:
        loops.append(asyncio.get_running_loop())
        fake = FakeTransport()
        async with create_realtime_manager(fake) as manager:
            await manager.start_session()

            def report() -> None:
                fake.emit(AssistantResponseStarted())
                fake.emit(AssistantTextDelta(word))

            await anyio.to_thread.run_sync(report)
            await settle()
            return manager.state.response.text

    assert asyncio.run(one_session("first")) == "first"
    assert asyncio.run(one_session("second")) == "second"
    assert loops[0] is not loops[1]


def test_events_from_another_thread_without_a_running_manager_are_dropped() -> None:
    import threading

    fake = FakeTransport()
    manager = create_realtime_manager(fake)
    thread = threading.Thread(target=lambda: fake.emit(ConnectionLost("offline")))
    thread.start()
    thread.join()
    assert manager.state.connection == ConnectionState.IDLE


@pytest.mark.parametrize("behaviour", [_raise_foreign, _raise_custom], ids=["cancel", "custom"])
async def test_a_send_raising_a_base_exception_is_a_transport_error(behaviour: Any) -> None:
    fake = FakeTransport()
    async with create_realtime_manager(fake) as manager:
        await manager.start_session()
        fake.respond_with("send_text", behaviour, once=True)
        with pytest.raises(CharivoError) as info:
            await manager.send_message("hello")
        assert info.value.code == "CHARIVO_TRANSPORT_ERROR"
        assert "transport send_text raised" in info.value.message
        await manager.send_message("again")  # the session is untouched
        assert manager.state.session.status == SessionStatus.ACTIVE
