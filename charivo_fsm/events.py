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
    "AudioOutputDelta",
    "AudioOutputEnded",
    "AudioOutputStarted",
    "ConnectionLost",
    "ErrorEvent",
    "RateLimitsUpdated",
    "SessionEnded",
    "SessionStarted",
    "StateUpdate",
    "ToolCall",
    "ToolResult",
    "TransportEvent",
    "UserSpeechStarted",
    "UserSpeechStopped",
    "UserTranscript",
    "UserTranscriptDelta",
]


@attrs.frozen(slots=True)
class SessionStarted:
    """The provider confirmed the session (D10: only a live session that is neither
    reconnecting nor patching takes it, and then only to say ``connected``)."""

    type: ClassVar[str] = "session.started"


@attrs.frozen(slots=True)
class SessionEnded:
    """The provider ended the session.  While active this ends it with reason
    ``remote`` (D2); while starting, the start fails (D3)."""

    type: ClassVar[str] = "session.ended"


@attrs.frozen(slots=True)
class ConnectionLost:
    """The link to the provider is gone.  ``cause`` is an opaque string passed
    through (``socket-closed``, ``offline``, ...), ``error`` what broke it, if known.
    While active this starts the reconnect (D6)."""

    type: ClassVar[str] = "connection.lost"
    cause: str
    error: BaseException | None = None


@attrs.frozen(slots=True)
class UserTranscript:
    """The final transcript of the user's speech."""

    type: ClassVar[str] = "user.transcript"
    text: str


@attrs.frozen(slots=True)
class AssistantResponseStarted:
    """The model started a response (the response becomes ``responding``, D7)."""

    type: ClassVar[str] = "assistant.response.started"


@attrs.frozen(slots=True)
class AssistantTextDelta:
    """A piece of the response text (or of the transcript of the spoken answer)."""

    type: ClassVar[str] = "assistant.text.delta"
    text: str


@attrs.frozen(slots=True)
class AssistantResponseCompleted:
    """The end of a response.

    ``status`` is the service's final status: ``completed``, ``cancelled``
    (by the user's ``interrupt()`` or by the service's turn detection: the
    response then ends as ``interrupted``), ``incomplete`` or ``failed``;
    ``reason`` is the service's reason when it gives one (``turn_detected``,
    ``client_cancelled``, ``max_output_tokens``, ...).
    """

    type: ClassVar[str] = "assistant.response.completed"
    text: str = ""
    usage: Mapping[str, Any] | None = None
    model: str | None = None
    response_id: str | None = None
    status: str = "completed"
    reason: str | None = None


@attrs.frozen(slots=True)
class AudioOutputStarted:
    """The model's voice started (emitted as ``tts:audio:start``)."""

    type: ClassVar[str] = "audio.output.started"


@attrs.frozen(slots=True)
class AudioOutputEnded:
    """The model's voice ended (emitted as ``tts:audio:end``)."""

    type: ClassVar[str] = "audio.output.ended"


@attrs.frozen(slots=True)
class AudioOutputDelta:
    """A chunk of the model's voice, exactly as the service sent it.

    ``audio`` is in the session's output format (PCM16 mono little-endian
    24 kHz unless ``output_audio_format`` says otherwise); ``item_id`` names the
    assistant audio item it belongs to (needed to truncate it on barge-in).
    """

    type: ClassVar[str] = "audio.output.delta"
    audio: bytes
    item_id: str | None = None


@attrs.frozen(slots=True)
class UserSpeechStarted:
    """The service's turn detection heard the user start speaking."""

    type: ClassVar[str] = "user.speech.started"
    item_id: str | None = None
    audio_start_ms: int | None = None


@attrs.frozen(slots=True)
class UserSpeechStopped:
    """The service's turn detection heard the user stop speaking."""

    type: ClassVar[str] = "user.speech.stopped"
    item_id: str | None = None
    audio_end_ms: int | None = None


@attrs.frozen(slots=True)
class UserTranscriptDelta:
    """A partial transcript of the user's speech."""

    type: ClassVar[str] = "user.transcript.delta"
    text: str
    item_id: str | None = None


@attrs.frozen(slots=True)
class RateLimitsUpdated:
    """The service's current rate limits (one mapping per limit)."""

    type: ClassVar[str] = "rate_limits.updated"
    limits: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen(slots=True)
class AudioLipsync:
    """The loudness of the voice being played, 0..1 (``tts:lipsync:update``)."""

    type: ClassVar[str] = "audio.lipsync"
    rms: float


@attrs.frozen(slots=True)
class ToolCall:
    """The model calls a tool.  ``call_id`` identifies the call; the manager validates
    ``args``, runs the handler and sends exactly one result (D8)."""

    type: ClassVar[str] = "tool.call"
    name: str
    args: Mapping[str, Any]
    call_id: str | None = None


@attrs.frozen(slots=True)
class ToolResult:
    """A tool result the transport reports (emitted as ``realtime:tool:result``)."""

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
    """An error reported by the transport or the provider (D11: it becomes
    ``last_error`` and one ``realtime:error``; the connection value is kept)."""

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
    | AudioOutputDelta
    | UserSpeechStarted
    | UserSpeechStopped
    | UserTranscriptDelta
    | RateLimitsUpdated
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
        AudioOutputDelta,
        UserSpeechStarted,
        UserSpeechStopped,
        UserTranscriptDelta,
        RateLimitsUpdated,
        ToolCall,
        ToolResult,
        StateUpdate,
        ErrorEvent,
    )
}
