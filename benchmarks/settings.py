"""The sizes of workloads a-f and the event-loop backend, apart from the workload code
so that ``python -m benchmarks`` can lay out its table without importing charivo_fsm
(every run of a-f imports its own package in a process of its own)."""

from __future__ import annotations

BACKEND = "asyncio"

EVENTS = 1_000_000  # a
DRAIN_EVERY = 1_000  # a, the loop run every this many events
CALLS = 100_000  # b
MANAGERS = 10_000  # c
UPDATES = 10_000  # d
DELTAS = 100_000  # e
SESSIONS = 1_000  # f
