"""Payloads of the events the manager emits (``emitter.emit(name, payload)``).

Names of the emitted events are in :data:`EMITTED_EVENTS`.  Every payload is a
frozen attrs object; :func:`charivo_fsm.wire.to_wire` turns it into the
camelCase dict the TypeScript package emits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from .errors import CharivoError
from .model import RealtimeState, ResponseState

__all__ = [
    "EMITTED_EVENTS",
    "AssistantStartPayload",
    "AudioDeltaPayload",
    "EmptyPayload",
    "ErrorPayload",
    "LipsyncPayload",
    "RateLimitsPayload",
    "ReconnectAttemptPayload",
    "ReconnectExhaustedPayload",
    "ReconnectSuccessPayload",
    "SessionBoundaryPayload",
    "SpeechStartPayload",
    "SpeechStopPayload",
    "StatePayload",
    "TextPayload",
    "ToolCallPayload",
    "ToolErrorPayload",
    "ToolResultPayload",
    "TranscriptDeltaPayload",
    "UsagePayload",
]


# The pieces of a state captured when it is emitted, built into the RealtimeState on
# first access (see :func:`state_payload`): the connection value, the session state,
# the response status, the response text's parts and how many of them belong to
# this state (later deltas append to the same list), the last error.
StatePieces = tuple[Any, Any, Any, list[str], int, Any]


@attrs.frozen(slots=True, init=False, eq=False, repr=False)
class StatePayload:
    """``realtime:state``: a snapshot of the state.

    The snapshot may be materialised lazily (the manager captures the pieces at
    emit time and builds the :class:`RealtimeState` on first access), so that
    streaming a long response does not copy its text once per delta.
    """

    _source: RealtimeState | Callable[[], RealtimeState] | StatePieces

    def __init__(self, state: RealtimeState | Callable[[], RealtimeState]) -> None:
        object.__setattr__(self, "_source", state)

    @property
    def state(self) -> RealtimeState:
        source = self._source
        if isinstance(source, RealtimeState):
            return source
        if type(source) is tuple:
            connection, session, status, parts, count, last_error = source
            text = parts[0] if count == 1 else "".join(parts[:count])
            built = RealtimeState(connection, session, ResponseState(status, text), last_error)
        else:
            built = source()  # type: ignore[operator]
        object.__setattr__(self, "_source", built)
        return built

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatePayload):
            return NotImplemented
        return self.state == other.state

    def __hash__(self) -> int:
        return hash(self.state)

    def __repr__(self) -> str:
        return f"StatePayload(state={self.state!r})"


@attrs.frozen(slots=True)
class SessionBoundaryPayload:
    """``realtime:session:start`` / ``realtime:session:end``."""

    state: RealtimeState
    reason: Literal["user", "remote", "error"]


@attrs.frozen(slots=True)
class AssistantStartPayload:
    """``realtime:assistant:start``."""

    state: RealtimeState


@attrs.frozen(slots=True)
class TextPayload:
    """``realtime:user:transcript``, ``realtime:assistant:delta``,
    ``realtime:text:delta`` (the delta) and ``realtime:assistant:done`` (final)."""

    text: str


@attrs.frozen(slots=True)
class ToolCallPayload:
    """``realtime:tool:call``."""

    name: str
    args: Mapping[str, Any]
    call_id: str | None


@attrs.frozen(slots=True)
class ToolResultPayload:
    """``realtime:tool:result``."""

    name: str
    output: Mapping[str, Any]
    call_id: str | None


@attrs.frozen(slots=True)
class ToolErrorPayload:
    """``realtime:tool:error``."""

    name: str
    error: CharivoError
    call_id: str | None


@attrs.frozen(slots=True)
class UsagePayload:
    """``realtime:usage``."""

    usage: Mapping[str, Any]
    model: str | None
    response_id: str | None
    session_id: str | None


@attrs.frozen(slots=True)
class ReconnectAttemptPayload:
    """``realtime:reconnect:attempt`` (``attempt`` is 1-based)."""

    attempt: int
    delay_ms: int
    cause: str


@attrs.frozen(slots=True)
class ReconnectSuccessPayload:
    """``realtime:reconnect:success``."""

    attempts: int
    total_ms: int
    cause: str


@attrs.frozen(slots=True)
class ReconnectExhaustedPayload:
    """``realtime:reconnect:exhausted``."""

    attempts: int
    total_ms: int
    cause: str
    last_error: CharivoError


@attrs.frozen(slots=True)
class ErrorPayload:
    """``realtime:error``."""

    error: CharivoError


@attrs.frozen(slots=True)
class EmptyPayload:
    """``tts:audio:start`` / ``tts:audio:end``."""


@attrs.frozen(slots=True)
class LipsyncPayload:
    """``tts:lipsync:update``."""

    rms: float


@attrs.frozen(slots=True)
class AudioDeltaPayload:
    """``realtime:audio:delta``: a chunk of the model's voice (the exact bytes,
    in the session's output format) and the assistant audio item it belongs to."""

    audio: bytes
    item_id: str | None


