"""How the semantic suite scripts a transport: the provider's side of the link.

:class:`TransportFaults` is the fault-injection interface a transport author
implements for ``charivo-fsm check --transport MODULE:FACTORY``;
:class:`FakeTransportFaults` implements it over
:class:`~charivo_fsm.testing.FakeTransport`.  A transport may also implement
:class:`TransportRules`: the suite then asks it, after every step, whether the
rules that only the provider's side can see (one response request at a time,
the conversation replayed on reconnect, ...) still hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import anyio

from ..events import TransportEvent
from ..transport import RealtimeTransport
from .fake import FakeTransport, MethodName

__all__ = [
    "FakeTransportFaults",
    "TransportFactory",
    "TransportFaults",
    "TransportRules",
    "fake_transport_factory",
]


@runtime_checkable
class TransportFaults(Protocol):
    """How the suite scripts a transport: the provider's side of the link.

    ``method`` is one of the eight transport method names
    (:data:`charivo_fsm.testing.METHODS`).  Behaviours queue per method: each
    one-shot behaviour (``fail_once``, ``hang``, ``delay``, ``emit_then_raise``)
    is used by exactly one later call, oldest first; a persistent one
    (``fail_always``, ``delay(always=True)``; the later replaces the earlier)
    applies to every call that finds no one-shot behaviour, until ``succeed``.
    Waiting must go through anyio (the suite runs on a virtual clock) and must
    be cancellable.

    A method the transport cannot support may raise :class:`NotImplementedError`;
    the suite then skips that step.
    """

    def fail_once(self, method: MethodName, exc: BaseException) -> None:
        """The next call of ``method`` raises ``exc``."""

    def fail_always(self, method: MethodName, exc: BaseException) -> None:
        """Every call of ``method`` raises ``exc`` until :meth:`succeed`."""

    def hang(self, method: MethodName) -> None:
        """The next call of ``method`` never returns (until it is cancelled)."""

    def delay(self, method: MethodName, seconds: float, *, always: bool = False) -> None:
        """The next call of ``method`` (every call with ``always``, until
        :meth:`succeed` or ``fail_always``) succeeds after ``seconds`` (anyio time)."""

    def succeed(self, method: MethodName) -> None:
        """Drop every behaviour scripted for ``method``: its calls succeed again."""

    def emit(self, event: TransportEvent) -> None:
        """Deliver ``event`` to the manager now, as the provider would."""

    def emit_then_raise(
        self, method: MethodName, event: TransportEvent, exc: BaseException
    ) -> None:
        """The next call of ``method`` delivers ``event`` and then raises ``exc``."""


TransportFactory = Callable[[], "tuple[RealtimeTransport, TransportFaults]"]
"""Builds a fresh transport and its fault-injection handle (one per program).

If the transport is an async context manager, the suite enters it before the
manager and leaves it after (like ``OpenAIRealtimeTransport``)."""


class FakeTransportFaults:
    """:class:`TransportFaults` over a :class:`~charivo_fsm.testing.FakeTransport`."""

    def __init__(self, fake: FakeTransport) -> None:
        self.fake = fake

    def fail_once(self, method: MethodName, exc: BaseException) -> None:
        """The next call of ``method`` raises ``exc``."""
        self.fake.fail_once(method, exc)

    def fail_always(self, method: MethodName, exc: BaseException) -> None:
        """Every call of ``method`` raises ``exc`` (until :meth:`succeed`)."""
        self.fake.fail_always(method, exc)

    def hang(self, method: MethodName) -> None:
        """The next call of ``method`` never returns (until cancelled)."""
        self.fake.hang(method)

    def delay(self, method: MethodName, seconds: float, *, always: bool = False) -> None:
        """The next call of ``method`` (every call with ``always``) takes ``seconds``."""

        async def slow(*_args: Any) -> None:
            await anyio.sleep(seconds)

        self.fake.respond_with(method, slow, once=not always)

    def succeed(self, method: MethodName) -> None:
        """``method`` behaves normally again."""
        self.fake.succeed(method)

    def emit(self, event: TransportEvent) -> None:
        """Report ``event`` to the manager, as the provider would."""
        self.fake.emit(event)

    def emit_then_raise(
        self, method: MethodName, event: TransportEvent, exc: BaseException
    ) -> None:
        """The next call of ``method`` reports ``event``, then raises ``exc``."""
        self.fake.emit_then_raise(method, event, exc)


def fake_transport_factory() -> tuple[FakeTransport, FakeTransportFaults]:
    """The default :data:`TransportFactory`: a fresh FakeTransport and its faults."""
    fake = FakeTransport()
    return fake, FakeTransportFaults(fake)


@runtime_checkable
class TransportRules(Protocol):
    """Optional, next to :class:`TransportFaults`: rules only the provider's side sees.

    After every step (and after the program left ``async with``) the suite calls
    :meth:`broken_rules`; each string returned is a violation of the named
    invariant ``transport_rules_hold``.  ``final`` is true for the last call,
    when the manager has stopped (rules about a pending reply can be judged then).
    """

    def broken_rules(self, *, final: bool) -> Sequence[str]:
        """What is wrong on the provider's side so far (empty: nothing)."""
        ...
