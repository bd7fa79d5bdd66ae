"""``charivo-fsm demo``: a scripted end-to-end session with a narrated timeline.

The demo drives the real :class:`~charivo_fsm.RealtimeManager` over the real
:class:`~charivo_fsm.transports.openai.OpenAIRealtimeTransport`, by default
against the embedded :class:`~charivo_fsm.testing.LocalRealtimeServer`
(127.0.0.1, an ephemeral port, the key :data:`DEMO_API_KEY`).  It narrates
every step and event on one line each, with the time since the start, and
checks its own expectations as it goes:

1. start a session with a character and tools (``getWeather`` plus the avatar
   tools, with the avatar result projector);
2. a message answered with streamed text;
3. tool calls: ``getWeather`` round trip, then an avatar tool whose result the
   projector turns into ``realtime:expression``;
4. a server-side drop, reconnect with backoff (the first recover is refused,
   so the backoff moves on to attempt 2), the same session continuing;
5. three concurrent ``update_session`` calls coalesced into at most two patches;
6. an interrupt of a streaming response;
7. a stop (``realtime:session:end`` with reason ``user``), then no live
   connection and no task left.

:func:`run_demo` is the entry point of the command (it calls ``anyio.run``);
:func:`demo_session` is the script itself, an ``async`` function that runs on
asyncio and trio.  It returns 0 when every step behaved, 1 otherwise (the
failing step is named).  ``live=True`` runs the same script against the real
OpenAI Realtime API (``OPENAI_API_KEY``); step 4 is then skipped with a note,
since a server-side drop cannot be injected there, and checks that depend on
the local server's scripted answers are replaced by weaker ones (non-empty
answers, the tool actually called) that a real model can meet.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TextIO

import anyio
import anyio.abc
import attrs

from . import CharivoError, build_realtime_session_config
from .avatar import (
    AvatarCatalog,
    build_avatar_control_instructions,
    create_avatar_control_tools,
    create_avatar_result_projector,
)
from .manager import RealtimeManager, create_realtime_manager
from .model import (
    Character,
    CharacterVoice,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
)
from .testing.server import LocalRealtimeServer, ToolTrigger
from .transports.openai import DEFAULT_URL, OpenAIRealtimeTransport

__all__ = [
    "DEMO_API_KEY",
    "STEPS",
    "Inject",
    "demo_session",
    "run_demo",
]

DEMO_API_KEY: Final = "sk-charivo-demo-local-key"
"""The key the embedded server requires and the demo's transport presents."""

STEPS: Final[tuple[str, ...]] = (
    "start a session with a character and tools",
    "a message answered with streamed text",
    "tool calls: getWeather, then an avatar tool",
    "server-side drop, reconnect with backoff",
    "concurrent session updates, coalesced",
    "interrupt a streaming response",
    "stop the session",
)

RECONNECT_DELAYS: Final = (0.3, 0.6, 1.2)
LINE_WIDTH: Final = 99  # every printed line is shorter than 100 characters
KIND_WIDTH: Final = 9

Inject = Callable[[int, LocalRealtimeServer], object]
"""A hook ``(step, server)`` called before each step in local mode (fault injection)."""

CHARACTER: Final = Character(
    id="hiyori",
    name="Hiyori",
    description="A cheerful guide who lives in a small seaside town.",
    personality="curious, warm, brief",
    voice=CharacterVoice(voice_id="marin"),
)
CATALOG: Final = AvatarCatalog(
    expressions=("neutral", "happy", "surprised"), motions={"idle": 2, "greet": 1}
)
GREETING: Final = "Hi Hiyori! Who are you?"
WEATHER_QUESTION: Final = "What's the weather like in Lisbon today?"
SMILE_REQUEST: Final = "Please smile for me!"
STILL_THERE: Final = "Are you still there?"
STORY_REQUEST: Final = "Tell me a long story about the sea."
TONE_RULE: Final = "- Speak in a warm, friendly tone."
STORY: Final = (
    "Once upon a time a little lighthouse stood at the edge of a grey sea. Every night"
    " it sent its beam across the waves, and every morning the fishing boats came home"
    " safe. One winter a storm put out its light, and the keeper's daughter climbed the"
    " stairs with a lantern to guide the last boat in."
)
WEATHER_TOOL: Final = RealtimeTool(
    name="getWeather",
    description="Get today's weather forecast for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name."}},
        "required": ["city"],
    },
)
LOCAL_TRIGGERS: Final = (
    ToolTrigger("weather", "getWeather", {"city": "Lisbon"}),
    ToolTrigger("smile", "setExpression", {"expressionId": "happy"}),
)


def _local_reply(text: str) -> str:
    """The embedded server's answer to a user message."""
    if "story" in text.lower():
        return STORY
    return f"Hello! I am Hiyori, your guide by the sea. You said: {text}"


