"""The conversation history the OpenAI transport replays into a new service
session on ``recover`` (see :class:`ConversationHistory`)."""

from __future__ import annotations

from typing import Any, Final

from ..errors import CharivoValidationError

__all__ = ["DEFAULT_MAX_REPLAY_ITEMS", "ConversationHistory"]

DEFAULT_MAX_REPLAY_ITEMS: Final = 100


class _Entry:
    """One conversation item as the history keeps it (mutable until replayed)."""

    __slots__ = ("arguments", "audio_ms", "call_id", "heard_ms", "key", "kind", "name", "text")

    def __init__(self, kind: str, key: str | None = None, text: str = "") -> None:
        self.kind = kind  # user | assistant | function_call | function_call_output
        self.key = key  # item id (user audio, assistant) or call id
        self.text = text  # message text, or the call's output
        self.call_id: str | None = None
        self.name = ""
        self.arguments = ""
        self.audio_ms = 0  # assistant audio received for the item
        self.heard_ms: int | None = None  # set by a truncation

    def item(self) -> dict[str, Any] | None:
        """The ``conversation.item.create`` item, or ``None`` when there is nothing to say."""
        if self.kind == "function_call":
            return {
                "type": "function_call",
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.arguments,
            }
        if self.kind == "function_call_output":
            return {"type": "function_call_output", "call_id": self.call_id, "output": self.text}
        text = self.text
        if self.kind == "assistant" and self.heard_ms is not None:
            text = _heard_part(text, self.heard_ms, self.audio_ms)
        if not text:
            return None
        if self.kind == "user":
            return {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }
        return {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text}],
        }


def _heard_part(text: str, heard_ms: int, audio_ms: int) -> str:
    """The share of ``text`` the user heard: the same fraction as the audio
    played, cut back to a whole word (an estimate: the service keeps no
    transcript of a truncated item)."""
    if audio_ms <= 0 or heard_ms >= audio_ms:
        return text
    cut = len(text) * heard_ms // audio_ms
    if cut >= len(text):
        return text
    head = text[:cut]
    if not text[cut].isspace() and head == head.rstrip():  # the cut is inside a word
        parts = head.rsplit(None, 1)
        head = parts[0] if len(parts) == 2 else ""
    return head.rstrip()


class ConversationHistory:
    """What ``recover`` replays into a new service session.

    Kept, in conversation order: user text messages; user audio turns as user
    text messages carrying their completed transcription (placed where the
    audio was committed; a turn whose transcription never came is skipped);
    assistant messages with their final text (the ``response.done`` output,
    else the text and transcript deltas received); function calls (call id,
    name, arguments) and their outputs.  Never audio.

    A truncated assistant item keeps only the share of its text the user
    heard, estimated from the audio played (``audio_end_ms`` over the audio
    received), cut back to a whole word; the service itself deletes the
    transcript of a truncated item, so this is the best that is known.

    Bounded by ``max_items`` (``0``: nothing is kept or replayed): the most
    recent items are kept.  A function call and its output are never split:
    when the call falls out of the window its output goes with it.  An output
    whose call is not in the history is not kept (the service refuses an
    output without its call).
    """

    def __init__(self, max_items: int = DEFAULT_MAX_REPLAY_ITEMS) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
            raise CharivoValidationError(
                f"max_replay_items must be a non-negative integer (got {max_items!r})"
            )
        self.max_items = max_items
        self._entries: list[_Entry] = []

    # ---------------------------------------------------------- reading

    def items(self) -> list[dict[str, Any]]:
        """The items to replay, oldest first (at most ``max_items``)."""
        return [item for item in (entry.item() for entry in self._entries) if item is not None]

    def __len__(self) -> int:
        return len(self.items())

    def clear(self) -> None:
        """Forget the whole conversation (a new session starts)."""
        self._entries.clear()

    # ---------------------------------------------------------- recording

    def _find(self, kind: str, key: str | None) -> _Entry | None:
        if key is None:
            return None
        for entry in reversed(self._entries):
            if entry.kind == kind and entry.key == key:
                return entry
        return None

    def _append(self, entry: _Entry) -> _Entry | None:
        if self.max_items == 0:
            return None
        self._entries.append(entry)
        self._trim()
        return entry

    def _trim(self) -> None:
        live = [entry for entry in self._entries if entry.item() is not None]
        excess = len(live) - self.max_items
        if excess <= 0:
            return
        dropped: set[int] = set()
        for entry in live[:excess]:
            dropped.add(id(entry))
            if entry.kind == "function_call":
                output = self._find("function_call_output", entry.key)
                if output is not None:
                    dropped.add(id(output))
        last = max(self._entries.index(entry) for entry in live[:excess])
        self._entries = [
            entry
            for index, entry in enumerate(self._entries)
            if index > last and id(entry) not in dropped
        ]

    def add_user_text(self, text: str) -> None:
        """A user text message was sent."""
        self._append(_Entry("user", text=text))

    def reserve_user_audio(self, item_id: str) -> None:
        """A committed user audio turn: its place, until its transcript comes."""
        if self._find("user", item_id) is None:
            self._append(_Entry("user", key=item_id))

    def _set_text(self, entry: _Entry, text: str) -> None:
        was_live = entry.item() is not None
        entry.text = text
        if not was_live:
            self._trim()  # the entry now counts towards the bound

    def user_transcript(self, item_id: str | None, text: str) -> None:
        """The transcript of a user audio turn arrived (it is replayed as text)."""
        entry = self._find("user", item_id)
        if entry is None:
            self._append(_Entry("user", key=item_id, text=text))
        else:
            self._set_text(entry, text)

    def _assistant(self, item_id: str | None) -> _Entry | None:
        if item_id is None:  # no id: continue an unnamed last assistant item
            last = self._entries[-1] if self._entries else None
            entry = last if last is not None and last.kind == "assistant" else None
        else:
            entry = self._find("assistant", item_id)
        if entry is None:
            entry = self._append(_Entry("assistant", key=item_id))
        return entry

    def assistant_delta(self, item_id: str | None, text: str) -> None:
        """A piece of an assistant message's text or transcript."""
        entry = self._assistant(item_id)
        if entry is not None:
            self._set_text(entry, entry.text + text)

    def assistant_final(self, item_id: str | None, text: str) -> None:
        """An assistant message's final text (from ``response.done``)."""
        if not text:
            return  # keep what the deltas said (a cancelled item may come back empty)
        entry = self._assistant(item_id)
        if entry is not None:
            self._set_text(entry, text)

    def assistant_audio(self, item_id: str, ms: int) -> None:
        """``ms`` more milliseconds of audio arrived for the assistant item ``item_id``."""
        entry = self._assistant(item_id)
        if entry is not None:
            entry.audio_ms = ms

    def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """The item was truncated at ``audio_end_ms``: its replayed text keeps the share
        of the words that was heard."""
        entry = self._find("assistant", item_id)
        if entry is not None:
            entry.heard_ms = audio_end_ms

    def add_call(self, call_id: str, name: str, arguments: str) -> None:
        """The model called a function."""
        if self._find("function_call", call_id) is not None:
            return
        entry = _Entry("function_call", key=call_id)
        entry.call_id, entry.name, entry.arguments = call_id, name, arguments
        self._append(entry)

    def add_output(self, call_id: str, output: str) -> None:
        """A function call's output was sent."""
        if self._find("function_call", call_id) is None:
            return
        entry = _Entry("function_call_output", key=call_id, text=output)
        entry.call_id = call_id
        self._append(entry)
