"""Fault injection over real sockets: the local server misbehaves on purpose.

:func:`server_chaos` drives one :class:`~charivo_fsm.testing.LocalRealtimeServer`
with its fault-injection hooks (dropped connections, close frames, garbage and raw
text, stray and malformed events, rejected and delayed ``session.update``\\s, bad tool
arguments, unanswered pings) at random times.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from charivo_fsm import RealtimeSessionConfig
from charivo_fsm.testing import LocalRealtimeServer, ToolTrigger
from charivo_fsm.testing.server import GARBAGE_KINDS
from charivo_fsm.transports.openai import OpenAIRealtimeTransport

from .ledger import RunStats, call_key

if TYPE_CHECKING:
    from .runner import SoakConfig

__all__ = ["RAW_TEXTS", "TRIGGERS", "CountingOpenAITransport", "server_chaos"]

TRIGGERS: tuple[ToolTrigger, ...] = (
    ToolTrigger("quick", "quick", {"n": 5}),
    ToolTrigger("book", "nested", {"party": {"name": "Ann", "size": 2}, "mood": "calm"}),
    ToolTrigger("slow", "slow", {}),
    ToolTrigger("flaky", "flaky", {}),
    ToolTrigger("hang", "hang", {}),
    ToolTrigger("badoutput", "badOutput", {}),
    ToolTrigger("wrong", "quick", {"n": "seven"}),  # fails validation
)
"""Keywords in a user message that make the local server call a tool."""

RAW_TEXTS: tuple[str, ...] = (
    "",
    "{",
    "null",
    "[]",
    "42",
    '"just a string"',
    '{"type": 5}',
    '{"no": "type"}',
    '{"type": "response.done", "response": []}',
    '{"type": "response.done", "response": {"output": 7, "usage": "lots"}}',
    '{"type": "error", "error": "flat"}',
    '{"type": "error", "error": {"message": 12}}',
    '{"type": "session.updated", "session": null}',
    '{"type": "response.output_audio.delta", "delta": "!!not base64!!"}',
    '{"type": "response.output_audio.delta", "delta": 3}',
    '{"type": "response.output_text.delta", "delta": {"nested": true}}',
    '{"type": "response.function_call_arguments.done", "name": "quick",'
    ' "call_id": "raw-call", "arguments": "[1, 2]"}',
    '{"type": "response.function_call_arguments.done", "name": 1, "call_id": 2}',
    '{"type": "conversation.item.input_audio_transcription.completed", "transcript": null}',
    "[" * 5000 + "]" * 5000,
    '{"type": "response.output_text.delta", "delta": "' + "é" * 20_000 + '"}',
    "\u0000\u0001\u0002",
    '{"type": "response.created", "response": "x"}',
)
"""Text messages the server sends raw: not JSON, wrong shapes, wrong types, deep, huge."""


def _stray_events(rng: random.Random) -> list[Mapping[str, Any]]:
    call_id = f"stray-{rng.randrange(10**6)}"
    return [
        {"type": "session.updated", "session": {"model": "gpt-realtime"}},
        {
            "type": "response.done",
            "response": {
                "id": "resp_stray",
                "status": "failed",
                "status_details": {"error": {"message": "chaos: the response failed"}},
                "output": [],
                "usage": {"total_tokens": 1},
            },
        },
        {"type": "error", "error": {"message": "chaos: server error", "code": "chaos"}},
        {
            "type": "response.function_call_arguments.done",
            "response_id": "resp_stray",
            "item_id": "item_stray",
            "output_index": 0,
            "call_id": call_id,
            "name": rng.choice(("quick", "unknownTool", "hang")),
            "arguments": json.dumps({"n": rng.randint(-5, 120)}),
        },
        {"type": "response.output_audio.done", "response_id": "nobody"},
        {"type": "response.teleported"},
    ]


class CountingOpenAITransport(OpenAIRealtimeTransport):
    """The OpenAI transport, counting calls (so refused input can prove it made none)
    and reporting each ``send_tool_result`` to the ledger."""

    def __init__(self, stats: RunStats, **options: Any) -> None:
        super().__init__(**options)
        self.stats = stats
        self.calls = 0

    async def connect(self, config: RealtimeSessionConfig) -> None:
        self.calls += 1
        await super().connect(config)

    async def update_session(self, config: RealtimeSessionConfig) -> None:
        self.calls += 1
        await super().update_session(config)

    async def recover(self, config: RealtimeSessionConfig) -> None:
        self.calls += 1
        await super().recover(config)

    async def disconnect(self) -> None:
        self.calls += 1
        await super().disconnect()

    async def send_text(self, text: str) -> None:
        self.calls += 1
        await super().send_text(text)

    async def send_audio(self, audio: bytes) -> None:
        self.calls += 1
        await super().send_audio(audio)

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        self.calls += 1
        self.stats.tool_sent(call_key(call_id))
        await super().send_tool_result(call_id, output)

    async def interrupt(self) -> None:
        self.calls += 1
        await super().interrupt()


async def server_chaos(
    server: LocalRealtimeServer,
    rng: random.Random,
    stats: RunStats,
    until: Callable[[], bool],
    cfg: SoakConfig,
) -> None:
    """Inject a random server fault every ~``cfg.event_gap`` seconds until ``until()``."""
    count = stats.counts
    while not until():
        await anyio.sleep(rng.expovariate(1.0 / cfg.event_gap))
        # The server keeps what it saw; the soak does not need it (flat memory).
        server.received.clear()
        server.sent.clear()
        server.injected.clear()
        server.requests.clear()
        roll = rng.random()
        try:
            if roll < 0.08:
                count["fault: server dropped the connection"] += 1
                await server.drop_connection()
            elif roll < 0.12:
                count["fault: server close frame"] += 1
                await server.close_connection(rng.choice((1000, 1001, 1011)))
            elif roll < 0.32:
                kind = rng.choice(GARBAGE_KINDS)
                count[f"fault: server garbage ({kind})"] += 1
                await server.send_garbage(kind, size=96 * 1024)
            elif roll < 0.52:
                count["fault: server raw text"] += 1
                await server.send_raw_text(rng.choice(RAW_TEXTS))
            elif roll < 0.67:
                count["fault: server stray event"] += 1
                await server.send_event(rng.choice(_stray_events(rng)))
            elif roll < 0.74:
                count["fault: session.update rejected"] += 1
                server.reject_next_session_update("chaos: invalid session")
            elif roll < 0.80:
                count["fault: session.update delayed"] += 1
                server.delay_next_session_update(rng.uniform(0.2, 1.5) * cfg.transport_timeout)
            elif roll < 0.86:
                count["fault: bad tool arguments"] += 1
                server.send_bad_tool_arguments()
            else:
                # (never_answer_close() is left out: the local server then keeps each such
                # connection's task asleep until it exits, which would read as a leak.)
                on = rng.random() < 0.5
                count["fault: pings unanswered" if on else "fault: pings answered again"] += 1
                server.ignore_pings(on)
        except Exception as error:  # the rig itself (a socket closing under us)
            stats.rig_errors[type(error).__name__] += 1
