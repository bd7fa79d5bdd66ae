"""Tier 5: proof that the property suites bite.

Each *plant* below re-introduces one bug the decisions rule out (most are races
of the TypeScript original, SEMANTICS §4) by monkeypatching the core, the
manager or the OpenAI transport at runtime -- no source file is edited, and
everything is restored (and the declared machines rebound to the real core)
when the fixture ends.  The test runs what ``charivo-fsm check --examples 500
--seed 1`` runs -- the tier-3 driver programs (:mod:`charivo_fsm.testing.suite`)
on asyncio, then on trio, over the fake transport (or the OpenAI transport and
the local server, for a transport plant) -- against the planted engine, asserts
that it fails, and reports the example that first failed.

``pytest tests/test_planted_bugs.py -s`` prints the table that docs/invariants.md
records; ``CHARIVO_PLANTS_SHRINK=1`` also shrinks each counterexample and prints
it; ``CHARIVO_PLANTS_TIER2=1`` also runs the tier-2 stateful test over the pure
core against each plant (its column of the table).
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
from charivo_fsm import core_tools
from charivo_fsm import manager as manager_module
from charivo_fsm.core import Connect, Core, Disconnect, Emit, RunTool
from charivo_fsm.errors import CharivoError, CharivoStateError, CharivoTransportError
from charivo_fsm.events import ErrorEvent, SessionEnded, SessionStarted, StateUpdate, ToolCall
from charivo_fsm.machines import MACHINES
from charivo_fsm.manager import RealtimeManager
from charivo_fsm.testing.suite import BACKENDS, SuiteResult, format_steps, run_suite
from charivo_fsm.testing.suite_openai import openai_transport_factory
from charivo_fsm.transports.openai import OpenAIRealtimeTransport
from charivo_fsm.voice import AudioItems

try:
    from test_core_stateful import CoreMachine
except ImportError:  # pragma: no cover - another import mode
    from tests.test_core_stateful import CoreMachine

CHECK_EXAMPLES = 500  # `charivo-fsm check --examples 500 --seed 1`, per backend
CHECK_SEED = 1
TIER2 = bool(os.environ.get("CHARIVO_PLANTS_TIER2"))
TIER2_BUDGET = 100  # examples of the stateful core test (40 steps each)
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
    transport: str = "fake"  # what check runs over: "fake", or "openai" (--transport)


PLANTS: dict[str, Plant] = {}


def plant(
    name: str, rule: str, bug: str, transport: str = "fake"
) -> Callable[[Callable[[pytest.MonkeyPatch], None]], Any]:
    def register(apply: Callable[[pytest.MonkeyPatch], None]) -> Any:
        PLANTS[name] = Plant(name, rule, bug, apply, transport)
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


# --------------------------------------------- plants for the obligations (issue 14)


@plant("jitter_out_of_bounds", "D6", "the reconnect jitter is twice its bound")
def _jitter_out_of_bounds(mp: pytest.MonkeyPatch) -> None:
    next_attempt = Core._next_attempt

    def planted(self: Core) -> None:
        jitter = self._jitter
        self._jitter = 2 * jitter  # delay x [1 - 2j, 1 + 2j]
        try:
            next_attempt(self)
        finally:
            self._jitter = jitter

    mp.setattr(Core, "_next_attempt", planted)


@plant("attempts_carry_over", "D6", "a new loss goes on counting the last loop's attempts")
def _attempts_carry_over(mp: pytest.MonkeyPatch) -> None:
    next_attempt = Core._next_attempt
    begin_start = Core.begin_start
    counted: dict[int, int] = {}  # by core, within a session (ids are reused later)

    def planted(self: Core) -> None:
        if self._attempt == 0 and id(self) in counted:  # a new loop: not reset
            self._attempt = min(counted[id(self)], len(self._delays) - 1)
        next_attempt(self)
        counted[id(self)] = self._attempt

    def planted_start(self: Core) -> None:
        counted.pop(id(self), None)
        begin_start(self)

    mp.setattr(Core, "_next_attempt", planted)
    mp.setattr(Core, "begin_start", planted_start)


@plant("reconnect_is_a_new_session", "D6", "a successful reconnect takes a new session id")
def _reconnect_is_a_new_session(mp: pytest.MonkeyPatch) -> None:
    commit_recover = Core.commit_recover

    def planted(self: Core) -> None:
        commit_recover(self)
        self.session_id = self._new_session_id()

    mp.setattr(Core, "commit_recover", planted)


@plant("started_during_recover", "D6", "session.started during a recover says connected")
def _started_during_recover(mp: pytest.MonkeyPatch) -> None:
    handle = core_module._EVENT_HANDLERS[SessionStarted]

    def planted(self: Core, event: SessionStarted) -> None:
        if self.session.state == "active" and self.connection.state == "recovering":
            self.connection.state = "connected"  # the new link announced itself
            self._emit_state()
            return
        handle(self, event)

    mp.setitem(core_module._EVENT_HANDLERS, SessionStarted, planted)


@plant("ended_during_recover", "D6", "session.ended during a reconnect ends the session")
def _ended_during_recover(mp: pytest.MonkeyPatch) -> None:
    handle = core_module._EVENT_HANDLERS[SessionEnded]

    def planted(self: Core, event: SessionEnded) -> None:
        state = self.connection.state
        if self.session.state == "active" and state in ("backoff", "recovering"):
            self.connection.state = "connected"  # not ignored: it ends the session
            try:
                handle(self, event)
            finally:
                if self.connection.state == "connected":
                    self.connection.state = state
            return
        handle(self, event)

    mp.setitem(core_module._EVENT_HANDLERS, SessionEnded, planted)


@plant("reconnect_never_exhausts", "D6", "the last failed recover leaves the loop hanging")
def _reconnect_never_exhausts(mp: pytest.MonkeyPatch) -> None:
    def planted(self: Core) -> None:
        pass  # no reconnect:exhausted, no session end: the session stays active forever

    mp.setattr(Core, "exhaust_reconnect", planted)


@plant("usage_lost_after_interrupt", "D7", "a completion after an interrupt drops its usage")
def _usage_lost_after_interrupt(mp: pytest.MonkeyPatch) -> None:
    def planted(self: Core) -> None:
        pass  # the tokens were spent, but nobody hears of it

    mp.setattr(Core, "report_usage", planted)


@plant("tool_timeout_late", "D8", "a tool's timeout fires a second after its deadline")
def _tool_timeout_late(mp: pytest.MonkeyPatch) -> None:
    def planted(
        token: int, name: str, handler: Any, args: Any, context: Any, timeout: float
    ) -> RunTool:
        return RunTool(token, name, handler, args, context, timeout + 1.0)

    mp.setattr(core_tools, "RunTool", planted)


@plant("state_update_between_sessions", "D9", "a StateUpdate between sessions is applied")
def _state_update_between_sessions(mp: pytest.MonkeyPatch) -> None:
    handle = core_module._EVENT_HANDLERS[StateUpdate]

    def planted(self: Core, event: StateUpdate) -> None:
        if self.session.state in ("idle", "stopped"):  # D18.7 forgotten
            if event.response_status is not None:
                self.response.fire(self, "sync_" + str(event.response_status))
            self._emit_state()
            return
        handle(self, event)

    mp.setitem(core_module._EVENT_HANDLERS, StateUpdate, planted)


@plant("error_keeps_audio_playing", "D11", "an error event leaves the audio playing")
def _error_keeps_audio_playing(mp: pytest.MonkeyPatch) -> None:
    apply_error = Core._apply_error

    def planted(self: Core, error: Any) -> None:
        runner = self.audio
        self.audio = _Deaf(runner, "end")  # type: ignore[assignment]
        try:
            apply_error(self, error)
        finally:
            self.audio = runner

    mp.setattr(Core, "_apply_error", planted)


@plant("no_cleanup_disconnect", "D17.13", "a remote end leaves the link open (no disconnect)")
def _no_cleanup_disconnect(mp: pytest.MonkeyPatch) -> None:
    def planted(self: Core) -> None:
        self._cancel(self._connect_op)
        self._connect_op = None
        self._cancel(self._link_op)
        self._link_op = None  # ... and no clean-up disconnect

    mp.setattr(Core, "cleanup_link", planted)


@plant("connect_unbounded", "D3", "connect is not bounded by transport_timeout")
def _connect_unbounded(mp: pytest.MonkeyPatch) -> None:
    def planted(self: RealtimeManager, effect: Any) -> None:
        self._spawn(effect.token, self._transport.connect, effect.config)  # no bound

    mp.setitem(manager_module._EXECUTE, Connect, planted)


@plant("truncates_played_audio", "voice", "a cut truncates an item already played in full")
def _truncates_played_audio(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(Core, "unplayed_audio", Core.has_item)


@plant("ignores_played_reports", "voice", "truncation ignores the app's mark_played reports")
def _ignores_played_reports(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(AudioItems, "mark", lambda self, item_id, played_ms: None)


@plant("no_barge_in", "voice", "user speech does not cut the assistant's audio")
def _no_barge_in(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(Core, "_barge_in_enabled", lambda self: False)


@plant("send_retried", "D14", "a failed send is sent again (a second response request)")
def _send_retried(mp: pytest.MonkeyPatch) -> None:
    send = RealtimeManager._send

    async def planted(self: RealtimeManager, what: str, call: Any, *args: Any) -> None:
        try:
            await send(self, what, call, *args)
        except CharivoStateError:
            raise
        except CharivoError:
            await send(self, what, call, *args)  # retried: the request goes out twice

    mp.setattr(RealtimeManager, "_send", planted)


class _BatchAborted(Exception):
    pass


@plant("listener_aborts_batch", "D1", "a listener failure drops the rest of the batch")
def _listener_aborts_batch(mp: pytest.MonkeyPatch) -> None:
    drain = RealtimeManager._drain

    def planted_failed(self: RealtimeManager, name: str, error: BaseException) -> None:
        raise _BatchAborted(name)

    def planted_drain(self: RealtimeManager) -> None:
        try:
            drain(self)
        except _BatchAborted:
            self._core.out.clear()  # the effects after the failing emit are lost
            self._draining = False

    mp.setattr(RealtimeManager, "_listener_failed", planted_failed)
    mp.setattr(RealtimeManager, "_drain", planted_drain)


@plant(
    "no_replay_on_recover",
    "transport",
    "the OpenAI transport's recover does not replay the conversation",
    transport="openai",
)
def _no_replay_on_recover(mp: pytest.MonkeyPatch) -> None:
    async def planted(self: OpenAIRealtimeTransport, config: Any) -> None:
        self._require_entered()
        await self._open(config, replay=False)

    mp.setattr(OpenAIRealtimeTransport, "recover", planted)


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


def _check(chosen: Plant) -> tuple[str | None, SuiteResult | None]:
    """What ``charivo-fsm check --examples 500 --seed 1`` runs: asyncio, then trio
    unless asyncio failed.  Returns the backend that failed and its result."""
    factory = openai_transport_factory if chosen.transport == "openai" else None
    for backend in BACKENDS:
        result = run_suite(
            backend=backend,
            examples=CHECK_EXAMPLES,
            seed=CHECK_SEED,
            factory=factory,
            shrink=SHRINK,
        )
        assert result.error is None, result.error
        if result.first_failure is not None:
            return backend, result
    return None, None


def test_plant_is_caught(planted: Plant) -> None:
    tier2 = _tier2(TIER2_BUDGET) if TIER2 else None
    backend, result = _check(planted)
    violation = result.violation if result is not None else None
    what = f"{violation.invariant.rule} {violation.invariant.name}" if violation else "-"
    needed = f"{backend} {result.first_failure}" if result is not None else "not caught"
    caught_by_tier2 = "-" if not TIER2 else tier2 if tier2 is not None else "not caught"
    print(
        f"\n| `{planted.name}` | {planted.rule} | {planted.bug} | {caught_by_tier2} | "
        f"{needed} | {what} |"
    )
    if SHRINK and violation is not None:
        print(str(violation))
        print(format_steps(violation.steps))
    assert result is not None, (
        f"{planted.name} was not caught by charivo-fsm check --examples {CHECK_EXAMPLES} "
        f"--seed {CHECK_SEED}"
    )


def test_plants_are_restored() -> None:
    """After the plants, the real engine passes a short tier-3 run again."""
    result = run_suite(backend="trio", examples=20, seed=CHECK_SEED, shrink=False)
    assert result.ok, result.violation or result.error
