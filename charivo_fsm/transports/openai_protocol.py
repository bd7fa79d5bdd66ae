"""The OpenAI Realtime protocol rules, without I/O.

:class:`OpenAIRealtimeProtocol` is a sans-IO state machine in the style of
``h11``: the I/O shell (:class:`~charivo_fsm.transports.openai.OpenAIRealtimeTransport`)
feeds it the server's messages (:meth:`~OpenAIRealtimeProtocol.receive_text`)
and the app's requests (:meth:`~OpenAIRealtimeProtocol.send_text`, ...), and
takes out what to send (:meth:`~OpenAIRealtimeProtocol.data_to_send`), the
transport events to emit (:meth:`~OpenAIRealtimeProtocol.events_to_emit`)
and the ``session.update`` calls that were answered
(:meth:`~OpenAIRealtimeProtocol.settled_updates`).  It owns no socket, no
clock and no task; one instance lives as long as one connection.  The
conversation history (:class:`ConversationHistory`) outlives connections: the
transport hands the same one to each connection's protocol so that
``recover`` can replay it.

The rules
---------
Response in flight
    From sending ``response.create`` (or seeing a ``response.created`` the
    service started itself, e.g. by turn detection) until that response's
    ``response.done``.  ``response.create`` is never sent while a response is
    in flight: a request made meanwhile is queued (at most one: several
    requests merge into one) and sent right after ``response.done``.  An
    ``error`` ``conversation_already_has_active_response`` (a race with a
    response the service started) is not surfaced: the request is queued
    again until the active response is done.
Tool turns
    A ``function_call_output`` item is sent as soon as the result comes.  The
    ``response.create`` that lets the model use the outputs is sent **once
    per tool-calling response**, when both hold: that response's
    ``response.done`` has arrived, and every call it made has its output sent
    (so: at ``response.done`` when the outputs came first, else when the last
    outstanding output is sent).  It is still subject to the rule above.  An
    output for a call this connection never saw (e.g. made before a recover)
    asks for a response of its own.
Interrupt
    ``response.cancel`` (with the ``response_id`` when known) only while a
    response is in flight; otherwise nothing is sent.  A
    ``response_cancel_not_active`` error that still arrives (a race) is only
    logged.
Assistant audio
    The audio received is counted per item id; ``truncate_audio`` clamps
    ``audio_end_ms`` to it (PCM16 24 kHz: 48 bytes a millisecond; G.711:
    8) and refuses an item it never saw.
History
    See :class:`ConversationHistory`.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import attrs

from ..errors import CharivoError, CharivoProviderError, CharivoValidationError
from ..events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputDelta,
    AudioOutputEnded,
    AudioOutputStarted,
    ErrorEvent,
    RateLimitsUpdated,
    ToolCall,
    TransportEvent,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
    UserTranscriptDelta,
)
from ..model import RealtimeSessionConfig
from .openai_history import ConversationHistory
from .openai_mapping import (
    AUDIO_FORMATS,
    IGNORED_SERVER_EVENTS,
    MAX_APPEND_BYTES,
    SERVER_ROUTES,
    AudioFormatSpec,
    audio_level,
    build_session_update,
    handler_name,
    plain,
    split_audio,
)

__all__ = [
    "OpenAIRealtimeProtocol",
    "Outgoing",
    "provider_error",
]

logger = logging.getLogger("charivo_fsm.transports.openai")

ACTIVE_RESPONSE: Final = "conversation_already_has_active_response"
CANCEL_NOT_ACTIVE: Final = "response_cancel_not_active"


_APPEND_HEAD: Final = '{"type":"input_audio_buffer.append","audio":"'
_EVENT_ID_PREFIX: Final = f"evt_{uuid.uuid4().hex[:12]}"
_event_numbers = itertools.count(1)


def new_event_id() -> str:
    """A client event id unique in this process (a random prefix drawn at import and
    a counter: no system call per event, as ``uuid4`` makes)."""
    return f"{_EVENT_ID_PREFIX}{next(_event_numbers):012x}"


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ------------------------------------------------------------------ the protocol


@attrs.frozen(slots=True)
class Outgoing:
    """A client event ready to send: the event and its JSON text."""

    event: Mapping[str, Any]
    text: str

    @property
    def type(self) -> str:
        return str(self.event["type"])


class _Response:
    """What the protocol tracks about one response."""

    __slots__ = ("audio_open", "audio_seen", "calls", "done", "id", "outstanding")

    def __init__(self, response_id: str | None) -> None:
        self.id = response_id
        self.audio_seen = False  # AudioOutputStarted was emitted
        self.audio_open = False
        self.calls: list[str] = []
        self.outstanding: set[str] = set()  # calls without an output yet
        self.done = False


class _Update:
    __slots__ = ("abandoned", "config", "event_id")

    def __init__(self, event_id: str, config: RealtimeSessionConfig) -> None:
        self.event_id = event_id
        self.config = config
        self.abandoned = False


def provider_error(error: Mapping[str, Any], message: str) -> CharivoProviderError:
    """``CharivoProviderError(message)`` with the service error's code, type and param."""
    return CharivoProviderError(
        message,
        provider_code=_str_or_none(error.get("code")),
        provider_type=_str_or_none(error.get("type")),
        param=_str_or_none(error.get("param")),
    )


