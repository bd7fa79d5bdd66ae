"""Tier 5: proof that the property suites bite.

Each *plant* below re-introduces one bug the decisions rule out (most are races
of the TypeScript original, SEMANTICS §4) by monkeypatching the core or the
manager at runtime -- no source file is edited, and everything is restored (and
the declared machines rebound to the real core) when the fixture ends.  The
test runs the tier-2 stateful test over the pure core and the tier-3 driver
programs (:mod:`charivo_fsm.testing.suite`) against the planted engine and
asserts the bug is caught, reporting how many examples each suite needed.

``pytest tests/test_planted_bugs.py -s`` prints the table that docs/invariants.md
records; ``CHARIVO_PLANTS_SHRINK=1`` also shrinks each tier-3 counterexample and
prints it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from charivo_fsm import core as core_module
from charivo_fsm.core import Core, Disconnect, Emit
from charivo_fsm.errors import CharivoTransportError
from charivo_fsm.events import ErrorEvent, ToolCall
from charivo_fsm.machines import MACHINES
from charivo_fsm.manager import RealtimeManager
from charivo_fsm.testing.suite import SuiteResult, format_steps, run_suite

try:
    from test_core_stateful import CoreMachine
except ImportError:  # pragma: no cover - another import mode
    from tests.test_core_stateful import CoreMachine

TIER2_BUDGET = 100  # examples of the stateful core test (40 steps each)
TIER3_BUDGET = 400  # driver programs (up to 40 steps each) per seed
TIER3_SEEDS = (1, 2, 3)
SHRINK = bool(os.environ.get("CHARIVO_PLANTS_SHRINK"))

# --------------------------------------------------------------------- helpers


def _rebind() -> None:
    """Compile the declared machines against Core's current methods."""
    for spec in MACHINES.values():
        spec.bind(Core)


class _Deaf:
    """A runner stand-in that ignores one trigger (for 'forgets to ...' plants)."""

    def __init__(self, runner: Any, trigger: str) -> None:
        object.__setattr__(self, "_runner", runner)
        object.__setattr__(self, "_trigger", trigger)

    def fire(self, core: Any, trigger: str) -> bool:
        if trigger == self._trigger:
            return True
        return bool(self._runner.fire(core, trigger))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._runner, name, value)


@attrs.frozen
class Plant:
    name: str
    rule: str
    bug: str
    apply: Callable[[pytest.MonkeyPatch], None]


PLANTS: dict[str, Plant] = {}


def plant(name: str, rule: str, bug: str) -> Callable[[Callable[[pytest.MonkeyPatch], None]], Any]:
    def register(apply: Callable[[pytest.MonkeyPatch], None]) -> Any:
        PLANTS[name] = Plant(name, rule, bug, apply)
        return apply

    return register


# ---------------------------------------------------------------------- plants


@plant("coalesce_to_first", "D5", "a request arriving while a follow-up is queued is dropped")
def _coalesce_to_first(mp: pytest.MonkeyPatch) -> None:
    update = Core.update

    def planted(self: Core, override: Any, ticket: Any) -> None:
        if self.refresh.state == "queued":
            override = None  # the queued follow-up keeps the first request's config
        update(self, override, ticket)

    mp.setattr(Core, "update", planted)


@plant("no_stop_wins", "D4", "a stop does not abort the patch in flight")
def _no_stop_wins(mp: pytest.MonkeyPatch) -> None:
    begin_stop = Core.begin_stop

    def planted(self: Core) -> None:
        runner = self.refresh
        self.refresh = _Deaf(runner, "abort")  # type: ignore[assignment]
        try:
            begin_stop(self)
        finally:
            self.refresh = runner

    mp.setattr(Core, "begin_stop", planted)


