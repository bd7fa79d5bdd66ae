"""Decisions on isolation, responses, tool calls and transport events (SEMANTICS D1, D7,
D8, D9, D11, D17.9, D17.10, D17.12, D18.4, D18.7).

Every test says which D-rule it covers.  Time is virtual (see tests/conftest.py).
"""

from __future__ import annotations

import gc
import logging
import math
import random
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import anyio
import pytest

from charivo_fsm import (
    Character,
    CharivoError,
    CharivoProviderError,
    CharivoStateError,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
    RealtimeManager,
    RealtimeState,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
    ResponseState,
    ResponseStatus,
    create_realtime_manager,
)
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputEnded,
    AudioOutputStarted,
    ConnectionLost,
    ErrorEvent,
    SessionEnded,
    StateUpdate,
    ToolCall,
    ToolResult,
    TransportEvent,
    UserTranscript,
)
from charivo_fsm.payloads import TextPayload, UsagePayload
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle
from charivo_fsm.wire import event_from_wire

pytestmark = pytest.mark.anyio

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
TERMINAL = ("realtime:tool:result", "realtime:tool:error")
Handler = Callable[[dict[str, Any], RealtimeToolContext], Awaitable[Mapping[str, Any]]]


# ----------------------------------------------------------------------------- helpers


class Capture(logging.Handler):
    """Collects log records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def with_event(self, event: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "charivo", {}).get("event") == event]


def capturing_logger(name: str) -> tuple[logging.Logger, Capture]:
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    capture = Capture()
    logger.addHandler(capture)
    return logger, capture


@pytest.fixture
def module_log() -> Iterator[Capture]:
    """Capture the module logger ``charivo_fsm`` (D1, D17.8)."""
    logger = logging.getLogger("charivo_fsm")
    capture = Capture()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)


@pytest.fixture
def log() -> Capture:
    """A configured logger of its own (not a child of ``charivo_fsm``)."""
    return capturing_logger("test.decisions.tools")[1]


def quiet_logger() -> logging.Logger:
    return capturing_logger("test.decisions.tools")[0]


def tool(
    name: str,
    handler: Handler,
    *,
    parameters: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> RealtimeToolRegistration:
    return RealtimeToolRegistration(
        definition=RealtimeTool(
            name=name,
            description=f"The {name} test tool.",
            parameters=parameters if parameters is not None else EMPTY_SCHEMA,
        ),
        handler=handler,
        timeout=timeout,
    )


class Recorder:
    """A handler that records its calls and returns ``output``."""

    def __init__(self, output: Any = None) -> None:
        self.calls: list[tuple[dict[str, Any], RealtimeToolContext]] = []
        self.output = {"success": True} if output is None else output

    async def __call__(self, args: dict[str, Any], ctx: RealtimeToolContext) -> Any:
        self.calls.append((args, ctx))
        return self.output


class Blocker:
    """A handler that waits until :meth:`release` (or forever) and notes cancellation."""

    def __init__(self, output: Any = None) -> None:
        self.calls: list[str] = []
        self.cancelled: list[str] = []
        self.output = {"success": True} if output is None else output
        self._released = False
        self._event: anyio.Event | None = None

    async def __call__(self, args: dict[str, Any], ctx: RealtimeToolContext) -> Any:
        self.calls.append(ctx.call_id)
        try:
            if not self._released:
                if self._event is None:
                    self._event = anyio.Event()
                await self._event.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(ctx.call_id)
            raise
        return self.output

    def release(self) -> None:
        self._released = True
        if self._event is not None:
            self._event.set()


class Raiser:
    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    async def __call__(self, args: dict[str, Any], ctx: RealtimeToolContext) -> Any:
        self.calls += 1
        raise self.error


def terminals(emitter: RecordingEmitter, call_id: str | None) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in emitter.events if n in TERMINAL and p.call_id == call_id]


def sends_for(fake: FakeTransport, call_id: str) -> list[Mapping[str, Any]]:
    return [output for cid, output in fake.calls_to("send_tool_result") if cid == call_id]


def new_tool_events(emitter: RecordingEmitter, since: int) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in emitter.events[since:] if n in ("realtime:tool:call", *TERMINAL)]


def snapshot_key(state: RealtimeState) -> tuple[Any, ...]:
    error = state.last_error
    return (
        state.connection,
        state.session.status,
        state.session.config,
        state.session.character_id,
        state.response,
        None if error is None else (type(error), error.message),
    )


# =============================================================================== D1


class RaisingEmitter:
    """A listener that fails on every event (after noting its name)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def emit(self, name: str, payload: Any) -> None:
        self.names.append(name)
        raise RuntimeError(f"listener boom on {name}")


async def _d1_script(
    fake: FakeTransport, emitter: Any, *, logger: logging.Logger | None = None
) -> list[tuple[Any, ...]]:
    """Start, stream a response, run a good and a bad tool call, surface an error, stop.

    Returns the state after each step."""
    checkpoints: list[tuple[Any, ...]] = []
    wave = Recorder({"success": True, "waved": True})
    manager = create_realtime_manager(
        fake, tools=[tool("wave", wave)], logger=logger or quiet_logger()
    )
    manager.set_event_emitter(emitter)
    async with manager:
        manager.set_character(Character(id="char-1", name="Hiyori"))
        checkpoints.append(snapshot_key(manager.state))
        await manager.start_session({"provider": "openai", "voice": "marin"})
        checkpoints.append(snapshot_key(manager.state))
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantTextDelta(text="hel"))
        fake.emit(AudioOutputStarted())
        checkpoints.append(snapshot_key(manager.state))
        fake.emit(ToolCall(name="wave", args={}, call_id="call-ok"))
        await settle()
        fake.emit(ToolCall(name="missing", args={}, call_id="call-bad"))
        await settle()
        checkpoints.append(snapshot_key(manager.state))
        fake.emit(AssistantResponseCompleted(text="hello", usage={"output_tokens": 3}))
        fake.emit(ErrorEvent(error=RuntimeError("transport hiccup")))
        checkpoints.append(snapshot_key(manager.state))
        await manager.update_session({"voice": "alloy"})
        checkpoints.append(snapshot_key(manager.state))
        await manager.stop_session()
        checkpoints.append(snapshot_key(manager.state))
    assert len(wave.calls) == 1
    return checkpoints