def _short(value: str | None, keep: int = 8) -> str:
    if not value:
        return "-"
    return value if len(value) <= keep + 3 else value[:keep] + "..."


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=False)
    except (TypeError, ValueError):
        return repr(value)


# --------------------------------------------------------------------- failures


class _StepFailed(Exception):
    """An expectation of the current step was not met."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _StepFailed(message)


@attrs.define
class _Outcome:
    step: int = 0
    failure: str | None = None
    failed_step: int = 0

    def fail(self, message: str, step: int | None = None) -> None:
        if self.failure is None:  # the first failure is the one that counts
            self.failure = message
            self.failed_step = self.step if step is None else step


# --------------------------------------------------------------------- timeline


class _Timeline:
    """Prints timestamped lines; can hold one open progress line (dots)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._t0 = time.perf_counter()
        self._open = False
        self._dots = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _stamp(self) -> str:
        return f"[{self.elapsed():6.3f}s]"

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
        except UnicodeEncodeError:
            self._out.write(text.encode("ascii", "replace").decode("ascii"))
        self._out.flush()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._write("\n")

    @staticmethod
    def _fit(text: str) -> str:
        text = " ".join(text.splitlines()) if "\n" in text else text
        return text if len(text) <= LINE_WIDTH else text[: LINE_WIDTH - 3] + "..."

    def line(self, kind: str, text: str) -> None:
        self._close()
        self._write(self._fit(f"{self._stamp()} {kind:<{KIND_WIDTH}} {text}") + "\n")

    def raw(self, text: str) -> None:
        self._close()
        self._write(self._fit(f"{self._stamp()} {text}") + "\n")

    def wrapped(self, kind: str, text: str) -> None:
        """One event whose text may need several lines (continuations indented)."""
        self._close()
        head = f"{self._stamp()} {kind:<{KIND_WIDTH}} "
        pieces = textwrap.wrap(text, width=LINE_WIDTH - len(head)) or [""]
        self._write(head + pieces[0] + "\n")
        for piece in pieces[1:]:
            self._write(" " * len(head) + piece + "\n")

    def progress(self, kind: str, text: str) -> None:
        """Open a progress line that :meth:`tick` extends with dots."""
        self._close()
        self._write(self._fit(f"{self._stamp()} {kind:<{KIND_WIDTH}} {text}")[: LINE_WIDTH - 40])
        self._open = True
        self._dots = 0

    def tick(self) -> None:
        if self._open and self._dots < 40:
            self._dots += 1
            self._write(".")

    async def run_ticker(self) -> None:
        while True:
            await anyio.sleep(0.1)
            self.tick()

    def finish(self) -> None:
        self._close()


# --------------------------------------------------------------------- narration


