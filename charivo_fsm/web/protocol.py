"""The page protocol of :mod:`charivo_fsm.web`, without sockets.

Everything the backend and the browser page say to each other over the
``/session`` WebSocket is defined here (and documented in ``docs/web.md``):

* :func:`parse_page_message` turns one WebSocket message from the page into a
  :data:`Command`, or raises :class:`PageProtocolError` (which becomes an
  ``error`` message on the socket; the session goes on);
* :func:`event_message` turns one emitted event into the ``event`` message the
  page receives: the :func:`~charivo_fsm.wire.to_wire` payload, with the
  session config (instructions, tool schemas, voice, model...) taken out of
  every state it carries;
* :func:`hello_message`, :func:`done_message`, :func:`error_message` build the
  other messages the backend sends.

Microphone audio arrives as binary messages of raw PCM16 mono little-endian
24 kHz samples (or as base64 text in an ``audio`` message); the model's audio
goes to the page inside ``realtime:audio:delta`` events, as base64 text (the
``to_wire`` shape).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from ..wire import to_wire

__all__ = [
    "AUDIO_FORMAT",
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_TEXT_CHARS",
    "PAGE_MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Audio",
    "Command",
    "PageProtocolError",
    "Played",
    "Simple",
    "Start",
    "Text",
    "check_audio",
    "done_message",
    "error_message",
    "event_message",
    "hello_message",
    "page_state",
    "parse_page_message",
]

PROTOCOL_VERSION: Final = 1
"""Sent in the ``hello`` message; raised when the protocol changes incompatibly."""

AUDIO_FORMAT: Final[Mapping[str, Any]] = {
    "encoding": "pcm16",
    "sampleRate": 24_000,
    "channels": 1,
    "endianness": "little",
}
"""The audio format both ways: the microphone audio the page sends and the
model's audio it receives."""

DEFAULT_MAX_FRAME_BYTES: Final = 256 * 1024
"""A message from the page above this many bytes closes that socket (code 1009)."""

MAX_TEXT_CHARS: Final = 4_000
"""The longest ``text`` message the page may send."""

ErrorCode = Literal[
    "bad_json", "bad_message", "unknown_type", "bad_audio", "command_failed", "overflow"
]


class PageProtocolError(Exception):
    """A message from the page the backend refuses (answered with an ``error`` message)."""

    def __init__(self, code: ErrorCode, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.command = command


@attrs.frozen(slots=True)
class Start:
    """``{"type": "start", "pushToTalk": false}``: start a session."""

    push_to_talk: bool = False
    type: Literal["start"] = "start"


@attrs.frozen(slots=True)
class Simple:
    """A command without arguments: ``stop``, ``interrupt``, ``commit``, ``clear``."""

    type: Literal["stop", "interrupt", "commit", "clear"]


@attrs.frozen(slots=True)
class Text:
    """``{"type": "text", "text": "..."}``: a typed user message."""

    text: str
    type: Literal["text"] = "text"


@attrs.frozen(slots=True)
class Audio:
    """Microphone audio: PCM16 mono little-endian 24 kHz (a binary message, or
    ``{"type": "audio", "audio": "<base64>"}``)."""

    audio: bytes
    type: Literal["audio"] = "audio"


@attrs.frozen(slots=True)
class Played:
    """``{"type": "played", "itemId": "...", "playedMs": 1234}``: how far the page
    has played an assistant audio item (``manager.mark_played``)."""

    item_id: str
    played_ms: int
    type: Literal["played"] = "played"


Command = Start | Simple | Text | Audio | Played
"""One message from the page, parsed."""

_SIMPLE: Final[Mapping[str, Simple]] = {
    name: Simple(name) for name in ("stop", "interrupt", "commit", "clear")
}

# type -> the fields it may carry besides "type" (all of them optional unless
# listed in _REQUIRED)
_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "start": frozenset({"pushToTalk"}),
    "stop": frozenset(),
    "interrupt": frozenset(),
    "commit": frozenset(),
    "clear": frozenset(),
    "text": frozenset({"text"}),
    "audio": frozenset({"audio"}),
    "played": frozenset({"itemId", "playedMs"}),
}
_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "text": ("text",),
    "audio": ("audio",),
    "played": ("itemId", "playedMs"),
}

PAGE_MESSAGE_TYPES: Final = tuple(_FIELDS)
"""Every ``type`` a page message may have."""


def check_audio(audio: bytes, *, command: str = "audio") -> bytes:
    """Microphone audio must be whole PCM16 samples, and not empty."""
    if not audio:
        raise PageProtocolError("bad_audio", "audio message is empty", command=command)
    if len(audio) % 2:
        raise PageProtocolError(
            "bad_audio",
            f"audio must be PCM16 mono 24 kHz (whole 16-bit samples); got {len(audio)} bytes",
            command=command,
        )
    return audio


def parse_page_message(message: str | bytes) -> Command:
    """One WebSocket message from the page as a :data:`Command`.

    A binary message is microphone audio.  A text message is a JSON object whose
    ``type`` is one of :data:`PAGE_MESSAGE_TYPES`, with only that type's fields.
    Anything else raises :class:`PageProtocolError`.
    """
    if isinstance(message, (bytes, bytearray, memoryview)):
        return Audio(check_audio(bytes(message)))
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        raise PageProtocolError("bad_json", "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise PageProtocolError("bad_message", "message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise PageProtocolError("bad_message", 'message must have a string "type"')
    fields = _FIELDS.get(kind)
    if fields is None:
        shown = kind if len(kind) <= 40 else kind[:39] + "…"
        raise PageProtocolError(
            "unknown_type",
            f"unknown message type {shown!r}; expected one of {', '.join(PAGE_MESSAGE_TYPES)}",
        )
    extra = sorted(key for key in data if key != "type" and key not in fields)
    if extra:
        raise PageProtocolError(
            "bad_message", f"{kind}: unknown field {extra[0][:40]!r}", command=kind
        )
    for key in _REQUIRED.get(kind, ()):
        if key not in data:
            raise PageProtocolError("bad_message", f"{kind}: missing field {key!r}", command=kind)
    return _command(kind, data)


def _command(kind: str, data: Mapping[str, Any]) -> Command:
    if kind == "start":
        push_to_talk = data.get("pushToTalk", False)
        if not isinstance(push_to_talk, bool):
            raise PageProtocolError(
                "bad_message", "start: pushToTalk must be true or false", command=kind
            )
        return Start(push_to_talk=push_to_talk)
    if kind == "text":
        text = data["text"]
        if not isinstance(text, str) or not text.strip():
            raise PageProtocolError(
                "bad_message", "text: text must be a non-empty string", command=kind
            )
        if len(text) > MAX_TEXT_CHARS:
            raise PageProtocolError(
                "bad_message", f"text: at most {MAX_TEXT_CHARS} characters", command=kind
            )
        return Text(text)
    if kind == "audio":
        encoded = data["audio"]
        if not isinstance(encoded, str):
            raise PageProtocolError("bad_audio", "audio: expected base64 text", command=kind)
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise PageProtocolError(
                "bad_audio", "audio: expected base64 text", command=kind
            ) from None
        return Audio(check_audio(audio, command=kind))
    if kind == "played":
        item_id, played_ms = data["itemId"], data["playedMs"]
        if not isinstance(item_id, str) or not item_id or len(item_id) > 200:
            raise PageProtocolError(
                "bad_message", "played: itemId must be a non-empty string", command=kind
            )
        if isinstance(played_ms, bool) or not isinstance(played_ms, int) or played_ms < 0:
            raise PageProtocolError(
                "bad_message",
                "played: playedMs must be a non-negative integer (milliseconds)",
                command=kind,
            )
        return Played(item_id, played_ms)
    return _SIMPLE[kind]


# ------------------------------------------------------------------ backend -> page


def page_state(wire_state: Mapping[str, Any]) -> dict[str, Any]:
    """A ``to_wire`` state without ``session.config`` (instructions, tool schemas,
    voice, model): what the page may see of it."""
    state = dict(wire_state)
    session = state.get("session")
    if isinstance(session, Mapping):
        state["session"] = {key: value for key, value in session.items() if key != "config"}
    return state


def event_message(name: str, payload: Any) -> dict[str, Any]:
    """The ``event`` message for one emitted event: ``{"type": "event", "name",
    "payload"}`` with the ``to_wire`` payload, every state in it slimmed by
    :func:`page_state`."""
    wire = to_wire(payload)
    state = wire.get("state")
    if isinstance(state, Mapping):
        wire["state"] = page_state(state)
    return {"type": "event", "name": name, "payload": wire}


def hello_message(
    *, tools: list[str], push_to_talk: bool, max_frame_bytes: int, info: Mapping[str, Any]
) -> dict[str, Any]:
    """The first message on every socket."""
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "audio": dict(AUDIO_FORMAT),
        "tools": tools,
        "pushToTalk": push_to_talk,
        "maxFrameBytes": max_frame_bytes,
        "info": dict(info),
    }


def done_message(command: str) -> dict[str, Any]:
    """A command finished: ``{"type": "done", "command": ...}``."""
    return {"type": "done", "command": command}


def error_message(
    code: ErrorCode, message: str, *, command: str | None = None, error: Any = None
) -> dict[str, Any]:
    """``{"type": "error", "code", "message", "command", "error"}``; ``error`` is the
    engine's error (``to_wire`` shape) when a command failed, else ``null``."""
    return {
        "type": "error",
        "code": code,
        "message": message,
        "command": command,
        "error": None if error is None else to_wire(error),
    }
