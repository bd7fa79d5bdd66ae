"""The effects the core asks its driver to execute: plain data, appended in order to
``Core.out`` (see :mod:`charivo_fsm.core`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import (
    CharivoError,
)
from .model import (
    RealtimeSessionConfig,
    RealtimeToolContext,
    ToolHandler,
)

# --------------------------------------------------------------------------
# Effects
# --------------------------------------------------------------------------


class Emit(NamedTuple):
    """Call the emitter: ``emitter.emit(name, payload)``."""

    name: str
    payload: Any


class Log(NamedTuple):
    """Write one log record (``context["event"]`` is ``event``)."""

    level: int
    message: str
    context: dict[str, Any]


class Connect(NamedTuple):
    token: int
    config: RealtimeSessionConfig


class Patch(NamedTuple):
    token: int
    config: RealtimeSessionConfig


class Recover(NamedTuple):
    token: int
    config: RealtimeSessionConfig


class Disconnect(NamedTuple):
    token: int
    cleanup: bool  # True: after a remote end / failure; the outcome is only logged


class Sleep(NamedTuple):
    token: int
    delay: float


class RunTool(NamedTuple):
    token: int
    name: str
    handler: ToolHandler
    args: dict[str, Any]
    context: RealtimeToolContext
    timeout: float


class SendToolResult(NamedTuple):
    token: int
    call_id: str
    output: Mapping[str, Any]


class Project(NamedTuple):
    """Run the result projectors for a tool result that was sent."""

    name: str
    output: Mapping[str, Any]
    call_id: str


class Truncate(NamedTuple):
    """Truncate the assistant audio item ``item_id`` at ``audio_end_ms`` (a voice
    transport's ``truncate_audio``); the outcome is only logged."""

    token: int
    item_id: str
    audio_end_ms: int


class Cancel(NamedTuple):
    """Cancel the pending effect with this token (its outcome will be ignored)."""

    token: int


class Settle(NamedTuple):
    """Wake a caller waiting on ``ticket``; raise ``error`` there if not None."""

    ticket: Any
    error: CharivoError | None


Effect = (
    Emit
    | Log
    | Connect
    | Patch
    | Recover
    | Disconnect
    | Sleep
    | RunTool
    | SendToolResult
    | Project
    | Truncate
    | Cancel
    | Settle
)


class OpTimeout(Exception):
    """Reported by a driver as the failure of an effect that ran out of time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g}s")
        self.seconds = seconds


# ``Emit(name, payload)`` without the Python-level ``__new__`` of a NamedTuple (the
# same object; the emits of a streamed response are the most frequent effects).
_tuple_new = tuple.__new__