@attrs.frozen(slots=True)
class SpeechStartPayload:
    """``realtime:user:speech:start``: the service heard the user start speaking."""

    item_id: str | None
    audio_start_ms: int | None


@attrs.frozen(slots=True)
class SpeechStopPayload:
    """``realtime:user:speech:stop``: the service heard the user stop speaking."""

    item_id: str | None
    audio_end_ms: int | None


@attrs.frozen(slots=True)
class TranscriptDeltaPayload:
    """``realtime:user:transcript:delta``: a partial transcript of the user's speech."""

    text: str
    item_id: str | None


@attrs.frozen(slots=True)
class RateLimitsPayload:
    """``realtime:rate_limits``: the service's current rate limits."""

    limits: tuple[Mapping[str, Any], ...]


# The payloads of a streamed response are built once per delta (and per lipsync
# level); these build the very same objects as ``TextPayload(text)``,
# ``LipsyncPayload(rms)`` and ``StatePayload(source)`` without going through the
# generated ``__init__`` (they write the slot the way it does).
_new = object.__new__
_set_text = TextPayload.__dict__["text"].__set__
_set_source = StatePayload.__dict__["_source"].__set__
_set_rms = LipsyncPayload.__dict__["rms"].__set__


def text_payload(text: str) -> TextPayload:
    """``TextPayload(text)``."""
    payload: TextPayload = _new(TextPayload)
    _set_text(payload, text)
    return payload


def lipsync_payload(rms: float) -> LipsyncPayload:
    """``LipsyncPayload(rms)``."""
    payload: LipsyncPayload = _new(LipsyncPayload)
    _set_rms(payload, rms)
    return payload


def state_payload(
    source: RealtimeState | Callable[[], RealtimeState] | StatePieces,
) -> StatePayload:
    """``StatePayload(source)``; ``source`` may also be the captured pieces of a state
    (:data:`StatePieces`)."""
    payload: StatePayload = _new(StatePayload)
    _set_source(payload, source)
    return payload


EMITTED_EVENTS: dict[str, type[Any]] = {
    "realtime:state": StatePayload,
    "realtime:session:start": SessionBoundaryPayload,
    "realtime:session:end": SessionBoundaryPayload,
    "realtime:user:transcript": TextPayload,
    "realtime:assistant:start": AssistantStartPayload,
    "realtime:assistant:delta": TextPayload,
    "realtime:text:delta": TextPayload,
    "realtime:assistant:done": TextPayload,
    "realtime:tool:call": ToolCallPayload,
    "realtime:tool:result": ToolResultPayload,
    "realtime:tool:error": ToolErrorPayload,
    "realtime:usage": UsagePayload,
    "realtime:reconnect:attempt": ReconnectAttemptPayload,
    "realtime:reconnect:success": ReconnectSuccessPayload,
    "realtime:reconnect:exhausted": ReconnectExhaustedPayload,
    "realtime:error": ErrorPayload,
    "tts:audio:start": EmptyPayload,
    "tts:audio:end": EmptyPayload,
    "tts:lipsync:update": LipsyncPayload,
    "realtime:audio:delta": AudioDeltaPayload,
    "realtime:user:speech:start": SpeechStartPayload,
    "realtime:user:speech:stop": SpeechStopPayload,
    "realtime:user:transcript:delta": TranscriptDeltaPayload,
    "realtime:rate_limits": RateLimitsPayload,
}
