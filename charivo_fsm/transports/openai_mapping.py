"""The OpenAI Realtime mapping: what each transport call sends, what each server
event becomes, the ``session.update`` built from a config, and the audio helpers.

Everything here is data and pure functions; :mod:`.openai_protocol` applies
the rules and :mod:`.openai` does the I/O.  The public names are re-exported
by :mod:`charivo_fsm.transports.openai`.
"""

from __future__ import annotations

import math
import operator
import re
import sys
import warnings
from array import array
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import attrs

from ..model import RealtimeSessionConfig, TurnDetection

__all__ = [
    "AUDIO_FORMATS",
    "CLIENT_ROUTES",
    "IGNORED_SERVER_EVENTS",
    "MAX_APPEND_BYTES",
    "SERVER_ROUTES",
    "AudioFormatSpec",
    "Route",
    "audio_level",
    "build_session_update",
    "g711_rms",
    "mapping_table_markdown",
    "pcm16_rms",
    "split_audio",
]


# ------------------------------------------------------------------ the mapping table


@attrs.frozen(slots=True)
class Route:
    """One row of the mapping table.

    For :data:`CLIENT_ROUTES`, ``source`` is a transport call and ``produces``
    the client events it sends, in order.  For :data:`SERVER_ROUTES`,
    ``source`` is a server event type (or, with ``dispatch=False``, a socket
    condition) and ``produces`` the transport events it may yield.
    """

    source: str
    produces: tuple[str, ...]
    note: str = ""
    dispatch: bool = True


CLIENT_ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "connect(config)",
        ("session.update",),
        "opens the socket; returns after the matching `session.updated`, then emits"
        " `SessionStarted`; starts a new (empty) conversation history",
    ),
    Route(
        "update_session(config)",
        ("session.update",),
        "returns after the matching `session.updated`; an `error` naming its `event_id`"
        " raises `CharivoProviderError`",
    ),
    Route(
        "recover(config)",
        ("session.update", "conversation.item.create"),
        "drops the old socket, opens a new one, re-sends the config and, once it is"
        " acknowledged, replays the conversation history (one item each, at most"
        " `max_replay_items`)",
    ),
    Route(
        "disconnect()",
        (),
        "close frame; returns after the server's close frame or `close_timeout`; idempotent",
    ),
    Route(
        "send_text(text)",
        ("conversation.item.create", "response.create"),
        "a user `message` item with one `input_text` part; `response.create` waits while"
        " a response is in flight",
    ),
    Route(
        "send_audio(audio)",
        ("input_audio_buffer.append",),
        "base64 of the bytes, in the session's input format, split into appends of at"
        " most 3 MiB each",
    ),
    Route(
        "send_tool_result(call_id, output)",
        ("conversation.item.create", "response.create"),
        "a `function_call_output` item (`output` JSON-encoded) at once; one"
        " `response.create` per tool-calling response, after its `response.done` and"
        " all its calls' outputs",
    ),
    Route(
        "interrupt()",
        ("response.cancel",),
        "only while a response is in flight (with its `response_id` when known);"
        " otherwise nothing is sent",
    ),
    Route(
        "commit_audio()",
        ("input_audio_buffer.commit", "response.create"),
        "push to talk; `response.create` waits while a response is in flight",
    ),
    Route("clear_audio()", ("input_audio_buffer.clear",), ""),
    Route(
        "truncate_audio(item_id, audio_end_ms)",
        ("conversation.item.truncate",),
        "`content_index` 0; `audio_end_ms` clamped to the audio received for the item;"
        " an unknown item raises `CharivoValidationError`",
    ),
)
"""Transport call → client events sent."""

