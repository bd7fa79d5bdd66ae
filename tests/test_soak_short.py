"""A short variant of ``make soak`` (see ``soak/`` and docs/reliability.md).

Few sessions and a short virtual run on asyncio (looptime) and trio (MockClock), and a
few sessions over the OpenAI transport against local servers (real sockets, real clock),
each under the same fault injection and with the same checks as the full soak: tool
calls received = announced = outcomes (D8), sessions started = ended (D2), no task alive
after the managers exited, every stop within ``transport_timeout`` + 1 s, no stuck call,
no exception other than a ``CharivoError``, refused input leaves the session untouched.
Memory growth is reported but not checked here: the run is too short for it to mean
anything (``make soak`` checks it).
"""

from __future__ import annotations

import anyio
import pytest

from charivo_fsm import CharivoStateError, CharivoTimeoutError, create_realtime_manager
from charivo_fsm.events import SessionEnded
from charivo_fsm.testing import FakeTransport, settle
from soak import SoakConfig, format_report, run_openai, run_virtual

SHORT = SoakConfig(
    sessions=40,
    duration=60.0,
    warmup=5.0,
    memory_limit=None,
    blocks_limit=None,
    samples=10,
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_short_soak_on_a_virtual_clock(backend: str) -> None:
    report = run_virtual(backend, SHORT)
    assert report.failures() == [], format_report(report)
    counts = report.stats.counts
    # The faults and the inputs the soak promises actually happened.
    for what in (
        "fault: call failed",
        "fault: call hung past transport_timeout",
        "fault: connection lost",
        "fault: garbage",
        "fault: replayed (out of order) event",
        "fault: remote session end",
        "bad input refused",
        "listener failures injected",
        "action: restart",
        "action: give_up",
        "fault: foreign cancellation raised by a tool handler",
        "fault: BaseException raised by a tool handler",
        "fault: foreign cancellation raised by a transport call",
        "fault: BaseException raised by a transport call",
        "fault: BaseException raised by a listener",
    ):
        assert counts[what] > 0, (what, format_report(report))
    assert counts["realtime:tool:result"] > 0 and counts["realtime:tool:error"] > 0
    assert report.covered == SHORT.duration
    # the leak check looked at every frequent kind of payload
    assert {"realtime:state", "realtime:tool:call"} <= set(report.survivors)


def test_short_soak_over_the_openai_transport() -> None:
    cfg = SoakConfig(
        sessions=6,
        duration=3.0,
        warmup=0.5,
        action_gap=0.1,
        event_gap=0.25,
        memory_limit=None,
        blocks_limit=None,
        samples=5,
    )
    report = run_openai("asyncio", cfg)
    assert report.failures() == [], format_report(report)
    assert report.stats.counts["sessions started"] > 0


@pytest.mark.anyio
async def test_stop_is_bounded_when_a_start_waits_for_a_cleanup_disconnect(
    fake: FakeTransport,
) -> None:
    """D4/D15: the stop adopts the pending clean-up disconnect instead of queueing a
    second one behind it, so it returns within transport_timeout (found by the soak)."""
    timeout = 2.0
    async with create_realtime_manager(fake, transport_timeout=timeout) as manager:
        await manager.start_session()
        fake.hang("disconnect")  # the clean-up disconnect after the remote end
        fake.emit(SessionEnded())
        await settle()
        fake.hang("disconnect")  # the stop's own disconnect
        async with anyio.create_task_group() as group:

            async def start() -> None:
                with pytest.raises(CharivoStateError):
                    await manager.start_session()

            group.start_soon(start)
            await settle()
            began = anyio.current_time()
            with pytest.raises(CharivoTimeoutError):
                await manager.stop_session()
            took = anyio.current_time() - began
    assert took <= timeout + 1.0, f"stop_session took {took:g}s"
