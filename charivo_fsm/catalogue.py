"""The event catalogue: every event the manager emits, when, and its shapes.

:data:`CATALOGUE` describes each name of
:data:`~charivo_fsm.payloads.EMITTED_EVENTS`: when it fires and an example
payload.  :func:`catalogue_markdown` renders ``docs/events.md`` from it (payload
attributes read from the payload classes, JSON from
:func:`~charivo_fsm.wire.to_wire` of the example), and a test checks that the
committed document is what this module renders, so it cannot drift from the
code.  Regenerate it with ``python -m charivo_fsm.catalogue > docs/events.md``.
"""

from __future__ import annotations

import json
from typing import Any, get_type_hints

import attrs

from .errors import CharivoProviderError, CharivoTimeoutError, CharivoTransportError
from .model import (
    ConnectionState,
    RealtimeSessionConfig,
    RealtimeState,
    ResponseState,
    ResponseStatus,
    SessionState,
    SessionStatus,
)
from .payloads import (
    EMITTED_EVENTS,
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
from .wire import to_wire

__all__ = ["CATALOGUE", "catalogue_markdown"]

_STATE = RealtimeState(
    ConnectionState.CONNECTED,
    SessionState(SessionStatus.ACTIVE, RealtimeSessionConfig(voice="marin"), "hiyori"),
    ResponseState(ResponseStatus.RESPONDING, "Hello"),
    None,
)

CATALOGUE: dict[str, tuple[str, Any]] = {
    "realtime:state": (
        "Whenever the state changes: a lifecycle step (start, stop, refresh, reconnect), "
        "each response event (start, delta, completion, interrupt), a character change, "
        "an error. The payload is the whole snapshot (`manager.state`).",
        StatePayload(_STATE),
    ),
    "realtime:session:start": (
        "Once per session, when `start_session` commits (the link is up). A start that "
        "fails emits neither boundary.",
        SessionBoundaryPayload(_STATE, "user"),
    ),
    "realtime:session:end": (
        "Once per started session, when it is no longer active: `user` (stop_session or "
        "leaving `async with`), `remote` (the provider ended it), `error` (reconnect "
        "exhausted, a failed disconnect). Nothing about that session follows it.",
        SessionBoundaryPayload(_STATE, "remote"),
    ),
    "realtime:user:transcript": (
        "The final transcript of what the user said (one per user turn).",
        TextPayload("What's the weather in Paris?"),
    ),
    "realtime:user:transcript:delta": (
        "A partial transcript of the user's speech, while it is being transcribed.",
        TranscriptDeltaPayload("What's the wea", "item_u1"),
    ),
    "realtime:user:speech:start": (
        "The provider's turn detection heard the user start speaking. While assistant "
        "audio plays this is a barge-in: the item is truncated at its played position "
        "and `tts:audio:end` follows (unless turn detection has "
        "`interrupt_response=False` or is manual).",
        SpeechStartPayload("item_u1", 1280),
    ),
    "realtime:user:speech:stop": (
        "The provider's turn detection heard the user stop speaking.",
        SpeechStopPayload("item_u1", 2960),
    ),
    "realtime:assistant:start": (
        "The assistant's turn begins (the provider started a response, or a delta "
        "arrived after a finished turn).",
        AssistantStartPayload(_STATE),
    ),
    "realtime:assistant:delta": (
        "A piece of the assistant's text (or audio transcript); `realtime:text:delta` "
        "carries the same piece, right before it.",
        TextPayload("Hel"),
    ),
    "realtime:text:delta": (
        "A piece of the assistant's text (the TypeScript package's name for the same "
        "delta as `realtime:assistant:delta`).",
        TextPayload("Hel"),
    ),
    "realtime:assistant:done": (
        "The assistant's turn completed; `text` is the whole answer. Not emitted for a "
        "response that was interrupted or cancelled.",
        TextPayload("Hello! It is sunny in Paris."),
    ),
    "realtime:audio:delta": (
        "A chunk of the model's voice, exactly as received, in the session's output "
        "format (PCM16 mono 24 kHz little-endian unless `output_audio_format` says "
        "otherwise). `to_wire` writes the bytes as base64 text. Play the chunks in "
        "order and report the position with `mark_played(item_id, ms)`.",
        AudioDeltaPayload(b"\x00\x00\x10\x00\xf0\xff", "item_a1"),
    ),
    "tts:audio:start": (
        "Assistant audio starts playing (first chunk or lip-sync level of a turn).",
        EmptyPayload(),
    ),
    "tts:audio:end": (
        "Assistant audio stops: the provider finished sending it, the user interrupted "
        "or barged in, an error, a lost link or the end of the session. Always follows "
        "a `tts:audio:start`, once.",
        EmptyPayload(),
    ),
    "tts:lipsync:update": (
        "The level (RMS, 0..1) of each chunk of assistant audio, for a mouth or meter; "
        "0 when audio ends.",
        LipsyncPayload(0.18),
    ),
    "realtime:tool:call": (
        "The model called a tool; emitted for every call, refused ones included, "
        "before its one outcome (`realtime:tool:result` or `realtime:tool:error`).",
        ToolCallPayload("get_weather", {"city": "Paris"}, "call_1"),
    ),
    "realtime:tool:result": (
        "A tool call succeeded and its output was sent to the provider (result "
        "projectors run after it).",
        ToolResultPayload("get_weather", {"temperature_c": 21}, "call_1"),
    ),
    "realtime:tool:error": (
        "A tool call failed (unknown tool, invalid arguments, handler error, timeout, "
        "refusal, cancelled by a stop or reconnect, or its result could not be sent).",
        ToolErrorPayload(
            "get_weather", CharivoTimeoutError('Realtime tool "get_weather" timed out'), "call_1"
        ),
    ),
    "realtime:usage": (
        "Token usage of each response that reports it, interrupted ones included, once.",
        UsagePayload(
            {"total_tokens": 42, "input_tokens": 30, "output_tokens": 12},
            "gpt-realtime",
            "resp_1",
            "9b2f…",
        ),
    ),
    "realtime:rate_limits": (
        "The provider's current rate limits (after each response, from OpenAI).",
        RateLimitsPayload(
            ({"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5},)
        ),
    ),
    "realtime:reconnect:attempt": (
        "Before each reconnect delay (attempt 1, 2, ...) after the link was lost.",
        ReconnectAttemptPayload(1, 500, "socket-closed"),
    ),
    "realtime:reconnect:success": (
        "The session continues on a new link (same session id, no session boundary).",
        ReconnectSuccessPayload(2, 1640, "socket-closed"),
    ),
    "realtime:reconnect:exhausted": (
        "Every reconnect attempt failed; `realtime:error` and `realtime:session:end` "
        "(`error`) follow.",
        ReconnectExhaustedPayload(
            5, 12600, "socket-closed", CharivoTransportError("could not connect")
        ),
    ),
    "realtime:error": (
        "An error the app should know about: a failed start, patch or stop, a provider "
        "error (with its own `providerCode`, `providerType` and `param`), an exhausted "
        "reconnect. `state.last_error` holds the very same object.",
        ErrorPayload(
            CharivoProviderError(
                "Rate limit reached",
                provider_code="rate_limit_exceeded",
                provider_type="rate_limit_error",
            )
        ),
    ),
}
"""name -> (when it fires, an example payload)."""


def _type_text(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if isinstance(hint, type) else None
    text = text or str(hint)
    for prefix in ("typing.", "collections.abc.", "charivo_fsm.model.", "charivo_fsm.errors."):
        text = text.replace(prefix, "")
    return text.replace("NoneType", "None")


def _attributes(cls: type) -> list[tuple[str, str]]:
    if cls is StatePayload:
        return [("state", "RealtimeState")]
    hints = get_type_hints(cls)
    return [(field.name, _type_text(hints[field.name])) for field in attrs.fields(cls)]


def catalogue_markdown() -> str:
    """``docs/events.md``: every emitted event, rendered from the code."""
    lines = [
        "# Event catalogue",
        "",
        "<!-- Generated by `python -m charivo_fsm.catalogue` from charivo_fsm/catalogue.py;"
        " a test checks it. -->",
        "",
        "Every event the manager emits, to the emitter (`set_event_emitter`) and to every",
        "stream (`manager.events()`), with its payload attributes (Python) and its",
        "`charivo_fsm.wire.to_wire` JSON shape (what a JavaScript frontend receives; the",
        "names and shapes are those of the TypeScript package `@charivo/realtime`).",
        "Errors are `{name, message, code}` (a provider error adds `providerCode`,",
        "`providerType` and `param`); bytes are base64 text; `None` is `null`.",
        "",
        "| event | payload |",
        "|---|---|",
    ]
    for name in CATALOGUE:
        lines.append(f"| [`{name}`](#{_anchor(name)}) | `{EMITTED_EVENTS[name].__name__}` |")
    for name, (when, example) in CATALOGUE.items():
        cls = EMITTED_EVENTS[name]
        lines += ["", f"## {name}", "", when, "", f"Payload `{cls.__name__}`:", ""]
        attributes = _attributes(cls)
        if attributes:
            lines += ["| attribute | type |", "|---|---|"]
            lines += [f"| `{attr}` | `{kind}` |" for attr, kind in attributes]
        else:
            lines.append("(no attributes)")
        shape = json.dumps(to_wire(example), indent=2, ensure_ascii=False)
        lines += ["", "```json", shape, "```"]
    return "\n".join(lines) + "\n"


def _anchor(name: str) -> str:
    return "".join(ch for ch in name if ch.isalnum() or ch in "-_")


if __name__ == "__main__":  # pragma: no cover - a documentation helper
    print(catalogue_markdown(), end="")
