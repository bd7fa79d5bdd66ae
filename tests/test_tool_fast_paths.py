"""The fast paths of a tool call give what the general paths give.

* arguments: a flat dict of plain leaves is copied without the pre-walk and the JSON
  encoding when its size surely fits; every other argument takes the general path, so
  the outcome (copy or error message) is the same either way;
* outputs: a flat dict of plain leaves is accepted without the walk;
* the tool context's state: reused while nothing it shows has changed, always equal
  to the manager's state at the call;
* log records a plain ``logging.Logger`` would drop are not made (a later
  ``setLevel`` is seen), and records it keeps are unchanged.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import pytest

from charivo_fsm import (
    CharivoValidationError,
    RealtimeState,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
    create_realtime_manager,
)
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    ErrorEvent,
    ToolCall,
)
from charivo_fsm.testing import FakeTransport, settle
from charivo_fsm.tools import (
    _checked_copy,
    _flat_copy,
    _output_problem,
    check_tool_output,
    compile_schema,
    validate_tool_arguments,
)

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "s": {"type": "string"}},
    "required": ["n"],
}

LEAVES: list[Any] = [
    0,
    -1,
    7,
    10**19 - 1,
    -(10**19) + 1,
    10**19,
    -(10**19),
    10**30,
    10**5000,  # beyond the default int max str digits: cannot be encoded
    True,
    False,
    None,
    0.0,
    -2.2250738585072014e-308,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    "é" * 40,
    "\u2028\x00\ud800",
    "a" * 300,
    "\U0001f600" * 40,  # 4 bytes of UTF-8 JSON each, 12 of ASCII JSON (a pair escaped)
    [1, 2],
    {"k": 1},
    (1,),
    b"bytes",
    {1, 2},
]


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args, **kwargs))
    except CharivoValidationError as error:
        return ("error", error.message)


def _general(name: str, validator: Any, args: Any, max_bytes: int | None) -> Any:
    """validate_tool_arguments without the fast path."""
    from charivo_fsm.tools import MAX_TOOL_ARGUMENT_BYTES

    limit = MAX_TOOL_ARGUMENT_BYTES if max_bytes is None else max_bytes
    data = _checked_copy(name, args, limit)
    return validate_tool_arguments(name, validator, data, max_bytes=max_bytes)


def test_arguments_fast_path_gives_what_the_general_path_gives() -> None:
    validator = compile_schema(SCHEMA, "t")
    rng = random.Random(12)
    cases: list[dict[Any, Any]] = [{}]
    for leaf in LEAVES:
        cases.append({"n": leaf})
        cases.append({"n": 1, "s": leaf})
        cases.append({"n": 1, "other": leaf})
    cases.append({1: 2, "n": 1})
    for _ in range(300):
        size = rng.randrange(0, 5)
        keys = rng.sample(["n", "s", "x", "é", "long" * 20], size)
        cases.append({key: rng.choice(LEAVES) for key in keys})
    for args in cases:
        for max_bytes in (None, 0, 2, 8, 30, 200, 400, 5000):
            fast = _outcome(validate_tool_arguments, "t", validator, args, max_bytes=max_bytes)
            slow = _outcome(_general, "t", validator, args, max_bytes)
            assert fast == slow, (args, max_bytes)
            if fast[0] == "ok":
                assert fast[1] is not args


def test_flat_copy_only_takes_what_surely_fits() -> None:
    assert _flat_copy({"n": 1}, 1024) == {"n": 1}
    assert _flat_copy({"n": 10**19}, 1024) is None  # the general path decides
    assert _flat_copy({"n": math.nan}, 1024) is None
    assert _flat_copy({"n": [1]}, 1024) is None
    assert _flat_copy({1: 1}, 1024) is None
    assert _flat_copy({"n": "x" * 100}, 100) is None  # the bound exceeds the limit


def test_output_fast_path_gives_what_the_general_path_gives() -> None:
    outputs: list[Any] = [{}, {"success": True}, {1: True}, [], "text", None]
    for leaf in LEAVES:
        outputs.append({"success": True, "value": leaf})
        hashable = isinstance(leaf, (str, float)) or (type(leaf) is int and leaf < 10**100)
        outputs.append({leaf: 1} if hashable else {"x": leaf})
    for output in outputs:
        fast = _outcome(check_tool_output, "t", output)
        if isinstance(output, dict):
            problem = _output_problem(output, "", 0)
            if problem is None:
                assert fast == ("ok", output) and fast[1] is output
            else:
                assert fast == (
                    "error",
                    f'Realtime tool "t" must return a JSON-serialisable object: {problem}',
                )
        else:
            assert fast == ("error", 'Realtime tool "t" must return an object')


def _recording_tool(seen: list[RealtimeToolContext]) -> RealtimeToolRegistration:
    async def handler(args: dict[str, Any], context: RealtimeToolContext) -> dict[str, Any]:
        seen.append(context)
        return {"success": True}

    return RealtimeToolRegistration(
        definition=RealtimeTool(name="probe", description="Probe.", parameters=SCHEMA),
        handler=handler,
    )


@pytest.mark.anyio
async def test_tool_context_state_is_the_state_at_each_call() -> None:
    seen: list[RealtimeToolContext] = []
    fake = FakeTransport()
    manager = create_realtime_manager(fake, tools=[_recording_tool(seen)])
    expected: list[RealtimeState] = []
    count = 0

    async def call() -> None:
        nonlocal count
        count += 1
        expected.append(manager.state)
        fake.emit(ToolCall(name="probe", args={"n": count}, call_id=f"c{count}"))
        await settle()

    async with manager:
        await manager.start_session({"voice": "marin"})
        await call()
        await call()  # nothing changed: the same state again
        fake.emit(AssistantResponseStarted())
        await call()
        fake.emit(AssistantTextDelta("a"))
        await call()
        fake.emit(AssistantTextDelta("b"))
        fake.emit(AssistantTextDelta("c"))
        await call()
        await call()
        fake.emit(AssistantResponseCompleted(text="abc"))
        await call()
        fake.emit(ErrorEvent(error=RuntimeError("boom")))
        await call()
        manager.set_character({"id": "alice", "name": "Alice"})
        await call()
        await manager.update_session({"voice": "alloy"})
        await call()
        await manager.stop_session()
    assert [context.state for context in seen] == expected
    assert len(seen) == count


@pytest.mark.anyio
async def test_tool_logs_follow_the_logger_level() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("charivo_fsm.tests.tool_fast_paths")
    logger.handlers[:] = [Keep()]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    fake = FakeTransport()
    manager = create_realtime_manager(fake, tools=[_recording_tool([])], logger=logger)

    def tool_events() -> list[str]:
        return [r.charivo["event"] for r in records if r.charivo["event"].startswith("tool.")]  # type: ignore[attr-defined]

    async with manager:
        await manager.start_session()
        fake.emit(ToolCall(name="probe", args={"n": 1}, call_id="c1"))
        await settle()
        assert tool_events() == ["tool.succeeded"]  # no DEBUG record at INFO
        logger.setLevel(logging.DEBUG)
        fake.emit(ToolCall(name="probe", args={"n": 2}, call_id="c2"))
        await settle()
        assert tool_events() == ["tool.succeeded", "tool.started", "tool.succeeded"]
        logger.setLevel(logging.WARNING)
        fake.emit(ToolCall(name="probe", args={"n": 3}, call_id="c3"))
        fake.emit(ToolCall(name="probe", args={"n": "x"}, call_id="c4"))
        await settle()
        assert tool_events()[3:] == ["tool.failed"]
        await manager.stop_session()
    sent = dict(fake.calls_to("send_tool_result"))
    assert [sent[call_id] for call_id in ("c1", "c2", "c3")] == [{"success": True}] * 3
    assert sent["c4"]["success"] is False
