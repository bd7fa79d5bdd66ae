"""The demo's output: a timeline of short stamped lines, the narrating emitter,
the log capture, and how a step fails.

Every line is shorter than 100 characters and starts with the time since the
demo began (``[ 1.234s]``), except the continuation lines of a wrapped event
(indented by 10 spaces) and a file path, which is printed whole on a line of
its own so it can be copied.
"""

from __future__ import annotations

import json
import logging
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TextIO

import anyio
import attrs

from ..manager import RealtimeManager

__all__ = [
    "LINE_WIDTH",
    "LogCollector",
    "Narrator",
    "Outcome",
    "StepFailed",
    "Timeline",
    "captured_logging",
    "compact",
    "expect",
    "short",
]

LINE_WIDTH: Final = 99  # every printed line is shorter than 100 characters
KIND_WIDTH: Final = 9
PCM16_BYTES_PER_MS: Final = 48  # the default output format: PCM16 mono 24 kHz


def short(value: str | None, keep: int = 8) -> str:
    """An id cut to ``keep`` characters (``-`` for none)."""
    if not value:
        return "-"
    return value if len(value) <= keep + 3 else value[:keep] + "..."


def compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=False)
    except (TypeError, ValueError):
        return repr(value)


# --------------------------------------------------------------------- failures


class StepFailed(Exception):
    """An expectation of the current step was not met."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


@attrs.define
class Outcome:
    step: int = 0
    failure: str | None = None
    failed_step: int = 0

    def fail(self, message: str, step: int | None = None) -> None:
        if self.failure is None:  # the first failure is the one that counts
            self.failure = message
            self.failed_step = self.step if step is None else step


# --------------------------------------------------------------------- timeline


class Timeline:
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

    def path(self, kind: str, text: str, path: str) -> None:
        """``text``, then ``path``: on the same line when it fits, else whole on
        a continuation line of its own (a path is never cut)."""
        self._close()
        head = f"{self._stamp()} {kind:<{KIND_WIDTH}} "
        if len(head) + len(text) + 1 + len(path) <= LINE_WIDTH:
            self._write(f"{head}{text} {path}\n")
        else:
            self._write(self._fit(head + text) + "\n")
            self._write(" " * len(head) + path + "\n")

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


class Narrator:
    """The manager's event emitter: records every event and narrates it.

    Text deltas are printed one per line only while :attr:`show_deltas` is
    set (the streaming step); otherwise the final text says it all.  Audio
    chunks are counted, not printed: ``tts:audio:end`` reports how much audio
    the turn brought.
    """

    def __init__(self, timeline: Timeline, timeout: float) -> None:
        self.timeline = timeline
        self.timeout = timeout
        self.events: list[tuple[str, Any]] = []
        self.show_deltas = False
        self._changed: anyio.Event | None = None
        self._seen: tuple[str, str] | None = None
        self._session_id: Callable[[], str | None] = lambda: None
        self.lipsync = 0
        self.found_at = 0
        self.audio_bytes: dict[str | None, int] = {}  # per assistant audio item
        self._turn_chunks = 0
        self._turn_bytes = 0

    def bind(self, manager: RealtimeManager) -> None:
        self._session_id = lambda: manager.session_id

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int, name: str) -> list[Any]:
        return [payload for event, payload in self.events[mark:] if event == name]

    def index_since(self, mark: int, name: str) -> int | None:
        """The index of the first ``name`` event at or after ``mark``."""
        for index in range(mark, len(self.events)):
            if self.events[index][0] == name:
                return index
        return None

    def audio_ms(self, item_id: str | None) -> int:
        """Milliseconds of PCM16 24 kHz audio received for ``item_id``."""
        return self.audio_bytes.get(item_id, 0) // PCM16_BYTES_PER_MS

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
        if name == "realtime:audio:delta":
            size = len(p.audio)
            self.audio_bytes[p.item_id] = self.audio_bytes.get(p.item_id, 0) + size
            self._turn_chunks += 1
            self._turn_bytes += size
        elif name == "tts:lipsync:update":
            self.lipsync += 1
        elif name == "realtime:assistant:delta":
            if self.show_deltas:
                say("delta", repr(p.text))
        elif name == "realtime:state":
            state = p.state
            key = (str(state.session.status), str(state.connection))
            if key != self._seen:
                self._seen = key
                say("state", f"session={key[0]} connection={key[1]}")
        elif name == "realtime:session:start":
            say("session", f"started (session_id {short(self._session_id())}, reason {p.reason})")
        elif name == "realtime:session:end":
            say("session", f"ended (reason {p.reason})")
        elif name == "realtime:assistant:start":
            say("assistant", "response started")
        elif name == "realtime:assistant:done":
            if p.text:
                self.timeline.wrapped("assistant", f'final text: "{p.text}"')
            else:
                say("assistant", "done, no text (this response only called a tool)")
        elif name == "realtime:user:transcript":
            say("user", f"transcript {p.text!r}")
        elif name == "realtime:user:speech:start":
            where = f"{p.audio_start_ms} ms of input (item {short(p.item_id)})"
            say("vad", f"speech started at {where}")
        elif name == "realtime:user:speech:stop":
            say("vad", f"speech stopped at {p.audio_end_ms} ms of input")
        elif name == "realtime:tool:call":
            say("tool", f"call {p.name}({compact(dict(p.args))}) id {short(p.call_id, 12)}")
        elif name == "realtime:tool:result":
            say("tool", f"result sent for {p.name}: {compact(dict(p.output))}")
        elif name == "realtime:tool:error":
            say("tool", f"error in {p.name}: {p.error.message}")
        elif name == "realtime:usage":
            usage = p.usage if isinstance(p.usage, Mapping) else {}
            say(
                "usage",
                f"{usage.get('total_tokens', '?')} tokens (response {short(p.response_id, 10)})",
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
            self._turn_chunks = self._turn_bytes = 0
            say("audio", "output started")
        elif name == "tts:audio:end":
            ms = self._turn_bytes // PCM16_BYTES_PER_MS
            chunks = f"{self._turn_chunks} chunk{'' if self._turn_chunks == 1 else 's'}"
            say("audio", f"output ended: {chunks}, {ms} ms received")
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
                            raise StepFailed(f"got {event} before {what}")
                        if event in fail_on:
                            detail = getattr(getattr(payload, "error", None), "message", "")
                            detail = detail or getattr(payload, "reason", "")
                            raise StepFailed(f"got {event} ({detail}) while waiting for {what}")
                    if self._changed is None:
                        self._changed = anyio.Event()
                    await self._changed.wait()
        except TimeoutError:
            raise StepFailed(f"no {what} within {bound:g}s") from None


class LogCollector(logging.Handler):
    """Keeps the engine's log records off the terminal; narrates patches."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__(logging.DEBUG)
        self.timeline = timeline
        self.records: list[logging.LogRecord] = []
        self.events: list[str] = []
        self.patches = 0
        """Patches narrated so far (numbered from 1 in each step)."""

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
            self.patches += 1
            self.timeline.line("patch", f"#{self.patches} started: one session.update in flight")
        elif event == "patch.succeeded":
            self.timeline.line("patch", f"#{self.patches} acknowledged, config committed")
        elif event == "patch.failed":
            self.timeline.line("patch", f"#{self.patches} failed: {context.get('error')}")

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
def captured_logging(collector: LogCollector) -> Iterator[logging.Logger]:
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
