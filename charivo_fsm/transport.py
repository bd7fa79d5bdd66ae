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

    Optional: ``applied_config(config) -> RealtimeSessionConfig``, the config as
    the transport applies it (its kind in ``transport``, the ``model`` it uses);
    the manager then sends and shows that config (``state.session.config``), so
    the state tells what is actually in use.

    The manager never overlaps the lifecycle calls (``connect``,
    ``update_session``, ``recover``, ``disconnect``) and bounds each of them by
    its ``transport_timeout``.  ``on_event`` is called once, by the manager's
    constructor; the callback is synchronous and may be called from any task
    of the same event loop.
    """

    async def connect(self, config: RealtimeSessionConfig) -> None:
        """Open the link and start a provider session with ``config`` (the effective config)."""

    async def update_session(self, config: RealtimeSessionConfig) -> None:
        """Apply ``config`` to the live session; return once the provider accepted it."""

    async def recover(self, config: RealtimeSessionConfig) -> None:
        """Re-establish a lost link with ``config`` (one reconnect attempt)."""

    async def disconnect(self) -> None:
        """Close the link (the manager calls it once per stop)."""

    async def send_text(self, text: str) -> None:
        """Send a user text message and ask for a response."""

    async def send_audio(self, audio: bytes) -> None:
        """Send a chunk of microphone audio in the session's input format."""

    async def send_tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        """Send the output of the tool call ``call_id`` to the provider."""

    async def interrupt(self) -> None:
        """Cancel the response in flight, if any."""

    def on_event(self, callback: EventCallback) -> None:
        """Register the callback that receives every transport event (called once)."""


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

    async def commit_audio(self) -> None:
        """Commit the buffered input audio as a user turn and ask for a response."""

    async def clear_audio(self) -> None:
        """Drop the input audio not yet committed."""

    async def truncate_audio(self, item_id: str, audio_end_ms: int) -> None:
        """Cut the assistant audio item ``item_id`` at ``audio_end_ms`` (what was heard)."""
