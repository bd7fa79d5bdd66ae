"""Assistant audio items: how much audio arrived, and how much the app has played.

Rules of this file (pure: no I/O; time comes from the clock it is given):

* The engine remembers, per assistant audio item of the session, how much
  audio it received (in milliseconds of the session's output format) and the
  moment its first chunk arrived.  At most :data:`MAX_ITEMS` items are kept
  (the oldest is forgotten first); the session's end forgets them all.
* The *played position* of an item is what the app last reported through
  ``manager.mark_played(item_id, played_ms)``.  Without a report the engine
  assumes real-time playback from the item's first chunk: the position is the
  time elapsed since that chunk.  Either way the position is clamped to the
  audio received, so a truncation never goes past the audio the app could
  have played.
* The *current* item is the one being played (the latest item a chunk arrived
  for).  Cutting it (interrupt, barge-in) answers where to truncate it and
  forgets it as current.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import CharivoValidationError

__all__ = ["MAX_ITEMS", "AudioItems", "bytes_per_ms", "check_input_audio", "check_played_ms"]

MAX_ITEMS = 32
"""Assistant audio items remembered per session (for ``mark_played``)."""

_BYTES_PER_MS = {
    None: 48,  # the provider default: PCM16 mono 24 kHz
    "pcm16": 48,
    "g711_ulaw": 8,  # 8 kHz, one byte per sample
    "g711_alaw": 8,
}


def bytes_per_ms(audio_format: str | None) -> int:
    """Bytes of audio per millisecond in ``audio_format`` (``None``: PCM16 24 kHz)."""
    return _BYTES_PER_MS.get(audio_format, 48)


def check_played_ms(item_id: object, played_ms: object) -> None:
    """The argument checks of ``mark_played`` (raise :class:`CharivoValidationError`)."""
    if not isinstance(item_id, str) or not item_id:
        raise CharivoValidationError("mark_played: item_id must be a non-empty string")
    if isinstance(played_ms, bool) or not isinstance(played_ms, int):
        raise CharivoValidationError(
            f"mark_played: played_ms must be an integer number of milliseconds "
            f"(got {type(played_ms).__name__})"
        )
    if played_ms < 0:
        raise CharivoValidationError(
            f"mark_played: played_ms must not be negative (got {played_ms})"
        )


def check_input_audio(audio: bytes, audio_format: str | None) -> None:
    """Input audio must fit the session's input format (PCM16: whole 16-bit samples)."""
    if bytes_per_ms(audio_format) == 48 and len(audio) % 2:
        raise CharivoValidationError(
            f"audio must be PCM16 (whole 16-bit samples) for input format "
            f"{audio_format or 'pcm16'}; got {len(audio)} bytes"
        )


class _Item:
    __slots__ = ("first_at", "received", "reported")

    def __init__(self, first_at: float) -> None:
        self.first_at = first_at
        self.received = 0  # bytes
        self.reported: int | None = None  # ms, from mark_played


_NONE: dict[Any, Any] = {}  # the empty items of every AudioItems: read, never written


class AudioItems:
    """The assistant audio items of one session (see the module docstring)."""

    __slots__ = ("_clock", "_cut", "_items", "bytes_per_ms", "current")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # Both start as the shared empty dict (never written: a manager that plays no
        # audio keeps no dict of its own) and get their own on the first write.
        self._items: dict[str, _Item] = _NONE
        self.current: str | None = None
        self._cut: dict[str, None] = _NONE  # items cut (latest last): late audio is dropped
        self.bytes_per_ms = 48

    def chunk(self, item_id: str | None, size: int) -> None:
        """``size`` bytes of audio arrived for ``item_id``; it becomes the current item."""
        if item_id is None:
            self.current = None
            return
        items = self._items
        item = items.get(item_id)
        if item is None:
            if items is _NONE:
                items = self._items = {}
            if len(items) >= MAX_ITEMS:
                del items[next(iter(items))]
            item = items[item_id] = _Item(self._clock())
        item.received += size
        self.current = item_id

    def known(self, item_id: str) -> bool:
        return item_id in self._items

    def received_ms(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return 0 if item is None else item.received // self.bytes_per_ms

    def mark(self, item_id: str, played_ms: int) -> None:
        item = self._items.get(item_id)
        if item is not None:
            item.reported = played_ms

    def played_ms(self, item_id: str) -> int:
        """Where playback of ``item_id`` stands, never past the audio received."""
        item = self._items.get(item_id)
        if item is None:
            return 0
        received = item.received // self.bytes_per_ms
        if item.reported is not None:
            played = item.reported
        else:
            played = round((self._clock() - item.first_at) * 1000.0)
        return max(0, min(played, received))

    def unplayed(self) -> bool:
        """Whether the current item has audio received and not yet played."""
        current = self.current
        return current is not None and self.played_ms(current) < self.received_ms(current)

    def cut(self) -> tuple[str, int]:
        """Where to truncate the current item; it is no longer current."""
        current = self.current
        assert current is not None
        self.current = None
        self._note_cut(current)
        return current, self.played_ms(current)

    def forget_current(self) -> None:
        if self.current is not None:
            self._note_cut(self.current)
        self.current = None

    def _note_cut(self, item_id: str) -> None:
        cut = self._cut
        if cut is _NONE:
            cut = self._cut = {}
        cut[item_id] = None
        if len(cut) > MAX_ITEMS:
            del cut[next(iter(cut))]

    def was_cut(self, item_id: str) -> bool:
        """Whether ``item_id`` was cut (interrupt, barge-in) in this session."""
        return item_id in self._cut

    def clear(self) -> None:
        self._items = _NONE
        self._cut = _NONE
        self.current = None


def _no_clock() -> float:  # pragma: no cover - NO_AUDIO holds no item to time
    return 0.0


NO_AUDIO = AudioItems(_no_clock)
"""The audio items of a core that has received no audio yet, shared by every core
(a manager that plays no audio keeps no items of its own): its readers answer "no
item"; a core replaces it with an ``AudioItems`` of its own before its first write
(``chunk``), and nothing else writes to a core's items before that."""

