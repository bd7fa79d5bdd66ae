"""The data model: state values, configs, characters, tools and state snapshots.

All classes are ``attrs`` frozen slotted value objects.  The state values are
``StrEnum``s, so ``ConnectionState.IDLE == "idle"``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal

import attrs

from .errors import CharivoError, CharivoValidationError

__all__ = [
    "AudioFormat",
    "Character",
    "CharacterVoice",
    "ConnectionState",
    "RealtimeSessionConfig",
    "RealtimeState",
    "RealtimeTool",
    "RealtimeToolContext",
    "RealtimeToolRegistration",
    "ResponseState",
    "ResponseStatus",
    "SessionState",
    "SessionStatus",
    "ToolChoice",
    "ToolHandler",
    "TransportKind",
    "TurnDetection",
    "TurnDetectionMode",
]


class ConnectionState(StrEnum):
    """What the manager knows about the link to the provider."""

    IDLE = "idle"  # no link (before the first start, after a clean end)
    CONNECTING = "connecting"  # connect in flight, or a reconnect in progress
    CONNECTED = "connected"  # the link is up
    DISCONNECTING = "disconnecting"  # a stop is closing the link
    ERROR = "error"  # the session ended in failure


class SessionStatus(StrEnum):
    """Where the session is in its lifecycle."""

    IDLE = "idle"  # never started
    STARTING = "starting"  # start_session is connecting
    ACTIVE = "active"  # live (also while reconnecting or patching)
    STOPPING = "stopping"  # stop_session is closing the link
    STOPPED = "stopped"  # ended (by the user, the remote side or an error)


class ResponseStatus(StrEnum):
    """The assistant's current turn."""

    IDLE = "idle"
    RESPONDING = "responding"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"


TransportKind = Literal["webrtc", "websocket"]
ToolChoice = Literal["auto", "none", "required"]
AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
TurnDetectionMode = Literal["server_vad", "semantic_vad", "manual"]

_TRANSPORTS = ("webrtc", "websocket")
_TOOL_CHOICES = ("auto", "none", "required")
_AUDIO_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
_TURN_MODES = ("server_vad", "semantic_vad", "manual")
_MODALITIES = ("audio", "text")
_EAGERNESS = ("low", "medium", "high", "auto")


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and value not in allowed:
            raise CharivoValidationError(
                f"{attribute.name} must be one of {', '.join(allowed)} (got {value!r})"
            )

    return check


def _optional_type(*types: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    names = " or ".join(t.__name__ for t in types)

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) and bool not in types:
            raise CharivoValidationError(f"{attribute.name} must be {names} (got bool)")
        if not isinstance(value, types):
            raise CharivoValidationError(
                f"{attribute.name} must be {names} (got {type(value).__name__})"
            )

    return check


def _optional_range(
    low: float, high: float, *, integral: bool = False
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    kinds: tuple[type, ...] = (int,) if integral else (int, float)
    what = "an integer" if integral else "a number"

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, kinds)
            or not low <= value <= high  # type: ignore[operator]
        ):
            raise CharivoValidationError(
                f"{attribute.name} must be {what} in {low:g}..{high:g} (got {value!r})"
            )

    return check


