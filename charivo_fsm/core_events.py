"""The core's response effects and transport-event handlers (D7-D11, §11): assistant
responses and their deltas, audio items, truncation, barge-in, usage, errors.

Each function here is a method of :class:`charivo_fsm.core.Core` (assigned in its
class body under the same name); ``Core.on_event`` dispatches a transport event to
its handler by type.  The rules of :mod:`charivo_fsm.core` hold here too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .effects import Emit, Truncate, _tuple_new
from .errors import (
    CharivoError,
    to_charivo_error,
)
from .events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputDelta,
    AudioOutputEnded,
    AudioOutputStarted,
    ConnectionLost,
    ErrorEvent,
    RateLimitsUpdated,
    SessionEnded,
    SessionStarted,
    StateUpdate,
    ToolResult,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
    UserTranscriptDelta,
)
from .machines import AUDIO, CONNECTION, RESPONSE
from .payloads import (
    AssistantStartPayload,
    AudioDeltaPayload,
    EmptyPayload,
    ErrorPayload,
    LipsyncPayload,
    RateLimitsPayload,
    SpeechStartPayload,
    SpeechStopPayload,
    TextPayload,
    ToolResultPayload,
    TranscriptDeltaPayload,
    UsagePayload,
    _new,
    _set_text,
    text_payload,
)
from .voice import NO_AUDIO, AudioItems, bytes_per_ms

if TYPE_CHECKING:
    from .core import Core


# Session states between sessions, and connection states of a reconnect.
_BETWEEN_SESSIONS = frozenset({"idle", "stopped"})
_RECONNECTING = frozenset({"backoff", "recovering"})
_EMPTY = EmptyPayload()
_LIPSYNC_ZERO = LipsyncPayload(0.0)

# The compiled steps of the most frequent inputs, by state: ``step(core)`` is
# ``runner.fire(core, trigger)`` without the call of ``fire`` (a missing state refuses;
# see MachineSpec.steps).
_RESPONSE_DELTA = RESPONSE.steps("delta")
_RESPONSE_STARTED = RESPONSE.steps("started")
_RESPONSE_COMPLETED = RESPONSE.steps("completed")
_AUDIO_LEVEL = AUDIO.steps("level")
_AUDIO_UNMUTE = AUDIO.steps("unmute")


def _emit_with_state(self: Core, name: str, payload: Any) -> None:
    """``self._emit(name, payload)``, then ``self._emit_state()``: as pairs while
    ``out`` is empty (see ``Core.emits``)."""
    state = self._state_payload()
    emits = self.emits
    out = self.out
    if emits is not None and not out:
        emits += ((name, payload), ("realtime:state", state))
    else:
        out.append(_tuple_new(Emit, (name, payload)))
        out.append(_tuple_new(Emit, ("realtime:state", state)))


def open_response(self: Core) -> None:
    self._parts = []
    _emit_with_state(self, "realtime:assistant:start", AssistantStartPayload(self.snapshot()))


def open_response_with_delta(self: Core) -> None:
    text: str = self._input
    self._parts = [text]
    self._emit("realtime:assistant:start", AssistantStartPayload(self.snapshot()))
    payload = text_payload(text)
    out = self.out
    out.append(_tuple_new(Emit, ("realtime:text:delta", payload)))
    out.append(_tuple_new(Emit, ("realtime:assistant:delta", payload)))
    self._emit_state()


def append_delta(self: Core) -> None:
    text: str = self._input
    parts = self._parts
    parts.append(text)
    payload: TextPayload = _new(TextPayload)  # TextPayload(text)
    _set_text(payload, text)
    state = self._state_payload()
    emits = self.emits
    out = self.out
    if emits is not None and not out:  # as pairs (see Core.emits)
        emits += (
            ("realtime:text:delta", payload),
            ("realtime:assistant:delta", payload),
            ("realtime:state", state),
        )
    else:
        out.append(_tuple_new(Emit, ("realtime:text:delta", payload)))
        out.append(_tuple_new(Emit, ("realtime:assistant:delta", payload)))
        out.append(_tuple_new(Emit, ("realtime:state", state)))


def complete_response(self: Core) -> None:
    event: AssistantResponseCompleted = self._input
    final = event.text or "".join(self._parts)
    self._parts = [final]
    if event.usage is not None:
        self._report_usage(event)
    done: TextPayload = _new(TextPayload)  # TextPayload(final)
    _set_text(done, final)
    _emit_with_state(self, "realtime:assistant:done", done)


def cancel_response(self: Core) -> None:
    """The service cancelled the response (the user's interrupt or its turn
    detection): the turn ends interrupted, its text kept, no assistant:done;
    usage is still reported (D7, §11)."""
    self._report_usage(self._input)
    self.audio.fire(self, "end")
    self._emit_state()


def report_usage(self: Core) -> None:
    self._report_usage(self._input)


def _report_usage(self: Core, event: AssistantResponseCompleted) -> None:
    if event.usage is None:
        return
    self._emit(
        "realtime:usage",
        UsagePayload(event.usage, event.model, event.response_id, self.session_id),
    )
    self._log(
        logging.DEBUG,
        "usage.reported",
        "Realtime usage reported",
        model=event.model,
        response_id=event.response_id,
    )


def emit_audio_start(self: Core) -> None:
    self._emit("tts:audio:start", _EMPTY)


def emit_audio_end(self: Core) -> None:
    self._emit("tts:lipsync:update", _LIPSYNC_ZERO)
    self._emit("tts:audio:end", _EMPTY)


def note_chunk(self: Core) -> None:
    event: AudioOutputDelta = self._input
    voice = self._voice
    if voice is NO_AUDIO:
        voice = self._voice = AudioItems(self._clock)
    config = self._config
    voice.bytes_per_ms = bytes_per_ms(None if config is None else config.output_audio_format)
    voice.chunk(event.item_id, len(event.audio))
    payload = AudioDeltaPayload(event.audio, event.item_id)
    self.out.append(_tuple_new(Emit, ("realtime:audio:delta", payload)))


def truncate_item(self: Core) -> None:
    item_id, played = self._voice.cut()
    token = self._op(self._on_truncate_done, self._on_truncate_failed)
    self.out.append(Truncate(token, item_id, played))


def _on_truncate_done(self: Core, _value: Any) -> None:
    pass


def _on_truncate_failed(self: Core, error: BaseException) -> None:
    self._log(
        logging.WARNING,
        "transport.error",
        "Realtime audio truncation failed",
        error=self._transport_error(error, "truncate_audio").message,
    )


def forget_item(self: Core) -> None:
    if self.session.state in _BETWEEN_SESSIONS or self.connection.state in _RECONNECTING:
        self._voice.clear()
    else:
        self._voice.forget_current()


def record_played(self: Core) -> None:
    pass  # the position itself is written by ``mark_played`` once accepted


def drop_input(self: Core) -> None:
    self._drop(type(self._input).__name__ if self._input is not None else "input")


# ========================================================= transport events


def _between_sessions(self: Core, event: Any) -> bool:
    if self.session.state in _BETWEEN_SESSIONS:
        self._log(
            logging.DEBUG,
            "event.dropped",
            "Realtime event dropped between sessions",
            input=event.type,
        )
        return True
    return False


def _on_session_started(self: Core, event: SessionStarted) -> None:
    # D10: meaningful only for an active, connected session that is neither
    # reconnecting nor patching; the connection is then already connected,
    # so nothing changes and nothing is emitted.
    if not (
        self.session.state == "active"
        and self.connection.state == "connected"
        and self.refresh.state == "idle"
    ):
        self._drop(event.type)


def _on_session_ended(self: Core, event: SessionEnded) -> None:
    self._input = event
    self.session.fire(self, "remote_end")


def _on_connection_lost(self: Core, event: ConnectionLost) -> None:
    self._input = (event.cause, event.error)
    self.connection.fire(self, "lost")


def _on_user_transcript(self: Core, event: UserTranscript) -> None:
    if not self._between_sessions(event):
        self._emit("realtime:user:transcript", TextPayload(event.text))


def _on_response_started(self: Core, event: AssistantResponseStarted) -> None:
    if not self._between_sessions(event):
        step = _AUDIO_UNMUTE.get(self.audio.state)  # self.audio.fire(self, "unmute"):
        if step is not None:  # audio of a new response is heard again
            step(self)
        step = _RESPONSE_STARTED.get(self.response.state)  # ...fire(self, "started")
        if step is not None:
            step(self)


def _on_text_delta(self: Core, event: AssistantTextDelta) -> None:
    if self.session.state in _BETWEEN_SESSIONS:
        self._between_sessions(event)
        return
    self._input = event.text
    step = _RESPONSE_DELTA.get(self.response.state)  # self.response.fire(self, "delta")
    if step is not None:
        step(self)


def _on_response_completed(self: Core, event: AssistantResponseCompleted) -> None:
    if not self._between_sessions(event):
        self._input = event
        step = _RESPONSE_COMPLETED.get(self.response.state)  # ...fire(self, "completed")
        if step is not None:
            step(self)


def _on_audio_started(self: Core, event: AudioOutputStarted) -> None:
    if not self._between_sessions(event):
        self.audio.fire(self, "start")


def _on_audio_ended(self: Core, event: AudioOutputEnded) -> None:
    if not self._between_sessions(event):
        self.audio.fire(self, "end")


def _on_lipsync(self: Core, event: AudioLipsync) -> None:
    if self.session.state in _BETWEEN_SESSIONS:
        self._between_sessions(event)
        return
    self._input = event
    step = _AUDIO_LEVEL.get(self.audio.state)  # self.audio.fire(self, "level")
    if step is not None:
        step(self)


def _on_audio_delta(self: Core, event: AudioOutputDelta) -> None:
    if self.session.state in _BETWEEN_SESSIONS:
        self._between_sessions(event)
        return
    self._input = event
    self.audio.fire(self, "chunk")


def _on_speech_started(self: Core, event: UserSpeechStarted) -> None:
    if self._between_sessions(event):
        return
    self._emit(
        "realtime:user:speech:start", SpeechStartPayload(event.item_id, event.audio_start_ms)
    )
    if self._barge_in_enabled():
        self.audio.fire(self, "cut")


def _barge_in_enabled(self: Core) -> bool:
    """Barge-in applies unless the session's turn detection says speech does not
    interrupt the model (``interrupt_response=False``) or is manual."""
    config = self._config
    detection = None if config is None else config.turn_detection
    return detection is None or (detection.mode != "manual" and detection.interrupt_response)


def _on_speech_stopped(self: Core, event: UserSpeechStopped) -> None:
    if not self._between_sessions(event):
        self._emit(
            "realtime:user:speech:stop", SpeechStopPayload(event.item_id, event.audio_end_ms)
        )


def _on_transcript_delta(self: Core, event: UserTranscriptDelta) -> None:
    if not self._between_sessions(event):
        self._emit(
            "realtime:user:transcript:delta", TranscriptDeltaPayload(event.text, event.item_id)
        )


def _on_rate_limits(self: Core, event: RateLimitsUpdated) -> None:
    if not self._between_sessions(event):
        self._emit("realtime:rate_limits", RateLimitsPayload(tuple(event.limits)))


def _on_tool_result(self: Core, event: ToolResult) -> None:
    if not self._between_sessions(event):
        self._emit(
            "realtime:tool:result", ToolResultPayload(event.name, event.output, event.call_id)
        )


def _on_state_update(self: Core, event: StateUpdate) -> None:
    if self._between_sessions(event):
        return
    if event.response_status is not None:
        self.response.fire(self, "sync_" + str(event.response_status))
    if event.response_text is not None:
        self._parts = [event.response_text]
    self._emit_state()


def _on_error(self: Core, event: ErrorEvent) -> None:
    error = to_charivo_error("transport", event.error)
    if self.session.state == "active" and self.connection.state in _RECONNECTING:
        self._last_error = error  # D6: no realtime:error while reconnecting
        self._emit_state()
    elif self.refresh.state != "idle":
        held = self._held_errors
        if held is None:
            held = self._held_errors = []
        held.append(error)  # D17.3
    else:
        self._apply_error(error)


def _apply_error(self: Core, error: CharivoError) -> None:
    """D11: last_error, audio ended, the connection value kept."""
    self._last_error = error
    self.audio.fire(self, "end")
    self._emit("realtime:error", ErrorPayload(error))
    self._emit_state()
    self._log(
        logging.ERROR,
        "transport.error",
        "Realtime transport error surfaced",
        connection=CONNECTION.public[self.connection.state],
        error=error.message,
    )
