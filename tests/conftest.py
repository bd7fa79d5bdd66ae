"""Shared fixtures: every async test runs on asyncio and on trio, both on virtual time.

* asyncio uses a looptime event loop (``anyio.current_time()`` is virtual and
  jumps to the next timer whenever every task is blocked);
* trio uses a fresh ``MockClock(autojump_threshold=0)`` per test.

Mark async tests with ``pytest.mark.anyio``.

Every test has a bound, so that a regression fails with the test's name instead
of hanging the run:

* an async test runs under a deadline of :data:`VIRTUAL_LIMIT` seconds of its
  event loop's clock -- on a virtual clock a task waiting forever makes the clock
  jump to that deadline at once, so a lost wake-up fails in no time;
* every test, sync or async, fails after :data:`WALL_LIMIT` seconds of wall time
  (``SIGALRM`` on the main thread, raised again every few seconds should the
  test swallow it), and :mod:`faulthandler` dumps every thread's stack and ends
  the run if even that does not stop it.

``CHARIVO_TEST_WALL_LIMIT`` and ``CHARIVO_TEST_VIRTUAL_LIMIT`` change the limits.
"""

from __future__ import annotations

import faulthandler
import functools
import inspect
import itertools
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

# Make the source tree importable when the package is not installed (the
# Makefile installs it; a bare ``.venv/bin/pytest`` in a fresh checkout does not).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import anyio  # noqa: E402
import looptime  # noqa: E402
import pytest  # noqa: E402
import trio.testing  # noqa: E402

from charivo_fsm.testing import FakeTransport, RecordingEmitter  # noqa: E402

WALL_LIMIT = float(os.environ.get("CHARIVO_TEST_WALL_LIMIT", "120"))
"""Seconds of wall time any one test may take (setup and teardown included)."""

VIRTUAL_LIMIT = float(os.environ.get("CHARIVO_TEST_VIRTUAL_LIMIT", "86400"))
"""Seconds of its event loop's clock an async test may take (virtual on asyncio
with looptime and on trio with MockClock; the few tests on real clocks reach the
wall-time limit first)."""

_REPEAT = 5.0  # seconds between further alarms, should a test swallow the first


class WallClockTimeout(pytest.fail.Exception):  # type: ignore[misc, name-defined]
    """A test ran out of its wall-time bound (raised in the main thread by SIGALRM)."""


@pytest.fixture(autouse=True)
def _wall_clock_bound(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test after :data:`WALL_LIMIT` seconds of wall time."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield  # signals only reach the main thread (and POSIX has setitimer)
        return
    name = request.node.nodeid

    def expired(signum: int, frame: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, _REPEAT)  # again, should this be swallowed
        raise WallClockTimeout(f"{name} ran longer than {WALL_LIMIT:g}s of wall time")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, WALL_LIMIT)
    faulthandler.dump_traceback_later(WALL_LIMIT + 12 * _REPEAT, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def _with_deadline(test: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Any]:
    """``test`` bounded by :data:`VIRTUAL_LIMIT` seconds of its loop's clock.

    A watcher task sleeps :data:`VIRTUAL_LIMIT` and then cancels the test --
    unless a worker thread is busy (``anyio.to_thread``): the test then waits on
    real time, which a virtual clock does not see, so the watcher sleeps again.
    """

    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        expired = False

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal expired
            threads = anyio.to_thread.current_default_thread_limiter()
            while True:
                await anyio.sleep(VIRTUAL_LIMIT)
                if not threads.borrowed_tokens:
                    expired = True
                    scope.cancel()
                    return

        result: Any = None
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch, group.cancel_scope)
                result = await test(*args, **kwargs)
                group.cancel_scope.cancel()
        except BaseExceptionGroup as raised:  # the test's own exception (the watcher has none)
            if len(raised.exceptions) == 1:
                raise raised.exceptions[0] from None
            raise
        if expired:
            pytest.fail(
                f"{name} did not finish within {VIRTUAL_LIMIT:g}s of its event loop's "
                "clock (on a virtual clock: something waits for ever)"
            )
        return result

    return bounded


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """Run every async test (anyio's plugin runs it) under its virtual deadline."""
    test = pyfuncitem.obj
    bounded = inspect.iscoroutinefunction(test) and not hasattr(test, "hypothesis")
    if bounded:
        pyfuncitem.obj = _with_deadline(test, pyfuncitem.nodeid)
    try:
        return (yield)
    finally:
        if bounded:
            pyfuncitem.obj = test


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param == "asyncio":
        return ("asyncio", {"loop_factory": looptime.new_event_loop})
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def emitter() -> RecordingEmitter:
    return RecordingEmitter()


_logger_ids = itertools.count()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    """A fresh logger at DEBUG (not propagating) and the records it receives."""
    logger = logging.getLogger(f"test.captured.{next(_logger_ids)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = _Capture()
    logger.addHandler(handler)
    yield logger, handler.records
    logger.removeHandler(handler)


@pytest.fixture
def module_records() -> Iterator[list[logging.LogRecord]]:
    """Records written to the module logger ``charivo_fsm``."""
    logger = logging.getLogger("charivo_fsm")
    handler = _Capture()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture(autouse=True)
def _sdk_checked_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every local server any test creates is checked against the ``openai`` SDK:
    each client event it received against ``RealtimeClientEvent`` (no unknown
    field at any depth), each event it sent against ``RealtimeServerEvent``."""
    from charivo_fsm.testing import LocalRealtimeServer
    from tests.sdk_validation import validate_client_event, validate_server_event

    servers: list[LocalRealtimeServer] = []
    original = LocalRealtimeServer.__init__

    def recording_init(self: LocalRealtimeServer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        servers.append(self)

    monkeypatch.setattr(LocalRealtimeServer, "__init__", recording_init)
    yield
    for server in servers:
        for event in server.received:
            if getattr(server, "expects_invalid_client_events", False):
                break
            validate_client_event(event)
        for event in server.sent:
            validate_server_event(event)
