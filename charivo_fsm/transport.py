"""The transport protocol the manager drives."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from .events import TransportEvent
from .model import RealtimeSessionConfig

__all__ = ["EventCallback", "RealtimeTransport"]

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
