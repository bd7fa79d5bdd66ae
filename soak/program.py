"""The random user of one manager: starts, stops, restarts, messages, updates, ...

Every manager call is watched (a call that does not return within
``stuck_bound`` seconds is cancelled and reported: a stuck session) and may only raise a
:class:`~charivo_fsm.CharivoError`.  Bad input (wrong config or character
types) must be refused with :class:`~charivo_fsm.CharivoValidationError`
without touching the running session: same state, no transport call.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from charivo_fsm import (
    Character,
    CharacterVoice,
    CharivoError,
    CharivoValidationError,
    RealtimeManager,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
)

from .ledger import RunStats

__all__ = ["BAD_CHARACTERS", "BAD_CONFIGS", "Program"]

_VOICES = ("alloy", "marin", "cedar", "verse")

BAD_CONFIGS: tuple[Any, ...] = (
    {"voice": 1},
    {"voicee": "marin"},
    {"temperature": "hot"},
    {"temperature": math.nan},
    {"max_tokens": 1.5},
    {"max_tokens": True},
    {"tools": "quick"},
    {"tools": [{"name": 3}]},
    {"tool_choice": "always"},
    {"transport": "pigeon"},
    {"instructions": b"bytes"},
    "voice=marin",
    42,
    ["voice", "marin"],
    {1: "int key"},
)
"""Config inputs of the wrong shape or type: each must raise CharivoValidationError."""

BAD_CHARACTERS: tuple[Any, ...] = (
    {"id": 7},
    {"voice": "marin"},
    {"voice": {"voice_id": 3}},
    {"voice": {"rate": "fast"}},
    {"nickname": "Hiyori"},
    "hiyori",
    3.5,
    [("id", "hiyori")],
)
"""Character inputs of the wrong shape or type."""

_CHARACTERS: tuple[Any, ...] = (
    None,
    {"id": "hiyori", "name": "Hiyori", "voice": {"voice_id": "marin"}},
    {"id": "kai", "name": "Kai", "personality": "dry", "voice": {"voice_id": "cedar", "rate": 1.1}},
    Character(id="mio", name="Mio", voice=CharacterVoice(voice_id="alloy")),
)

_ACTIONS: tuple[tuple[str, int], ...] = (
    ("start", 20),
    ("stop", 7),
    ("restart", 6),
    ("message", 12),
    ("audio", 5),
    ("interrupt", 6),
    ("update", 10),
    ("character", 4),
    ("bad_input", 4),
    ("toggle_tool", 3),
    ("give_up", 4),
    ("change_mind", 3),
)
_NAMES = tuple(name for name, _ in _ACTIONS)
_WEIGHTS = tuple(weight for _, weight in _ACTIONS)


async def _extra_handler(args: dict[str, Any], context: RealtimeToolContext) -> dict[str, Any]:
    return {"extra": True}


_EXTRA_TOOL = RealtimeToolRegistration(
    definition=RealtimeTool(name="extra", description="registered and unregistered at random"),
    handler=_extra_handler,
)


class Program:
    """Drives one manager with random user actions until told to stop."""

    def __init__(
        self,
        manager: RealtimeManager,
        rng: random.Random,
        stats: RunStats,
        *,
        label: str,
        transport_calls: Callable[[], int],
        stuck_bound: float,
        give_up_after: float,
        stop_bound: float = math.inf,
        trail: deque[str] | None = None,
        messages: Sequence[str] = ("hello", "how are you?", "tell me more"),
        max_inflight: int = 3,
    ) -> None:
        self.manager = manager
        self.rng = rng
        self.stats = stats
        self.label = label
        self.transport_calls = transport_calls
        self.stuck_bound = stuck_bound
        self.stop_bound = stop_bound
        self.trail: deque[str] = trail if trail is not None else deque(maxlen=16)
        """Shared with the transport: what happened lately (for violation reports)."""
        self.give_up_after = give_up_after
        self.messages = tuple(messages)
        self.max_inflight = max_inflight
        self.inflight = 0
        self._running: dict[int, tuple[float, anyio.CancelScope, str]] = {}
        self._next_key = 0

    async def warm_up(self) -> None:
        """Start once (before the measured run); a failure is as good as a success."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._watchdog)
            await self._run("start")
            group.cancel_scope.cancel()

    async def run(self, until: Callable[[], bool], mean_gap: float) -> None:
        rng = self.rng
        async with anyio.create_task_group() as watch:
            watch.start_soon(self._watchdog)
            async with anyio.create_task_group() as group:
                while True:
                    await anyio.sleep(rng.expovariate(1.0 / mean_gap))
                    if until():
                        break
                    name = rng.choices(_NAMES, _WEIGHTS)[0]
                    if self.inflight < self.max_inflight and rng.random() < 0.3:
                        group.start_soon(self._run, name)  # overlaps the next actions
                    else:
                        await self._run(name)
            watch.cancel_scope.cancel()

    async def _watchdog(self) -> None:
        """Cancel (and report) any call running longer than ``stuck_bound``.

        One watchdog per program instead of a deadline per call: a deadline that is
        cancelled early lingers in the event loop's timer heap until it would have
        fired, which would read as memory growth.
        """
        while True:
            await anyio.sleep(self.stuck_bound / 4)
            now = anyio.current_time()
            for began, scope, name in tuple(self._running.values()):
                if now - began > self.stuck_bound and not scope.cancel_called:
                    self.stats.violation(
                        f"{self.label}: {name} did not return within {self.stuck_bound:g}s (stuck)"
                    )
                    scope.cancel()

    async def _run(self, name: str) -> None:
        stats = self.stats
        stats.counts[f"action: {name}"] += 1
        self.inflight += 1
        key = self._next_key = self._next_key + 1
        self.trail.append(f"{anyio.current_time():.3f} user {name}")
        try:
            with anyio.CancelScope() as scope:
                self._running[key] = (anyio.current_time(), scope, name)
                await getattr(self, "_" + name)()
        except CharivoError as error:
            stats.counts[f"raised {type(error).__name__}"] += 1
        except Exception as error:
            stats.violation(f"{self.label}: {name} raised {error!r}, not a CharivoError")
        finally:
            self._running.pop(key, None)
            self.inflight -= 1

    # ------------------------------------------------------------ actions

    def _config(self) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.15:
            return None
        if roll < 0.3:
            return RealtimeSessionConfig(voice=rng.choice(_VOICES))
        config: dict[str, Any] = {"voice": rng.choice(_VOICES)}
        if rng.random() < 0.5:
            config["instructions"] = "Be brief." * rng.randint(1, 3)
        if rng.random() < 0.3:
            config["max_tokens"] = rng.randint(16, 512)
        if rng.random() < 0.2:
            config["tool_choice"] = rng.choice(("auto", "none", "required"))
        return config

    async def _start(self) -> None:
        await self.manager.start_session(self._config())

    async def _stop(self) -> None:
        began = anyio.current_time()
        try:
            await self.manager.stop_session()
        finally:
            self.stats.stop_took(
                anyio.current_time() - began,
                self.label,
                self.stop_bound,
                f"latest, oldest first: {' | '.join(self.trail)}" if self.trail else "",
            )

    async def _restart(self) -> None:
        try:
            await self._stop()
        except CharivoError as error:
            self.stats.counts[f"raised {type(error).__name__}"] += 1
        await self._start()

    async def _message(self) -> None:
        await self.manager.send_message(self.rng.choice(self.messages))

    async def _audio(self) -> None:
        await self.manager.send_audio_chunk(b"\x00\x10" * self.rng.randint(1, 240))

    async def _interrupt(self) -> None:
        await self.manager.interrupt()

    async def _update(self) -> None:
        await self.manager.update_session(self._config())

    async def _character(self) -> None:
        self.manager.set_character(self.rng.choice(_CHARACTERS))

    async def _toggle_tool(self) -> None:
        manager = self.manager
        if any(tool.name == "extra" for tool in manager.registered_tools()):
            manager.unregister_tool("extra")
        else:
            manager.register_tool(_EXTRA_TOOL)

    async def _give_up(self) -> None:
        """A caller that cancels its own start or update after a short while."""
        with anyio.move_on_after(self.rng.uniform(0, self.give_up_after)):
            if self.rng.random() < 0.5:
                await self.manager.start_session(self._config())
            else:
                await self.manager.update_session(self._config())

    async def _change_mind(self) -> None:
        """Start, and stop again before the start is through (stop wins, D3)."""

        async def quietly(call: Callable[[], Awaitable[None]]) -> None:
            try:
                await call()
            except CharivoError as error:
                self.stats.counts[f"raised {type(error).__name__}"] += 1

        async with anyio.create_task_group() as group:
            group.start_soon(quietly, self._start)
            await anyio.sleep(self.rng.uniform(0, self.give_up_after))
            await quietly(self._stop)

    async def _bad_input(self) -> None:
        """Wrong types must be refused without touching the running session."""
        rng, manager = self.rng, self.manager
        kind = rng.randrange(5)
        before, calls = manager.state, self.transport_calls()
        try:
            if kind == 0:
                await manager.update_session(rng.choice(BAD_CONFIGS))
            elif kind == 1:
                await manager.start_session(rng.choice(BAD_CONFIGS))
            elif kind == 2:
                manager.set_character(rng.choice(BAD_CHARACTERS))
            elif kind == 3:
                await manager.send_message(rng.choice((None, 42, b"bytes", ["hi"])))  # type: ignore[arg-type]
            else:
                await manager.send_audio_chunk(rng.choice(("text", 42, None, [1, 2])))  # type: ignore[arg-type]
        except CharivoValidationError:
            self.stats.counts["bad input refused"] += 1
        else:
            self.stats.violation(f"{self.label}: bad input #{kind} was accepted")
            return
        if manager.state != before:
            self.stats.violation(f"{self.label}: refused input #{kind} changed the state")
        if self.transport_calls() != calls:
            self.stats.violation(f"{self.label}: refused input #{kind} reached the transport")
