"""Workload b (tool calls) and its bare-task floors."""

from __future__ import annotations

import anyio

from charivo_fsm import create_realtime_manager
from charivo_fsm.events import ToolCall

from .common import COUNT_TOOL, CountingTransport, Stopwatch, fresh_heap, quiet_logger
from .settings import CALLS


def _calls(count: int) -> list[ToolCall]:
    return [ToolCall(name="count", args={"n": i}, call_id=f"call-{i}") for i in range(count)]


async def tool_calls(count: int = CALLS, *, at_once: bool) -> dict[str, float]:
    """``count`` tool calls until the transport has received ``count`` results.

    ``at_once``: every call is emitted in one burst, then the results are awaited;
    otherwise each call is emitted once the previous result has arrived.
    """
    transport = CountingTransport()
    calls = _calls(count)
    async with create_realtime_manager(
        transport, tools=[COUNT_TOOL], logger=quiet_logger()
    ) as manager:
        await manager.start_session({"voice": "marin"})
        callback = transport.callbacks[0]
        transport.results = 0
        fresh_heap()
        watch = Stopwatch()
        if at_once:
            watch.start()
            reached = transport.expect(count)
            for call in calls:
                callback(call)
            await reached.wait()
            wall, cpu = watch.stop()
        else:
            watch.start()
            for index, call in enumerate(calls, 1):
                reached = transport.expect(index)
                callback(call)
                await reached.wait()
            wall, cpu = watch.stop()
        assert transport.results == count
        assert transport.count("send_tool_result") == count
        assert manager.state.session.status == "active"
    return {"calls_per_s": count / wall, "seconds": wall, "cpu_seconds": cpu}


async def _noop() -> None:
    return None


async def _set(event: anyio.Event) -> None:
    event.set()


async def bare_tasks(count: int = CALLS, *, at_once: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of ``count`` bare anyio tasks: spawned at once and all
    finished, or one at a time (spawn one, wait on an event it sets)."""
    fresh_heap()
    watch = Stopwatch()
    if at_once:
        watch.start()
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(_noop)
        return watch.stop()
    async with anyio.create_task_group() as tg:
        watch.start()
        for _ in range(count):
            event = anyio.Event()
            tg.start_soon(_set, event)
            await event.wait()
        elapsed = watch.stop()
    return elapsed
