"""The transport protocol the manager drives."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from .events import TransportEvent
from .model import RealtimeSessionConfig

__all__ = ["EventCallback", "RealtimeTransport", "VoiceTransport"]

EventCallback = Callable[[TransportEvent], None]


@runtime_checkable
class RealtimeTransport(Protocol):
    """A link to a realtime provider.

    The manager never overlaps the lifecycle calls (``connect``,
    ``update_session``, ``recover``, ``disconnect``) and bounds each of them by
    its ``transport_timeout``.  ``on_event`` is called once, by the manager's
    constructor; the callback is synchronous and may be called from any task
    of the same event loop.
    """

    async def connect(self, config: RealtimeSessionConfig) -> None: ...

    async def update_session(self, config: RealtimeSessionConfig) -> None: ...

    async def recover(self, config: RealtimeSessionConfig) -> None: ...

    async def disconnect(self) -> None: ...

    async def send_text(self, text: str) -> None: ...

    async def send_audio(self, audio: bytes) -> None: ...

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None: ...

    async def interrupt(self) -> None: ...

    def on_event(self, callback: EventCallback) -> None: ...


@runtime_checkable
class VoiceTransport(RealtimeTransport, Protocol):
    """A :class:`RealtimeTransport` that also handles voice turns.

    * ``commit_audio()``: push to talk: commit the buffered input audio as a
      user turn and ask for a response;
    * ``clear_audio()``: drop input audio not yet committed;
    * ``truncate_audio(item_id, audio_end_ms)``: the user heard the assistant
      audio item ``item_id`` only up to ``audio_end_ms``; the provider drops
      the rest (audio and transcript) from the conversation.

    The manager calls ``truncate_audio`` itself (on ``interrupt()`` and on
    barge-in), never past the audio it received for that item.
    """

    async def commit_audio(self) -> None: ...

    async def clear_audio(self) -> None: ...

    async def truncate_audio(self, item_id: str, audio_end_ms: int) -> None: ...