async def test_d1_raising_listener_changes_nothing_and_each_failure_is_reported_once(
    module_log: Capture,
) -> None:
    """D1: a listener that raises on every event never changes state, never aborts a
    transition (start, patch, stop still complete; B1: the start is not failed), never
    causes a second tool result (B13) and never reaches the caller. Each failure is
    reported exactly once through the module logger `charivo_fsm`, event
    `listener.failed`, naming the event."""
    reference_fake, reference = FakeTransport(), RecordingEmitter()
    expected = await _d1_script(reference_fake, reference)

    fake, raising = FakeTransport(), RaisingEmitter()
    got = await _d1_script(fake, raising)

    assert got == expected
    assert raising.names == reference.names()
    assert fake.calls == reference_fake.calls
    assert fake.calls_to("send_tool_result") == [
        ("call-ok", {"success": True, "waved": True}),
        ("call-bad", {"success": False, "error": 'No realtime tool registered for "missing"'}),
    ]
    assert "realtime:tool:result" in raising.names
    assert raising.names.count("realtime:tool:error") == 1  # only the unknown tool

    failures = module_log.with_event("listener.failed")
    assert len(failures) == len(raising.names)
    assert [r.charivo["name"] for r in failures] == raising.names  # type: ignore[attr-defined]
    assert all(r.levelno == logging.WARNING for r in failures)
    assert all(r.name == "charivo_fsm" for r in failures)


async def test_d1_raising_tool_result_listener_does_not_produce_a_second_result(
    fake: FakeTransport, module_log: Capture
) -> None:
    """D1 (B13): a listener raising on `realtime:tool:result` after a successful send
    causes no `tool:error` and no failure result for the same call id."""

    class ResultHater(RecordingEmitter):
        def emit(self, name: str, payload: Any) -> None:
            super().emit(name, payload)
            if name == "realtime:tool:result":
                raise ValueError("I hate results")

    emitter = ResultHater()
    async with create_realtime_manager(
        fake, tools=[tool("wave", Recorder())], logger=quiet_logger()
    ) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name="wave", args={}, call_id="c1"))
        await settle()
        assert fake.calls_to("send_tool_result") == [("c1", {"success": True})]
        assert emitter.payloads("realtime:tool:error") == []
        assert len(emitter.payloads("realtime:tool:result")) == 1
    assert len(module_log.with_event("listener.failed")) == 1


async def test_d1_raising_projector_is_isolated_and_reported_once(
    fake: FakeTransport, emitter: RecordingEmitter, module_log: Capture
) -> None:
    """D1: a raising result projector changes no state, adds no `tool:error` and no second
    send, does not stop the next projector, and is reported once through the module
    logger `charivo_fsm` (the default logger) with event `projector.failed`."""
    ran: list[str] = []

    def broken(ctx: Any) -> None:
        ran.append("broken")
        raise RuntimeError("projector boom")

    def fine(ctx: Any) -> None:
        ran.append("fine")
        ctx.emit("custom:projected", {"call_id": ctx.call_id})

    manager = create_realtime_manager(
        fake, tools=[tool("wave", Recorder())], result_projectors=[broken, fine]
    )
    async with manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        before = manager.state
        fake.emit(ToolCall(name="wave", args={}, call_id="c1"))
        await settle()
        assert manager.state == before
        assert ran == ["broken", "fine"]
        assert fake.calls_to("send_tool_result") == [("c1", {"success": True})]
        assert len(emitter.payloads("realtime:tool:result")) == 1
        assert emitter.payloads("realtime:tool:error") == []
        assert emitter.payloads("custom:projected") == [{"call_id": "c1"}]
        failures = module_log.with_event("projector.failed")
        assert len(failures) == 1
        assert failures[0].name == "charivo_fsm"
        assert failures[0].charivo["call_id"] == "c1"  # type: ignore[attr-defined]
        assert failures[0].charivo["error"] == "projector boom"  # type: ignore[attr-defined]
        assert failures[0].levelno == logging.WARNING


class FailingHandler(logging.Handler):
    """A handler that raises for the first ``times`` records."""

    def __init__(self, times: int) -> None:
        super().__init__(logging.DEBUG)
        self.times = times
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1
        if self.seen <= self.times:
            raise RuntimeError("logger boom")


def failing_logger(times: int) -> tuple[logging.Logger, FailingHandler]:
    logger = logging.getLogger(f"test.decisions.failing.{times}")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = FailingHandler(times)
    logger.addHandler(handler)
    return logger, handler


async def test_d1_raising_logger_is_isolated_and_reported_once(module_log: Capture) -> None:
    """D1, D17.8: a configured logger that raises once changes nothing (the same states,
    events and transport calls as with a working logger) and is reported exactly once
    through the module logger `charivo_fsm` with event `logger.failed`."""
    reference_fake, reference = FakeTransport(), RecordingEmitter()
    expected = await _d1_script(reference_fake, reference)

    logger, handler = failing_logger(times=1)
    fake, emitter = FakeTransport(), RecordingEmitter()
    got = await _d1_script(fake, emitter, logger=logger)

    assert handler.seen > 1
    assert got == expected
    assert emitter.names() == reference.names()
    assert fake.calls == reference_fake.calls
    failures = module_log.with_event("logger.failed")
    assert len(failures) == 1
    assert failures[0].name == "charivo_fsm"


async def test_d1_logger_raising_on_every_record_never_reaches_the_caller(
    module_log: Capture,
) -> None:
    """D1, D17.8/D18.9: a logger that always raises still lets every manager method
    complete with the normal outcome; the failure is reported through `charivo_fsm`
    (`logger.failed`, possibly rate-limited, never more than once per failing record)."""
    reference_fake, reference = FakeTransport(), RecordingEmitter()
    expected = await _d1_script(reference_fake, reference)

    logger, handler = failing_logger(times=10**9)
    fake, emitter = FakeTransport(), RecordingEmitter()
    got = await _d1_script(fake, emitter, logger=logger)

    assert got == expected
    assert fake.calls == reference_fake.calls
    failures = module_log.with_event("logger.failed")
    assert 1 <= len(failures) <= handler.seen


# =============================================================================== D7


async def reach(manager: RealtimeManager, fake: FakeTransport, status: str) -> None:
    """Put the response into ``status`` (text "abc" unless idle)."""
    if status == "idle":
        return
    fake.emit(AssistantResponseStarted())
    fake.emit(AssistantTextDelta(text="abc"))
    if status == "interrupted":
        await manager.interrupt()
    elif status == "completed":
        fake.emit(AssistantResponseCompleted())
    assert manager.state.response == ResponseState(ResponseStatus(status), "abc")


