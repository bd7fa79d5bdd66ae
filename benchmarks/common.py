"""Shared helpers of the benchmarks: emitters, a counting transport, a quiet logger,
the workload-a event mix, timing and statistics."""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from charivo_fsm import RealtimeTool, RealtimeToolRegistration
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
)
from charivo_fsm.testing import FakeTransport

from .settings import BACKEND


def run(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on a fresh event loop of the benchmark backend."""
    return anyio.run(fn, *args, backend=BACKEND)


def quiet_logger() -> logging.Logger:
    """A logger that writes nothing (no handler output, no propagation)."""
    logger = logging.getLogger("charivo_fsm.benchmarks.quiet")
    logger.handlers[:] = [logging.NullHandler()]
    logger.propagate = False
    logger.setLevel(logging.CRITICAL + 1)
    return logger


class CountingEmitter:
    """Counts ``emit`` calls and does nothing else."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def emit(self, name: str, payload: Any) -> None:
        self.count += 1


class CountingTransport(FakeTransport):
    """A :class:`FakeTransport` that also counts tool results and wakes a waiter
    once ``target`` results were received (the fake records every call as usual)."""

    def __init__(self) -> None:
        super().__init__()
        self.results = 0
        self.target = 0
        self.reached: anyio.Event | None = None

    def expect(self, target: int) -> anyio.Event:
        self.target = target
        self.reached = anyio.Event()
        if self.results >= target:
            self.reached.set()
        return self.reached

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        await super().send_tool_result(call_id, output)
        self.results += 1
        if self.results >= self.target and self.reached is not None:
            self.reached.set()


# ---------------------------------------------------------------- the workload-a mix

DELTA = AssistantTextDelta("x")
LIPSYNC = AudioLipsync(0.5)
STARTED = AssistantResponseStarted()
COMPLETED = AssistantResponseCompleted(text="done")

# One cycle of 20 events: 1 started (5%), 12 deltas (60%), 6 lipsync (30%),
# 1 completed (5%); deltas and lipsync levels interleave as in a spoken turn.
CYCLE: tuple[Any, ...] = (
    STARTED,
    *((DELTA, DELTA, LIPSYNC) * 6),
    COMPLETED,
)
assert len(CYCLE) == 20


def mix(count: int) -> list[Any]:
    """``count`` events of the workload-a mix (a multiple of 20)."""
    assert count % len(CYCLE) == 0
    return list(CYCLE) * (count // len(CYCLE))


# ------------------------------------------------------------------------ tools


async def count_handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"success": True}


COUNT_TOOL = RealtimeToolRegistration(
    definition=RealtimeTool(
        name="count",
        description="Count one.",
        parameters={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    ),
    handler=count_handler,
)


async def _describe(args: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"success": True, "scene": "Cafe"}


async def _express(args: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"success": True, "expression": args["expression"]}


THREE_TOOLS: tuple[RealtimeToolRegistration, ...] = (
    COUNT_TOOL,
    RealtimeToolRegistration(
        definition=RealtimeTool(name="describeScene", description="Describe the scene."),
        handler=_describe,
    ),
    RealtimeToolRegistration(
        definition=RealtimeTool(
            name="setExpression",
            description="Change the avatar's expression.",
            parameters={
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "enum": ["happy", "sad", "neutral"]},
                    "intensity": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["expression"],
            },
        ),
        handler=_express,
    ),
)


# ------------------------------------------------------------------- statistics


def clock() -> float:
    return time.perf_counter()


class Stopwatch:
    """Wall-clock and CPU time (of this process) since :meth:`start`.

    The figures of the table are wall-clock; the CPU time is kept next to them because
    the benchmark machine may be shared (another process's load lengthens the wall
    time of a CPU-bound workload, not its CPU time)."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def start(self) -> Stopwatch:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()
        return self

    def stop(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds) since :meth:`start`."""
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return wall, cpu


def fresh_heap() -> None:
    gc.collect()


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }
