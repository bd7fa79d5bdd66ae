"""The local realtime service's rules, without sockets: one connection's session,
conversation, input audio buffer with voice activity detection, and responses.

:class:`ServiceSession` takes a client event (a parsed JSON object) and returns
the server events that answer it at once; a response that starts is left in
:attr:`ServiceSession.response` (a
:class:`~charivo_fsm.testing.service_response.ResponseRun`) for the I/O shell to
stream.  The shell (:mod:`charivo_fsm.testing.server`) serialises the two, so
the rules never see two things happen at once.  What the model says is
scripted by a :class:`Script` shared by every connection of a server.

The rules follow the GA Realtime interface and the real service's refusals
(error codes and messages as the service sends them); the module
documentation of :mod:`charivo_fsm.testing.server` lists them.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .audio import FRAME_MS, AudioFormat, frame_levels
from .service_response import Plan, ResponseRun, event, new_id, split_words

__all__ = [
    "DEFAULT_TOOL_TRIGGERS",
    "DEFAULT_TURN_DETECTION",
    "MEMORY_CUE",
    "Script",
    "ServiceError",
    "ServiceSession",
    "ToolTrigger",
    "default_reply",
    "placeholder_transcript",
]


@attrs.frozen(slots=True)
class ToolTrigger:
    """When a user message contains ``keyword`` (case-insensitive) and the session
    declares a tool called ``name``, the next response calls it with ``arguments``."""

    keyword: str
    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)


DEFAULT_TOOL_TRIGGERS: tuple[ToolTrigger, ...] = (
    ToolTrigger("weather", "get_weather", {"city": "Paris"}),
)

MEMORY_CUE = re.compile(r"what did i say|remember", re.IGNORECASE)
"""A user message matching this is answered from the conversation's memory."""


def default_reply(text: str) -> str:
    """The assistant's answer to a user message ``text``: ``"You said: <text>"``."""
    return f"You said: {text}"


def placeholder_transcript(ms: float) -> str:
    """What the server hears in ``ms`` milliseconds of user audio: ``"(spoken audio, 1.2 s)"``."""
    return f"(spoken audio, {ms / 1000:.1f} s)"


@attrs.define(slots=True)
class Script:
    """The scripted model, shared by every connection of a server (mutable at any time).

    ``transcribe`` maps committed user audio (raw bytes in the session's input
    format) to what the user said; ``None`` hears :func:`placeholder_transcript`.
    ``audio`` makes ``["audio"]`` the sessions' default ``output_modalities``
    (the real service's default) instead of ``["text"]``.
    ``error_event_ids``: errors name the offending client event in
    ``error.event_id`` (the real service often sends ``null`` there).
    ``bad_tool_arguments``: how many coming tool calls get arguments that are
    not valid JSON.
    """

    tool_triggers: tuple[ToolTrigger, ...] = DEFAULT_TOOL_TRIGGERS
    reply: Callable[[str], str] = default_reply
    transcribe: Callable[[bytes], str] | None = None
    audio: bool = False
    error_event_ids: bool = True
    bad_tool_arguments: int = 0


class ServiceError(Exception):
    """A client event the service refuses; becomes an ``error`` event."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type


DEFAULT_TURN_DETECTION: Mapping[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
"""The GA default: server VAD (also what a ``server_vad`` update leaves out)."""

_SEMANTIC_DEFAULTS: Mapping[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
_EAGERNESS_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 250}
_LEVEL_PER_THRESHOLD = 0.1
"""Speech is a 20 ms frame whose RMS level is above ``threshold`` × this (of full scale)."""

_SESSION_KEYS = frozenset(
    {
        "type",
        "audio",
        "include",
        "instructions",
        "max_output_tokens",
        "model",
        "output_modalities",
        "parallel_tool_calls",
        "prompt",
        "reasoning",
        "tool_choice",
        "tools",
        "tracing",
        "truncation",
    }
)
MIN_COMMIT_MS = 100


def _missing(param: str) -> ServiceError:
    return ServiceError(
        "missing_required_parameter", f"Missing required parameter: '{param}'.", param=param
    )


def _check_modalities(value: object, param: str) -> None:
    if value is None:
        return
    if value not in (["audio"], ["text"]):
        raise ServiceError(
            "invalid_value",
            f"Invalid value: {value!r}. Supported combinations are: ['text'] and ['audio'].",
            param=param,
        )


@attrs.define(slots=True)
class _Input:
    """The input audio buffer and the voice activity detector's state."""

    fmt: AudioFormat = attrs.field(factory=AudioFormat)
    data: bytearray = attrs.field(factory=bytearray)
    """Audio not yet committed (in ``fmt``)."""
    pending: bytearray = attrs.field(factory=bytearray)
    """Received but not yet analysed (less than one frame)."""
    end_ms: float = 0.0
    """Where ``data`` ends, in milliseconds of all audio written during the session."""
    speaking: bool = False
    item_id: str | None = None
    silence_ms: int = 0

    @property
    def start_ms(self) -> float:
        return self.end_ms - len(self.data) / self.fmt.bytes_per_ms

    def keep_from(self, ms: float) -> None:
        """Drop the buffered audio before ``ms``."""
        drop = int((ms - self.start_ms) * self.fmt.bytes_per_ms)
        drop -= drop % self.fmt.sample_width
        if drop > 0:
            del self.data[:drop]

    def flush(self) -> None:
        """Move unanalysed audio into the buffer."""
        self.end_ms += len(self.pending) / self.fmt.bytes_per_ms
        self.data += self.pending
        self.pending.clear()

    def reset(self) -> None:
        self.data.clear()
        self.pending.clear()
        self.speaking, self.item_id, self.silence_ms = False, None, 0


class ServiceSession:
    """One connection's server-side state and rules; see the module documentation."""

    def __init__(self, script: Script, model: str = "gpt-realtime") -> None:
        self.script = script
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        pcm = AudioFormat().wire()
        self.session: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": model,
            "output_modalities": ["audio"] if script.audio else ["text"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "audio": {
                "input": {
                    "format": pcm,
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(DEFAULT_TURN_DETECTION),
                },
                "output": {"format": dict(pcm), "voice": "alloy", "speed": 1.0},
            },
        }
        self.items: list[dict[str, Any]] = []
        """The conversation: every item, in order (the same objects the events showed)."""
        self.response: ResponseRun | None = None
        """The response in progress, if any."""
        self.audio_present = False
        """Whether the session produced assistant audio (the voice is then fixed)."""
        self.input = _Input()
        self._heard: dict[str, str] = {}  # user audio item id -> what the model heard
        self._audio_ms: dict[str, int] = {}  # assistant item id -> audio produced (ms)
        self._word_ends: dict[str, list[tuple[int, int]]] = {}  # id -> [(end ms, chars)]
        self._user_audio_ms = 0.0
        self._handlers: dict[str, Callable[[Mapping[str, Any]], list[dict[str, Any]]]] = {
            "session.update": self._session_update,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.truncate": self._item_truncate,
            "input_audio_buffer.append": self._audio_append,
            "input_audio_buffer.commit": self._audio_commit,
            "input_audio_buffer.clear": self._audio_clear,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    # ------------------------------------------------------------ entry points

    def opening(self) -> list[dict[str, Any]]:
        """What the service sends on connect: ``session.created``."""
        return [event("session.created", session=copy.deepcopy(self.session))]

    def handle(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events that answer ``client_event`` now (an ``error`` for a refusal)."""
        event_type = client_event.get("type")
        about = client_event.get("event_id")
        handler = self._handlers.get(event_type) if isinstance(event_type, str) else None
        try:
            if handler is None:
                raise ServiceError(
                    "unknown_event", f"Unsupported client event type: {str(event_type)[:60]}"
                )
            return handler(client_event)
        except ServiceError as refusal:
            return [self.error(refusal, about if isinstance(about, str) else None)]

    def error(self, refusal: ServiceError, about: str | None) -> dict[str, Any]:
        """The ``error`` event for ``refusal`` of the client event ``about``."""
        return event(
            "error",
            error={
                "type": refusal.error_type,
                "code": refusal.code,
                "message": refusal.message,
                "param": refusal.param,
                "event_id": about if self.script.error_event_ids else None,
            },
        )

    # ------------------------------------------------------------ session

    def _session_update(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        update = client_event.get("session")
        if not isinstance(update, Mapping):
            raise _missing("session")
        if "type" not in update:
            raise _missing("session.type")
        if update["type"] != "realtime":
            raise ServiceError(
                "invalid_value",
                f"Invalid value: '{str(update['type'])[:40]}'. Supported values are: 'realtime'.",
                param="session.type",
            )
        for key in update:
            if key not in _SESSION_KEYS:
                name = f"session.{str(key)[:40]}"
                raise ServiceError("unknown_parameter", f"Unknown parameter: '{name}'.", param=name)
        _check_modalities(update.get("output_modalities"), "session.output_modalities")
        merged = copy.deepcopy(self.session)
        for key, value in update.items():
            if key != "audio":
                merged[key] = copy.deepcopy(value)
        audio = update.get("audio")
        if isinstance(audio, Mapping):
            for side in ("input", "output"):
                settings = audio.get(side)
                if not isinstance(settings, Mapping):
                    continue
                for key, value in settings.items():
                    if key == "turn_detection":
                        merged["audio"][side][key] = self._turn_detection(value)
                    else:
                        merged["audio"][side][key] = copy.deepcopy(value)
        voice = merged["audio"]["output"].get("voice")
        if voice != self.session["audio"]["output"]["voice"] and self.audio_present:
            raise ServiceError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
            )
        old_input = self.session["audio"]["input"]
        self.session = merged
        new_input = merged["audio"]["input"]
        if old_input["format"] != new_input["format"]:
            self.input.reset()
            self.input.fmt = AudioFormat.from_session(new_input["format"])
        elif new_input["turn_detection"] is None:
            self.input.flush()
            self.input.speaking, self.input.silence_ms = False, 0
        return [event("session.updated", session=copy.deepcopy(self.session))]

    @staticmethod
    def _turn_detection(value: object) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ServiceError(
                "invalid_type",
                "Invalid type for 'session.audio.input.turn_detection': expected an object.",
                param="session.audio.input.turn_detection",
            )
        kind = value.get("type")
        if kind == "server_vad":
            defaults = DEFAULT_TURN_DETECTION
        elif kind == "semantic_vad":
            defaults = _SEMANTIC_DEFAULTS
        else:
            raise ServiceError(
                "invalid_value",
                f"Invalid value: '{str(kind)[:40]}'. "
                "Supported values are: 'server_vad' and 'semantic_vad'.",
                param="session.audio.input.turn_detection.type",
            )
        given = {key: item for key, item in value.items() if item is not None}
        return {**defaults, **copy.deepcopy(given)}

    def _vad(self) -> tuple[float, int, int, bool, bool] | None:
        """(level, prefix ms, silence ms, create_response, interrupt_response), or
        ``None`` without turn detection (push to talk)."""
        settings = self.session["audio"]["input"].get("turn_detection")
        if not isinstance(settings, Mapping):
            return None
        if settings.get("type") == "semantic_vad":
            level = 0.5 * _LEVEL_PER_THRESHOLD
            prefix = 300
            silence = _EAGERNESS_SILENCE_MS.get(str(settings.get("eagerness")), 500)
        else:
            level = float(settings.get("threshold", 0.5)) * _LEVEL_PER_THRESHOLD
            prefix = int(settings.get("prefix_padding_ms", 300))
            silence = int(settings.get("silence_duration_ms", 500))
        return (
            level,
            prefix,
            silence,
            settings.get("create_response") is not False,
            settings.get("interrupt_response") is not False,
        )

    # ------------------------------------------------------------ conversation

    def find(self, item_id: object) -> dict[str, Any] | None:
        """The conversation item with id ``item_id``."""
        for item in self.items:
            if item["id"] == item_id:
                return item
        return None

    def add_item(self, item: dict[str, Any], index: int | None = None) -> str | None:
        """Insert ``item`` (at the end by default); return the id of the item before it."""
        position = len(self.items) if index is None else index
        self.items.insert(position, item)
        return self.items[position - 1]["id"] if position else None

    def _item_create(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        item = client_event.get("item")
        if not isinstance(item, Mapping):
            raise _missing("item")
        stored = self._checked_item(item)
        previous = client_event.get("previous_item_id")
        index = None
        if previous == "root":
            index = 0
        elif previous is not None:
            before = self.find(previous)
            if before is None:
                raise ServiceError(
                    "invalid_value",
                    "Error adding item: the previous item with id "
                    f"'{str(previous)[:64]}' does not exist.",
                    param="previous_item_id",
                )
            index = self.items.index(before) + 1
        previous_id = self.add_item(stored, index)
        snapshot = copy.deepcopy(stored)
        return [
            event("conversation.item.added", item=snapshot, previous_item_id=previous_id),
            event(
                "conversation.item.done", item=copy.deepcopy(snapshot), previous_item_id=previous_id
            ),
        ]

    def _checked_item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``item`` to store (id, object and status filled in), or a refusal."""
        kind = item.get("type")
        if kind == "message":
            self._check_message(item)
        elif kind == "function_call":
            for field in ("name", "arguments"):
                if not isinstance(item.get(field), str):
                    raise _missing(f"item.{field}")
        elif kind == "function_call_output":
            if not isinstance(item.get("output"), str):
                raise _missing("item.output")
            if self._call(item.get("call_id")) is None:
                raise ServiceError(
                    "invalid_tool_call_id",
                    f"Tool call ID '{str(item.get('call_id'))[:64]}' not found in conversation.",
                )
        else:
            raise ServiceError(
                "invalid_value",
                f"Invalid value: '{str(kind)[:40]}'. Supported values are: 'message', "
                "'function_call', and 'function_call_output'.",
                param="item.type",
            )
        item_id = item.get("id")
        if item_id is not None and self.find(item_id) is not None:
            raise ServiceError(
                "invalid_value",
                f"Error adding item: an item with id '{str(item_id)[:64]}' already exists.",
                param="item.id",
            )
        stored = copy.deepcopy(dict(item))
        stored["id"] = item_id if isinstance(item_id, str) and item_id else new_id("item")
        stored["object"] = "realtime.item"
        stored.setdefault("status", "completed")
        if kind == "message" and stored["role"] == "user":
            self._hear_created_audio(stored)
        return stored

    def _check_message(self, item: Mapping[str, Any]) -> None:
        role = item.get("role")
        allowed = {
            "user": ("input_text", "input_audio", "input_image"),
            "system": ("input_text",),
            "assistant": ("output_text", "output_audio"),
        }
        if role not in allowed:
            raise ServiceError(
                "invalid_value",
                f"Invalid value: '{str(role)[:40]}'. "
                "Supported values are: 'user', 'assistant', and 'system'.",
                param="item.role",
            )
        content = item.get("content")
        if not isinstance(content, Sequence) or isinstance(content, str):
            raise _missing("item.content")
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind not in allowed[str(role)]:
                raise ServiceError(
                    "invalid_value",
                    f"Invalid value: '{str(kind)[:40]}'. Supported values are: "
                    + ", ".join(f"'{name}'" for name in allowed[str(role)])
                    + ".",
                    param=f"item.content[{index}].type",
                )
            # Assistant messages are replayed as text: an output_audio part has no
            # text and is refused, as the service does.
            needs_text = kind in ("input_text", "output_text", "output_audio")
            if needs_text and not isinstance(part.get("text"), str):
                raise _missing(f"item.content[{index}].text")

    def _hear_created_audio(self, item: dict[str, Any]) -> None:
        for part in item.get("content") or ():
            if part.get("type") != "input_audio":
                continue
            if isinstance(part.get("transcript"), str):
                self._heard[item["id"]] = part["transcript"]
                continue
            try:
                audio = base64.b64decode(str(part.get("audio") or ""), validate=True)
            except (binascii.Error, ValueError):
                audio = b""
            self._heard[item["id"]] = self._transcribe(audio)

    def _named_item(
        self, client_event: Mapping[str, Any], verb: str, *, param: str | None = None
    ) -> dict[str, Any]:
        """The item ``client_event["item_id"]`` names, or the service's refusal to
        ``verb`` (delete, retrieve, truncate) an item it does not have."""
        item_id = client_event.get("item_id")
        item = self.find(item_id)
        if item is None:
            raise ServiceError(
                f"item_{verb}_invalid_item_id",
                f"Error {verb.removesuffix('e')}ing item: the item with id "
                f"'{str(item_id)[:64]}' does not exist.",
                param=param,
            )
        return item

    def _item_delete(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        item = self._named_item(client_event, "delete")
        self.items.remove(item)
        return [event("conversation.item.deleted", item_id=item["id"])]

    def _item_retrieve(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        item = self._named_item(client_event, "retrieve")
        return [event("conversation.item.retrieved", item=copy.deepcopy(item))]

    def _item_truncate(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        item = self._named_item(client_event, "truncate", param="item_id")
        parts = item.get("content") or ()
        if item.get("role") != "assistant" or not any(
            part.get("type") == "output_audio" for part in parts
        ):
            raise ServiceError(
                "unsupported_content_type", "Only model output audio messages can be truncated."
            )
        content_index = client_event.get("content_index")
        if content_index != 0:
            raise ServiceError(
                "invalid_value",
                f"Invalid value: {str(content_index)[:20]}. Only content_index 0 can be truncated.",
                param="content_index",
            )
        end = client_event.get("audio_end_ms")
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            raise ServiceError(
                "invalid_value",
                "Invalid 'audio_end_ms': expected a non-negative integer.",
                param="audio_end_ms",
            )
        produced = self._audio_ms.get(item["id"], 0)
        if end > produced:
            raise ServiceError(
                "invalid_value",
                f"Audio content of {produced}ms is already shorter than {end}ms",
                param="audio_end_ms",
            )
        self._audio_ms[item["id"]] = end
        ends = [(ms, chars) for ms, chars in self._word_ends.get(item["id"], ()) if ms <= end]
        self._word_ends[item["id"]] = ends
        for part in parts:
            if part.get("type") == "output_audio":
                part["transcript"] = str(part.get("transcript") or "")[: ends[-1][1] if ends else 0]
        return [
            event(
                "conversation.item.truncated", item_id=item["id"], content_index=0, audio_end_ms=end
            )
        ]

    def audio_of(self, item_id: str) -> int:
        """Milliseconds of audio the conversation holds for assistant item ``item_id``."""
        return self._audio_ms.get(item_id, 0)

    def record_audio(self, item_id: str, ms: int) -> None:
        """``ms`` more audio was produced for ``item_id``."""
        self._audio_ms[item_id] = self._audio_ms.get(item_id, 0) + ms
        self.audio_present = True

    def record_word_end(self, item_id: str, chars: int) -> None:
        """The audio produced so far for ``item_id`` says its first ``chars`` characters."""
        self._word_ends.setdefault(item_id, []).append((self._audio_ms.get(item_id, 0), chars))

    def _call(self, call_id: object) -> dict[str, Any] | None:
        for item in self.items:
            if item.get("type") == "function_call" and item.get("call_id") == call_id:
                return item
        return None

    def user_text(self, item: Mapping[str, Any]) -> str:
        """What the user said in message ``item`` (text parts and heard audio)."""
        said = []
        for part in item.get("content") or ():
            if part.get("type") == "input_text":
                said.append(str(part.get("text", "")))
            elif part.get("type") == "input_audio":
                transcript = part.get("transcript")
                said.append(
                    transcript if isinstance(transcript, str) else self._heard.get(item["id"], "")
                )
        return " ".join(piece for piece in said if piece)

    def context_tokens(self) -> tuple[int, int]:
        """(text, audio) input tokens of the conversation: 10 + its words, audio ms / 100."""
        words = 0
        for item in self.items:
            for part in item.get("content") or ():
                words += len(str(part.get("text") or part.get("transcript") or "").split())
        return 10 + words, int(self._user_audio_ms) // 100

    # ------------------------------------------------------------ input audio

    def _transcribe(self, audio: bytes) -> str:
        if self.script.transcribe is not None:
            return self.script.transcribe(audio)
        return placeholder_transcript(len(audio) / self.input.fmt.bytes_per_ms)

    def _audio_append(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            chunk = base64.b64decode(str(client_event.get("audio", "")), validate=True)
        except (binascii.Error, ValueError):
            raise ServiceError(
                "invalid_value", "Invalid 'audio': expected base64-encoded audio.", param="audio"
            ) from None
        vad = self._vad()
        buffer = self.input
        if vad is None:
            buffer.pending += chunk
            buffer.flush()
            return []
        buffer.pending += chunk
        size = buffer.fmt.bytes_per_ms * FRAME_MS
        events: list[dict[str, Any]] = []
        while len(buffer.pending) >= size:
            frame = bytes(buffer.pending[:size])
            del buffer.pending[:size]
            buffer.data += frame
            buffer.end_ms += FRAME_MS
            events += self._detect(frame, vad)
        return events

    def _detect(
        self, frame: bytes, vad: tuple[float, int, int, bool, bool]
    ) -> list[dict[str, Any]]:
        """Voice activity detection on one 20 ms frame (already in the buffer)."""
        level, prefix, silence, create, interrupt = vad
        buffer = self.input
        loud = frame_levels(frame, buffer.fmt)[0] > level
        if not buffer.speaking:
            if not loud:
                buffer.keep_from(buffer.end_ms - prefix)
                return []
            start = max(buffer.start_ms, buffer.end_ms - FRAME_MS - prefix)
            buffer.keep_from(start)
            buffer.speaking, buffer.silence_ms = True, 0
            buffer.item_id = new_id("item")
            events = [
                event(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=round(start),
                    item_id=buffer.item_id,
                )
            ]
            if interrupt and self.response is not None:
                events += self.response.cancel("turn_detected")  # barge-in
            return events
        if loud:
            buffer.silence_ms = 0
            return []
        buffer.silence_ms += FRAME_MS
        if buffer.silence_ms < silence:
            return []
        item_id = buffer.item_id or new_id("item")
        events = [
            event(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=round(buffer.end_ms),
                item_id=item_id,
            )
        ]
        if len(buffer.data) / buffer.fmt.bytes_per_ms < MIN_COMMIT_MS:
            buffer.reset()  # too short to be a turn
            return events
        events += self._commit(item_id)
        if create and self.response is None:
            events += self._start_response({})
        return events

    def _audio_commit(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        buffer = self.input
        buffer.flush()
        ms = len(buffer.data) / buffer.fmt.bytes_per_ms
        if ms < MIN_COMMIT_MS:
            raise ServiceError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        return self._commit(buffer.item_id or new_id("item"))

    def _commit(self, item_id: str) -> list[dict[str, Any]]:
        """Commit the buffer as user audio item ``item_id``: the committed event, the
        item, and the transcription when the session asks for one."""
        buffer = self.input
        audio = bytes(buffer.data)
        ms = len(audio) / buffer.fmt.bytes_per_ms
        buffer.reset()
        heard = self._transcribe(audio)
        self._heard[item_id] = heard
        self._user_audio_ms += ms
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous = self.add_item(item)
        events = [
            event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous),
            event("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous),
            event("conversation.item.done", item=copy.deepcopy(item), previous_item_id=previous),
        ]
        transcription = self.session["audio"]["input"].get("transcription")
        if isinstance(transcription, Mapping) and transcription.get("model"):
            for word in split_words(heard):
                events.append(
                    event(
                        "conversation.item.input_audio_transcription.delta",
                        item_id=item_id,
                        content_index=0,
                        delta=word,
                    )
                )
            events.append(
                event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=heard,
                    usage={"type": "duration", "seconds": round(ms / 1000, 3)},
                )
            )
            item["content"][0]["transcript"] = heard
        return events

    def _audio_clear(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.input.reset()
        return [event("input_audio_buffer.cleared")]

    # ------------------------------------------------------------ responses

    def _response_create(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.response is not None:
            raise ServiceError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self.response.id}. Wait until the response is finished before creating "
                "a new one.",
            )
        params = client_event.get("response")
        params = params if isinstance(params, Mapping) else {}
        _check_modalities(params.get("output_modalities"), "response.output_modalities")
        return self._start_response(params)

    def _response_cancel(self, client_event: Mapping[str, Any]) -> list[dict[str, Any]]:
        wanted = client_event.get("response_id")
        if self.response is None or wanted not in (None, self.response.id):
            raise ServiceError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        return self.response.cancel("client_cancelled")

    def _start_response(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        modalities = params.get("output_modalities") or self.session["output_modalities"]
        limit = params.get("max_output_tokens", self.session.get("max_output_tokens"))
        run = ResponseRun(
            self,
            self._plan(),
            audio="audio" in modalities,
            max_tokens=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
            metadata=params.get("metadata")
            if isinstance(params.get("metadata"), Mapping)
            else None,
            fmt=AudioFormat.from_session(self.session["audio"]["output"].get("format")),
        )
        self.response = run
        return run.opening()

    def _plan(self) -> Plan:
        """What the next response says, from the conversation so far."""
        last = self.items[-1] if self.items else None
        if last is not None and last.get("type") == "function_call_output":
            call = self._call(last.get("call_id"))
            name = call.get("name", "tool") if call is not None else "tool"
            return Plan(text=f"{name} says: {last.get('output', '')}")
        # The user's messages since the model last spoke (or since a tool's output):
        # two messages sent before one response are both answered, as the real model
        # answers the whole conversation.
        turn: list[Mapping[str, Any]] = []
        for item in reversed(self.items):
            if item.get("type") != "message" or item.get("role") != "user":
                break
            turn.append(item)
        turn.reverse()
        is_user = bool(turn)
        text = " ".join(self.user_text(item) for item in turn)
        if self.session.get("tool_choice") != "none":
            declared = {
                tool.get("name")
                for tool in self.session.get("tools") or ()
                if isinstance(tool, Mapping)
            }
            for trigger in self.script.tool_triggers:
                if trigger.keyword.lower() in text.lower() and trigger.name in declared:
                    arguments = json.dumps(dict(trigger.arguments))
                    if self.script.bad_tool_arguments > 0:
                        self.script.bad_tool_arguments -= 1
                        arguments = arguments[:-1]  # cut short: not valid JSON
                    return Plan(tool=trigger.name, arguments=arguments)
        if is_user and MEMORY_CUE.search(text):
            first = next(
                item
                for item in self.items
                if item.get("type") == "message" and item.get("role") == "user"
            )
            if first is turn[0]:
                return Plan(text="I don't remember anything you said before this.")
            return Plan(text=f'You first said: "{self.user_text(first)}".')
        return Plan(text=self.script.reply(text))