STATUSES = ["idle", "responding", "interrupted", "completed"]


@pytest.mark.parametrize("status", STATUSES)
async def test_d7_response_started_from_any_status(
    fake: FakeTransport, emitter: RecordingEmitter, status: str
) -> None:
    """D7: `assistant.response.started` makes the response responding with text "" from
    every status, and emits `assistant:start` with that state."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await reach(manager, fake, status)
        emitter.clear()
        fake.emit(AssistantResponseStarted())
        assert manager.state.response == ResponseState(ResponseStatus.RESPONDING, "")
        starts = emitter.payloads("realtime:assistant:start")
        assert len(starts) == 1
        assert starts[0].state.response == ResponseState(ResponseStatus.RESPONDING, "")


@pytest.mark.parametrize("status", ["idle", "completed"])
async def test_d7_delta_after_idle_or_completed_opens_a_new_response(
    fake: FakeTransport, emitter: RecordingEmitter, status: str
) -> None:
    """D7: a delta while idle or completed starts a new response: `assistant:start`, then
    the delta events; the text is the delta alone (B15: never appended to the old text)."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await reach(manager, fake, status)
        emitter.clear()
        fake.emit(AssistantTextDelta(text="new"))
        assert manager.state.response == ResponseState(ResponseStatus.RESPONDING, "new")
        names = emitter.names()
        assert names.count("realtime:assistant:start") == 1
        assert names.index("realtime:assistant:start") < names.index("realtime:assistant:delta")
        start = emitter.payloads("realtime:assistant:start")[0]
        assert start.state.response.status == "responding"
        assert emitter.payloads("realtime:assistant:delta") == [TextPayload("new")]
        assert emitter.payloads("realtime:text:delta") == [TextPayload("new")]

        fake.emit(AssistantTextDelta(text="er"))
        assert manager.state.response == ResponseState(ResponseStatus.RESPONDING, "newer")
        assert len(emitter.payloads("realtime:assistant:start")) == 1