@plant("reconnect_writes_after_cancel", "D6", "a stop leaves the backoff running; it recovers")
def _reconnect_writes_after_cancel(mp: pytest.MonkeyPatch) -> None:
    request_disconnect = Core.request_disconnect
    backoff_elapsed = Core._on_backoff_elapsed

    def planted_disconnect(self: Core) -> None:
        self._link_op = None  # forgotten, not cancelled: its outcome stays current
        request_disconnect(self)

    def planted_elapsed(self: Core, value: Any) -> None:
        if self.connection.state != "backoff":  # the cancelled loop carries on (B11)
            self._link_op = None
            self.start_recover()
            return
        backoff_elapsed(self, value)

    mp.setattr(Core, "request_disconnect", planted_disconnect)
    mp.setattr(Core, "_on_backoff_elapsed", planted_elapsed)


@plant("second_tool_result", "D8", "a failed success-send is followed by a failure send")
def _second_tool_result(mp: pytest.MonkeyPatch) -> None:
    send_failed = Core._on_tool_send_failed

    def planted(self: Core, call_id: str, error: BaseException) -> None:
        name = self._calls[call_id].name
        send_failed(self, call_id, error)
        self._tool_failed(name, call_id, CharivoTransportError("send failed"))  # B13

    mp.setattr(Core, "_on_tool_send_failed", planted)


@plant("no_end_on_exhaustion", "D2", "an exhausted reconnect emits no session:end")
def _no_end_on_exhaustion(mp: pytest.MonkeyPatch) -> None:
    fail_exhausted = Core.fail_exhausted

    def planted(self: Core) -> None:
        start = len(self.out)
        fail_exhausted(self)
        self.out[start:] = [
            e
            for e in self.out[start:]
            if not (isinstance(e, Emit) and e.name == "realtime:session:end")
        ]

    mp.setattr(Core, "fail_exhausted", planted)


@plant("listener_aborts_transition", "D1", "a raising listener propagates out of the manager")
def _listener_aborts_transition(mp: pytest.MonkeyPatch) -> None:
    def planted(self: RealtimeManager, name: str, error: Exception) -> None:
        raise error  # B1: not isolated

    mp.setattr(RealtimeManager, "_listener_failed", planted)


@plant("stale_patch_commit", "D5", "a patch discarded by a lost link still commits")
def _stale_patch_commit(mp: pytest.MonkeyPatch) -> None:
    discard = Core.discard_patch_for_reconnect
    patch_ok = Core._on_patch_ok

    def planted_discard(self: Core) -> None:
        self._patch_op = None  # forgotten, not cancelled: its outcome stays current
        discard(self)

    def planted_ok(self: Core, value: Any) -> None:
        if self.refresh.state == "idle":  # discarded: commit anyway (B7)
            self._patch_op = None
            self.commit_patch()
            return
        patch_ok(self, value)

    mp.setattr(Core, "discard_patch_for_reconnect", planted_discard)
    mp.setattr(Core, "_on_patch_ok", planted_ok)


@plant("tool_call_while_reconnecting", "D6", "a tool call is executed while reconnecting")
def _tool_call_while_reconnecting(mp: pytest.MonkeyPatch) -> None:
    handle = core_module._EVENT_HANDLERS[ToolCall]

    def planted(self: Core, event: ToolCall) -> None:
        state = self.connection.state
        if self.session.state == "active" and state in ("backoff", "recovering"):
            self.connection.state = "connected"  # B13: no refusal while reconnecting
            try:
                handle(self, event)
            finally:
                self.connection.state = state
            return
        handle(self, event)

    mp.setitem(core_module._EVENT_HANDLERS, ToolCall, planted)


@plant("stop_not_joining", "D4", "a second stop calls disconnect again")
def _stop_not_joining(mp: pytest.MonkeyPatch) -> None:
    join_stop = Core.join_stop

    def planted(self: Core) -> None:
        join_stop(self)
        if self.session.state == "stopping":  # B10: every stop disconnects
            token = self._op(self._on_disconnect_ok, self._on_disconnect_failed)
            self.out.append(Disconnect(token, False))

    mp.setattr(Core, "join_stop", planted)


@plant("connected_over_lost_link", "D3", "a loss while connecting is forgotten")
def _connected_over_lost_link(mp: pytest.MonkeyPatch) -> None:
    def planted(self: Core) -> None:
        self.connection.state = "connecting"  # B4: the start commits `connected`

    mp.setattr(Core, "note_lost_while_connecting", planted)