SERVER_ROUTES: Final[tuple[Route, ...]] = (
    Route("session.created", (), "internal: remembers the session's model"),
    Route("session.updated", (), "internal: completes the oldest pending `session.update`"),
    Route("response.created", ("AssistantResponseStarted",), "a response is in flight"),
    Route("response.output_text.delta", ("AssistantTextDelta",)),
    Route("response.output_audio_transcript.delta", ("AssistantTextDelta",)),
    Route(
        "response.output_audio.delta",
        ("AudioOutputStarted", "AudioOutputDelta", "AudioLipsync"),
        "`AudioOutputStarted` for the first delta of a response; the decoded bytes and"
        " `item_id`; `rms` of the chunk, 0..1 (PCM16 and G.711)",
    ),
    Route("response.output_audio.done", ("AudioOutputEnded",)),
    Route(
        "response.function_call_arguments.done",
        ("ToolCall",),
        "arguments that are not a JSON object: warning, no event, and a"
        ' `{"success": false, "error": ...}` output is sent back',
    ),
    Route(
        "response.done",
        ("AssistantResponseCompleted",),
        "`text` = the output items' text/transcripts, `usage` = `response.usage`,"
        " `status`/`reason` from the response; also `AudioOutputEnded` if audio was"
        " still open and `ErrorEvent` if `status` is `failed`; ends the response in flight",
    ),
    Route(
        "input_audio_buffer.speech_started",
        ("UserSpeechStarted",),
        "`item_id`, `audio_start_ms`",
    ),
    Route(
        "input_audio_buffer.speech_stopped",
        ("UserSpeechStopped",),
        "`item_id`, `audio_end_ms`",
    ),
    Route(
        "input_audio_buffer.committed",
        (),
        "internal: places the user's audio turn in the replay history",
    ),
    Route("conversation.item.input_audio_transcription.completed", ("UserTranscript",)),
    Route("conversation.item.input_audio_transcription.delta", ("UserTranscriptDelta",)),
    Route(
        "conversation.item.input_audio_transcription.failed",
        ("ErrorEvent",),
        "`CharivoProviderError` with the error's code and type",
    ),
    Route("rate_limits.updated", ("RateLimitsUpdated",), "one mapping per limit"),
    Route(
        "error",
        ("ErrorEvent",),
        "`CharivoProviderError(message, provider_code, provider_type, param)`; an error"
        " naming a pending `session.update` fails that call instead;"
        " `conversation_already_has_active_response` re-queues the `response.create`"
        " and `response_cancel_not_active` is only logged",
    ),
    Route(
        "(socket closed, close frame or failed ping)",
        ("ConnectionLost",),
        '`cause="socket-closed"`; not after `disconnect()`',
        dispatch=False,
    ),
)
"""Server event → transport events."""

IGNORED_SERVER_EVENTS: Final[frozenset[str]] = frozenset(
    {
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.output_audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
    }
)
"""Server events of the GA protocol that carry nothing for the manager (debug-logged)."""


def handler_name(event_type: str) -> str:
    """The name of the method that handles ``event_type`` (``_on_`` + snake case)."""
    return "_on_" + re.sub(r"[^a-z0-9]+", "_", event_type)