async def test_d7_delta_after_interrupt_is_dropped(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D7 (B15): a late delta of the interrupted response is ignored: no `assistant:start`,
    no delta events, status and text unchanged."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await reach(manager, fake, "interrupted")
        emitter.clear()
        fake.emit(AssistantTextDelta(text="late"))
        assert manager.state.response == ResponseState(ResponseStatus.INTERRUPTED, "abc")
        assert emitter.payloads("realtime:assistant:start") == []
        assert emitter.payloads("realtime:assistant:delta") == []
        assert emitter.payloads("realtime:text:delta") == []


async def test_d7_completed_after_interrupt_keeps_interrupted_and_reports_usage(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D7 (B15): `completed` after an interrupt leaves the response interrupted with its
    text and emits no `assistant:done`, but still emits `realtime:usage` (tokens were
    spent; upstream dropped it)."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await reach(manager, fake, "interrupted")
        emitter.clear()
        usage = {"input_tokens": 4, "output_tokens": 2}
        fake.emit(
            AssistantResponseCompleted(
                text="full answer", usage=usage, model="gpt-realtime", response_id="r1"
            )
        )
        assert manager.state.response == ResponseState(ResponseStatus.INTERRUPTED, "abc")
        assert emitter.payloads("realtime:assistant:done") == []
        assert emitter.payloads("realtime:usage") == [
            UsagePayload(usage, "gpt-realtime", "r1", manager.session_id)
        ]


@pytest.mark.parametrize("status", ["idle", "responding", "completed"])
@pytest.mark.parametrize("event_text", ["", "final"])
async def test_d7_completed_from_responding_idle_or_completed(
    fake: FakeTransport, emitter: RecordingEmitter, status: str, event_text: str
) -> None:
    """D7: `completed` from responding/idle/completed gives status completed with the
    event text if non-empty, else the accumulated text; `assistant:done` carries it."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await reach(manager, fake, status)
        accumulated = manager.state.response.text
        emitter.clear()
        fake.emit(AssistantResponseCompleted(text=event_text))
        final = event_text or accumulated
        assert manager.state.response == ResponseState(ResponseStatus.COMPLETED, final)
        assert emitter.payloads("realtime:assistant:done") == [TextPayload(final)]


@pytest.mark.parametrize(
    ("status", "after"),
    [
        ("responding", "interrupted"),
        ("idle", "idle"),
        ("completed", "completed"),
        ("interrupted", "interrupted"),
    ],
)
async def test_d7_interrupt_only_interrupts_a_responding_response_and_ends_audio(
    fake: FakeTransport, emitter: RecordingEmitter, status: str, after: str
) -> None:
    """D7 (B15): `interrupt()` is forwarded to the transport; only a responding response
    becomes interrupted (text kept), any other status is left as it is; audio is ended."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await reach(manager, fake, status)
        text = manager.state.response.text
        fake.emit(AudioOutputStarted())
        interrupts = fake.count("interrupt")
        emitter.clear()

        await manager.interrupt()

        assert fake.count("interrupt") == interrupts + 1
        assert manager.state.response == ResponseState(ResponseStatus(after), text)
        assert len(emitter.payloads("tts:audio:end")) == 1
        assert emitter.payloads("realtime:assistant:done") == []

        # Audio really ended: a later end has nothing to end.
        emitter.clear()
        fake.emit(AudioOutputEnded())
        assert emitter.payloads("tts:audio:end") == []


def _retained_growth(fake: FakeTransport, emitter: RecordingEmitter, deltas: int) -> int:
    """Bytes retained (peak) while streaming ``deltas`` one-character deltas."""
    event = AssistantTextDelta(text="x")
    emitter.clear()
    fake.emit(AssistantResponseStarted())
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(deltas):
            fake.emit(event)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


async def test_d7_accumulating_a_long_response_is_linear(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D7: accumulating a long response costs linear time overall, with every state
    payload still a correct snapshot (R80).

    Measured without the wall clock: the memory retained while a recording listener keeps
    every payload grows linearly (x10 deltas -> about x10 bytes). Materialising or
    concatenating the whole text per delta retains one growing copy per delta, which is
    quadratic (x10 deltas -> about x100 bytes)."""
    small, large = 2_000, 20_000
    async with create_realtime_manager(fake, logger=quiet_logger()) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()

        growth_small = _retained_growth(fake, emitter, small)
        growth_large = _retained_growth(fake, emitter, large)

        assert manager.state.response == ResponseState(ResponseStatus.RESPONDING, "x" * large)
        assert growth_large < 25 * growth_small, (growth_small, growth_large)
        # A generous absolute bound as well: far below one text copy per delta.
        assert growth_large < large * 2_000, growth_large

        states = emitter.payloads("realtime:state")
        assert len(states) == large + 1  # response.started, then one per delta
        assert states[0].state.response == ResponseState(ResponseStatus.RESPONDING, "")
        states = states[1:]
        for index in (0, 1, 999, large // 2, large - 1):
            assert states[index].state.response.text == "x" * (index + 1)
        deltas = emitter.payloads("realtime:assistant:delta")
        assert len(deltas) == large and all(d.text == "x" for d in deltas)
        fake.emit(AssistantResponseCompleted())
        assert emitter.payloads("realtime:assistant:done") == [TextPayload("x" * large)]


# ====================================================================== D8 / D17.10


def assert_refused(
    emitter: RecordingEmitter,
    fake: FakeTransport,
    since: int,
    sends_before: int,
    name: str,
    call_id: str | None,
) -> CharivoError:
    """One `tool:call`, then one `tool:error` with a `CharivoStateError`; no send."""
    events = new_tool_events(emitter, since)
    assert [n for n, _ in events] == ["realtime:tool:call", "realtime:tool:error"], events
    call, error = events[0][1], events[1][1]
    assert (call.name, call.call_id) == (name, call_id)
    assert (error.name, error.call_id) == (name, call_id)
    assert isinstance(error.error, CharivoStateError)
    assert fake.count("send_tool_result") == sends_before
    return error.error


@pytest.mark.parametrize("call_id", [None, ""])
async def test_d8_missing_call_id_is_refused(
    fake: FakeTransport, emitter: RecordingEmitter, call_id: str | None
) -> None:
    """D8, D17.10: a call without a call id (absent or empty) is refused without running
    the handler or sending: `tool:call`, then one `tool:error` (`CharivoStateError`)."""
    handler = Recorder()
    async with create_realtime_manager(fake, tools=[tool("wave", handler)]) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        since = len(emitter.events)
        fake.emit(ToolCall(name="wave", args={}, call_id=call_id))
        await settle()
        error = assert_refused(emitter, fake, since, 0, "wave", call_id)
        assert "call ID" in error.message or "call id" in error.message.lower()
        assert handler.calls == []


@pytest.mark.parametrize("when", ["before-start", "after-stop"])
async def test_d8_call_while_no_session_is_active_is_refused(
    fake: FakeTransport, emitter: RecordingEmitter, when: str
) -> None:
    """D8, D17.10: a tool call while no session is active (never started, or stopped) is
    refused: `tool:call` then a `CharivoStateError` `tool:error`, no handler, no send."""
    handler = Recorder()
    async with create_realtime_manager(fake, tools=[tool("wave", handler)]) as manager:
        manager.set_event_emitter(emitter)
        if when == "after-stop":
            await manager.start_session()
            await manager.stop_session()
        since = len(emitter.events)
        fake.emit(ToolCall(name="wave", args={}, call_id="c1"))
        await settle()
        assert_refused(emitter, fake, since, 0, "wave", "c1")
        assert handler.calls == []


async def test_d8_call_while_starting_is_refused(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D8, D17.10: a tool call while the session is still starting is refused (not
    active): `CharivoStateError`, no handler, no send."""
    handler = Recorder()
    gate = fake.gate("connect")
    async with create_realtime_manager(fake, tools=[tool("wave", handler)]) as manager:
        manager.set_event_emitter(emitter)
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.start_session)
            await gate.wait_entered()
            assert manager.state.session.status == "starting"
            since = len(emitter.events)
            fake.emit(ToolCall(name="wave", args={}, call_id="c1"))
            await settle()
            assert_refused(emitter, fake, since, 0, "wave", "c1")
            gate.open()
        assert manager.state.session.status == "active"
        assert handler.calls == []
        assert fake.count("send_tool_result") == 0


async def test_d8_call_while_stopping_is_refused(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D8, D17.10: a tool call while a stop is closing the link (not connected) is
    refused: `CharivoStateError`, no handler, no send."""
    handler = Recorder()
    async with create_realtime_manager(fake, tools=[tool("wave", handler)]) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        gate = fake.gate("disconnect")
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.stop_session)
            await gate.wait_entered()
            since = len(emitter.events)
            fake.emit(ToolCall(name="wave", args={}, call_id="c1"))
            await settle()
            assert_refused(emitter, fake, since, 0, "wave", "c1")
            gate.open()
        assert handler.calls == []


async def test_d8_call_while_reconnecting_is_refused(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D8, D6, D17.10: a tool call during a reconnect is refused: `CharivoStateError`,
    no handler, no send (B13: upstream ran it over the recovering link)."""
    handler = Recorder()
    async with create_realtime_manager(fake, tools=[tool("wave", handler)]) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ConnectionLost(cause="offline"))
        assert manager.state.connection == "connecting"
        since = len(emitter.events)
        fake.emit(ToolCall(name="wave", args={}, call_id="c1"))
        await settle()
        error = assert_refused(emitter, fake, since, 0, "wave", "c1")
        assert "reconnecting" in error.message
        assert handler.calls == []

        await anyio.sleep(0.6)  # the reconnect succeeds; calls run again
        await settle()
        assert manager.state.connection == "connected"
        fake.emit(ToolCall(name="wave", args={}, call_id="c2"))
        await settle()
        assert len(handler.calls) == 1
        assert fake.calls_to("send_tool_result") == [("c2", {"success": True})]


async def test_d8_duplicate_running_call_id_is_refused(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D8, D17.10: a call whose call id is still running is refused (`CharivoStateError`)
    without a second handler run; the running call still gets its one result, so the call
    id sees exactly one send."""
    handler = Blocker({"success": True, "n": 1})
    async with create_realtime_manager(fake, tools=[tool("work", handler)]) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name="work", args={}, call_id="dup"))
        await settle()
        assert handler.calls == ["dup"]

        since = len(emitter.events)
        fake.emit(ToolCall(name="work", args={}, call_id="dup"))
        await settle()
        assert_refused(emitter, fake, since, 0, "work", "dup")
        assert handler.calls == ["dup"]

        handler.release()
        await settle()
        assert fake.calls_to("send_tool_result") == [("dup", {"success": True, "n": 1})]
        assert [n for n, _ in terminals(emitter, "dup")] == [
            "realtime:tool:error",
            "realtime:tool:result",
        ]

        # Once finished, the call id may be used again.
        fake.emit(ToolCall(name="work", args={}, call_id="dup"))
        await settle()
        assert handler.calls == ["dup", "dup"]
        assert fake.count("send_tool_result") == 2


class NotJson:
    pass


FAILURES: dict[str, dict[str, Any]] = {
    "unknown-tool": {
        "name": "nope",
        "args": {},
        "error": CharivoValidationError,
        "message": 'No realtime tool registered for "nope"',
    },
    "invalid-args": {
        "args": {"n": "one"},
        "parameters": {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
        "handler": lambda: Recorder(),
        "error": CharivoValidationError,
        "message": 'Realtime tool "probe" arguments failed schema validation: '
        'property "n" must be integer',
    },
    "handler-error": {
        "handler": lambda: Raiser(ValueError("bad input")),
        "error": CharivoError,
        "message": "bad input",
        "cause": ValueError,
    },
    "handler-charivo-error": {
        "handler": lambda: Raiser(CharivoProviderError("quota exceeded")),
        "error": CharivoProviderError,
        "message": "quota exceeded",
        "same_object": True,
    },
    "timeout": {
        "handler": lambda: Blocker(),
        "timeout": 0.05,
        "error": CharivoTimeoutError,
        "message": 'Realtime tool "probe" timed out after 0.05s',
        "cancelled": True,
    },
    "default-timeout": {
        "handler": lambda: Blocker(),
        "default_timeout": 0.2,
        "error": CharivoTimeoutError,
        "message": 'Realtime tool "probe" timed out after 0.2s',
        "cancelled": True,
    },
    "output-list": {"handler": lambda: Recorder([1, 2]), "error": CharivoValidationError},
    "output-nan": {
        "handler": lambda: Recorder({"x": math.nan}),
        "error": CharivoValidationError,
    },
    "output-int-key": {
        "handler": lambda: Recorder({1: "one"}),
        "error": CharivoValidationError,
    },
    "output-object": {
        "handler": lambda: Recorder({"nested": {"what": NotJson()}}),
        "error": CharivoValidationError,
    },
    "output-set": {
        "handler": lambda: Recorder({"items": {1, 2}}),
        "error": CharivoValidationError,
    },
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_d8_failures_send_one_failure_result_and_one_tool_error(
    fake: FakeTransport, emitter: RecordingEmitter, case: str
) -> None:
    """D8, D17.10, D18.4: an unknown tool, invalid arguments, a handler error, a timeout
    (the handler is cancelled) and an output that is not a JSON-serialisable mapping each
    give exactly one `send_tool_result(call_id, {"success": False, "error": message})` and
    one `tool:error` (after `tool:call`) with the class of D17.10, and no `tool:result`."""
    spec = FAILURES[case]
    handler = spec["handler"]() if "handler" in spec else None
    tools = []
    if handler is not None:
        tools.append(
            tool("probe", handler, parameters=spec.get("parameters"), timeout=spec.get("timeout"))
        )
    manager = create_realtime_manager(
        fake, tools=tools, default_tool_timeout=spec.get("default_timeout", 10.0)
    )
    async with manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name=spec.get("name", "probe"), args=spec.get("args", {}), call_id="c1"))
        await settle()
        await anyio.sleep(0.5)
        await settle()

        events = new_tool_events(emitter, 0)
        assert [n for n, _ in events] == ["realtime:tool:call", "realtime:tool:error"]
        payload = events[1][1]
        error = payload.error
        assert isinstance(error, spec["error"])
        assert payload.call_id == "c1"
        if "message" in spec:
            assert error.message == spec["message"]
        else:
            assert error.message.startswith('Realtime tool "probe" must return')
        if "cause" in spec:
            assert isinstance(error.cause, spec["cause"])
        if spec.get("same_object"):
            assert isinstance(handler, Raiser) and error is handler.error
        if spec.get("cancelled"):
            assert isinstance(handler, Blocker) and handler.cancelled == ["c1"]
        # A plain exception's text stays out of what the model gets (it may hold
        # anything); our own messages and a CharivoError raised on purpose go as they are.
        sent = (
            'Realtime tool "probe" failed'
            if isinstance(error.cause, Exception) and type(error) is CharivoError
            and not isinstance(error.cause, CharivoError)
            else error.message
        )
        assert fake.calls_to("send_tool_result") == [("c1", {"success": False, "error": sent})]
        assert manager.state.last_error is None  # tool failures never touch last_error
        if isinstance(handler, Recorder) and "parameters" in spec:
            assert handler.calls == []


async def test_d8_timeout_cancels_the_handler_at_the_deadline(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D8: the timeout fires at the tool's own deadline (virtual time) and the handler
    sees the cancellation then, not later; its result is never sent."""
    handler = Blocker()
    async with create_realtime_manager(
        fake, tools=[tool("probe", handler, timeout=0.05)]
    ) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name="probe", args={}, call_id="c1"))
        await settle()
        await anyio.sleep(0.04)
        await settle()
        assert handler.cancelled == []
        assert fake.count("send_tool_result") == 0
        await anyio.sleep(0.02)
        await settle()
        assert handler.cancelled == ["c1"]
        handler.release()
        await settle()
        assert fake.count("send_tool_result") == 1
        assert emitter.payloads("realtime:tool:result") == []


async def test_d8_success_sends_then_emits_result_then_runs_projectors(
    fake: FakeTransport,
) -> None:
    """D8: success is one `send_tool_result(call_id, output)`, then `tool:result`, then
    the projectors, in that order; no `tool:error`."""
    order: list[str] = []

    class OrderEmitter:
        def emit(self, name: str, payload: Any) -> None:
            if name.startswith("realtime:tool"):
                order.append(name)

    async def record_send(call_id: str, output: Mapping[str, Any]) -> None:
        order.append(f"send {call_id}")

    def projector(ctx: Any) -> None:
        order.append(f"project {ctx.call_id} {dict(ctx.output)}")

    fake.respond_with("send_tool_result", record_send)
    manager = create_realtime_manager(
        fake, tools=[tool("probe", Recorder({"v": 1}))], result_projectors=[projector]
    )
    async with manager:
        manager.set_event_emitter(OrderEmitter())
        await manager.start_session()
        fake.emit(ToolCall(name="probe", args={}, call_id="c1"))
        await settle()
    assert order == [
        "realtime:tool:call",
        "send c1",
        "realtime:tool:result",
        "project c1 {'v': 1}",
    ]
    assert fake.calls_to("send_tool_result") == [("c1", {"v": 1})]


async def test_d8_failed_send_on_success_path_gives_one_tool_error_and_no_second_send(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D8, D17.10 (B13): when sending a successful result fails, the call gets one
    `tool:error` with a `CharivoTransportError`, no `tool:result`, no projector run and no
    second send (upstream sent a failure result for the same call id)."""
    projected: list[Any] = []
    boom = ConnectionError("socket closed")
    fake.fail_once("send_tool_result", boom)
    manager = create_realtime_manager(
        fake, tools=[tool("probe", Recorder({"v": 1}))], result_projectors=[projected.append]
    )
    async with manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name="probe", args={}, call_id="c1"))
        await settle()
        await anyio.sleep(1.0)
        await settle()
        assert fake.calls_to("send_tool_result") == [("c1", {"v": 1})]
        assert emitter.payloads("realtime:tool:result") == []
        errors = emitter.payloads("realtime:tool:error")
        assert len(errors) == 1
        assert isinstance(errors[0].error, CharivoTransportError)
        assert errors[0].call_id == "c1"
        assert projected == []
        assert manager.state.session.status == "active"


async def test_d8_failed_send_on_failure_path_is_only_logged(
    fake: FakeTransport, emitter: RecordingEmitter, log: Capture
) -> None:
    """D8: when sending a failure result fails, the failure is logged (warning, event
    `tool.failed`, naming the send error); there is no second send and no second
    `tool:error`, and nothing reaches the caller."""
    fake.fail_once("send_tool_result", ConnectionError("send down"))
    manager = create_realtime_manager(fake, logger=logging.getLogger("test.decisions.tools"))
    async with manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name="nope", args={}, call_id="c1"))
        await settle()
        await anyio.sleep(1.0)
        await settle()
        assert fake.calls_to("send_tool_result") == [
            ("c1", {"success": False, "error": 'No realtime tool registered for "nope"'})
        ]
        errors = emitter.payloads("realtime:tool:error")
        assert len(errors) == 1
        assert isinstance(errors[0].error, CharivoValidationError)
        logged = [
            r
            for r in log.with_event("tool.failed")
            if r.charivo.get("call_id") == "c1"  # type: ignore[attr-defined]
            and "send down" in str(r.charivo.get("error"))  # type: ignore[attr-defined]
        ]
        assert len(logged) == 1
        assert logged[0].levelno == logging.WARNING
        assert manager.state.last_error is None


# ============================================================================== D18.4


@pytest.mark.parametrize("by", ["connection-lost", "stop", "session-ended"])
async def test_d18_4_running_calls_cancelled_by_the_session_get_a_state_error(
    fake: FakeTransport, emitter: RecordingEmitter, by: str
) -> None:
    """D18.4, D6, D8: a tool call still running when the connection is lost, the session
    is stopped or the remote side ends it is cancelled (the handler sees the cancellation)
    and gets exactly one `tool:error` with a `CharivoStateError`; its result is never sent,
    even when the handler would have finished later."""
    handler = Blocker({"late": True})
    async with create_realtime_manager(fake, tools=[tool("work", handler)]) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name="work", args={}, call_id="c1"))
        await settle()
        assert handler.calls == ["c1"]

        if by == "connection-lost":
            fake.emit(ConnectionLost(cause="offline"))
        elif by == "stop":
            await manager.stop_session()
        else:
            fake.emit(SessionEnded())
        await settle()
        handler.release()
        await anyio.sleep(1.0)
        await settle()

        assert handler.cancelled == ["c1"]
        assert fake.count("send_tool_result") == 0
        found = terminals(emitter, "c1")
        assert [n for n, _ in found] == ["realtime:tool:error"]
        assert isinstance(found[0][1].error, CharivoStateError)


# ====================================================== D8 exactly one outcome (mixed)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_d8_exactly_one_outcome_per_call_under_mixed_outcomes(
    fake: FakeTransport, emitter: RecordingEmitter, seed: int
) -> None:
    """D8 (exactly one outcome): many interleaved tool calls with mixed outcomes --
    success, slow success, handler failure, timeout, invalid arguments, unknown tool,
    failing and slow sends, calls refused during a reconnect, calls cancelled by a
    `connection.lost` and by the final stop -- each get exactly one terminal event after
    their `tool:call` and at most one send per call id; cancelled and refused calls send
    nothing; a `tool:result` always matches the one output sent."""
    rng = random.Random(seed)
    hang = Blocker()

    async def ok(args: dict[str, Any], ctx: RealtimeToolContext) -> Mapping[str, Any]:
        return {"ok": ctx.call_id}

    async def slow(args: dict[str, Any], ctx: RealtimeToolContext) -> Mapping[str, Any]:
        await anyio.sleep(args["delay"])
        return {"slow": ctx.call_id}

    async def fail(args: dict[str, Any], ctx: RealtimeToolContext) -> Mapping[str, Any]:
        await anyio.sleep(args["delay"])
        raise RuntimeError(f"failed {ctx.call_id}")

    async def never(args: dict[str, Any], ctx: RealtimeToolContext) -> Mapping[str, Any]:
        await anyio.sleep_forever()
        return {}  # pragma: no cover

    async def send(call_id: str, output: Mapping[str, Any]) -> None:
        if "slowsend" in call_id:
            await anyio.sleep(0.03)
        if "failsend" in call_id:
            raise ConnectionError(f"send failed for {call_id}")

    fake.respond_with("send_tool_result", send)
    delay_schema = {
        "type": "object",
        "properties": {"delay": {"type": "number"}},
        "required": ["delay"],
    }
    tools = [
        tool("ok", ok),
        tool("slow", slow, parameters=delay_schema),
        tool("fail", fail, parameters=delay_schema),
        tool("timeout", never, timeout=0.05),
        tool("hang", hang),
    ]
    kinds = ["ok", "slow", "fail", "timeout", "hang", "invalid", "unknown"]
    emitted: dict[str, str] = {}  # call id -> kind
    refused: set[str] = set()
    counter = 0

    def fire(kind: str, *, reconnecting: bool = False) -> None:
        nonlocal counter
        counter += 1
        suffix = rng.choice(["", "", "-slowsend", "-failsend"])
        call_id = f"{kind}-{counter}{suffix}"
        name, args = kind, dict[str, Any]()
        if kind in ("slow", "fail"):
            args = {"delay": rng.choice([0.0, 0.01, 0.02, 0.04])}
        elif kind == "invalid":
            name, args = "slow", {"delay": "soon"}
        elif kind == "unknown":
            name = "ghost"
        emitted[call_id] = kind
        if reconnecting:
            refused.add(call_id)
        fake.emit(ToolCall(name=name, args=args, call_id=call_id))

    manager = create_realtime_manager(fake, tools=tools, logger=quiet_logger())
    async with manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        for _ in range(40):
            fire(rng.choice(kinds))
            await anyio.sleep(rng.choice([0, 0, 0.005, 0.01]))
        fake.emit(ConnectionLost(cause="offline"))
        for _ in range(8):
            fire(rng.choice(kinds), reconnecting=True)
        await anyio.sleep(0.6)  # recover succeeds after the 0.5 s backoff
        await settle()
        assert manager.state.connection == "connected"
        for _ in range(30):
            fire(rng.choice(kinds))
            await anyio.sleep(rng.choice([0, 0.005, 0.01]))
        await anyio.sleep(0.2)
        await settle()
        await manager.stop_session()  # cancels the hanging calls
        await settle()

    calls = emitter.payloads("realtime:tool:call")
    assert sorted(p.call_id for p in calls) == sorted(emitted)
    for call_id, kind in emitted.items():
        call_index = next(
            i
            for i, (n, p) in enumerate(emitter.events)
            if n == "realtime:tool:call" and p.call_id == call_id
        )
        found = [
            (i, n, p)
            for i, (n, p) in enumerate(emitter.events)
            if n in TERMINAL and p.call_id == call_id
        ]
        assert len(found) == 1, (call_id, found)
        index, name, payload = found[0]
        assert index > call_index
        sent = sends_for(fake, call_id)
        assert len(sent) <= 1, (call_id, sent)
        if name == "realtime:tool:result":
            assert sent == [payload.output]
            assert kind in ("ok", "slow") and "failsend" not in call_id
        else:
            assert isinstance(payload.error, CharivoError)
        if call_id in refused or kind == "hang":
            assert name == "realtime:tool:error"
            assert isinstance(payload.error, CharivoStateError)
            assert sent == []
        if kind == "invalid" or kind == "unknown":
            if call_id not in refused:
                assert isinstance(payload.error, CharivoValidationError)
                assert sent and sent[0]["success"] is False
        if kind == "timeout" and isinstance(payload.error, CharivoTimeoutError):
            assert sent == [{"success": False, "error": payload.error.message}]
    hang_ids = [cid for cid, kind in emitted.items() if kind == "hang" and cid not in refused]
    assert sorted(hang.cancelled) == sorted(hang_ids)
    # The mix really happened: every kind of outcome occurred.
    outcomes = {
        name if name == "realtime:tool:result" else type(payload.error)
        for name, payload in emitter.events
        if name in TERMINAL
    }
    assert outcomes >= {
        "realtime:tool:result",
        CharivoStateError,
        CharivoValidationError,
        CharivoTimeoutError,
        CharivoTransportError,
        CharivoError,
    }
    assert refused and hang_ids


# =============================================================================== D9


async def test_d9_state_update_sets_only_the_response(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D9 (B15): a transport `state` event sets only the response status and text; the
    connection, session status, config, character and last error stay as the lifecycle
    machines made them. Each part may be set alone. On the wire, any other key of
    `state` is refused."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        manager.set_character(Character(id="char-1", name="Hiyori"))
        await manager.start_session({"voice": "marin"})
        fake.emit(ErrorEvent(error=RuntimeError("earlier")))
        before = manager.state
        assert before.last_error is not None

        fake.emit(StateUpdate(response_status=ResponseStatus.COMPLETED, response_text="done"))
        after = manager.state
        assert after.response == ResponseState(ResponseStatus.COMPLETED, "done")
        assert after.connection == before.connection == "connected"
        assert after.session == before.session
        assert after.last_error is before.last_error

        fake.emit(StateUpdate(response_text="only text"))
        assert manager.state.response == ResponseState(ResponseStatus.COMPLETED, "only text")
        fake.emit(StateUpdate(response_status=ResponseStatus.RESPONDING))
        assert manager.state.response == ResponseState(ResponseStatus.RESPONDING, "only text")
        assert manager.state.session == before.session
        assert manager.state.connection == "connected"

    for key, value in [
        ("connection", "idle"),
        ("session", {"status": "stopped"}),
        ("lastError", None),
    ]:
        with pytest.raises(CharivoValidationError, match=key):
            event_from_wire(
                {"type": "state", "state": {key: value, "response": {"status": "idle"}}}
            )


# ============================================================================== D11


async def test_d11_error_event_sets_last_error_to_the_emitted_object_and_ends_audio(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D11: an `error` event makes `last_error` the wrapped `CharivoTransportError` (the
    very object in `realtime:error`, raw error as cause), ends audio, keeps the connection
    value and the session; a `CharivoError` passes through as itself."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantTextDelta(text="partial"))
        fake.emit(AudioOutputStarted())
        emitter.clear()

        raw = RuntimeError("socket hiccup")
        fake.emit(ErrorEvent(error=raw))
        errors = emitter.payloads("realtime:error")
        assert len(errors) == 1
        error = errors[0].error
        assert isinstance(error, CharivoTransportError)
        assert error.message == "socket hiccup"
        assert error.cause is raw
        state = manager.state
        assert state.last_error is error
        assert state.connection == "connected"
        assert state.session.status == "active"
        assert state.response == ResponseState(ResponseStatus.RESPONDING, "partial")
        assert len(emitter.payloads("tts:audio:end")) == 1
        assert emitter.payloads("realtime:state")[-1].state.last_error is error

        emitter.clear()
        typed = CharivoProviderError("rate limited")
        fake.emit(ErrorEvent(error=typed))
        assert [p.error for p in emitter.payloads("realtime:error")] == [typed]
        assert manager.state.last_error is typed
        assert emitter.payloads("tts:audio:end") == []  # audio already ended

        await manager.send_message("still usable")
        assert fake.calls_to("send_text") == [("still usable",)]


async def test_d11_error_event_keeps_a_connection_that_is_not_connected(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D11 (B14, B19): the connection value is kept, never forced: an error while the
    session is starting leaves the connection `connecting`."""
    gate = fake.gate("connect")
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.start_session)
            await gate.wait_entered()
            fake.emit(ErrorEvent(error=RuntimeError("early")))
            state = manager.state
            assert state.connection == "connecting"
            assert state.session.status == "starting"
            errors = emitter.payloads("realtime:error")
            assert len(errors) == 1 and state.last_error is errors[0].error
            gate.open()
        assert manager.state.session.status == "active"


# ============================================================================ D17.9


NESTED = {
    "type": "object",
    "properties": {
        "address": {
            "type": "object",
            "properties": {"zip": {"type": "string"}, "city": {"type": "string"}},
            "required": ["zip"],
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "level": {"type": "number", "minimum": 0},
    },
    "additionalProperties": False,
}

ARG_CASES = [
    ({"address": {"zip": 12345}}, 'property "address.zip" must be string'),
    ({"tags": ["a", 2]}, 'property "tags[1]" must be string'),
    ({"extra": 1}, 'property "extra" is not allowed'),
    ({"address": {"city": "Paris"}}, 'missing required property "address.zip"'),
]


@pytest.mark.parametrize(("args", "detail"), ARG_CASES)
async def test_d17_9_argument_paths_in_failure_results(
    fake: FakeTransport, emitter: RecordingEmitter, args: dict[str, Any], detail: str
) -> None:
    """D17.9, D18.9, D8: nested paths are dotted with `[i]` for array items, an extra key
    under `additionalProperties: false` is "not allowed", a missing nested required
    property names its path; the handler does not run."""
    handler = Recorder()
    async with create_realtime_manager(
        fake, tools=[tool("place", handler, parameters=NESTED)]
    ) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name="place", args=args, call_id="c1"))
        await settle()
        message = 'Realtime tool "place" arguments failed schema validation: ' + detail
        assert fake.calls_to("send_tool_result") == [("c1", {"success": False, "error": message})]
        (error,) = emitter.payloads("realtime:tool:error")
        assert isinstance(error.error, CharivoValidationError)
        assert error.error.message == message
        assert handler.calls == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_d17_9_non_finite_numbers_are_rejected(
    fake: FakeTransport, emitter: RecordingEmitter, value: float
) -> None:
    """D17.9: non-finite numbers in the arguments are rejected (even where the schema
    allows any number) with a `CharivoValidationError` naming the property."""
    handler = Recorder()
    async with create_realtime_manager(
        fake, tools=[tool("place", handler, parameters=NESTED)]
    ) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        fake.emit(ToolCall(name="place", args={"level": value}, call_id="c1"))
        await settle()
        (error,) = emitter.payloads("realtime:tool:error")
        assert isinstance(error.error, CharivoValidationError)
        assert error.error.message.startswith(
            'Realtime tool "place" arguments failed schema validation: '
        )
        assert "level" in error.error.message
        assert handler.calls == []
        assert fake.calls_to("send_tool_result") == [
            ("c1", {"success": False, "error": error.error.message})
        ]


