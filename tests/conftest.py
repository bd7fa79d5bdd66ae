"""Shared fixtures: every async test runs on asyncio and on trio, both on virtual time.

* asyncio uses a looptime event loop (``anyio.current_time()`` is virtual and
  jumps to the next timer whenever every task is blocked);
* trio uses a fresh ``MockClock(autojump_threshold=0)`` per test.

Mark async tests with ``pytest.mark.anyio``.
"""

from __future__ import annotations

import sys
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