class OpenAIRealtimeProtocol:
    """The protocol rules of one connection (see the module documentation).

    :param model: the model asked for (reported in ``AssistantResponseCompleted``
        until the service names its own in ``session.created``/``updated``).
    :param history: the conversation history to record into and replay from.
    :param transcription_model: the transport's default input transcription model.
    :param max_append_bytes: raw bytes per ``input_audio_buffer.append``.
    :param scrub: applied to every text from the server before it is logged
        or put in an error (the transport removes its secrets with it).
    """

    def __init__(
        self,
        *,
        model: str = "gpt-realtime",
        history: ConversationHistory | None = None,
        transcription_model: str | None = None,
        max_append_bytes: int = MAX_APPEND_BYTES,
        scrub: Callable[[str], str] = str,
    ) -> None:
        if max_append_bytes <= 0 or max_append_bytes % 2:
            raise CharivoValidationError("max_append_bytes must be a positive even number")
        self.model = model
        self.history = history if history is not None else ConversationHistory()
        self._transcription_model = transcription_model
        self._max_append = max_append_bytes
        self._scrub = scrub
        self._outbox: list[Outgoing] = []
        self._events: list[TransportEvent] = []
        self._settled: list[tuple[str, CharivoError | None]] = []
        self._updates: list[_Update] = []
        self._input_format = AUDIO_FORMATS["pcm16"]
        self._output_format = AUDIO_FORMATS["pcm16"]
        self._acked_input = self._input_format
        self._active: _Response | None = None
        self._requested: str | None = None  # event_id of a response.create not yet created
        self._queued = False  # a response request waits for the response in flight
        self._responses: dict[str | None, _Response] = {}
        self._calls: dict[str, _Response] = {}  # call_id -> the response that made it
        self._audio: dict[str, list[int]] = {}  # item_id -> [bytes received, bytes per ms]
        self._dispatch: dict[str, Callable[[dict[str, Any]], None]] = {
            route.source: getattr(self, handler_name(route.source))
            for route in SERVER_ROUTES
            if route.dispatch
        }

    # ---------------------------------------------------------- output

    def data_to_send(self) -> list[Outgoing]:
        """Take the client events to send, in order."""
        out, self._outbox = self._outbox, []
        return out

    @property
    def has_data_to_send(self) -> bool:
        """Whether client events wait in the outbox."""
        return bool(self._outbox)

    def events_to_emit(self) -> list[TransportEvent]:
        """Take the transport events to emit, in order."""
        out, self._events = self._events, []
        return out

    def settled_updates(self) -> list[tuple[str, CharivoError | None]]:
        """Take the ``session.update`` calls answered: ``(event_id, error or None)``."""
        out, self._settled = self._settled, []
        return out

    @property
    def response_in_flight(self) -> bool:
        """A ``response.create`` was sent or a response is running, and its
        ``response.done`` has not arrived."""
        return self._active is not None or self._requested is not None

    @property
    def response_queued(self) -> bool:
        """A response request waits for the response in flight."""
        return self._queued

    @property
    def output_format(self) -> AudioFormatSpec:
        """The session's output audio format: the latest one ``session.updated``
        acknowledged (PCM16 24 kHz until one does); audio deltas are counted in it."""
        return self._output_format

    @property
    def input_format(self) -> AudioFormatSpec:
        """The input audio format ``send_audio`` checks against: the latest one sent in
        a ``session.update`` (back to the acknowledged one if it is refused)."""
        return self._input_format

    def audio_received_ms(self, item_id: str) -> int | None:
        """Milliseconds of assistant audio received for ``item_id`` (``None``: unknown)."""
        received = self._audio.get(item_id)
        return None if received is None else received[0] // received[1]

    def _queue(self, event: dict[str, Any]) -> str:
        event_id = new_event_id()
        event = {**event, "event_id": event_id}
        try:
            text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CharivoValidationError(
                f"{event['type']} is not JSON-serialisable: {exc}"
            ) from exc
        self._outbox.append(Outgoing(event, text))
        return event_id

    def _emit(self, event: TransportEvent) -> None:
        self._events.append(event)

    # ---------------------------------------------------------- client side

    def session_update(self, config: RealtimeSessionConfig) -> str:
        """Queue ``session.update`` for ``config``; returns its ``event_id``."""
        event = build_session_update(config, transcription_model=self._transcription_model)
        event_id = self._queue(event)
        self._updates.append(_Update(event_id, config))
        if config.input_audio_format is not None:
            self._input_format = AUDIO_FORMATS[config.input_audio_format]
        return event_id

    def abandon_update(self, event_id: str) -> None:
        """The caller of ``session.update`` ``event_id`` stopped waiting.

        It stays in the queue (its answer must not complete a later update);
        if it is then rejected, the error is emitted as an ``ErrorEvent``.
        """
        for update in self._updates:
            if update.event_id == event_id:
                update.abandoned = True

    def send_text(self, text: str) -> None:
        """A user message, then a response request."""
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        self._queue({"type": "conversation.item.create", "item": item})
        self.history.add_user_text(text)
        self._request_response()

    def send_audio(self, audio: bytes) -> None:
        """``input_audio_buffer.append`` messages for ``audio`` (split when large).

        Raises :class:`~charivo_fsm.CharivoValidationError` (nothing sent)
        when ``audio`` is not bytes or does not fit the session's input format
        (PCM16 needs whole 16-bit samples: an even byte count).
        """
        if not isinstance(audio, (bytes, bytearray, memoryview)):
            raise CharivoValidationError(f"audio must be bytes (got {type(audio).__name__})")
        data = bytes(audio)
        spec = self._input_format
        if len(data) % spec.sample_width:
            raise CharivoValidationError(
                f"{spec.name} audio must be whole {8 * spec.sample_width}-bit samples"
                f" (got {len(data)} bytes)"
            )
        chunks = (data,) if len(data) <= self._max_append else split_audio(data, self._max_append)
        outbox = self._outbox
        for chunk in chunks:
            # The text json.dumps would write (base64 needs no escaping), built directly:
            # a microphone sends one of these every 20-100 ms per session.
            encoded = base64.b64encode(chunk).decode("ascii")
            event_id = new_event_id()
            event = {"type": "input_audio_buffer.append", "audio": encoded, "event_id": event_id}
            text = f'{_APPEND_HEAD}{encoded}","event_id":"{event_id}"}}'
            outbox.append(Outgoing(event, text))

    def commit_audio(self) -> None:
        """Push to talk: commit the input audio buffer, then a response request."""
        self._queue({"type": "input_audio_buffer.commit"})
        self._request_response()

    def clear_audio(self) -> None:
        """Push to talk: drop the input audio not yet committed."""
        self._queue({"type": "input_audio_buffer.clear"})

    def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        """The ``function_call_output`` item now; the response request per the tool-turn rule."""
        try:
            encoded = json.dumps(plain(output), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CharivoValidationError(f"tool output is not JSON-serialisable: {exc}") from exc
        item = {"type": "function_call_output", "call_id": call_id, "output": encoded}
        self._queue({"type": "conversation.item.create", "item": item})
        self.history.add_output(call_id, encoded)
        self._output_sent(call_id)

    def interrupt(self) -> bool:
        """``response.cancel`` while a response is in flight; returns whether it was sent."""
        if not self.response_in_flight:
            logger.debug("interrupt: no response in flight, nothing to cancel")
            return False
        event: dict[str, Any] = {"type": "response.cancel"}
        if self._active is not None and self._active.id is not None:
            event["response_id"] = self._active.id
        self._queue(event)
        return True

    def truncate_audio(self, item_id: str, audio_end_ms: int) -> int:
        """``conversation.item.truncate`` for an assistant audio item; returns the
        ``audio_end_ms`` sent (clamped to the audio received for the item)."""
        if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int):
            raise CharivoValidationError(
                f"audio_end_ms must be an integer (got {type(audio_end_ms).__name__})"
            )
        if audio_end_ms < 0:
            raise CharivoValidationError(f"audio_end_ms must not be negative (got {audio_end_ms})")
        received = self.audio_received_ms(item_id) if isinstance(item_id, str) else None
        if received is None:
            raise CharivoValidationError(
                f"unknown assistant audio item {str(item_id)[:80]!r}: no audio was received for it"
            )
        end = min(audio_end_ms, received)
        self._queue(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": end,
            }
        )
        self.history.truncate(item_id, end)
        return end

    def replay(self) -> int:
        """Queue the history as ``conversation.item.create`` events; returns how many."""
        items = self.history.items()
        for item in items:
            self._queue({"type": "conversation.item.create", "item": item})
        return len(items)

    # ---------------------------------------------------------- response rules

    def _request_response(self) -> None:
        if self.response_in_flight:
            self._queued = True
            logger.debug("response.create queued until the response in flight is done")
            return
        self._queued = False
        self._requested = self._queue({"type": "response.create"})

    def _output_sent(self, call_id: str) -> None:
        response = self._calls.pop(call_id, None)
        if response is None:
            logger.debug("output for call %s of no known response: asking for a response", call_id)
            self._request_response()
            return
        response.outstanding.discard(call_id)
        self._maybe_tool_turn(response)

    def _maybe_tool_turn(self, response: _Response) -> None:
        """One response request per tool-calling response, once it is done and
        every call it made has its output.

        Called at its ``response.done`` and after each of its outputs; only one
        of those calls can find it done with nothing outstanding (an output
        removes its call from :attr:`_calls`, and a done response is no longer
        in :attr:`_responses`), so the request is made once."""
        if response.done and response.calls and not response.outstanding:
            self._request_response()

    def _response(self, response_id: Any) -> _Response:
        key = _str_or_none(response_id)
        response = self._responses.get(key)
        if response is None:
            response = self._responses[key] = _Response(key)
        return response

    # ---------------------------------------------------------- server side

    def receive_text(self, text: str) -> None:
        """Feed one text message from the server (anything bad is logged and dropped)."""
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            logger.warning("dropped a server message that is not valid JSON (%s)", exc.msg)
            return
        except (ValueError, RecursionError) as exc:
            logger.warning(
                "dropped a server message that is not valid JSON (%s)", type(exc).__name__
            )
            return
        if not isinstance(event, dict):
            logger.warning(
                "dropped a server message that is not a JSON object (%s)", type(event).__name__
            )
            return
        self.receive_event(event)

    def receive_event(self, event: dict[str, Any]) -> None:
        """Feed one parsed server event."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            logger.warning("dropped a server message without a string type")
            return
        handler = self._dispatch.get(event_type)
        if handler is None:
            if event_type in IGNORED_SERVER_EVENTS:
                logger.debug("ignored server event %s", event_type)
            else:
                logger.warning("dropped an unknown server event type %r", event_type[:80])
            return
        try:
            handler(event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning(
                "dropped a malformed %s event (%s: %s)",
                event_type,
                type(exc).__name__,
                self._scrub(str(exc))[:200],
            )

    # One method per dispatched row of SERVER_ROUTES (name from handler_name).

    def _on_session_created(self, event: dict[str, Any]) -> None:
        self._note_model(event)

    def _on_session_updated(self, event: dict[str, Any]) -> None:
        self._note_model(event)
        if not self._updates:
            logger.debug("session.updated without a pending session.update")
            return
        update = self._updates.pop(0)
        if update.abandoned:
            logger.debug("session.updated for an abandoned session.update %s", update.event_id)
        config = update.config
        if config.output_audio_format is not None:
            self._output_format = AUDIO_FORMATS[config.output_audio_format]
        if config.input_audio_format is not None:
            self._acked_input = AUDIO_FORMATS[config.input_audio_format]
        self._settled.append((update.event_id, None))

    def _note_model(self, event: dict[str, Any]) -> None:
        session = event["session"]
        model = session.get("model") if isinstance(session, dict) else None
        if isinstance(model, str) and model:
            self.model = model

    def _on_response_created(self, event: dict[str, Any]) -> None:
        body = event.get("response")
        response = self._response(body.get("id") if isinstance(body, dict) else None)
        self._requested = None
        self._active = response
        self._emit(AssistantResponseStarted())

    def _on_text_delta(self, event: dict[str, Any]) -> None:
        delta = event["delta"]
        if not isinstance(delta, str):
            raise TypeError("delta must be a string")
        if delta:
            self.history.assistant_delta(_str_or_none(event.get("item_id")), delta)
            self._emit(AssistantTextDelta(delta))

    _on_response_output_text_delta = _on_text_delta
    _on_response_output_audio_transcript_delta = _on_text_delta

    def _on_response_output_audio_delta(self, event: dict[str, Any]) -> None:
        delta = event["delta"]
        if not isinstance(delta, str):
            raise TypeError("delta must be a string")
        audio = base64.b64decode(delta, validate=True)  # binascii.Error is a ValueError
        item_id = _str_or_none(event.get("item_id"))
        response = self._response(event.get("response_id"))
        if not response.audio_seen:
            response.audio_seen = response.audio_open = True
            self._emit(AudioOutputStarted())
        spec = self._output_format
        if item_id is not None:
            received = self._audio.setdefault(item_id, [0, spec.bytes_per_ms])
            received[0] += len(audio)
            self.history.assistant_audio(item_id, received[0] // received[1])
        self._emit(AudioOutputDelta(audio=audio, item_id=item_id))
        self._emit(AudioLipsync(audio_level(audio, spec.name)))

    def _on_response_output_audio_done(self, event: dict[str, Any]) -> None:
        response = self._responses.get(_str_or_none(event.get("response_id")))
        if response is not None and response.audio_open:
            response.audio_open = False
            self._emit(AudioOutputEnded())

    def _on_response_function_call_arguments_done(self, event: dict[str, Any]) -> None:
        name = event["name"]
        call_id = event["call_id"]
        arguments = event["arguments"]
        if not isinstance(name, str) or not isinstance(call_id, str):
            raise TypeError("name and call_id must be strings")
        problem: str | None = None
        args: Any = None
        if not isinstance(arguments, str):
            problem = "are not a JSON string"
        else:
            try:
                args = json.loads(arguments)
            except json.JSONDecodeError as exc:
                problem = f"are not valid JSON: {exc.msg}"
            except (ValueError, RecursionError) as exc:
                problem = f"are not valid JSON: {type(exc).__name__}"
            else:
                if not isinstance(args, dict):
                    problem = "must be a JSON object"
        response = self._response(event.get("response_id"))
        if call_id not in response.calls:
            response.calls.append(call_id)
        response.outstanding.add(call_id)
        self._calls[call_id] = response
        self.history.add_call(call_id, name, arguments if isinstance(arguments, str) else "")
        if problem is not None:
            logger.warning(
                "tool call %s (%s): invalid arguments (%s); sent a tool error back",
                name[:80],
                call_id[:80],
                problem,
            )
            output = {"success": False, "error": f'Realtime tool "{name}" arguments {problem}'}
            self.send_tool_result(call_id, output)
            return
        self._emit(ToolCall(name=name, args=args, call_id=call_id))

    def _on_response_done(self, event: dict[str, Any]) -> None:
        body = event["response"]
        if not isinstance(body, dict):
            raise TypeError("response must be an object")
        response_id = _str_or_none(body.get("id"))
        response = self._responses.pop(response_id, None) or _Response(response_id)
        response.done = True
        if self._active is not None and self._active.id == response_id:
            self._active = None
        if response.audio_open:
            response.audio_open = False
            self._emit(AudioOutputEnded())
        status = body.get("status")
        status = status if isinstance(status, str) and status else "completed"
        details = body.get("status_details")
        details = details if isinstance(details, dict) else {}
        if status == "failed":
            error = details.get("error")
            error = error if isinstance(error, dict) else {}
            message = error.get("message")
            text = self._scrub(message) if isinstance(message, str) else "the response failed"
            logger.warning("response %s failed: %s", response_id, text)
            self._emit(ErrorEvent(provider_error(error, text)))
        output = body.get("output")
        self._record_output(output)
        usage = body.get("usage")
        self._emit(
            AssistantResponseCompleted(
                text="".join(text for _, text in _message_texts(output)),
                usage=dict(usage) if isinstance(usage, dict) else None,
                model=self.model,
                response_id=response_id,
                status=status,
                reason=_str_or_none(details.get("reason")),
            )
        )
        wanted = self._queued
        self._queued = False
        self._maybe_tool_turn(response)
        if wanted and not self.response_in_flight:
            self._request_response()

    def _record_output(self, output: Any) -> None:
        if not isinstance(output, list):
            return
        texts = dict(_message_texts(output))
        for item in output:
            if not isinstance(item, dict):
                continue
            item_id = _str_or_none(item.get("id"))
            if item.get("type") == "message" and item.get("role", "assistant") == "assistant":
                self.history.assistant_final(item_id, texts.get(item_id, ""))
            elif item.get("type") == "function_call":
                call_id, name = item.get("call_id"), item.get("name")
                arguments = item.get("arguments")
                if isinstance(call_id, str) and isinstance(name, str):
                    self.history.add_call(
                        call_id, name, arguments if isinstance(arguments, str) else ""
                    )

    def _on_input_audio_buffer_speech_started(self, event: dict[str, Any]) -> None:
        self._emit(
            UserSpeechStarted(
                item_id=_str_or_none(event.get("item_id")),
                audio_start_ms=_int_or_none(event.get("audio_start_ms")),
            )
        )

    def _on_input_audio_buffer_speech_stopped(self, event: dict[str, Any]) -> None:
        self._emit(
            UserSpeechStopped(
                item_id=_str_or_none(event.get("item_id")),
                audio_end_ms=_int_or_none(event.get("audio_end_ms")),
            )
        )

    def _on_input_audio_buffer_committed(self, event: dict[str, Any]) -> None:
        item_id = event["item_id"]
        if not isinstance(item_id, str):
            raise TypeError("item_id must be a string")
        self.history.reserve_user_audio(item_id)

    def _on_conversation_item_input_audio_transcription_completed(
        self, event: dict[str, Any]
    ) -> None:
        transcript = event["transcript"]
        if not isinstance(transcript, str):
            raise TypeError("transcript must be a string")
        self.history.user_transcript(_str_or_none(event.get("item_id")), transcript)
        self._emit(UserTranscript(transcript))

    def _on_conversation_item_input_audio_transcription_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if delta is not None and not isinstance(delta, str):
            raise TypeError("delta must be a string")
        if delta:
            self._emit(UserTranscriptDelta(text=delta, item_id=_str_or_none(event.get("item_id"))))

    def _on_conversation_item_input_audio_transcription_failed(self, event: dict[str, Any]) -> None:
        error = event["error"]
        if not isinstance(error, dict):
            raise TypeError("error must be an object")
        raw = error.get("message")
        message = self._scrub(raw) if isinstance(raw, str) and raw else "transcription failed"
        logger.warning("input audio transcription failed: %s", message)
        self._emit(ErrorEvent(provider_error(error, message)))

    def _on_rate_limits_updated(self, event: dict[str, Any]) -> None:
        limits = event["rate_limits"]
        if not isinstance(limits, list) or not all(isinstance(x, dict) for x in limits):
            raise TypeError("rate_limits must be a list of objects")
        self._emit(RateLimitsUpdated(limits=tuple(dict(limit) for limit in limits)))

    def _on_error(self, event: dict[str, Any]) -> None:
        error = event["error"]
        if not isinstance(error, dict):
            raise TypeError("error must be an object")
        raw = error.get("message")
        message = self._scrub(raw) if isinstance(raw, str) and raw else "unknown provider error"
        code = _str_or_none(error.get("code"))
        about = _str_or_none(error.get("event_id"))
        for update in self._updates:
            if about is not None and update.event_id == about:
                self._updates.remove(update)
                self._input_format = self._acked_input
                logger.warning("session.update %s rejected: %s (%s)", about, message, code)
                self._settled.append((about, provider_error(error, message)))
                if not update.abandoned:
                    return
                break
        else:
            if self._absorbed(code, message, about):
                return
            logger.warning("server error: %s (%s)", message, code)
        self._emit(ErrorEvent(provider_error(error, message)))

    def _absorbed(self, code: str | None, message: str, about: str | None) -> bool:
        """Handle the errors that are protocol races, not failures."""
        refused = code == ACTIVE_RESPONSE or (
            code is None and "already has an active response" in message
        )
        if refused:
            if about is None or about == self._requested:
                self._requested = None  # that response.create created nothing
            self._queued = True
            logger.info("response.create refused (a response is active): queued until it is done")
            return True
        if code == CANCEL_NOT_ACTIVE:
            logger.info("response.cancel found no active response (a race): ignored")
            return True
        if about is not None and about == self._requested:
            self._requested = None  # that response.create failed and created nothing
            if self._queued and self._active is None:
                self._request_response()  # the request queued behind it goes now
        return False


def _message_texts(output: Any) -> Iterator[tuple[str | None, str]]:
    """``(item_id, text)`` of a response's assistant message items (text parts and
    audio transcripts)."""
    if not isinstance(output, list):
        return
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        content = item.get("content")
        if not isinstance(content, list):
            continue
        pieces: list[str] = []
        for part in content:
            if not isinstance(part, dict):
                continue
            value = part.get("text") if part.get("type") == "output_text" else None
            if part.get("type") == "output_audio":
                value = part.get("transcript")
            if isinstance(value, str):
                pieces.append(value)
        yield _str_or_none(item.get("id")), "".join(pieces)