def mapping_table_markdown() -> str:
    """Render :data:`CLIENT_ROUTES` and :data:`SERVER_ROUTES` as two Markdown tables."""

    def cell(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{item}`" for item in items) if items else "—"

    lines = [
        "| transport call | client events sent | notes |",
        "|---|---|---|",
    ]
    lines += [f"| `{r.source}` | {cell(r.produces)} | {r.note} |" for r in CLIENT_ROUTES]
    lines += [
        "",
        "| server event | transport events | notes |",
        "|---|---|---|",
    ]
    for r in SERVER_ROUTES:
        source = f"`{r.source}`" if r.dispatch else r.source
        lines.append(f"| {source} | {cell(r.produces)} | {r.note} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ session.update


@attrs.frozen(slots=True)
class AudioFormatSpec:
    """One audio format of the session: its GA wire shape and its byte rate."""

    name: str
    wire: Mapping[str, Any]
    bytes_per_ms: int
    sample_width: int


AUDIO_FORMATS: Final[Mapping[str, AudioFormatSpec]] = {
    "pcm16": AudioFormatSpec("pcm16", {"type": "audio/pcm", "rate": 24_000}, 48, 2),
    "g711_ulaw": AudioFormatSpec("g711_ulaw", {"type": "audio/pcmu"}, 8, 1),
    "g711_alaw": AudioFormatSpec("g711_alaw", {"type": "audio/pcma"}, 8, 1),
}
"""Config value → format: PCM16 mono 24 kHz (48 bytes a millisecond) or G.711 at
8 kHz (8 bytes a millisecond)."""


def plain(value: Any) -> Any:
    """A JSON-ready deep copy: mappings become dicts, sequences lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _turn_detection(turn: TurnDetection) -> dict[str, Any] | None:
    if turn.mode == "manual":
        return None  # no turn detection: push to talk
    shape: dict[str, Any] = {"type": turn.mode}
    for name in ("threshold", "prefix_padding_ms", "silence_duration_ms", "eagerness"):
        value = getattr(turn, name)
        if value is not None:
            shape[name] = value
    shape["create_response"] = turn.create_response
    shape["interrupt_response"] = turn.interrupt_response
    return shape


def build_session_update(
    config: RealtimeSessionConfig,
    *,
    event_id: str | None = None,
    transcription_model: str | None = None,
) -> dict[str, Any]:
    """The ``session.update`` client event (GA shape) for ``config``.

    Only fields the config specifies are sent: ``instructions``;
    ``output_modalities`` (``["audio"]`` or ``["text"]``: the service cannot do
    both, and audio always comes with its transcript, so ``("audio", "text")``
    is sent as ``["audio"]``); the voice as ``audio.output.voice``; the audio
    formats as ``audio.input.format`` / ``audio.output.format``;
    ``turn_detection`` as ``audio.input.turn_detection`` (mode ``manual`` is
    ``null``: push to talk); ``input_transcription_model`` (or else the
    transport's ``transcription_model``) as ``audio.input.transcription.model``;
    ``tools`` as function tools, ``tool_choice`` and ``max_tokens`` as
    ``max_output_tokens``.  ``model`` travels in the URL (the GA interface
    does not allow changing it by ``session.update``); ``temperature`` has no
    GA session field and is not sent.
    """
    session: dict[str, Any] = {"type": "realtime"}
    if config.output_modalities is not None:
        session["output_modalities"] = (
            ["audio"] if "audio" in config.output_modalities else ["text"]
        )
    if config.instructions is not None:
        session["instructions"] = config.instructions
    audio_in: dict[str, Any] = {}
    if config.input_audio_format is not None:
        audio_in["format"] = dict(AUDIO_FORMATS[config.input_audio_format].wire)
    model = config.input_transcription_model or transcription_model
    if model is not None:
        audio_in["transcription"] = {"model": model}
    if config.turn_detection is not None:
        audio_in["turn_detection"] = _turn_detection(config.turn_detection)
    audio_out: dict[str, Any] = {}
    if config.output_audio_format is not None:
        audio_out["format"] = dict(AUDIO_FORMATS[config.output_audio_format].wire)
    if config.voice is not None:
        audio_out["voice"] = config.voice
    audio = {side: shape for side, shape in (("input", audio_in), ("output", audio_out)) if shape}
    if audio:
        session["audio"] = audio
    if config.tools is not None:
        tools = []
        for tool in config.tools:
            entry: dict[str, Any] = {"type": "function", "name": tool.name}
            if tool.description is not None:
                entry["description"] = tool.description
            entry["parameters"] = plain(tool.parameters)
            tools.append(entry)
        session["tools"] = tools
    if config.tool_choice is not None:
        session["tool_choice"] = config.tool_choice
    if config.max_tokens is not None:
        session["max_output_tokens"] = config.max_tokens
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return event


# ------------------------------------------------------------------ audio

MAX_APPEND_BYTES: Final = 3 * 1024 * 1024
"""Raw bytes per ``input_audio_buffer.append``: 3 MiB become 4 MiB of base64,
far below the service's 15 MiB a message.  A multiple of 6, so every chunk but
the last holds whole 16-bit samples and base64-encodes without padding."""


def split_audio(audio: bytes, limit: int = MAX_APPEND_BYTES) -> Iterator[bytes]:
    """``audio`` in chunks of at most ``limit`` bytes (``limit`` must be even)."""
    view = memoryview(audio)
    for start in range(0, len(view), limit):
        yield bytes(view[start : start + limit])


_NATIVE_RMS: Callable[[bytes, int], int] | None = None
try:  # the C level of the standard library, where it still is (CPython < 3.13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    if sys.byteorder == "little":
        _NATIVE_RMS = audioop.rms
except ImportError:  # pragma: no cover - Python 3.13+
    pass


def pcm16_rms(pcm: bytes) -> float:
    """The RMS level of little-endian signed 16-bit PCM, normalised to 0..1.

    This runs for every audio delta the model sends (the lip-sync level), so it
    must not loop over samples in Python: on CPython before 3.13 ``audioop.rms``
    computes it in C (the integer part of the exact RMS, off by less than 1/32768);
    elsewhere the exact sum of squares comes from ``map`` over an ``array`` (about
    20× slower).  A trailing odd byte is ignored.
    """
    usable = len(pcm) - (len(pcm) % 2)
    if usable <= 0:
        return 0.0
    if _NATIVE_RMS is not None:
        level = _NATIVE_RMS(pcm if usable == len(pcm) else pcm[:usable], 2)
        return min(1.0, level / 32768.0)
    samples = array("h")
    samples.frombytes(pcm[:usable])
    if sys.byteorder == "big":  # pragma: no cover - little-endian machines only in CI
        samples.byteswap()
    total = sum(map(operator.mul, samples, samples))
    return min(1.0, math.sqrt(total / len(samples)) / 32768.0)


def _ulaw_sample(code: int) -> int:
    value = ~code & 0xFF
    magnitude = (((value & 0x0F) << 3) + 0x84) << ((value >> 4) & 0x07)
    magnitude -= 0x84
    return -magnitude if value & 0x80 else magnitude


def _alaw_sample(code: int) -> int:
    value = code ^ 0x55
    exponent = (value >> 4) & 0x07
    magnitude = ((value & 0x0F) << 4) + 8
    if exponent:
        magnitude = (magnitude + 0x100) << (exponent - 1)
    return magnitude if value & 0x80 else -magnitude


ULAW_TO_LINEAR: Final[tuple[int, ...]] = tuple(_ulaw_sample(code) for code in range(256))
"""G.711 μ-law byte → 16-bit linear sample."""
ALAW_TO_LINEAR: Final[tuple[int, ...]] = tuple(_alaw_sample(code) for code in range(256))
"""G.711 A-law byte → 16-bit linear sample."""
_SQUARES: Final[Mapping[str, tuple[int, ...]]] = {
    "g711_ulaw": tuple(s * s for s in ULAW_TO_LINEAR),
    "g711_alaw": tuple(s * s for s in ALAW_TO_LINEAR),
}


def g711_rms(data: bytes, law: str = "g711_ulaw") -> float:
    """The RMS level of G.711 audio (``law``: ``g711_ulaw`` or ``g711_alaw``), 0..1.

    Each byte's squared linear value comes from a 256-entry table, summed by
    ``map`` in C.
    """
    if not data:
        return 0.0
    squares = _SQUARES[law]
    total = sum(map(squares.__getitem__, data))
    return min(1.0, math.sqrt(total / len(data)) / 32768.0)


def audio_level(audio: bytes, audio_format: str) -> float:
    """The lip-sync level (RMS, 0..1) of a chunk in ``audio_format``."""
    if audio_format == "pcm16":
        return pcm16_rms(audio)
    return g711_rms(audio, audio_format)
