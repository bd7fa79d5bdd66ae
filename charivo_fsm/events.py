"""Transport events: what a :class:`~charivo_fsm.RealtimeTransport` reports.

Each event is a frozen attrs object; its wire name is the class variable
``type`` (``SessionStarted.type == "session.started"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from .model import ResponseStatus

__all__ = [
    "EVENT_TYPES",
    "AssistantResponseCompleted",
    "AssistantResponseStarted",
    "AssistantTextDelta",
    "AudioLipsync",
    "AudioOutputEnded",
    "AudioOutputStarted",
    "ConnectionLost",
    "ErrorEvent",
    "SessionEnded",
    "SessionStarted",
    "StateUpdate",
    "ToolCall",
    "ToolResult",
    "TransportEvent",
    "UserTranscript",
]


@attrs.frozen(slots=True)
class SessionStarted:
    type: ClassVar[str] = "session.started"


@attrs.frozen(slots=True)
class SessionEnded:
    type: ClassVar[str] = "session.ended"


@attrs.frozen(slots=True)
class ConnectionLost:
    type: ClassVar[str] = "connection.lost"
    cause: str
    error: BaseException | None = None


@attrs.frozen(slots=True)
class UserTranscript:
    type: ClassVar[str] = "user.transcript"
    text: str


@attrs.frozen(slots=True)
class AssistantResponseStarted:
    type: ClassVar[str] = "assistant.response.started"


@attrs.frozen(slots=True)
class AssistantTextDelta:
    type: ClassVar[str] = "assistant.text.delta"
    text: str


@attrs.frozen(slots=True)
class AssistantResponseCompleted:
    type: ClassVar[str] = "assistant.response.completed"
    text: str = ""
    usage: Mapping[str, Any] | None = None
    model: str | None = None
    response_id: str | None = None


@attrs.frozen(slots=True)
class AudioOutputStarted:
    type: ClassVar[str] = "audio.output.started"


@attrs.frozen(slots=True)
class AudioOutputEnded:
    type: ClassVar[str] = "audio.output.ended"


@attrs.frozen(slots=True)
class AudioLipsync:
    type: ClassVar[str] = "audio.lipsync"
    rms: float


@attrs.frozen(slots=True)
class ToolCall:
    type: ClassVar[str] = "tool.call"
    name: str
    args: Mapping[str, Any]
    call_id: str | None = None


@attrs.frozen(slots=True)
class ToolResult:
    type: ClassVar[str] = "tool.result"
    name: str
    output: Mapping[str, Any]
    call_id: str | None = None


@attrs.frozen(slots=True)
class StateUpdate:
    """A transport's view of the response (D9: nothing else may be set)."""

    type: ClassVar[str] = "state"
    response_status: ResponseStatus | None = None
    response_text: str | None = None


@attrs.frozen(slots=True)
class ErrorEvent:
    type: ClassVar[str] = "error"
    error: BaseException


TransportEvent = (
    SessionStarted
    | SessionEnded
    | ConnectionLost
    | UserTranscript
    | AssistantResponseStarted
    | AssistantTextDelta
    | AssistantResponseCompleted
    | AudioOutputStarted
    | AudioOutputEnded
    | AudioLipsync
    | ToolCall
    | ToolResult
    | StateUpdate
    | ErrorEvent
)

EVENT_TYPES: dict[str, type[TransportEvent]] = {
    cls.type: cls
    for cls in (
        SessionStarted,
        SessionEnded,
        ConnectionLost,
        UserTranscript,
        AssistantResponseStarted,
        AssistantTextDelta,
        AssistantResponseCompleted,
        AudioOutputStarted,
        AudioOutputEnded,
        AudioLipsync,
        ToolCall,
        ToolResult,
        StateUpdate,
        ErrorEvent,
    )
}