def _bool(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise CharivoValidationError(
            f"{attribute.name} must be bool (got {type(value).__name__})"
        )


@attrs.frozen(slots=True)
class TurnDetection:
    """How the service decides that the user's turn is over.

    * ``server_vad``: voice activity detection on the input audio
      (``threshold`` 0..1, ``prefix_padding_ms``, ``silence_duration_ms``);
    * ``semantic_vad``: the service judges from the words (``eagerness``:
      ``low``, ``medium``, ``high`` or ``auto``);
    * ``manual``: push to talk, no turn detection: the app ends the user's
      turn with ``manager.commit_audio()``.

    ``create_response``: the service answers at the end of each detected
    turn; ``interrupt_response``: speech detected while the model talks
    cancels its response (barge-in).  Fields left ``None`` take the service's
    defaults.
    """

    mode: TurnDetectionMode = attrs.field(default="server_vad", validator=_one_of(_TURN_MODES))
    threshold: float | None = attrs.field(default=None, validator=_optional_range(0.0, 1.0))
    prefix_padding_ms: int | None = attrs.field(
        default=None, validator=_optional_range(0, 60_000, integral=True)
    )
    silence_duration_ms: int | None = attrs.field(
        default=None, validator=_optional_range(0, 60_000, integral=True)
    )
    eagerness: str | None = attrs.field(default=None, validator=_one_of(_EAGERNESS))
    create_response: bool = attrs.field(default=True, validator=_bool)
    interrupt_response: bool = attrs.field(default=True, validator=_bool)

    def __attrs_post_init__(self) -> None:
        if self.mode is None:
            raise CharivoValidationError("mode must be one of " + ", ".join(_TURN_MODES))
        if self.eagerness is not None and self.mode != "semantic_vad":
            raise CharivoValidationError("eagerness applies only to mode semantic_vad")
        if self.mode != "server_vad" and (
            self.threshold is not None
            or self.prefix_padding_ms is not None
            or self.silence_duration_ms is not None
        ):
            raise CharivoValidationError(
                "threshold, prefix_padding_ms and silence_duration_ms apply only to "
                "mode server_vad"
            )


def _modalities(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise CharivoValidationError(
            "output_modalities must be a sequence of \"audio\"/\"text\" "
            f"(got {type(value).__name__})"
        )
    items = tuple(value)
    for item in items:
        if item not in _MODALITIES:
            raise CharivoValidationError(
                f"output_modalities items must be audio or text (got {item!r})"
            )
    if not items:
        raise CharivoValidationError("output_modalities must not be empty")
    if len(set(items)) != len(items):
        raise CharivoValidationError("output_modalities must not repeat a modality")
    return items


def _turn_detection(value: Any) -> Any:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {f.name for f in attrs.fields(TurnDetection)})
        if unknown:
            raise CharivoValidationError(f'turn_detection: unknown key "{unknown[0]}"')
        return TurnDetection(**value)
    return value


@attrs.frozen(slots=True)
class CharacterVoice:
    """How a character sounds: ``voice_id`` is the provider's voice name (``marin``,
    ``alloy``, ...); ``rate``, ``pitch`` and ``volume`` are kept for frontends that use them."""

    voice_id: str | None = attrs.field(default=None, validator=_optional_type(str))
    rate: float | None = attrs.field(default=None, validator=_optional_type(int, float))
    pitch: float | None = attrs.field(default=None, validator=_optional_type(int, float))
    volume: float | None = attrs.field(default=None, validator=_optional_type(int, float))


@attrs.frozen(slots=True)
class Character:
    """Who the model plays.  ``name``, ``description`` and ``personality`` make the
    instructions when the config sets none, ``voice.voice_id`` the voice when the config
    sets none (:func:`~charivo_fsm.build_realtime_session_config`); ``id`` becomes
    ``state.session.character_id``."""

    id: str | None = attrs.field(default=None, validator=_optional_type(str))
    name: str | None = attrs.field(default=None, validator=_optional_type(str))
    description: str | None = attrs.field(default=None, validator=_optional_type(str))
    personality: str | None = attrs.field(default=None, validator=_optional_type(str))
    avatar: str | None = attrs.field(default=None, validator=_optional_type(str))
    voice: CharacterVoice | None = attrs.field(
        default=None, validator=_optional_type(CharacterVoice)
    )


@attrs.frozen(slots=True)
class RealtimeTool:
    """A function tool definition; ``parameters`` is a JSON Schema object."""

    name: str = attrs.field(validator=_optional_type(str))
    description: str | None = attrs.field(default=None, validator=_optional_type(str))
    parameters: Mapping[str, Any] = attrs.field(
        factory=lambda: {"type": "object", "properties": {}},
        validator=_optional_type(Mapping),
    )
    type: Literal["function"] = attrs.field(default="function", validator=_one_of(("function",)))

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise CharivoValidationError("name must be a non-empty string")


def _tools_tuple(value: Iterable[RealtimeTool] | None) -> tuple[RealtimeTool, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(slots=True)
class RealtimeSessionConfig:
    """A session config; every field is optional (``None`` means "not specified")."""

    provider: str | None = attrs.field(default=None, validator=_optional_type(str))
    transport: TransportKind | None = attrs.field(default=None, validator=_one_of(_TRANSPORTS))
    voice: str | None = attrs.field(default=None, validator=_optional_type(str))
    model: str | None = attrs.field(default=None, validator=_optional_type(str))
    instructions: str | None = attrs.field(default=None, validator=_optional_type(str))
    temperature: float | None = attrs.field(default=None, validator=_optional_type(int, float))
    max_tokens: int | None = attrs.field(default=None, validator=_optional_type(int))
    tools: tuple[RealtimeTool, ...] | None = attrs.field(default=None, converter=_tools_tuple)
    tool_choice: ToolChoice | None = attrs.field(default=None, validator=_one_of(_TOOL_CHOICES))
    turn_detection: TurnDetection | None = attrs.field(
        default=None, converter=_turn_detection, validator=_optional_type(TurnDetection)
    )
    input_audio_format: AudioFormat | None = attrs.field(
        default=None, validator=_one_of(_AUDIO_FORMATS)
    )
    output_audio_format: AudioFormat | None = attrs.field(
        default=None, validator=_one_of(_AUDIO_FORMATS)
    )
    output_modalities: tuple[str, ...] | None = attrs.field(default=None, converter=_modalities)
    input_transcription_model: str | None = attrs.field(
        default=None, validator=_optional_type(str)
    )

    def __attrs_post_init__(self) -> None:
        if self.input_transcription_model == "":
            raise CharivoValidationError("input_transcription_model must not be empty")
        if self.tools is not None:
            for index, tool in enumerate(self.tools):
                if not isinstance(tool, RealtimeTool):
                    raise CharivoValidationError(
                        f"tools[{index}] must be a RealtimeTool (got {type(tool).__name__})"
                    )


@attrs.frozen(slots=True)
class SessionState:
    """The session part of :class:`RealtimeState`: its ``status``, the ``config`` the
    transport accepted last (``None`` until a start commits, and again once the
    session ends) and the current character's id."""

    status: SessionStatus = SessionStatus.IDLE
    config: RealtimeSessionConfig | None = None
    character_id: str | None = None


@attrs.frozen(slots=True)
class ResponseState:
    """The assistant's current turn: its ``status`` and the text so far."""

    status: ResponseStatus = ResponseStatus.IDLE
    text: str = ""


@attrs.frozen(slots=True)
class RealtimeState:
    """An immutable snapshot of the manager's state."""

    connection: ConnectionState = ConnectionState.IDLE
    session: SessionState = SessionState()
    response: ResponseState = ResponseState()
    last_error: CharivoError | None = None


@attrs.frozen(slots=True)
class RealtimeToolContext:
    """What a tool handler receives besides its arguments."""

    character: Character | None
    state: RealtimeState
    call_id: str


ToolHandler = Callable[[dict[str, Any], RealtimeToolContext], Awaitable[Mapping[str, Any]]]


def _positive_timeout(_inst: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CharivoValidationError(f"timeout must be a non-negative number (got {value!r})")


@attrs.frozen(slots=True)
class RealtimeToolRegistration:
    """A tool definition with its async handler and optional timeout (seconds)."""

    definition: RealtimeTool = attrs.field(validator=_optional_type(RealtimeTool))
    handler: ToolHandler
    timeout: float | None = attrs.field(default=None, validator=_positive_timeout)
