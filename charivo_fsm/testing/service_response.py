"""One response of the local realtime service, as a sequence of server events (no I/O).

A :class:`ResponseRun` is created by :class:`~charivo_fsm.testing.service_rules.ServiceSession`
when a response starts (``response.create``, or the end of a turn under server
VAD).  The I/O shell pulls its events with :meth:`ResponseRun.step`, which also
says how long to wait before the next step (:class:`Pause`: before each word,
before each 40 ms audio chunk), so the pacing is the shell's business and the
event order is this module's.  :meth:`ResponseRun.cancel` ends it early and
returns the closing events (open parts and items done with status
``incomplete``, then ``response.done`` with status ``cancelled``).

The conversation is updated as the events are produced: an output item joins
the conversation at ``response.output_item.added``, its text or transcript
grows delta by delta, and the audio produced for it is counted chunk by chunk
(what ``conversation.item.truncate`` is checked against).
"""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from .audio import CHUNK_MS, AudioFormat, voice_chunks

if TYPE_CHECKING:
    from .service_rules import ServiceSession

__all__ = ["Pause", "Plan", "ResponseRun", "event", "new_id", "split_words"]


def new_id(prefix: str) -> str:
    """A fresh id in the service's style (``item_…``, ``resp_…``, ``call_…``)."""
    return f"{prefix}_{uuid.uuid4().hex[:21]}"


def event(event_type: str, **fields: Any) -> dict[str, Any]:
    """A server event with a fresh ``event_id``."""
    return {"type": event_type, "event_id": new_id("event"), **fields}


def split_words(text: str) -> list[str]:
    """Split ``text`` into deltas that join back to it exactly (a word and its space)."""
    parts = text.split(" ")
    return [part + " " for part in parts[:-1]] + [parts[-1]] if text else []


@attrs.frozen(slots=True)
class Pause:
    """What the shell waits for before the next step: ``word`` (the server's
    ``delta_delay``) or ``audio`` (``ms`` of audio at the configured pace)."""

    kind: Literal["word", "audio"]
    ms: int = 0


@attrs.frozen(slots=True)
class Plan:
    """What a response says: ``text``, or a call of tool ``tool`` with ``arguments``."""

    text: str = ""
    tool: str | None = None
    arguments: str = "{}"


_Step = dict[str, Any] | Pause


