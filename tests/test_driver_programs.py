"""Tier 3: driver programs against the real manager, with the invariants of tier 4.

One Hypothesis example is one program, run by one ``anyio.run`` on a virtual
clock -- asyncio with a looptime loop, trio with ``MockClock(autojump_threshold=0)``
-- drawing its next step inside the loop: user commands (run in tasks of the
program's task group so they interleave), every transport event, transport
faults, advancing time.  Every named invariant of
:mod:`charivo_fsm.testing.suite` (docs/invariants.md) is checked after every step
and after leaving ``async with``.  ``charivo-fsm check`` runs the same programs
with more examples.

The engine bugs the suite found (docs/invariants.md) are regression tests here,
as the fixed step lists that exposed them.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charivo_fsm.events import ConnectionLost, SessionEnded, ToolCall
from charivo_fsm.testing import (
    INVARIANTS,
    FakeTransport,
    FakeTransportFaults,
    InvariantViolation,
    run_program,
    run_steps,
)
from charivo_fsm.testing.suite import (
    Advance,
    Broken,
    Checkpoint,
    Deliver,
    Fault,
    Invariant,
    Latency,
    StartSession,
    Step,
    StopSession,
    UpdateSession,
)

BACKENDS = ["asyncio", "trio"]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_driver_programs_keep_every_invariant(backend: str, data: st.DataObject) -> None:
    run_program(data, backend=backend)


def test_every_decision_family_has_an_invariant() -> None:
    rules = {rule for invariant in INVARIANTS for rule in invariant.rule.split(", ")}
    assert {"D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8", "D9", "D10", "D11"} <= rules
    assert {"D14", "D15", "D17.12", "D17.13", "D18.6", "voice", "transport"} <= rules
    assert len({invariant.name for invariant in INVARIANTS}) == len(INVARIANTS)


# ------------------------------------------------------------ fixed programs


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reconnect_story_passes(backend: str) -> None:
    """A readable program through start, a lost link, a coalesced refresh and stop."""
    run_steps(
        [
            StartSession("marin"),
            Deliver(ToolCall(name="lagging", args={"n": 1}, call_id="c1")),
            Deliver(ConnectionLost(cause="network")),
            UpdateSession("alloy"),
            UpdateSession("verse"),
            Advance(0.5),
            Deliver(ToolCall(name="quick", args={"n": 2}, call_id="c2")),
            Fault("update_session", "delay", 1.0),
            UpdateSession("marin"),
            UpdateSession("alloy"),
            Advance(5.0),
            StopSession(),
        ],
        backend=backend,
    )


def test_a_violation_names_the_invariant_and_lists_the_steps() -> None:
    def never(ctx: object) -> Generator[None, object, None]:
        while True:
            seen = yield
            if isinstance(seen, Checkpoint) and seen.now >= 1.0:
                raise Broken("time went by")

    with pytest.raises(InvariantViolation) as caught:
        run_steps(
            [StartSession("marin"), Advance(1.0), StopSession()],
            invariants=[Invariant("no_time", "D12", "time never passes", never)],
        )
    violation = caught.value
    assert str(violation) == "[D12] no_time: time went by"
    assert violation.steps[0].endswith("start_session(voice='marin')")
    assert violation.steps[-1].endswith("advance 1s")


def test_a_factory_must_return_faults() -> None:
    with pytest.raises(TypeError, match="TransportFaults"):
        run_steps([StartSession("marin")], factory=lambda: (FakeTransport(), object()))


def test_fake_faults_implement_the_protocol() -> None:
    from charivo_fsm.testing import TransportFaults

    assert isinstance(FakeTransportFaults(FakeTransport()), TransportFaults)


# ------------------------------------------------ engine bugs the suite found


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stop_during_a_start_shows_stopping_at_once(backend: str) -> None:
    """Found by the suite (``stop_wins``, D3/D4): a stop during ``starting`` emitted a
    state that still said ``starting``, and ``manager.state`` kept saying so until the
    session was stopped (a stale session snapshot).  Fixed in 4f2909f."""
    run_steps(
        [Latency((("connect", 0.5),)), StartSession("marin"), StopSession(), Advance(1.0)],
        backend=backend,
    )


HELD_BY_A_CLEANUP: list[Step] = [
    StartSession("marin"),
    Fault("disconnect", "hang"),
    Deliver(SessionEnded()),  # the remote end's clean-up disconnect hangs
    StartSession("marin"),  # its connect waits behind that disconnect (D18.6)
    Fault("disconnect", "hang"),  # and so would the stop's own disconnect
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["stop_session", "leaving"])
def test_a_stop_behind_a_cleanup_disconnect_ends_within_the_timeout(backend: str, how: str) -> None:
    """Found by the suite: a stop queued behind a pending clean-up disconnect took up to
    twice transport_timeout, and leaving `async with` gave up on it (session left
    stopping, a start_session caller never returned).  Fixed by a stop adopting the
    pending clean-up disconnect in a0c59c8 (D4, D15, D18.6)."""
    program = HELD_BY_A_CLEANUP + ([StopSession(), Advance(10.0)] if how == "stop_session" else [])
    run_steps(program, backend=backend)


QUEUED_CLEANUPS: list[Step] = [
    Latency((("disconnect", 2.0),)),
    StartSession("marin"),
    Deliver(SessionEnded()),  # a remote end: its clean-up disconnect takes 2 s
    StartSession("marin"),  # waits for that clean-up (D18.6) ...
    Deliver(SessionEnded()),  # ... and fails: a second clean-up is queued behind it
    StartSession("marin"),
    Deliver(SessionEnded()),  # a third
    StartSession("marin"),
    StopSession(),  # adopts the last clean-up, which waits behind the other two
    Advance(10.0),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stop_behind_queued_cleanups_ends_within_the_timeout(backend: str) -> None:
    """Found by the suite (``stop_converges``, ``exit_leaves_nothing_running``; D4, D15,
    D18.6), once stories made remote ends during starts common: each start failed by
    session.ended while it waited for a clean-up disconnect queued one more, and a stop
    adopted only the last, so it returned after their sum (6 s here, bound 5 s).  Fixed
    by clean-ups merging: while one is pending, nothing asked for after it has reached
    the transport, so it closes every link there is."""
    run_steps(QUEUED_CLEANUPS, backend=backend)
