"""Tier 2: a Hypothesis rule-based state machine over the pure core (no event loop).

The test plays the driver: it keeps the effects the core asks for as pending
operations and lets Hypothesis choose when each one succeeds or fails, in any
order, interleaved with user commands and transport events.  A small model of
the rules is checked after every step (the invariants are named after the
decisions they come from).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from charivo_fsm import (
    CharivoError,
    CharivoStateError,
    CharivoValidationError,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolRegistration,
)
from charivo_fsm import events as ev
from charivo_fsm.core import (
    Cancel,
    Connect,
    Core,
    Disconnect,
    Emit,
    Log,
    OpTimeout,
    Patch,
    Project,
    Recover,
    RunTool,
    SendToolResult,
    Settle,
    Sleep,
    Truncate,
)
from charivo_fsm.tools import ToolRegistry

VOICES = ("alloy", "marin", "nova", "verse")
CALL_IDS = ("c1", "c2", "c3")


async def _handler(args: dict[str, Any], context: Any) -> dict[str, Any]:  # never awaited here
    return {"success": True}


class _Ticket:
    def __init__(self) -> None:
        self.settled: list[CharivoError | None] = []


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        registry = ToolRegistry()
        registry.register(
            RealtimeToolRegistration(
                definition=RealtimeTool(
                    name="echo",
                    parameters={
                        "type": "object",
                        "properties": {"n": {"type": "integer"}},
                        "required": ["n"],
                    },
                ),
                handler=_handler,
            )
        )
        self.now = 0.0
        ids = itertools.count(1)
        self.core = Core(
            registry=registry,
            reconnect_delays=(0.5, 1.0),
            clock=lambda: self.now,
            new_session_id=lambda: f"s{next(ids)}",
        )
        self.pending: dict[int, Any] = {}
        self.emitted: list[tuple[str, Any]] = []
        self.tickets: list[tuple[str, _Ticket]] = []
        self.requested_voice: str | None = None
        self.requests = 0  # start and update requests made so far
        self.sends: Counter[str] = Counter()
        self.tool_calls: Counter[str] = Counter()
        # voice carried by each config operation, and the voice requested and the number
        # of requests made when it was built
        self.carried: dict[int, tuple[str | None, str | None, int]] = {}
        self.committed_voice: str | None = None
        self.last_op_failed = False
        # voice: audio bytes received per item, truncations per item since its last chunk
        self.audio_received: Counter[str] = Counter()
        self.truncated_since_chunk: Counter[str] = Counter()
        self.truncations: list[Truncate] = []
        self.cut_item: str | None = None  # truncated, and no response started since
        self.cancelled_completions = 0

    # ------------------------------------------------------------- the driver

    def drain(self) -> None:
        announced: CharivoError | None = None
        for effect in self.core.out:
            if isinstance(effect, Emit):
                self.emitted.append((effect.name, effect.payload))
                if effect.name == "realtime:audio:delta" and self.cut_item is not None:
                    assert effect.payload.item_id != self.cut_item, "audio of a cut item played"
                if effect.name == "realtime:error":
                    assert isinstance(effect.payload.error, CharivoError)
                    announced = effect.payload.error
                elif effect.name == "realtime:state" and announced is not None:
                    # D5/D11: the state that follows realtime:error holds that very object
                    assert effect.payload.state.last_error is announced
                    announced = None
            elif isinstance(effect, Cancel):
                self.pending.pop(effect.token, None)
            elif isinstance(effect, Settle):
                effect.ticket.settled.append(effect.error)
            elif isinstance(effect, (Log, Project)):
                pass
            elif isinstance(effect, Truncate):
                self.truncations.append(effect)
                self.cut_item = effect.item_id
                self.truncated_since_chunk[effect.item_id] += 1
                self.pending[effect.token] = effect
            else:
                if isinstance(effect, SendToolResult):
                    self.sends[effect.call_id] += 1
                if isinstance(effect, (Connect, Patch, Recover)):
                    self.carried[effect.token] = (
                        effect.config.voice,
                        self.requested_voice,
                        self.requests,
                    )
                self.pending[effect.token] = effect
        self.core.out.clear()
        if self.core.session.state in ("idle", "stopped"):
            self.cut_item = None  # a new session has new items
        assert announced is None, "realtime:error without the state that records it"

    def ops(self, kind: type) -> list[Any]:
        return [e for e in self.pending.values() if isinstance(e, kind)]

    # ------------------------------------------------------------------ rules

    @rule(voice=st.sampled_from(VOICES))
    def start(self, voice: str) -> None:
        ticket = _Ticket()
        state = self.core.session.state
        try:
            self.core.start(RealtimeSessionConfig(voice=voice), ticket)
        except CharivoStateError:
            assert state in ("starting", "active", "stopping", "cancelling")
            return
        assert state in ("idle", "stopped")
        self.requested_voice = voice
        self.requests += 1
        self.tickets.append(("start", ticket))
        self.drain()

    @rule(voice=st.sampled_from(VOICES))
    def update(self, voice: str) -> None:
        ticket = _Ticket()
        self.core.update(RealtimeSessionConfig(voice=voice), ticket)
        self.requested_voice = voice
        self.requests += 1
        self.tickets.append(("update", ticket))
        self.drain()

    @rule()
    def stop(self) -> None:
        ticket = _Ticket()
        self.core.stop(ticket)
        self.tickets.append(("stop", ticket))
        self.drain()

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), succeed=st.booleans(), timeout=st.booleans())
    def finish_op(self, data: st.DataObject, succeed: bool, timeout: bool) -> None:
        token = data.draw(st.sampled_from(sorted(self.pending)))
        effect = self.pending.pop(token)
        if token in self.carried:
            if succeed:
                self.committed_voice = self.carried[token][0]
            elif isinstance(effect, Patch) and self.carried[token][2] == self.requests:
                # a refused patch puts the base back to what the transport accepted;
                # nothing was requested since it was built, so nothing is left to send
                self.requested_voice = self.committed_voice
            self.last_op_failed = not succeed
        if isinstance(effect, Sleep):
            self.now += effect.delay
            self.core.op_done(token)
        elif succeed:
            value = {"success": True} if isinstance(effect, RunTool) else None
            self.core.op_done(token, None, value)
        elif timeout:
            self.core.op_done(token, OpTimeout(1.0))
        else:
            self.core.op_done(token, RuntimeError("transport failed"))
        self.drain()

    @rule(
        event=st.one_of(
            st.just(ev.SessionStarted()),
            st.just(ev.SessionEnded()),
            st.builds(ev.ConnectionLost, cause=st.just("offline")),
            st.builds(ev.ConnectionLost, cause=st.just("offline"), error=st.just(OSError("x"))),
            st.just(ev.AssistantResponseStarted()),
            st.builds(ev.AssistantTextDelta, text=st.sampled_from(["a", "b"])),
            st.builds(
                ev.AssistantResponseCompleted,
                text=st.sampled_from(["", "done"]),
                usage=st.sampled_from([None, {"total_tokens": 1}]),
            ),
            st.just(ev.AudioOutputStarted()),
            st.just(ev.AudioOutputEnded()),
            st.builds(ev.AudioLipsync, rms=st.sampled_from([0.0, 0.5])),
            st.builds(
                ev.ToolCall,
                name=st.sampled_from(["echo", "missing"]),
                args=st.sampled_from([{"n": 1}, {"n": "x"}, {}]),
                call_id=st.sampled_from((*CALL_IDS, None, "")),
            ),
            st.builds(ev.ErrorEvent, error=st.just(RuntimeError("boom"))),
            st.builds(ev.StateUpdate, response_status=st.sampled_from([None, "responding"])),
        )
    )
    def transport_event(self, event: Any) -> None:
        if isinstance(event, (ev.AssistantResponseStarted, ev.ConnectionLost)):
            self.cut_item = None  # a new response, or the old link's audio is gone
        if isinstance(event, ev.ToolCall) and event.call_id:
            self.tool_calls[event.call_id] += 1
        self.core.on_event(event)
        self.drain()

    # ------------------------------------------------------------- voice rules

    @rule(
        event=st.one_of(
            st.builds(
                ev.AudioOutputDelta,
                audio=st.sampled_from([b"", b"\x00" * 48, b"\x01" * 4800]),
                item_id=st.sampled_from(["i1", "i2", None]),
            ),
            st.builds(ev.UserSpeechStarted, item_id=st.just("u"), audio_start_ms=st.just(0)),
            st.just(ev.AudioOutputEnded()),
            st.builds(
                ev.AssistantResponseCompleted,
                status=st.sampled_from(["cancelled", "completed", "incomplete"]),
                reason=st.sampled_from([None, "turn_detected"]),
                usage=st.sampled_from([None, {"total_tokens": 1}]),
            ),
        )
    )
    def voice_event(self, event: Any) -> None:
        before = len(self.emitted)
        self.core.on_event(event)
        self.drain()
        if isinstance(event, ev.AudioOutputDelta) and event.item_id is not None:
            if self.core.session.state not in ("idle", "stopped"):
                self.audio_received[event.item_id] += len(event.audio)
                self.truncated_since_chunk[event.item_id] = 0
        if isinstance(event, ev.AssistantResponseCompleted) and event.status == "cancelled":
            names = [name for name, _ in self.emitted[before:]]
            assert "realtime:assistant:done" not in names, "a cancelled response completed"

    @rule(item_id=st.sampled_from(["i1", "i2"]))
    def audio_item_sent(self, item_id: str) -> None:
        """A whole item arrives at once (the service is faster than playback): the
        app still plays its tail when the next step comes."""
        self.voice_event(ev.AudioOutputDelta(b"\x02" * 9600, item_id))
        self.voice_event(ev.AudioOutputEnded())

    @rule()
    def interrupt(self) -> None:
        try:
            self.core.check_send()
        except CharivoStateError:
            return
        self.core.interrupted()
        self.drain()

    @rule(item_id=st.sampled_from(["i1", "i2", "zz"]), played_ms=st.integers(0, 200))
    def mark_played(self, item_id: str, played_ms: int) -> None:
        try:
            self.core.mark_played(item_id, played_ms)
        except CharivoValidationError:
            pass  # an item this session never received (or forgot): refused, nothing changes
        self.drain()

    @rule(seconds=st.sampled_from([0.01, 0.05, 0.5]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    # ------------------------------------------------------------- invariants

    @invariant()
    def d2_session_boundaries_pair_up(self) -> None:
        """session:start and session:end alternate, starting with a start."""
        open_session = False
        for name, _payload in self.emitted:
            if name == "realtime:session:start":
                assert not open_session, "a second session:start before the end"
                open_session = True
            elif name == "realtime:session:end":
                assert open_session, "session:end without a session:start"
                open_session = False
        if self.core.session.state in ("idle", "starting", "stopped"):
            assert not open_session, "the session ended without a session:end"

    @invariant()
    def d5_at_most_one_lifecycle_call_of_each_kind(self) -> None:
        assert len(self.ops(Patch)) <= 1
        assert len(self.ops(Connect)) <= 1
        assert len(self.ops(Recover)) <= 1
        assert len([d for d in self.ops(Disconnect) if not d.cleanup]) <= 1
        assert len(self.ops(Sleep)) <= 1
        assert not (self.ops(Recover) and self.ops(Sleep))

    @invariant()
    def d5_patches_only_for_a_live_connected_session(self) -> None:
        if self.ops(Patch):
            assert self.core.session.state == "active"
            assert self.core.connection.state == "connected"

    @invariant()
    def d5_quiescent_config_is_the_latest_requested(self) -> None:
        core = self.core
        if (
            not self.pending
            and core.session.state == "active"
            and core.connection.state == "connected"
        ):
            config = core.snapshot().session.config
            assert config is not None
            # committed only on success: the config is the one last acknowledged
            assert config.voice == self.committed_voice
            # coalesce-to-latest: nothing requested is left behind unless a patch failed
            if not self.last_op_failed:
                assert config.voice == self.requested_voice

    @invariant()
    def d8_one_outcome_and_at_most_one_send_per_call(self) -> None:
        outcomes: Counter[str] = Counter()
        for name, payload in self.emitted:
            if name in ("realtime:tool:result", "realtime:tool:error") and payload.call_id:
                outcomes[payload.call_id] += 1
        for call_id, count in self.sends.items():
            assert count <= self.tool_calls[call_id]
        for call_id, count in outcomes.items():
            assert count <= self.tool_calls[call_id]
        if self.core.running_tool_calls() == 0:
            assert outcomes == +self.tool_calls

    @invariant()
    def voice_truncation_only_cuts_audio_not_yet_played(self) -> None:
        """A truncation is never past the audio received, and only happens when some
        of it was not played (else there is nothing to cut)."""
        for truncation in self.truncations:
            received_ms = self.audio_received[truncation.item_id] // 48
            assert 0 <= truncation.audio_end_ms < received_ms, truncation

    @invariant()
    def voice_an_item_is_truncated_at_most_once_per_chunk(self) -> None:
        assert all(count <= 1 for count in self.truncated_since_chunk.values())

    @invariant()
    def voice_audio_start_and_end_alternate(self) -> None:
        playing = False
        for name, _payload in self.emitted:
            if name == "tts:audio:start":
                assert not playing, "tts:audio:start twice without an end"
                playing = True
            elif name == "tts:audio:end":
                assert playing, "tts:audio:end without a start"
                playing = False
        if self.core.session.state in ("idle", "stopped"):
            assert not playing, "audio still playing after the session"

    @invariant()
    def d4_every_settled_caller_is_settled_once(self) -> None:
        for _kind, ticket in self.tickets:
            assert len(ticket.settled) <= 1

    @invariant()
    def d11_last_error_is_a_charivo_error(self) -> None:
        error = self.core.last_error
        assert error is None or isinstance(error, CharivoError)

    @invariant()
    def d4_stop_converges_when_the_transport_answers(self) -> None:
        if not self.pending:
            assert self.core.session.state in ("idle", "active", "stopped")
            if self.core.session.state != "active":
                for kind, ticket in self.tickets:
                    if kind in ("stop", "start"):
                        assert ticket.settled, f"{kind} caller left waiting"


CoreMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestCore = CoreMachine.TestCase