async def test_d17_9_valid_nested_arguments_and_json_output_succeed(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D17.9: valid nested arguments reach the handler; an output made of mappings with
    string keys, lists, strings, finite numbers, booleans and None is JSON-serialisable
    and sent as is."""
    output = {
        "ok": True,
        "n": 1,
        "x": 0.5,
        "none": None,
        "items": ["a", 1, 2.5, False, None, {"deep": ["z"]}],
        "nested": {"k": {"v": "w"}},
    }
    handler = Recorder(output)
    async with create_realtime_manager(
        fake, tools=[tool("place", handler, parameters=NESTED)]
    ) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        args = {"address": {"zip": "75001", "city": "Paris"}, "tags": ["a", "b"], "level": 2}
        fake.emit(ToolCall(name="place", args=args, call_id="c1"))
        await settle()
        assert handler.calls[0][0] == args
        assert fake.calls_to("send_tool_result") == [("c1", output)]
        assert emitter.payloads("realtime:tool:error") == []


# ====================================================================== D17.12 / D18.7


DROPPED_BETWEEN_SESSIONS: list[TransportEvent] = [
    AssistantResponseStarted(),
    AssistantTextDelta(text="ghost"),
    AssistantResponseCompleted(text="ghost", usage={"output_tokens": 1}),
    AudioOutputStarted(),
    AudioLipsync(rms=0.5),
    AudioOutputEnded(),
    UserTranscript(text="hello?"),
    ToolResult(name="serverTool", output={"success": True}, call_id="srv"),
    StateUpdate(response_status=ResponseStatus.RESPONDING, response_text="ghost"),
]


@pytest.mark.parametrize("when", ["idle", "stopped"])
async def test_d17_12_events_between_sessions_are_dropped_but_errors_surface(
    fake: FakeTransport, emitter: RecordingEmitter, log: Capture, when: str
) -> None:
    """D17.12, D18.7, D18.1: between sessions (never started, or stopped) response,
    audio, transcript, tool-result and `state` events are dropped: nothing is emitted,
    the state does not change, and each is logged at debug with event `event.dropped`.
    An `error` event still surfaces as D11 says."""
    manager = create_realtime_manager(fake, logger=logging.getLogger("test.decisions.tools"))
    async with manager:
        manager.set_event_emitter(emitter)
        if when == "stopped":
            await manager.start_session()
            await manager.stop_session()
        emitter.clear()
        log.records.clear()
        before = manager.state
        assert before.session.status == when

        for event in DROPPED_BETWEEN_SESSIONS:
            fake.emit(event)
        await settle()
        assert emitter.events == []
        assert manager.state == before
        dropped = log.with_event("event.dropped")
        assert len(dropped) == len(DROPPED_BETWEEN_SESSIONS)
        assert all(r.levelno == logging.DEBUG for r in dropped)

        raw = RuntimeError("late transport error")
        fake.emit(ErrorEvent(error=raw))
        errors = emitter.payloads("realtime:error")
        assert len(errors) == 1
        assert errors[0].error.cause is raw
        assert manager.state.last_error is errors[0].error
        assert manager.state.session.status == when
        assert manager.state.response == before.response


@pytest.mark.parametrize("when", ["idle", "stopped"])
async def test_d18_7_state_update_between_sessions_is_dropped(
    fake: FakeTransport, emitter: RecordingEmitter, when: str
) -> None:
    """D18.7: a `StateUpdate` counts as a response event: between sessions it emits no
    `realtime:state` and changes nothing; the next session starts with an idle response."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        if when == "stopped":
            await manager.start_session()
            await manager.stop_session()
        emitter.clear()
        before = manager.state
        fake.emit(StateUpdate(response_status=ResponseStatus.COMPLETED, response_text="stale"))
        assert emitter.payloads("realtime:state") == []
        assert manager.state == before
        await manager.start_session()
        assert manager.state.response == ResponseState(ResponseStatus.IDLE, "")
