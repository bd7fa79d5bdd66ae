"""Test helpers for applications built on charivo_fsm.

* :class:`FakeTransport` — a scriptable in-memory transport that records every
  call (see :mod:`charivo_fsm.testing.fake` for the scripting rules);
* :class:`RecordingEmitter` — an event emitter that records ``(name, payload)``;
* :func:`settle` — let all other tasks run until they are blocked, without
  moving a virtual clock;
* :class:`LocalRealtimeServer` — an embedded OpenAI-Realtime-compatible
  WebSocket server on 127.0.0.1 with fault injection (see
  :mod:`charivo_fsm.testing.server`), with :class:`ToolTrigger`,
  :class:`HandshakeRecord` and :data:`GarbageKind`.
"""

from .fake import METHODS, Call, FakeTransport, Gate, MethodName, RecordingEmitter, settle
from .server import GarbageKind, HandshakeRecord, LocalRealtimeServer, ToolTrigger

__all__ = [
    "METHODS",
    "Call",
    "FakeTransport",
    "GarbageKind",
    "Gate",
    "HandshakeRecord",
    "LocalRealtimeServer",
    "MethodName",
    "RecordingEmitter",
    "ToolTrigger",
    "settle",
]
