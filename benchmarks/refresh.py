"""Workload d: concurrent update_session calls while one patch is in flight."""

from __future__ import annotations

from typing import Any

import anyio

from charivo_fsm import create_realtime_manager
from charivo_fsm.testing import FakeTransport

from .common import Stopwatch, fresh_heap, quiet_logger
from .settings import UPDATES


async def concurrent_updates(count: int = UPDATES) -> dict[str, Any]:
    """One ``update_session`` is parked at a gate in the transport (a patch in flight);
    then ``count`` tasks each call ``update_session`` with a voice of their own; once
    all of them are waiting the gate opens.  Time from spawning the first of those
    tasks until all of them have returned."""
    transport = FakeTransport()
    configs = [{"voice": f"voice-{i}"} for i in range(count)]
    async with create_realtime_manager(transport, logger=quiet_logger()) as manager:
        await manager.start_session({"voice": "marin"})
        gate = transport.gate("update_session")
        patches_before = transport.count("update_session")
        async with anyio.create_task_group() as outer:
            outer.start_soon(manager.update_session, {"voice": "first"})
            await gate.wait_entered()
            entered = 0
            all_waiting = anyio.Event()

            async def update(config: dict[str, Any]) -> None:
                nonlocal entered
                entered += 1
                if entered == count:
                    all_waiting.set()
                # the request is registered before this call first suspends
                await manager.update_session(config)

            fresh_heap()
            watch = Stopwatch().start()
            async with anyio.create_task_group() as tg:
                for config in configs:
                    tg.start_soon(update, config)
                await all_waiting.wait()
                gate.open()
            wall, cpu = watch.stop()
        patches = transport.count("update_session") - patches_before
        committed = manager.state.session.config
    latest = committed is not None and committed.voice == configs[-1]["voice"]
    return {"seconds": wall, "cpu_seconds": cpu, "patches": patches, "latest_committed": latest}


async def bare_waiters(count: int = UPDATES) -> tuple[float, float]:
    """(wall, CPU) seconds of ``count`` bare anyio tasks that each wait on one shared
    event, set once all of them are waiting."""
    fresh_heap()
    event = anyio.Event()
    entered = 0
    all_waiting = anyio.Event()

    async def wait() -> None:
        nonlocal entered
        entered += 1
        if entered == count:
            all_waiting.set()
        await event.wait()

    watch = Stopwatch().start()
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(wait)
        await all_waiting.wait()
        event.set()
    return watch.stop()