class ResponseRun:
    """One response being produced; see the module documentation."""

    def __init__(
        self,
        session: ServiceSession,
        plan: Plan,
        *,
        audio: bool,
        max_tokens: int | None,
        metadata: Mapping[str, str] | None,
        fmt: AudioFormat,
    ) -> None:
        self.session = session
        self.id = new_id("resp")
        self.plan = plan
        self.audio = audio
        self.max_tokens = max_tokens
        self.metadata = dict(metadata) if metadata else None
        self.fmt = fmt
        self.finished = False
        self.status = "completed"
        self.output: list[dict[str, Any]] = []
        self.words = 0
        self.audio_ms = 0
        self.context_tokens = session.context_tokens()
        # the item and content part being produced, for closing them on cancel
        self._item: dict[str, Any] | None = None
        self._part: dict[str, Any] | None = None
        self._audio_open = False
        self._steps = self._produce()

    # ------------------------------------------------------------ driving

    def opening(self) -> list[dict[str, Any]]:
        """``response.created`` (sent as soon as the response exists)."""
        return [event("response.created", response=self._response("in_progress"))]

    def step(self) -> tuple[list[dict[str, Any]], Pause | None]:
        """The next events and the pause before the following step (``None``:
        the response is over: ``response.done`` and ``rate_limits.updated`` end
        the events)."""
        events: list[dict[str, Any]] = []
        if self.finished:
            return events, None
        for item in self._steps:
            if isinstance(item, Pause):
                return events, item
            events.append(item)
        self._finish()
        events += self._done()
        return events, None

    def cancel(self, reason: Literal["client_cancelled", "turn_detected"]) -> list[dict[str, Any]]:
        """End the response now: the closing events, then ``response.done``
        (status ``cancelled``, ``status_details.reason`` = ``reason``) and
        ``rate_limits.updated``."""
        if self.finished:
            return []
        self._steps.close()
        events = self._close_item("incomplete") if self._item is not None else []
        self.status = "cancelled"
        self._finish()
        return events + self._done(reason)

    def _finish(self) -> None:
        self.finished = True
        if self.session.response is self:
            self.session.response = None

    # ------------------------------------------------------------ events

    def _where(self) -> dict[str, Any]:
        assert self._item is not None
        return {
            "response_id": self.id,
            "item_id": self._item["id"],
            "output_index": len(self.output) - 1,
        }

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        session = self.session.session
        response: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "conversation_id": self.session.conversation_id,
            "output_modalities": ["audio"] if self.audio else ["text"],
            "max_output_tokens": self.max_tokens if self.max_tokens is not None else "inf",
            "output": [],
            "usage": None,
            "metadata": self.metadata,
            **extra,
        }
        if self.audio:
            response["audio"] = {
                "output": {"format": self.fmt.wire(), "voice": session["audio"]["output"]["voice"]}
            }
        return response

    def _done(self, reason: str | None = None) -> list[dict[str, Any]]:
        """``response.done``, then ``rate_limits.updated`` as the service sends it."""
        usage = self._usage()
        extra: dict[str, Any] = {"output": copy.deepcopy(self.output), "usage": usage}
        if self.status == "cancelled":
            extra["status_details"] = {"type": "cancelled", "reason": reason}
        elif self.status == "incomplete":
            extra["status_details"] = {"type": "incomplete", "reason": "max_output_tokens"}
        limits = [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {
                "name": "tokens",
                "limit": 40000,
                "remaining": 40000 - usage["total_tokens"],
                "reset_seconds": round(usage["total_tokens"] * 0.0015, 3),
            },
        ]
        return [
            event("response.done", response=self._response(self.status, **extra)),
            event("rate_limits.updated", rate_limits=limits),
        ]

    def _usage(self) -> dict[str, Any]:
        text_in, audio_in = self.context_tokens
        audio_out = self.audio_ms // 50
        return {
            "total_tokens": text_in + audio_in + self.words + audio_out,
            "input_tokens": text_in + audio_in,
            "output_tokens": self.words + audio_out,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "cached_tokens": 0,
                "image_tokens": 0,
            },
            "output_token_details": {"text_tokens": self.words, "audio_tokens": audio_out},
        }

    def _open_item(self, item: dict[str, Any]) -> Iterator[_Step]:
        self._item = item
        previous = self.session.add_item(item)
        self.output.append(item)
        yield event(
            "response.output_item.added",
            response_id=self.id,
            output_index=len(self.output) - 1,
            item=copy.deepcopy(item),
        )
        yield event("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous)

    def _close_item(self, status: str) -> list[dict[str, Any]]:
        """The events that finish the open part and item (``status``: completed/incomplete)."""
        item, part = self._item, self._part
        assert item is not None
        where = self._where()
        events: list[dict[str, Any]] = []
        if part is not None:
            if self._audio_open:
                events.append(event("response.output_audio.done", **where, content_index=0))
                events.append(
                    event(
                        "response.output_audio_transcript.done",
                        **where,
                        content_index=0,
                        transcript=part["transcript"],
                    )
                )
                wire_part = {"type": "audio", "transcript": part["transcript"]}
            else:
                events.append(
                    event("response.output_text.done", **where, content_index=0, text=part["text"])
                )
                wire_part = {"type": "text", "text": part["text"]}
            events.append(
                event("response.content_part.done", **where, content_index=0, part=wire_part)
            )
        item["status"] = status
        snapshot = copy.deepcopy(item)
        events.append(
            event(
                "response.output_item.done",
                response_id=self.id,
                output_index=where["output_index"],
                item=snapshot,
            )
        )
        events.append(event("conversation.item.done", item=copy.deepcopy(snapshot)))
        self._item, self._part, self._audio_open = None, None, False
        return events

    # ------------------------------------------------------------ production

    def _produce(self) -> Generator[_Step, None, None]:
        if self.plan.tool is not None:
            yield from self._function_call(self.plan.tool, self.plan.arguments)
        else:
            yield from self._message(self.plan.text)

    def _function_call(self, name: str, arguments: str) -> Iterator[_Step]:
        item: dict[str, Any] = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": new_id("call"),
            "arguments": "",
        }
        yield from self._open_item(item)
        yield Pause("word")
        where = self._where()
        yield event(
            "response.function_call_arguments.delta",
            **where,
            call_id=item["call_id"],
            delta=arguments,
        )
        item["arguments"] = arguments
        yield event(
            "response.function_call_arguments.done",
            **where,
            call_id=item["call_id"],
            name=name,
            arguments=arguments,
        )
        yield Pause("word")  # as the service, the response ends a moment later
        yield from self._close_item("completed")

    def _message(self, text: str) -> Iterator[_Step]:
        item: dict[str, Any] = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        yield from self._open_item(item)
        # Item content parts say output_audio/output_text; content_part events say audio/text.
        if self.audio:
            part: dict[str, Any] = {"type": "output_audio", "transcript": ""}
            wire_part: dict[str, Any] = {"type": "audio", "transcript": ""}
            delta_type, field = "response.output_audio_transcript.delta", "transcript"
        else:
            part = {"type": "output_text", "text": ""}
            wire_part = {"type": "text", "text": ""}
            delta_type, field = "response.output_text.delta", "text"
        item["content"].append(part)
        self._part = part
        where = self._where()
        yield event("response.content_part.added", **where, content_index=0, part=wire_part)
        for word in split_words(text):
            if self.max_tokens is not None and self.words >= self.max_tokens:
                self.status = "incomplete"
                break
            yield Pause("word")
            part[field] += word
            self.words += 1
            yield event(delta_type, **where, content_index=0, delta=word)
            if self.audio:
                yield from self._say(item["id"], word, len(part[field]))
        yield from self._close_item("incomplete" if self.status == "incomplete" else "completed")

    def _say(self, item_id: str, word: str, heard_chars: int) -> Iterator[_Step]:
        """The audio of one word, 40 ms at a time; counted as it is produced."""
        self._audio_open = True
        where = self._where()
        for chunk in voice_chunks(word, self.fmt):
            yield Pause("audio", CHUNK_MS)
            self.audio_ms += CHUNK_MS
            self.session.record_audio(item_id, CHUNK_MS)
            yield event(
                "response.output_audio.delta",
                **where,
                content_index=0,
                delta=base64.b64encode(chunk).decode("ascii"),
            )
        self.session.record_word_end(item_id, heard_chars)
