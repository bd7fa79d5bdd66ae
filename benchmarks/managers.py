"""Workload c: creating managers (each with its own fake transport and 3 tools)."""

from __future__ import annotations

import tracemalloc
from typing import Any

from charivo_fsm import create_realtime_manager
from charivo_fsm.testing import FakeTransport

from .common import THREE_TOOLS, Stopwatch, fresh_heap
from .settings import MANAGERS


def create_managers(count: int = MANAGERS) -> dict[str, float]:
    """µs per manager (wall and CPU): the manager alone (its transport made beforehand),
    and the manager together with its fake transport.  Every one is kept alive until
    the end, and the same 3 tool registrations are given to every manager."""
    tools = THREE_TOOLS
    keep: list[Any] = []
    transports = [FakeTransport() for _ in range(count)]
    fresh_heap()
    watch = Stopwatch().start()
    for transport in transports:
        keep.append(create_realtime_manager(transport, tools=tools))
    alone, alone_cpu = watch.stop()
    keep.clear()
    transports.clear()
    fresh_heap()
    watch.start()
    for _ in range(count):
        keep.append(create_realtime_manager(FakeTransport(), tools=tools))
    both, both_cpu = watch.stop()
    return {
        "us_manager": alone / count * 1e6,
        "cpu_us_manager": alone_cpu / count * 1e6,
        "us_with_transport": both / count * 1e6,
        "cpu_us_with_transport": both_cpu / count * 1e6,
    }


def manager_memory(count: int = MANAGERS) -> dict[str, float]:
    """Bytes per manager (tracemalloc): the manager alone, and its fake transport."""
    tools = THREE_TOOLS
    create_realtime_manager(FakeTransport(), tools=tools)  # schemas compiled, caches warm
    fresh_heap()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        transports = [FakeTransport() for _ in range(count)]
        fresh_heap()
        after_transports = tracemalloc.get_traced_memory()[0]
        managers = [create_realtime_manager(transport, tools=tools) for transport in transports]
        fresh_heap()
        after_managers = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del managers, transports
    return {
        "bytes_manager": (after_managers - after_transports) / count,
        "bytes_transport": (after_transports - base) / count,
    }