@plant("raw_error_in_last_error", "D11", "an error event stores the raw exception")
def _raw_error_in_last_error(mp: pytest.MonkeyPatch) -> None:
    handle = core_module._EVENT_HANDLERS[ErrorEvent]

    def planted(self: Core, event: ErrorEvent) -> None:
        handle(self, event)
        last = self._last_error
        if last is not None and last.cause is event.error:
            self._last_error = event.error  # type: ignore[assignment]  # B12

    mp.setitem(core_module._EVENT_HANDLERS, ErrorEvent, planted)


@plant("exit_without_stop", "D15", "leaving `async with` cancels without stopping")
def _exit_without_stop(mp: pytest.MonkeyPatch) -> None:
    async def planted(self: RealtimeManager, *exc_info: Any) -> bool:
        tg = self._tg
        assert tg is not None
        self._exited = True
        tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)
        self._tg = None
        return False

    mp.setattr(RealtimeManager, "__aexit__", planted)


@plant("stop_strands_updates", "D4", "a stop leaves update_session callers waiting")
def _stop_strands_updates(mp: pytest.MonkeyPatch) -> None:
    begin_stop = Core.begin_stop
    settle_waiters = Core._settle_waiters
    stopping: list[bool] = []

    def planted_begin_stop(self: Core) -> None:
        stopping.append(True)
        try:
            begin_stop(self)
        finally:
            stopping.pop()

    def planted_settle(self: Core, upto: int | None, error: Any = None) -> None:
        if stopping:
            return  # the waiting callers are forgotten
        settle_waiters(self, upto, error)

    mp.setattr(Core, "begin_stop", planted_begin_stop)
    mp.setattr(Core, "_settle_waiters", planted_settle)


# ---------------------------------------------------------------------- runners


def _tier2(budget: int) -> int | None:
    """Run the tier-2 stateful test; the example that first failed, or None."""
    count = [0]

    class Counted(CoreMachine):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            count[0] += 1
            super().__init__()

    try:
        run_state_machine_as_test(
            Counted,
            settings=settings(
                max_examples=budget,
                stateful_step_count=40,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                report_multiple_bugs=False,
                suppress_health_check=list(HealthCheck),
            ),
        )
    except Exception:
        return count[0] - 1  # Hypothesis replays the failing example once more
    return None


@pytest.fixture(params=sorted(PLANTS))
def planted(request: pytest.FixtureRequest) -> Iterator[Plant]:
    chosen = PLANTS[request.param]
    with pytest.MonkeyPatch.context() as mp:
        chosen.apply(mp)
        _rebind()
        try:
            yield chosen
        finally:
            pass
    _rebind()


def _tier3() -> tuple[int | None, SuiteResult | None]:
    """Run tier-3 programs (seed after seed) until the plant is caught.

    Returns how many programs ran up to and including the first that failed.
    """
    spent = 0
    for seed in TIER3_SEEDS:
        result = run_suite(backend="trio", examples=TIER3_BUDGET, seed=seed, shrink=SHRINK)
        assert result.error is None, result.error
        if result.first_failure is not None:
            return spent + result.first_failure, result
        spent += result.examples
    return None, None


def test_plant_is_caught(planted: Plant) -> None:
    tier2 = _tier2(TIER2_BUDGET)
    tier3, result = _tier3()
    violation = result.violation if result is not None else None
    what = f"{violation.invariant.rule} {violation.invariant.name}" if violation else "-"
    print(
        f"\n| {planted.name} | {planted.rule} | {planted.bug} | "
        f"{tier2 if tier2 is not None else 'not caught'} | "
        f"{tier3 if tier3 is not None else 'not caught'} | {what} |"
    )
    if SHRINK and violation is not None:
        print(str(violation))
        print(format_steps(violation.steps))
    assert tier2 is not None or tier3 is not None, f"{planted.name} was not caught"


def test_plants_are_restored() -> None:
    """After the plants, the real engine passes a short tier-3 run again."""
    result = run_suite(backend="trio", examples=20, seed=TIER3_SEEDS[0], shrink=False)
    assert result.ok, result.violation or result.error