class _Narrator:
    """The manager's event emitter: records every event and narrates it."""

    def __init__(self, timeline: _Timeline, timeout: float) -> None:
        self.timeline = timeline
        self.timeout = timeout
        self.events: list[tuple[str, Any]] = []
        self._changed: anyio.Event | None = None
        self._seen: tuple[str, str] | None = None
        self._session_id: Callable[[], str | None] = lambda: None
        self.lipsync = 0
        self.found_at = 0

    def bind(self, manager: RealtimeManager) -> None:
        self._session_id = lambda: manager.session_id

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int, name: str) -> list[Any]:
        return [payload for event, payload in self.events[mark:] if event == name]

    # -- the emitter interface
    def emit(self, name: str, payload: Any) -> None:
        self.events.append((name, payload))
        try:
            self._describe(name, payload)
        finally:
            if self._changed is not None:
                self._changed.set()
                self._changed = None

    def _describe(self, name: str, p: Any) -> None:
        say = self.timeline.line
        if name == "realtime:state":
            state = p.state
            key = (str(state.session.status), str(state.connection))
            if key != self._seen:
                self._seen = key
                say("state", f"session={key[0]} connection={key[1]}")
        elif name == "realtime:session:start":
            say("session", f"started (session_id {_short(self._session_id())}, reason {p.reason})")
        elif name == "realtime:session:end":
            say("session", f"ended (reason {p.reason})")
        elif name == "realtime:assistant:start":
            say("assistant", "response started")
        elif name == "realtime:assistant:delta":
            say("delta", repr(p.text))
        elif name == "realtime:assistant:done":
            if p.text:
                self.timeline.wrapped("assistant", f'final text: "{p.text}"')
            else:
                say("assistant", "done, no text (this response only called a tool)")
        elif name == "realtime:user:transcript":
            say("user", f"transcript {p.text!r}")
        elif name == "realtime:tool:call":
            say("tool", f"call {p.name}({_compact(dict(p.args))}) id {_short(p.call_id, 12)}")
        elif name == "realtime:tool:result":
            say("tool", f"result sent for {p.name}: {_compact(dict(p.output))}")
        elif name == "realtime:tool:error":
            say("tool", f"error in {p.name}: {p.error.message}")
        elif name == "realtime:usage":
            usage = p.usage if isinstance(p.usage, Mapping) else {}
            say(
                "usage",
                f"{usage.get('total_tokens', '?')} tokens (response {_short(p.response_id, 10)})",
            )
        elif name == "realtime:reconnect:attempt":
            self.timeline.progress(
                "reconnect", f"attempt {p.attempt} in {p.delay_ms / 1000:.2f}s ({p.cause}) "
            )
        elif name == "realtime:reconnect:success":
            say("reconnect", f"succeeded after {p.attempts} attempt(s), {p.total_ms} ms in total")
        elif name == "realtime:reconnect:exhausted":
            say("reconnect", f"exhausted after {p.attempts} attempts: {p.last_error.message}")
        elif name == "realtime:error":
            say("error", p.error.message)
        elif name == "tts:audio:start":
            say("audio", "output started")
        elif name == "tts:audio:end":
            say("audio", f"output ended ({self.lipsync} lipsync updates so far)")
        elif name == "tts:lipsync:update":
            self.lipsync += 1
        elif name == "realtime:expression":
            say("avatar", f"expression -> {p.expression_id} (from the result projector)")
        elif name == "realtime:motion":
            say("avatar", f"motion -> {p.group} #{p.index} (from the result projector)")
        elif name == "realtime:gaze":
            say("avatar", f"gaze -> ({p.x:+.2f}, {p.y:+.2f}) (from the result projector)")

    # -- waiting
    async def wait_for(
        self,
        name: str,
        *,
        after: int,
        what: str | None = None,
        where: Callable[[Any], bool] | None = None,
        fail_on: tuple[str, ...] = ("realtime:error", "realtime:session:end"),
        fail_when: Callable[[str, Any], bool] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The first ``name`` event since ``after`` matching ``where``.

        Fails the step at once when one of ``fail_on`` (or an event for which
        ``fail_when(name, payload)`` is true) arrives first, or after
        ``timeout`` seconds (default: the demo's).  :attr:`found_at` is the
        index of the event found.
        """
        what = what or name
        index = after
        bound = self.timeout if timeout is None else timeout
        try:
            with anyio.fail_after(bound):
                while True:
                    while index < len(self.events):
                        event, payload = self.events[index]
                        index += 1
                        if event == name and (where is None or where(payload)):
                            self.found_at = index - 1
                            return payload
                        if fail_when is not None and fail_when(event, payload):
                            raise _StepFailed(f"got {event} before {what}")
                        if event in fail_on:
                            detail = getattr(getattr(payload, "error", None), "message", "")
                            detail = detail or getattr(payload, "reason", "")
                            raise _StepFailed(f"got {event} ({detail}) while waiting for {what}")
                    if self._changed is None:
                        self._changed = anyio.Event()
                    await self._changed.wait()
        except TimeoutError:
            raise _StepFailed(f"no {what} within {bound:g}s") from None


class _LogCollector(logging.Handler):
    """Keeps the engine's log records off the terminal; narrates patches."""

    def __init__(self, timeline: _Timeline) -> None:
        super().__init__(logging.DEBUG)
        self.timeline = timeline
        self.records: list[logging.LogRecord] = []
        self.events: list[str] = []
        self._patches = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        context = getattr(record, "charivo", None)
        if not isinstance(context, dict):
            return
        event = context.get("event")
        if not isinstance(event, str):
            return
        self.events.append(event)
        if event == "patch.started":
            self._patches += 1
            self.timeline.line("patch", f"#{self._patches} started: one session.update in flight")
        elif event == "patch.succeeded":
            self.timeline.line("patch", f"#{self._patches} acknowledged, config committed")
        elif event == "patch.failed":
            self.timeline.line("patch", f"#{self._patches} failed: {context.get('error')}")

    def count(self, event: str, since: int = 0) -> int:
        return self.events[since:].count(event)

    def problems(self, limit: int = 5) -> list[str]:
        found = [
            f"{r.levelname} {r.name}: {r.getMessage()}"
            for r in self.records
            if r.levelno >= logging.WARNING
        ]
        return found[-limit:]


@contextmanager
def _captured_logging(collector: _LogCollector) -> Iterator[logging.Logger]:
    """Route every ``charivo_fsm`` record to ``collector`` only, for the demo's duration.

    The manager logs to ``charivo_fsm.demo`` at DEBUG (so patches can be
    counted); everything else keeps its effective level (warnings by default).
    Nothing reaches the terminal: the timeline is the output.
    """
    package = logging.getLogger("charivo_fsm")
    engine = logging.getLogger("charivo_fsm.demo")
    saved = (package.propagate, engine.level)
    package.addHandler(collector)
    package.propagate = False
    engine.setLevel(logging.DEBUG)
    try:
        yield engine
    finally:
        package.removeHandler(collector)
        package.propagate, level = saved
        engine.setLevel(level)


# --------------------------------------------------------------------- the script


@attrs.define
class _Demo:
    """Everything the steps share; ``server`` is None in live mode."""

    live: bool
    server: LocalRealtimeServer | None
    timeline: _Timeline
    narrator: _Narrator
    logs: _LogCollector
    transport: OpenAIRealtimeTransport
    manager: RealtimeManager
    instructions: str
    timeout: float
    quiet: float
    weather_calls: list[str] = attrs.field(factory=list)
    session_id: str | None = None

    def say(self, kind: str, text: str) -> None:
        self.timeline.line(kind, text)

    def ok(self, text: str) -> None:
        self.timeline.line("check", f"ok: {text}")

    async def settle(self) -> None:
        """Live only: let the model finish whatever it is doing before the next step."""
        if self.quiet <= 0:
            return
        with anyio.move_on_after(self.timeout):
            while True:
                count = len(self.narrator.events)
                await anyio.sleep(self.quiet)
                responding = str(self.manager.state.response.status) == "responding"
                if len(self.narrator.events) == count and not responding:
                    return

    async def answer(self, text: str, what: str) -> str:
        """Send a user message; return the first non-empty final answer after it."""
        mark = self.narrator.mark()
        self.say("user", f"send_message({text!r})")
        await self.manager.send_message(text)
        done = await self.narrator.wait_for(
            "realtime:assistant:done", after=mark, what=what, where=lambda p: bool(p.text)
        )
        final: str = done.text
        return final

    def check_no_errors(self, mark: int) -> None:
        errors = self.narrator.since(mark, "realtime:error")
        _expect(
            not errors,
            f"realtime:error during the step: {errors[0].error.message}" if errors else "",
        )

    # -------------------------------------------------------------- 1
    async def step_start(self) -> None:
        names = [tool.name for tool in self.manager.registered_tools()]
        voice = CHARACTER.voice.voice_id if CHARACTER.voice else None
        self.say("setup", f"character {CHARACTER.name} ({CHARACTER.personality}), voice {voice}")
        self.say("setup", f"avatar expressions: {', '.join(CATALOG.expressions)}")
        motions = ", ".join(f"{group} x{count}" for group, count in CATALOG.motions.items())
        self.say("setup", f"avatar motions: {motions}")
        self.say("setup", f"tools: {', '.join(names)}")
        self.say("setup", "result projector: avatar (tool results -> realtime:expression/...)")
        self.say(
            "setup", f"instructions: character block + avatar block, {len(self.instructions)} chars"
        )
        mark = self.narrator.mark()
        await self.manager.start_session(
            {"provider": "openai", "transport": "websocket", "instructions": self.instructions}
        )
        state = self.manager.state
        _expect(str(state.session.status) == "active", f"session status {state.session.status}")
        _expect(str(state.connection) == "connected", f"connection {state.connection}")
        self.session_id = self.manager.session_id
        _expect(self.session_id is not None, "no session_id while active")
        starts = self.narrator.since(mark, "realtime:session:start")
        _expect(len(starts) == 1, f"{len(starts)} realtime:session:start events (expected 1)")
        _expect(starts[0].reason == "user", f"session:start reason {starts[0].reason}")
        sent = self.transport.config
        _expect(sent is not None, "the transport has no acknowledged config")
        assert sent is not None
        sent_tools = [tool.name for tool in sent.tools or ()]
        _expect(sent_tools == names, f"tools sent {sent_tools}, expected {names}")
        _expect(sent.voice == voice, f"voice sent {sent.voice}, expected {voice}")
        _expect(sent.instructions == self.instructions, "instructions sent differ")
        if self.server is not None:
            updates = self.server.received_of("session.update")
            _expect(len(updates) == 1, f"server got {len(updates)} session.update (expected 1)")
            session = updates[0]["session"]
            server_tools = [tool["name"] for tool in session.get("tools", ())]
            _expect(server_tools == names, f"server got tools {server_tools}")
            got_voice = session.get("audio", {}).get("output", {}).get("voice")
            _expect(got_voice == voice, f"server got voice {got_voice}")
            _expect("Avatar control:" in session.get("instructions", ""), "no avatar instructions")
        self.check_no_errors(mark)
        sid = _short(self.session_id)
        self.ok(f"session active, {len(names)} tools, voice {voice}, session_id {sid}")

    # -------------------------------------------------------------- 2
    async def step_message(self) -> None:
        mark = self.narrator.mark()
        final = await self.answer(GREETING, "a streamed answer")
        done_at = self.narrator.found_at
        events = self.narrator.events
        start = max(
            (i for i in range(mark, done_at) if events[i][0] == "realtime:assistant:start"),
            default=mark,
        )
        deltas = [
            p.text
            for n, p in self.narrator.events[start:done_at]
            if n == "realtime:assistant:delta"
        ]
        _expect(len(deltas) >= 2, f"{len(deltas)} deltas streamed (expected several)")
        _expect("".join(deltas) == final, "the deltas do not add up to the final text")
        if self.server is not None:
            expected = _local_reply(GREETING)
            _expect(final == expected, f"final text {final!r}, expected {expected!r}")
        state = self.manager.state
        # (A live model may already be answering again after an avatar tool call.)
        if not any(n == "realtime:assistant:start" for n, _ in events[done_at:]):
            status = str(state.response.status)
            _expect(status == "completed", f"response {status}")
            _expect(state.response.text == final, "state.response.text is not the final text")
        self.check_no_errors(mark)
        self.ok(f"{len(deltas)} deltas streamed, response completed, text in the state")

    # -------------------------------------------------------------- 3
    async def step_tools(self) -> None:
        mark = self.narrator.mark()
        self.say("user", f"send_message({WEATHER_QUESTION!r})")
        await self.manager.send_message(WEATHER_QUESTION)
        call = await self.narrator.wait_for(
            "realtime:tool:call",
            after=mark,
            what="a getWeather tool call",
            where=lambda p: p.name == "getWeather",
            fail_when=lambda n, p: n == "realtime:assistant:done" and bool(p.text),
        )
        result = await self.narrator.wait_for(
            "realtime:tool:result",
            after=mark,
            what="the getWeather result",
            where=lambda p: p.call_id == call.call_id,
            fail_when=lambda n, p: n == "realtime:tool:error" and p.call_id == call.call_id,
        )
        done = await self.narrator.wait_for(
            "realtime:assistant:done",
            after=self.narrator.found_at,
            what="an answer after the tool result",
            where=lambda p: bool(p.text),
        )
        answer: str = done.text
        _expect(isinstance(call.args.get("city"), str), f"getWeather args {dict(call.args)}")
        _expect(len(self.weather_calls) >= 1, "the getWeather handler did not run")
        _expect(result.output.get("city") == call.args["city"], "the result names another city")
        errors = self.narrator.since(mark, "realtime:tool:error")
        _expect(not errors, f"tool error: {errors[0].error.message}" if errors else "")
        if self.server is not None:
            _expect(self.weather_calls == ["Lisbon"], f"handler calls {self.weather_calls}")
            outputs = [
                e["item"]
                for e in self.server.received_of("conversation.item.create")
                if e["item"].get("type") == "function_call_output"
            ]
            _expect(len(outputs) == 1, f"server got {len(outputs)} tool outputs (expected 1)")
            _expect(outputs[0]["call_id"] == call.call_id, "the output names another call_id")
            _expect(
                json.loads(outputs[0]["output"]) == dict(result.output),
                "the server got another output than the handler returned",
            )
            _expect(answer.startswith("getWeather says:"), f"answer {answer!r}")
        self.ok(f"getWeather({call.args['city']}) ran once, its result was sent, then answered")

        mark = self.narrator.mark()
        await self.answer(SMILE_REQUEST, "an answer after the avatar tool")
        expressions = self.narrator.since(mark, "realtime:expression")
        if self.server is not None:
            _expect(
                [p.expression_id for p in expressions] == ["happy"],
                f"expression events {expressions}",
            )
            self.ok("setExpression result projected to realtime:expression (happy)")
        elif expressions:
            self.ok(f"the model called setExpression ({expressions[-1].expression_id})")
        else:
            self.say("note", "the model chose not to call setExpression (its choice, live)")
        self.check_no_errors(mark)

    # -------------------------------------------------------------- 4
    async def step_drop(self) -> None:
        server = self.server
        if server is None:
            self.say("note", "skipped live: a server-side drop cannot be injected into the")
            self.say("note", "real OpenAI Realtime API (the local run covers it)")
            return
        mark = self.narrator.mark()
        before = server.connections
        old = server.sent_of("session.created")[-1]["session"]["id"]
        server.reject_next_session_update("demo: the first recover is refused")
        self.say("server", "fault: the next session.update will be refused (first recover)")
        self.say("server", "fault: dropping the TCP connection (no close frame)")
        await server.drop_connection()
        success = await self.narrator.wait_for(
            "realtime:reconnect:success",
            after=mark,
            what="realtime:reconnect:success",
            fail_on=("realtime:reconnect:exhausted", "realtime:session:end"),
        )
        attempts = self.narrator.since(mark, "realtime:reconnect:attempt")
        _expect(
            [a.attempt for a in attempts] == [1, 2],
            f"reconnect attempts {[a.attempt for a in attempts]} (expected 1, 2)",
        )
        _expect(
            [a.delay_ms for a in attempts] == [round(d * 1000) for d in RECONNECT_DELAYS[:2]],
            f"backoff delays {[a.delay_ms for a in attempts]} ms",
        )
        _expect(success.attempts == 2, f"succeeded after {success.attempts} attempts")
        _expect(
            self.manager.session_id == self.session_id,
            f"session_id changed: {self.session_id} -> {self.manager.session_id}",
        )
        boundaries = self.narrator.since(mark, "realtime:session:start") + self.narrator.since(
            mark, "realtime:session:end"
        )
        _expect(not boundaries, "the reconnect started or ended a session")
        _expect(server.connections == before + 2, "expected two new connections (1 refused)")
        new = server.sent_of("session.created")[-1]["session"]["id"]
        self.say("server", f"new socket: server session {_short(new, 10)} (was {_short(old, 10)})")
        self.ok(f"same engine session {_short(self.session_id)} after 2 attempts")
        final = await self.answer(STILL_THERE, "an answer after the reconnect")
        _expect(final == _local_reply(STILL_THERE), f"answer after reconnect {final!r}")
        _expect(self.manager.session_id == self.session_id, "session_id changed")
        self.check_no_errors(mark)
        self.ok("the reconnected session answers")

    # -------------------------------------------------------------- 5
    async def step_updates(self) -> None:
        mark = self.narrator.mark()
        log_mark = len(self.logs.events)
        server_mark = len(self.server.received_of("session.update")) if self.server else 0
        toned = self.instructions + "\n" + TONE_RULE
        requests: list[tuple[str, dict[str, Any]]] = [
            ("max_tokens -> 400", {"max_tokens": 400}),
            ("instructions += tone rule", {"instructions": toned}),
            ("max_tokens -> 300", {"max_tokens": 300}),
        ]
        outcomes: dict[int, CharivoError | None] = {}

        async def issue(
            number: int,
            config: dict[str, Any],
            *,
            task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
        ) -> None:
            # started() first: update_session registers the request before its
            # first await, so the calls enter the manager in this order.
            task_status.started()
            try:
                await self.manager.update_session(config)
            except CharivoError as error:
                outcomes[number] = error
                self.say("update", f"#{number} failed: {error.message}")
                return
            outcomes[number] = None
            self.say("update", f"#{number} returned")

        with anyio.fail_after(self.timeout):
            async with anyio.create_task_group() as group:
                for number, (label, change) in enumerate(requests, 1):
                    self.say("update", f"#{number} update_session({label}) issued")
                    await group.start(issue, number, change)
        failed = {n: e for n, e in outcomes.items() if e is not None}
        _expect(not failed, f"update_session failed: {next(iter(failed.values()), None)}")
        patches = self.logs.count("patch.started", log_mark)
        _expect(1 <= patches <= 2, f"{patches} patches for 3 calls (expected at most 2)")
        config = self.manager.state.session.config
        _expect(config is not None and config.max_tokens == 300, "max_tokens is not 300")
        _expect(config is not None and config.instructions == toned, "instructions not updated")
        sent = self.transport.config
        _expect(sent is not None and sent.max_tokens == 300, "the transport has another config")
        if self.server is not None:
            updates = self.server.received_of("session.update")[server_mark:]
            _expect(len(updates) == patches, f"server got {len(updates)} session.update")
            last = updates[-1]["session"]
            _expect(last.get("max_output_tokens") == 300, "the last patch is not the latest")
            _expect(last.get("instructions") == toned, "the last patch lacks the tone rule")
        self.check_no_errors(mark)
        coalesced = " (#2 and #3 coalesced)" if patches == 2 else ""
        self.ok(f"3 update_session calls -> {patches} session.update patches{coalesced}")
        self.ok("the latest config won: max_tokens 300, tone rule in the instructions")

    # -------------------------------------------------------------- 6
    async def step_interrupt(self) -> None:
        server = self.server
        if server is not None:
            server.delta_delay = 0.04  # slow the stream down so it can be interrupted
        try:
            mark = self.narrator.mark()
            self.say("user", f"send_message({STORY_REQUEST!r})")
            await self.manager.send_message(STORY_REQUEST)
            await self.narrator.wait_for(
                "realtime:assistant:delta",
                after=mark,
                what="the third delta",
                where=lambda _p: len(self.narrator.since(mark, "realtime:assistant:delta")) >= 3,
            )
            cut = self.narrator.mark()
            await self.manager.interrupt()
            status = str(self.manager.state.response.status)
            self.say("interrupt", f"interrupt() sent response.cancel; response status {status}")
            _expect(status == "interrupted", f"response status {status} after interrupt()")
            try:
                await self.narrator.wait_for(
                    "realtime:usage",
                    after=cut,
                    what="the cancelled response's realtime:usage",
                    timeout=None if server is not None else 5.0,
                )
            except _StepFailed:
                if server is not None:
                    raise
                # The real API may end a cancelled response without usage.
                self.say("note", "no realtime:usage for the cancelled response within 5s")
        finally:
            if server is not None:
                server.delta_delay = 0.0
        state = self.manager.state
        _expect(str(state.response.status) == "interrupted", f"response {state.response.status}")
        _expect(not self.narrator.since(mark, "realtime:assistant:done"), "assistant:done emitted")
        partial = state.response.text
        self.say("state", f"response interrupted, partial text kept: {partial[:40]!r}...")
        if server is not None:
            _expect(len(server.received_of("response.cancel")) == 1, "no response.cancel sent")
            last = server.sent_of("response.done")[-1]["response"]
            _expect(last["status"] == "cancelled", f"server response status {last['status']}")
            _expect(0 < len(partial) < len(STORY), "the partial text is not partial")
        self.check_no_errors(mark)
        self.ok(f"interrupted after {len(partial.split())} words, no assistant:done")

    # -------------------------------------------------------------- 7
    async def step_stop(self) -> None:
        mark = self.narrator.mark()
        self.say("user", "stop_session()")
        await self.manager.stop_session()
        end = await self.narrator.wait_for(
            "realtime:session:end", after=mark, fail_on=("realtime:error",)
        )
        _expect(end.reason == "user", f"session:end reason {end.reason}")
        state = self.manager.state
        _expect(str(state.session.status) == "stopped", f"session status {state.session.status}")
        _expect(self.manager.session_id is None, "session_id still set after stop")
        _expect(not self.transport.connected, "the transport is still connected")
        self.check_no_errors(mark)
        self.ok("session stopped (reason user), transport disconnected")


async def _run_script(demo: _Demo, outcome: _Outcome, inject: Inject | None) -> None:
    steps = (
        demo.step_start,
        demo.step_message,
        demo.step_tools,
        demo.step_drop,
        demo.step_updates,
        demo.step_interrupt,
        demo.step_stop,
    )
    async with anyio.create_task_group() as group:
        group.start_soon(demo.timeline.run_ticker)
        try:
            for number, (title, step) in enumerate(zip(STEPS, steps, strict=True), 1):
                outcome.step = number
                demo.timeline.raw(f"---- step {number}/{len(STEPS)}: {title}")
                if inject is not None and demo.server is not None:
                    inject(number, demo.server)
                await step()
                await demo.settle()
        except _StepFailed as failed:
            outcome.fail(failed.message)
        except CharivoError as error:
            outcome.fail(f"{type(error).__name__}: {error.message}")
        except Exception as error:  # report, never a traceback
            outcome.fail(f"{type(error).__name__}: {error}")
        finally:
            group.cancel_scope.cancel()


async def _run(
    *,
    live: bool,
    server: LocalRealtimeServer | None,
    timeline: _Timeline,
    logs: _LogCollector,
    engine_logger: logging.Logger,
    outcome: _Outcome,
    inject: Inject | None,
    live_url: str | None,
    live_settle: float,
) -> None:
    timeout = 30.0 if live else 5.0
    if server is not None:
        transport = OpenAIRealtimeTransport(api_key=DEMO_API_KEY, url=server.url)
        timeline.line("server", f"local realtime server at {server.url}")
    else:
        transport = OpenAIRealtimeTransport(url=live_url or DEFAULT_URL)  # OPENAI_API_KEY
        timeline.line("server", f"OpenAI Realtime API at {transport.url} ({transport.model})")

    weather_calls: list[str] = []

    async def get_weather(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        city = str(args["city"])
        weather_calls.append(city)
        return {"success": True, "city": city, "forecast": "sunny, light breeze", "high_c": 21}

    tools = [
        RealtimeToolRegistration(definition=WEATHER_TOOL, handler=get_weather),
        *create_avatar_control_tools(CATALOG),
    ]
    instructions = (
        str(build_realtime_session_config(CHARACTER).instructions)
        + "\n\n"
        + build_avatar_control_instructions(CATALOG)
    )
    narrator = _Narrator(timeline, timeout)
    async with transport:
        manager = create_realtime_manager(
            transport,
            tools=tools,
            result_projectors=[create_avatar_result_projector()],
            reconnect_delays=RECONNECT_DELAYS,
            transport_timeout=15.0 if live else 5.0,
            logger=engine_logger,
        )
        async with manager:
            narrator.bind(manager)
            manager.set_event_emitter(narrator)
            manager.set_character(CHARACTER)
            demo = _Demo(
                live=live,
                server=server,
                timeline=timeline,
                narrator=narrator,
                logs=logs,
                transport=transport,
                manager=manager,
                instructions=instructions,
                timeout=timeout,
                quiet=live_settle if live else 0.0,
                weather_calls=weather_calls,
            )
            await _run_script(demo, outcome, inject)
        if outcome.failure is None:
            state = manager.state
            if str(state.session.status) != "stopped":
                outcome.fail(f"session status {state.session.status} after the manager closed")
    failures = [e for e in logs.events if e in ("listener.failed", "projector.failed")]
    if outcome.failure is None and failures:
        outcome.fail(f"the engine logged {failures[0]} (the narration or projector raised)")


async def demo_session(
    *,
    live: bool = False,
    out: TextIO | None = None,
    inject: Inject | None = None,
    live_url: str | None = None,
    live_settle: float = 1.0,
) -> int:
    """Run the scripted session and narrate it on ``out`` (default: stdout).

    Returns 0 when every step behaved as expected, 1 otherwise (the failing
    step is named on the last lines).  ``inject(step, server)`` is called
    before each step in local mode; tests use it to inject faults.

    Live mode (``live=True``) reads ``OPENAI_API_KEY`` and talks to
    ``live_url`` (default: the OpenAI Realtime endpoint); between steps it
    waits until the model has been quiet for ``live_settle`` seconds, since a
    real model may call the avatar tools on its own and answer again.
    """
    timeline = _Timeline(out if out is not None else sys.stdout)
    outcome = _Outcome()
    logs = _LogCollector(timeline)
    bound = 180.0 if live else 20.0
    tasks_before = len(anyio.get_running_tasks())
    mode = "live, OpenAI Realtime API" if live else "local server, real WebSocket transport"
    timeline.raw(f"charivo-fsm demo ({mode}): {len(STEPS)} steps")
    server: LocalRealtimeServer | None = None
    with _captured_logging(logs) as engine_logger:
        try:
            with anyio.fail_after(bound):
                run = functools.partial(
                    _run,
                    live=live,
                    timeline=timeline,
                    logs=logs,
                    engine_logger=engine_logger,
                    outcome=outcome,
                    inject=inject,
                    live_url=live_url,
                    live_settle=live_settle,
                )
                if live:
                    await run(server=None)
                else:
                    server = LocalRealtimeServer(
                        api_key=DEMO_API_KEY, tool_triggers=LOCAL_TRIGGERS, reply=_local_reply
                    )
                    async with server:
                        await run(server=server)
                        if outcome.failure is None:
                            with anyio.move_on_after(2.0):
                                while server.active_connections:
                                    await anyio.sleep(0.01)
                            if server.active_connections:
                                outcome.fail("the server still has a live connection", 7)
        except TimeoutError:
            outcome.fail(f"the whole run took longer than {bound:g}s")
        except CharivoError as error:
            outcome.fail(f"{type(error).__name__}: {error.message}")
        except Exception as error:
            outcome.fail(f"{type(error).__name__}: {error}")
        if outcome.failure is None:
            # Tasks of a server outside the demo (live mode in the tests) may
            # need a moment to notice the close; a leaked task stays.
            left = len(anyio.get_running_tasks()) - tasks_before
            with anyio.move_on_after(1.0):
                while left > 0:
                    await anyio.sleep(0.01)
                    left = len(anyio.get_running_tasks()) - tasks_before
            if left:
                outcome.fail(f"{left} task(s) left running", 7)
        timeline.finish()
        if outcome.failure is not None:
            step = outcome.failed_step
            title = STEPS[step - 1] if 1 <= step <= len(STEPS) else "set-up"
            timeline.wrapped("FAIL", f"step {step}/{len(STEPS)} ({title}): {outcome.failure}")
            problems = logs.problems()
            if problems:
                timeline.line("log", f"the last {len(problems)} warnings/errors the engine logged:")
            for problem in problems:
                timeline.line("log", problem)
            timeline.raw(f"demo FAILED at step {step}/{len(STEPS)}")
            return 1
        extra = "" if server is None else f", {server.connections} server connections"
        timeline.line("check", f"ok: no live connection, no task left{extra}")
        timeline.raw(f"demo passed: all {len(STEPS)} steps in {timeline.elapsed():.2f}s")
        return 0


def run_demo(live: bool = False, *, backend: str = "asyncio") -> int:
    """The ``charivo-fsm demo`` command: run :func:`demo_session`, return the exit code.

    ``live=True`` needs ``OPENAI_API_KEY``; without it a message is printed and
    the exit code is 2.
    """
    if live and not os.environ.get("OPENAI_API_KEY", "").strip():
        print(
            "charivo-fsm demo --live: OPENAI_API_KEY is not set. Export your OpenAI API key"
            " to run the demo against the real Realtime API, or run 'charivo-fsm demo'"
            " (no --live) for the local server.",
            file=sys.stderr,
        )
        return 2
    try:
        result: int = anyio.run(functools.partial(demo_session, live=live), backend=backend)
    except KeyboardInterrupt:
        print("\ncharivo-fsm demo: interrupted", file=sys.stderr)
        return 130
    return result
