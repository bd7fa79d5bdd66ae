"""The pull API: ``manager.events()``, an async iterator over emitted events.

Rules of this file:

* A stream receives every event the manager emits (the names of
  :data:`~charivo_fsm.payloads.EMITTED_EVENTS`), in emit order, from the moment
  ``manager.events()`` is called until the stream is closed (leaving its
  ``async with`` block) or the manager exits.  Emitters and any number of
  streams receive the same events independently.
* A stream is bounded: it holds at most ``max_buffer`` events not yet read.  It
  never drops silently: when an event arrives and the buffer is full, the stream
  stops receiving, delivers what it holds, and then raises
  :class:`~charivo_fsm.CharivoStateError` naming the overflow.
* When the manager exits, a stream delivers what it holds and then ends.
* Events a result projector emits through its context go to the emitter only:
  a stream's items are typed by event name (:data:`EmittedEvent`), which
  app-defined names would not fit.

Items are typed as a union of ``(name, payload)`` tuples, one per event name, so
``mypy --strict`` narrows ``event[1]`` after a check of ``event[0]``, in a
``match`` statement, or ``payload`` after an ``isinstance`` check::

    async with manager.events() as stream:
        async for event in stream:
            match event:
                case ("realtime:audio:delta", AudioDeltaPayload(audio=audio)):
                    player.feed(audio)
                case ("realtime:assistant:done", TextPayload(text=text)):
                    print(text)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import anyio

from .errors import CharivoStateError, CharivoValidationError
from .payloads import (
    AssistantStartPayload,
    AudioDeltaPayload,
    EmptyPayload,
    ErrorPayload,
    LipsyncPayload,
    RateLimitsPayload,
    ReconnectAttemptPayload,
    ReconnectExhaustedPayload,
    ReconnectSuccessPayload,
    SessionBoundaryPayload,
    SpeechStartPayload,
    SpeechStopPayload,
    StatePayload,
    TextPayload,
    ToolCallPayload,
    ToolErrorPayload,
    ToolResultPayload,
    TranscriptDeltaPayload,
    UsagePayload,
)

__all__ = ["EmittedEvent", "EventStream"]

EmittedEvent = (
    tuple[Literal["realtime:state"], StatePayload]
    | tuple[Literal["realtime:session:start", "realtime:session:end"], SessionBoundaryPayload]
    | tuple[Literal["realtime:assistant:start"], AssistantStartPayload]
    | tuple[
        Literal[
            "realtime:user:transcript",
            "realtime:assistant:delta",
            "realtime:text:delta",
            "realtime:assistant:done",
        ],
        TextPayload,
    ]
    | tuple[Literal["realtime:tool:call"], ToolCallPayload]
    | tuple[Literal["realtime:tool:result"], ToolResultPayload]
    | tuple[Literal["realtime:tool:error"], ToolErrorPayload]
    | tuple[Literal["realtime:usage"], UsagePayload]
    | tuple[Literal["realtime:reconnect:attempt"], ReconnectAttemptPayload]
    | tuple[Literal["realtime:reconnect:success"], ReconnectSuccessPayload]
    | tuple[Literal["realtime:reconnect:exhausted"], ReconnectExhaustedPayload]
    | tuple[Literal["realtime:error"], ErrorPayload]
    | tuple[Literal["tts:audio:start", "tts:audio:end"], EmptyPayload]
    | tuple[Literal["tts:lipsync:update"], LipsyncPayload]
    | tuple[Literal["realtime:audio:delta"], AudioDeltaPayload]
    | tuple[Literal["realtime:user:speech:start"], SpeechStartPayload]
    | tuple[Literal["realtime:user:speech:stop"], SpeechStopPayload]
    | tuple[Literal["realtime:user:transcript:delta"], TranscriptDeltaPayload]
    | tuple[Literal["realtime:rate_limits"], RateLimitsPayload]
)
"""One item of a stream: ``(name, payload)``, typed per event name."""


class EventStream:
    """An async iterator over the events a manager emits (see the module docs).

    Made by :meth:`charivo_fsm.RealtimeManager.events`; use it as
    ``async with manager.events() as stream: async for name, payload in stream:``.
    """

    __slots__ = ("_buffer", "_closed", "_detach", "_max", "_overflowed", "_wakeup")

    def __init__(self, max_buffer: int, detach: Callable[[EventStream], None]) -> None:
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise CharivoValidationError(
                f"max_buffer must be a positive integer (got {max_buffer!r})"
            )
        self._max = max_buffer
        self._buffer: deque[EmittedEvent] = deque()
        self._detach = detach
        self._wakeup: anyio.Event | None = None
        self._closed = False
        self._overflowed = False

    # -------------------------------------------------------- manager side

    def put(self, name: str, payload: Any) -> None:
        """Called by the manager for every emitted event (never blocks, never raises)."""
        if self._closed:
            return
        if len(self._buffer) >= self._max:
            self._overflowed = True
            self._finish()
            return
        self._buffer.append((name, payload))  # type: ignore[arg-type]
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def end(self) -> None:
        """The manager exits: deliver what is held, then stop."""
        self._finish()

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            self._detach(self)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    # ---------------------------------------------------------- reader side

    @property
    def pending(self) -> int:
        """Events received and not yet read."""
        return len(self._buffer)

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving; events not read yet are discarded."""
        self._finish()
        self._buffer.clear()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> EmittedEvent:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._overflowed:
                self._overflowed = False
                raise CharivoStateError(
                    f"event stream overflowed: more than {self._max} events were not "
                    "read in time (raise max_buffer or read faster); later events "
                    "were not received"
                )
            if self._closed:
                raise StopAsyncIteration
            wakeup = self._wakeup = anyio.Event()
            await wakeup.wait()
