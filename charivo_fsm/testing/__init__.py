"""Test helpers for applications built on charivo_fsm.

* :class:`FakeTransport` — a scriptable in-memory transport that records every
  call (see :mod:`charivo_fsm.testing.fake` for the scripting rules);
* :class:`RecordingEmitter` — an event emitter that records ``(name, payload)``;
* :func:`foreign_cancellation` — raise a cancellation nobody around the caller
  requested (fault injection for handlers and transports).
* :func:`settle` — let all other tasks run until they are blocked, without
  moving a virtual clock;
* :class:`LocalRealtimeServer` — an embedded OpenAI-Realtime-compatible
  WebSocket server on 127.0.0.1 that follows the real service's rules and
  refusals, with fault injection (see :mod:`charivo_fsm.testing.server`), with
  :class:`ToolTrigger`, :class:`HandshakeRecord`, :class:`Injection` and
  :data:`GarbageKind`; its rules run without sockets in
  :class:`~charivo_fsm.testing.service_rules.ServiceSession`;
* audio for voice tests (:mod:`charivo_fsm.testing.audio`): :func:`speech` and
  :func:`silence` in any :class:`AudioFormat` of the GA interface;
* the semantic suite (:mod:`charivo_fsm.testing.suite`, ``charivo-fsm check``):
  :class:`TransportFaults`, the fault-injection interface a transport author
  implements (:class:`FakeTransportFaults` implements it for the fake), a
  :data:`TransportFactory` returning ``(transport, faults)``, the named
  :data:`INVARIANTS`, and :func:`run_suite` / :func:`run_program` /
  :func:`run_steps` to run driver programs against the engine (they need the
  test extras: Hypothesis, trio, looptime).
"""

from .audio import AudioFormat, silence, speech
from .fake import (
    METHODS,
    Call,
    FakeTransport,
    Gate,
    MethodName,
    RecordingEmitter,
    foreign_cancellation,
    settle,
)
from .server import GarbageKind, HandshakeRecord, Injection, LocalRealtimeServer, ToolTrigger
from .suite import (
    INVARIANTS,
    FakeTransportFaults,
    Invariant,
    InvariantViolation,
    SuiteConfig,
    SuiteResult,
    TransportFactory,
    TransportFaults,
    fake_transport_factory,
    run_program,
    run_steps,
    run_suite,
)

__all__ = [
    "INVARIANTS",
    "METHODS",
    "AudioFormat",
    "Call",
    "FakeTransport",
    "FakeTransportFaults",
    "GarbageKind",
    "Gate",
    "HandshakeRecord",
    "Injection",
    "Invariant",
    "InvariantViolation",
    "LocalRealtimeServer",
    "MethodName",
    "RecordingEmitter",
    "SuiteConfig",
    "SuiteResult",
    "ToolTrigger",
    "TransportFactory",
    "TransportFaults",
    "fake_transport_factory",
    "foreign_cancellation",
    "run_program",
    "run_steps",
    "run_suite",
    "settle",
    "silence",
    "speech",
]
