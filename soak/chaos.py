"""Fault injection for the virtual-clock soak: tools with bad habits and a chaos transport.

:class:`ChaosTransport` implements :class:`~charivo_fsm.RealtimeTransport`.  Each of
its calls, drawn from a seeded RNG, succeeds after a short delay, is slow, fails,
hangs past ``transport_timeout`` or reports a lost connection while it runs.  Its
:meth:`ChaosTransport.run_server` loop plays a misbehaving provider: well-formed turns,
single events in any order, replays of old events, tool calls (valid, invalid,
unknown, duplicate or missing call ids, oversized and too deeply nested arguments),
errors, lost connections, remote ends and garbage (objects that are not events)
handed straight to the manager's callback.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from charivo_fsm import (
    CharivoError,
    CharivoProviderError,
    CharivoTransportError,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
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
    SessionStarted,
    StateUpdate,
    ToolCall,
    ToolResult,
    TransportEvent,
    UserTranscript,
)
from charivo_fsm.model import ResponseStatus
from charivo_fsm.testing import foreign_cancellation

from .ledger import PROVIDER_RESULT, RunStats, call_key

__all__ = ["ChaosTransport", "Faults", "deep_value", "make_tools", "tool_arguments"]

# ------------------------------------------------------------------------ tools

_QUICK = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 100}},
    "required": ["n"],
    "additionalProperties": False,
}
_NESTED = {
    "type": "object",
    "properties": {
        "party": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "size": {"type": "integer", "minimum": 1, "maximum": 12},
            },
            "required": ["name", "size"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "mood": {"type": "string", "enum": ["happy", "calm", "grumpy"]},
    },
    "required": ["party"],
}
_FREE = {"type": "object", "properties": {}}

TOOL_NAMES = ("quick", "nested", "slow", "flaky", "hang", "badOutput")


def make_tools(
    rng: random.Random, tool_timeout: float, stats: RunStats | None = None
) -> list[RealtimeToolRegistration]:
    """The soak's tools; handler behaviour is drawn from ``rng``."""

    def injected(what: str) -> None:
        if stats is not None:
            stats.counts[f"fault: {what}"] += 1

    async def quick(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        return {"ok": True, "n": args["n"], "call": context.call_id}

    async def nested(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        await anyio.sleep(rng.uniform(0, tool_timeout / 4))
        return {"booked": args["party"], "tags": args.get("tags", [])}

    async def slow(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        await anyio.sleep(rng.uniform(0, 2 * tool_timeout))  # half of them time out
        return {"slept": True}

    async def flaky(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        await anyio.sleep(rng.uniform(0, tool_timeout / 4))
        roll = rng.random()
        if roll < 0.3:
            raise RuntimeError("flaky handler failed")
        if roll < 0.5:
            raise CharivoError("flaky handler refused", code="FLAKY")
        if roll < 0.6:
            raise KeyError("missing")
        if roll < 0.66:
            injected("foreign cancellation raised by a tool handler")
            await foreign_cancellation()
        if roll < 0.72:
            injected("BaseException raised by a tool handler")
            raise ChaosBaseException("flaky handler raised a BaseException")
        if roll < 0.75:
            injected("GeneratorExit raised by a tool handler")
            raise GeneratorExit
        return {"ok": True}

    async def hang(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def bad_output(args: dict[str, Any], context: RealtimeToolContext) -> Any:
        return rng.choice(
            (
                {"x": object()},
                ["not", "a", "mapping"],
                {"nan": math.nan},
                {1: "int key"},
                None,
                {"ok": True},  # sometimes fine
            )
        )

    def tool(name: str, schema: Mapping[str, Any]) -> RealtimeTool:
        return RealtimeTool(name=name, description=f"soak tool {name}", parameters=schema)

    return [
        RealtimeToolRegistration(definition=tool("quick", _QUICK), handler=quick),
        RealtimeToolRegistration(definition=tool("nested", _NESTED), handler=nested),
        RealtimeToolRegistration(definition=tool("slow", _FREE), handler=slow),
        RealtimeToolRegistration(
            definition=tool("flaky", _FREE), handler=flaky, timeout=tool_timeout / 2
        ),
        RealtimeToolRegistration(definition=tool("hang", _FREE), handler=hang),
        RealtimeToolRegistration(definition=tool("badOutput", _FREE), handler=bad_output),
    ]


def deep_value(depth: int) -> Any:
    """``{"a": {"a": ... 1}}`` nested ``depth`` levels."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def tool_arguments(rng: random.Random, name: str) -> Any:
    """Arguments for a tool call: mostly valid, sometimes wrong in one of many ways."""
    roll = rng.random()
    if roll < 0.002:
        return {"n": 1, "blob": "x" * (1024 * 1024 + 16)}  # over MAX_TOOL_ARGUMENT_BYTES
    if roll < 0.01:
        return {"n": deep_value(70)}  # deeper than MAX_ARGUMENT_DEPTH
    if roll < 0.15:
        return rng.choice(
            (
                {},
                {"n": "seven"},
                {"n": -1},
                {"n": 1, "extra": True},
                {"n": math.inf},
                {"party": {"name": "", "size": 99}},
                {"party": {"name": "A", "size": 2}, "tags": [1, 2]},
                {"party": {"name": "A"}, "mood": "sad"},
                {"n": True},
                {"n": 1.0},  # an integral float is an integer (valid)
            )
        )
    if name == "quick":
        return {"n": rng.randint(0, 100)}
    if name == "nested":
        args: dict[str, Any] = {"party": {"name": "Ann", "size": rng.randint(1, 12)}}
        if rng.random() < 0.5:
            args["tags"] = ["window"] * rng.randint(0, 5)
        if rng.random() < 0.5:
            args["mood"] = rng.choice(("happy", "calm", "grumpy"))
        return args
    return {"note": "x" * rng.randint(0, 40)}


# -------------------------------------------------------------------- transport


class Faults:
    """Probabilities of the transport's faults (per call)."""

    def __init__(
        self,
        *,
        fail: float = 0.07,
        hang: float = 0.03,
        slow: float = 0.15,
        lost_during: float = 0.04,
        ended_during_connect: float = 0.02,
        send_fail: float = 0.04,
        send_hang: float = 0.01,
    ) -> None:
        self.fail = fail
        self.hang = hang
        self.slow = slow
        self.lost_during = lost_during
        self.ended_during_connect = ended_during_connect
        self.send_fail = send_fail
        self.send_hang = send_hang


class ChaosBaseException(BaseException):
    """A BaseException that is neither a cancellation nor a process exit (the engine
    must handle it as an error of the operation that raised it)."""


async def raise_failure(rng: random.Random, method: str, stats: RunStats) -> None:
    """Raise one of the ways a transport call fails, foreign cancellations and
    other BaseExceptions included."""
    roll = rng.random()
    if roll < 0.12:
        stats.counts["fault: foreign cancellation raised by a transport call"] += 1
        await foreign_cancellation()
    if roll < 0.24:
        stats.counts["fault: BaseException raised by a transport call"] += 1
        raise ChaosBaseException(f"chaos: {method} raised a BaseException")
    raise _failure(rng, method)


def _failure(rng: random.Random, method: str) -> Exception:
    kind = rng.randrange(5)
    if kind == 0:
        return CharivoTransportError(f"chaos: {method} failed")
    if kind == 1:
        return OSError(f"chaos: {method}: connection reset")
    if kind == 2:
        return RuntimeError(f"chaos: {method} blew up")
    if kind == 3:
        return CharivoProviderError(f"chaos: provider refused {method}")
    return TimeoutError(f"chaos: {method} timed out inside the transport")


_GARBAGE: tuple[Callable[[], object], ...] = (
    lambda: None,
    lambda: 0,
    lambda: "assistant.text.delta",
    lambda: b"\xff\xfe\x00",
    lambda: {"type": "tool.call", "name": "quick", "args": {"n": 1}, "callId": "garbage"},
    lambda: ["tool.call"],
    lambda: object(),
    lambda: math.nan,
    lambda: SessionStarted,  # the class, not an event
    lambda: RuntimeError("not an event"),
)

_STATUSES = (None, *ResponseStatus)


class ChaosTransport:
    """A transport that misbehaves at random (see the module documentation)."""

    def __init__(
        self,
        rng: random.Random,
        stats: RunStats,
        *,
        label: str,
        timeout: float,
        faults: Faults,
        event_gap: float,
    ) -> None:
        self.rng = rng
        self.stats = stats
        self.label = label
        self.timeout = timeout
        self.faults = faults
        self.event_gap = event_gap
        self._callbacks: list[Callable[[TransportEvent], None]] = []
        self._recent: deque[object] = deque(maxlen=12)
        self._next_call = 0
        self._recent_ids: deque[str] = deque(maxlen=4)
        self.calls = 0
        """How many transport methods were called (connect, sends, ...)."""
        self.trail: deque[str] = deque(maxlen=16)
        """The latest lifecycle calls and link events, for violation reports."""

    def note(self, what: str) -> None:
        self.trail.append(f"{anyio.current_time():.3f} {what}")

    # ------------------------------------------------------------ delivery

    def on_event(self, callback: Callable[[TransportEvent], None]) -> None:
        self._callbacks.append(callback)

    def deliver(self, event: object) -> None:
        """Hand ``event`` (an event or garbage) to every callback, synchronously."""
        if isinstance(event, ToolCall):
            self.stats.tool_received(call_key(event.call_id))
        elif isinstance(event, (SessionEnded, ConnectionLost, SessionStarted)):
            self.note(f"<- {event.type}")
        self.stats.counts["transport events delivered"] += 1
        for callback in tuple(self._callbacks):
            try:
                callback(event)  # type: ignore[arg-type]  # garbage on purpose
            except Exception as exc:  # the callback must never raise
                self.stats.violation(f"{self.label}: the manager's callback raised {exc!r}")

    # ------------------------------------------------------------ lifecycle

    async def _lifecycle(self, method: str) -> None:
        rng, faults, stats = self.rng, self.faults, self.stats
        stats.counts[f"transport {method}"] += 1
        self.calls += 1
        if rng.random() < faults.lost_during:
            stats.counts["fault: connection lost during a call"] += 1
            self.deliver(ConnectionLost(cause="chaos-during-call"))
        roll = rng.random()
        if roll < faults.fail:
            stats.counts["fault: call failed"] += 1
            self.note(f"{method} (fails)")
            await anyio.sleep(rng.uniform(0, self.timeout / 4))
            await raise_failure(rng, method, stats)
        roll -= faults.fail
        if roll < faults.hang:
            stats.counts["fault: call hung past transport_timeout"] += 1
            self.note(f"{method} (hangs)")
            await anyio.sleep_forever()
        roll -= faults.hang
        self.note(method)
        if roll < faults.slow:
            stats.counts["fault: slow call"] += 1
            await anyio.sleep(rng.uniform(0, 0.9 * self.timeout))
        else:
            await anyio.sleep(rng.uniform(0, 0.02))

    async def connect(self, config: RealtimeSessionConfig) -> None:
        await self._lifecycle("connect")
        if self.rng.random() < self.faults.ended_during_connect:
            self.stats.counts["fault: session ended during connect"] += 1
            self.deliver(SessionEnded())
        elif self.rng.random() < 0.5:
            self.deliver(SessionStarted())

    async def update_session(self, config: RealtimeSessionConfig) -> None:
        await self._lifecycle("update_session")

    async def recover(self, config: RealtimeSessionConfig) -> None:
        await self._lifecycle("recover")

    async def disconnect(self) -> None:
        await self._lifecycle("disconnect")

    async def _send(self, method: str) -> None:
        rng, faults = self.rng, self.faults
        self.stats.counts[f"transport {method}"] += 1
        self.calls += 1
        roll = rng.random()
        if roll < faults.send_fail:
            self.stats.counts["fault: send failed"] += 1
            await raise_failure(rng, method, self.stats)
        if roll < faults.send_fail + faults.send_hang:
            self.stats.counts["fault: send hung past transport_timeout"] += 1
            await anyio.sleep_forever()
        if rng.random() < 0.2:
            await anyio.sleep(rng.uniform(0, self.timeout / 4))

    async def send_text(self, text: str) -> None:
        await self._send("send_text")

    async def send_audio(self, audio: bytes) -> None:
        await self._send("send_audio")

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        self.stats.tool_sent(call_key(call_id))
        if not isinstance(output, Mapping):
            self.stats.violation(f"{self.label}: send_tool_result got a non-mapping output")
        await self._send("send_tool_result")

    async def interrupt(self) -> None:
        await self._send("interrupt")

    # ------------------------------------------------------------ the provider

    async def run_server(self, until: Callable[[], bool]) -> None:
        """Play a misbehaving provider until ``until()`` is true."""
        rng = self.rng
        while not until():
            await anyio.sleep(rng.expovariate(1.0 / self.event_gap))
            self.emit_random()

    def _call_id(self) -> str | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.03:
            return None
        if roll < 0.05:
            return ""
        if roll < 0.10 and self._recent_ids:
            return rng.choice(self._recent_ids)  # a duplicate
        self._next_call += 1
        call_id = f"{self.label}-c{self._next_call}"
        self._recent_ids.append(call_id)
        return call_id

    def _tool_call(self) -> ToolCall:
        rng = self.rng
        name = rng.choice((*TOOL_NAMES, "unknownTool")) if rng.random() < 0.95 else ""
        return ToolCall(name=name, args=tool_arguments(rng, name), call_id=self._call_id())

    def _single(self) -> TransportEvent:
        rng = self.rng
        kind = rng.randrange(13)
        if kind == 0:
            return AssistantResponseStarted()
        if kind in (1, 2):
            return AssistantTextDelta(rng.choice(("Hi", " there", "!", "", "é" * 3)))
        if kind == 3:
            usage = {"total_tokens": rng.randint(0, 99)} if rng.random() < 0.7 else None
            return AssistantResponseCompleted(
                text=rng.choice(("", "done")), usage=usage, response_id="r"
            )
        if kind == 4:
            return AudioOutputStarted()
        if kind == 5:
            return AudioLipsync(rng.choice((0.0, 0.01, 0.5, 1.0)))
        if kind == 6:
            return AudioOutputEnded()
        if kind == 7:
            return UserTranscript("heard something")
        if kind == 8:
            return ToolResult(
                name="quick", output={"ok": True}, call_id=f"{PROVIDER_RESULT}-{self.label}"
            )
        if kind == 9:
            return StateUpdate(response_status=rng.choice(_STATUSES), response_text="synced")
        if kind == 10:
            return SessionStarted()
        if kind == 11:
            return ErrorEvent(
                rng.choice((CharivoProviderError("chaos provider error"), ValueError("raw")))
            )
        return self._tool_call()

    def emit_random(self) -> None:
        rng, stats = self.rng, self.stats
        roll = rng.random()
        if roll < 0.35:  # a well-formed turn, delivered in one burst
            stats.counts["provider: turns"] += 1
            self.deliver(AssistantResponseStarted())
            for _ in range(rng.randint(0, 8)):
                self.deliver(AssistantTextDelta("word "))
            self.deliver(
                AssistantResponseCompleted(text="", usage={"total_tokens": 5}, response_id="t")
            )
            return
        if roll < 0.55:
            stats.counts["provider: tool calls"] += 1
            event: object = self._tool_call()
        elif roll < 0.62:
            stats.counts["fault: connection lost"] += 1
            event = ConnectionLost(
                cause="chaos",
                error=CharivoTransportError("chaos link") if rng.random() < 0.5 else None,
            )
        elif roll < 0.65:
            stats.counts["fault: remote session end"] += 1
            event = SessionEnded()
        elif roll < 0.72:
            stats.counts["fault: garbage"] += 1
            event = rng.choice(_GARBAGE)()
        elif roll < 0.80 and self._recent:
            stats.counts["fault: replayed (out of order) event"] += 1
            event = rng.choice(self._recent)
        else:
            stats.counts["provider: single events (any order)"] += 1
            event = self._single()
        if not isinstance(event, ToolCall):
            self._recent.append(event)
        self.deliver(event)
