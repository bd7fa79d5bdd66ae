"""Test helpers for applications built on charivo_fsm.

* :class:`FakeTransport` — a scriptable in-memory transport that records every
  call (see :mod:`charivo_fsm.testing.fake` for the scripting rules);
* :class:`RecordingEmitter` — an event emitter that records ``(name, payload)``;
* :func:`settle` — let all other tasks run until they are blocked, without
  moving a virtual clock.
"""

from .fake import METHODS, Call, FakeTransport, Gate, MethodName, RecordingEmitter, settle

__all__ = [
    "METHODS",
    "Call",
    "FakeTransport",
    "Gate",
    "MethodName",
    "RecordingEmitter",
    "settle",
]
