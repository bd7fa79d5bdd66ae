"""Shared fixtures: every async test runs on asyncio and on trio, both on virtual time.

* asyncio uses a looptime event loop (``anyio.current_time()`` is virtual and
  jumps to the next timer whenever every task is blocked);
* trio uses a fresh ``MockClock(autojump_threshold=0)`` per test.

Mark async tests with ``pytest.mark.anyio``.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Make the source tree importable when the package is not installed (the
# Makefile installs it; a bare ``.venv/bin/pytest`` in a fresh checkout does not).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import looptime  # noqa: E402
import pytest  # noqa: E402
import trio.testing  # noqa: E402

from charivo_fsm.testing import FakeTransport, RecordingEmitter  # noqa: E402


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
