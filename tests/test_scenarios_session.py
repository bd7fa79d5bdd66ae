"""Upstream scenarios T10-T12 and T15-T22 (SEMANTICS §3), ported to the Python engine.

Each test names its scenario; where a Decision (D-rule) changes the upstream outcome the
docstring says which one and how.  Time is virtual (looptime on asyncio, MockClock on
trio), so "advance N ms" is ``await anyio.sleep(N / 1000)``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from charivo_fsm import (
    Character,
    CharacterVoice,
    CharivoTransportError,
    RealtimeTool,
    RealtimeToolRegistration,
    create_realtime_manager,
)
from charivo_fsm.avatar import create_avatar_control_tools, create_avatar_result_projector
from charivo_fsm.events import ConnectionLost, ErrorEvent, ToolCall
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle

pytestmark = pytest.mark.anyio


def ctx(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, "charivo", None)
    assert isinstance(value, dict), f"log record {record.getMessage()!r} has no charivo dict"
    return value


def find(records: list[logging.LogRecord], event: str, **subset: Any) -> list[logging.LogRecord]:
    """Records whose context has ``event`` and contains every ``subset`` item."""
    found = []
    for record in records:
        context = getattr(record, "charivo", None)
        if not isinstance(context, dict) or context.get("event") != event:
            continue
        if all(context.get(key) == value for key, value in subset.items()):
            found.append(record)
    return found


def tool(name: str) -> RealtimeToolRegistration:
    async def handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"success": True}

    return RealtimeToolRegistration(
        definition=RealtimeTool(
            name=name,
            description=f"The {name} tool.",
            parameters={"type": "object", "properties": {}},
        ),
        handler=handler,
    )


def tool_names(config: Any) -> list[str]:
    return [t.name for t in config.tools]


class Outcome:
    """What a concurrently run manager call did."""

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


async def run(outcome: Outcome, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    try:
        await fn(*args)
    except Exception as error:
        outcome.error = error
    finally:
        outcome.done = True


# --------------------------------------------------------------------------------- T10


async def test_t10_logs_session_tool_reconnect_and_error_boundaries(
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    """T10: one session's log records carry the same session_id; a restart gets a new one.

    Python form: records are matched on ``record.charivo`` (``event`` names from
    CONTRACT §9, ``session_id``), the message and the level (CONTRACT §9 levels; the TS
    "warn" is ``logging.WARNING``).  The stub emits ``session.ended`` inside
    ``disconnect``; only the user stop's end is logged (R18).
    """
    logger, records = captured
    fake = FakeTransport(emit_session_ended_on_disconnect=True)
    manager = create_realtime_manager(
        fake,
        logger=logger,
        tools=create_avatar_control_tools({"expressions": ["Smile"], "motions": {"Idle": 1}}),
        result_projectors=[create_avatar_result_projector()],
    )
    async with manager:
        await manager.start_session({"provider": "openai", "voice": "marin"})
        (started,) = find(records, "session.started")
        session_id = ctx(started)["session_id"]
        assert isinstance(session_id, str) and session_id

        await manager.update_session({"voice": "alloy"})

        fake.emit(
            ToolCall(name="setExpression", args={"expressionId": "Smile"}, call_id="call-log-ok")
        )
        await settle()
        fake.emit(
            ToolCall(
                name="setExpression", args={"expressionId": "Missing"}, call_id="call-log-fail"
            )
        )
        await settle()

        fake.emit(ConnectionLost(cause="offline", error=RuntimeError("network")))
        await anyio.sleep(1.0)  # run the timers: attempt 1 waits 0.5 s, then recovers
        await settle()
        assert manager.state.connection == "connected"
        assert fake.count("recover") == 1

        fake.emit(ErrorEvent(error=RuntimeError("transport boom")))
        await manager.stop_session()

        expected = [
            (logging.INFO, "Realtime session started", "session.started", {"reason": "user"}),
            (logging.DEBUG, "Realtime session patch started", "patch.started", {"voice": "alloy"}),
            (
                logging.INFO,
                "Realtime session patch succeeded",
                "patch.succeeded",
                {"voice": "alloy"},
            ),
            (
                logging.DEBUG,
                "Realtime tool execution started",
                "tool.started",
                {"name": "setExpression", "call_id": "call-log-ok"},
            ),
            (
                logging.INFO,
                "Realtime tool execution succeeded",
                "tool.succeeded",
                {"name": "setExpression", "call_id": "call-log-ok"},
            ),
            (
                logging.WARNING,
                "Realtime tool execution failed",
                "tool.failed",
                {"name": "setExpression", "call_id": "call-log-fail"},
            ),
            (
                logging.INFO,
                "Realtime reconnect attempt",
                "reconnect.attempt",
                {"attempt": 1, "cause": "offline"},
            ),
            (
                logging.INFO,
                "Realtime reconnect succeeded",
                "reconnect.succeeded",
                {"attempts": 1, "cause": "offline"},
            ),
            (
                logging.ERROR,
                "Realtime transport error surfaced",
                "transport.error",
                {"error": "transport boom"},
            ),
            (logging.INFO, "Realtime session ended", "session.ended", {"reason": "user"}),
        ]
        for level, message, event, subset in expected:
            matches = find(records, event, session_id=session_id, **subset)
            assert matches, f"no {event} record with {subset} and session_id {session_id}"
            assert any(r.levelno == level and r.getMessage() == message for r in matches), (
                f"{event}: expected {logging.getLevelName(level)} {message!r}"
            )
        assert len(find(records, "session.ended")) == 1

        await manager.start_session({"provider": "openai", "voice": "nova"})
        newest = ctx(find(records, "session.started")[-1])["session_id"]
        assert isinstance(newest, str) and newest
        assert newest != session_id


# --------------------------------------------------------------------------------- T11


async def test_t11_leaves_provider_and_model_unset_when_not_specified(
    fake: FakeTransport,
) -> None:
    """T11: start_session() with no arguments and no options: the active config has
    transport "webrtc" and tool_choice "auto", provider and model stay None (D13: tools
    come from the empty registry, so they are ``()`` rather than absent)."""
    async with create_realtime_manager(fake) as manager:
        await manager.start_session()
        config = manager.state.session.config
        assert config is not None
        assert config.transport == "webrtc"
        assert config.tool_choice == "auto"
        assert config.provider is None
        assert config.model is None
        assert config.tools == ()
        assert fake.calls_to("connect") == [(config,)]


# --------------------------------------------------------------------------------- T12


async def test_t12_same_session_id_across_refreshes_new_after_restart(
    fake: FakeTransport,
    captured: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    """T12: session started, patch started and patch succeeded share one session_id
    (read from ``record.charivo``); after stop and a new start it differs."""
    logger, records = captured
    async with create_realtime_manager(fake, logger=logger) as manager:
        await manager.start_session({"provider": "openai", "voice": "marin"})
        initial = manager.session_id
        assert isinstance(initial, str) and initial
        await manager.update_session({"voice": "alloy"})

        relevant = (
            find(records, "session.started")
            + find(records, "patch.started")
            + find(records, "patch.succeeded")
        )
        assert len(relevant) == 3
        assert {ctx(r)["session_id"] for r in relevant} == {initial}
        assert manager.session_id == initial

        await manager.stop_session()
        await manager.start_session({"provider": "openai", "voice": "nova"})
        newest = ctx(find(records, "session.started")[-1])["session_id"]
        assert isinstance(newest, str) and newest
        assert newest != initial
        assert manager.session_id == newest


# --------------------------------------------------------------------------------- T15


async def test_t15_caches_updates_while_inactive_for_next_start(fake: FakeTransport) -> None:
    """T15: update_session while no session exists makes no transport call and returns at
    once (D17.5; the call must be inside ``async with`` per D15); the next start_session
    connects with the cached provider and voice."""
    async with create_realtime_manager(fake) as manager:
        before = anyio.current_time()
        await manager.update_session({"provider": "openai", "voice": "marin"})
        assert anyio.current_time() == before
        assert fake.count("connect") == 0
        assert fake.count("update_session") == 0
        assert fake.count("disconnect") == 0

        await manager.start_session()
        ((config,),) = fake.calls_to("connect")
        assert config.provider == "openai"
        assert config.voice == "marin"


# --------------------------------------------------------------------------------- T16


async def test_t16_refresh_emits_no_stopped_intermediate_state(emitter: RecordingEmitter) -> None:
    """T16: a refresh of an active session makes no connect/disconnect, calls the
    transport's update_session with voice alloy, and emits exactly two states (D17.2),
    both connected and none stopped: the first with the old voice, the second with the
    new one; no session boundary."""
    fake = FakeTransport(emit_session_started_on_connect=True)
    manager = create_realtime_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session({"provider": "openai", "voice": "marin"})
        fake.clear()
        emitter.clear()

        await manager.update_session({"voice": "alloy"})

        assert fake.count("connect") == 0
        assert fake.count("disconnect") == 0
        ((config,),) = fake.calls_to("update_session")
        assert config.voice == "alloy"

        states = [p.state for p in emitter.payloads("realtime:state")]
        assert [s.connection for s in states] == ["connected", "connected"]
        assert all(s.session.status != "stopped" for s in states)
        assert states[0].session.config is not None
        assert states[0].session.config.voice == "marin"
        assert states[1].session.config is not None
        assert states[1].session.config.voice == "alloy"
        assert emitter.payloads("realtime:session:start") == []
        assert emitter.payloads("realtime:session:end") == []


# --------------------------------------------------------------------------------- T17


async def test_t17_set_character_is_side_effect_free_until_update(fake: FakeTransport) -> None:
    """T17: set_character on an active session makes no transport call; the next
    update_session sends provider openai, the new character's voice and instructions
    naming it, without connect or disconnect."""
    async with create_realtime_manager(fake) as manager:
        manager.set_character(
            Character(id="char-1", name="Hiyori", voice=CharacterVoice(voice_id="marin"))
        )
        await manager.start_session({"provider": "openai"})
        ((first,),) = fake.calls_to("connect")
        assert first.voice == "marin"
        fake.clear()

        manager.set_character(
            Character(
                id="char-2",
                name="Mika",
                personality="Cheerful and curious",
                voice=CharacterVoice(voice_id="alloy"),
            )
        )
        await settle()
        assert fake.calls == []

        await manager.update_session()
        ((config,),) = fake.calls_to("update_session")
        assert config.provider == "openai"
        assert config.voice == "alloy"
        assert config.instructions is not None and "Mika" in config.instructions
        assert fake.count("connect") == 0
        assert fake.count("disconnect") == 0


# --------------------------------------------------------------------------------- T18


async def test_t18_registry_changes_reach_the_next_refresh(fake: FakeTransport) -> None:
    """T18: with the default auto_refresh_tools=False (D16), register/unregister make no
    transport call; the next update_session carries the registry as it is then."""
    async with create_realtime_manager(fake, tools=[tool("toolA")]) as manager:
        await manager.start_session()
        fake.clear()

        manager.register_tool(tool("toolB"))
        await settle()
        assert fake.calls == []
        await manager.update_session()
        last = fake.calls_to("update_session")[-1][0]
        assert {"toolA", "toolB"} <= set(tool_names(last))

        fake.clear()
        manager.unregister_tool("toolA")
        await settle()
        assert fake.calls == []
        await manager.update_session()
        first = fake.calls_to("update_session")[0][0]
        assert "toolB" in tool_names(first)
        assert "toolA" not in tool_names(first)


# --------------------------------------------------------------------------------- T19


async def test_t19_refresh_failure_keeps_session_and_retry_works(fake: FakeTransport) -> None:
    """T19: a failed patch raises, the session stays active and connected with the old
    config, last_error carries the message (D5: it is the very object raised); a retry
    patches and commits the new voice."""
    fake.fail_once("update_session", RuntimeError("refresh failed"))
    async with create_realtime_manager(fake) as manager:
        await manager.start_session({"provider": "openai", "voice": "marin"})

        with pytest.raises(CharivoTransportError, match="refresh failed") as info:
            await manager.update_session({"voice": "alloy"})
        state = manager.state
        assert state.connection == "connected"
        assert state.session.status == "active"
        assert state.session.config is not None
        assert state.session.config.voice == "marin"
        assert state.last_error is not None
        assert state.last_error.message == "refresh failed"
        assert state.last_error is info.value

        await manager.update_session({"voice": "alloy"})
        assert fake.calls_to("update_session")[-1][0].voice == "alloy"
        assert manager.state.session.config is not None
        assert manager.state.session.config.voice == "alloy"


# --------------------------------------------------------------------------------- T20


async def test_t20_single_realtime_error_when_patch_failure_also_arrives_as_event(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T20 adjusted by D5/D17.3: the transport reports the patch failure as an ``error``
    event and then raises the same object.  Exactly one realtime:error is emitted, and
    (unlike 0.7.2's R29, where the raised error was a different object) update_session
    raises the very CharivoTransportError that is in last_error and in that
    realtime:error; its message is the raw one and its cause is the raw error."""
    refresh_error = RuntimeError("session patch rejected")
    manager = create_realtime_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session({"provider": "openai", "voice": "marin"})
        fake.emit_then_raise("update_session", ErrorEvent(error=refresh_error), refresh_error)

        with pytest.raises(CharivoTransportError) as info:
            await manager.update_session({"voice": "alloy"})
        await settle()

        raised = info.value
        errors = emitter.payloads("realtime:error")
        assert len(errors) == 1
        assert errors[0].error is raised
        assert manager.state.last_error is raised
        assert raised.message == "session patch rejected"
        assert raised.cause is refresh_error
        assert manager.state.session.status == "active"
        assert manager.state.connection == "connected"


# --------------------------------------------------------------------------------- T21


async def test_t21_coalesces_repeated_refreshes_to_the_latest_config(fake: FakeTransport) -> None:
    """T21 adjusted by D17.1: ``p1 is p2`` does not carry over (update_session is a plain
    ``async def``).  Instead: both calls return only after the patches, the transport gets
    exactly two update_session calls (alloy, then the coalesced nova), no disconnect, and
    the final config voice is nova."""
    async with create_realtime_manager(fake) as manager:
        await manager.start_session({"provider": "openai", "voice": "marin"})
        gate = fake.gate("update_session")
        fake.clear()

        first, second = Outcome(), Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, first, manager.update_session, {"voice": "alloy"})
            await gate.wait_entered()
            tg.start_soon(run, second, manager.update_session, {"voice": "nova"})
            await settle()
            assert not first.done
            assert not second.done
            assert fake.count("update_session") == 1
            gate.open()

        assert first.error is None
        assert second.error is None
        assert fake.count("disconnect") == 0
        calls = fake.calls_to("update_session")
        assert [args[0].voice for args in calls] == ["alloy", "nova"]
        assert manager.state.session.config is not None
        assert manager.state.session.config.voice == "nova"


# --------------------------------------------------------------------------------- T22


async def test_t22_stop_wins_over_refresh(fake: FakeTransport, emitter: RecordingEmitter) -> None:
    """T22 adjusted by D4: a stop during a refresh discards the in-flight patch; the
    waiting update_session caller returns without raising (in 0.7.2 the shared awaitable
    resolved because the gated patch later succeeded).  One update_session and one
    disconnect, no connect; final stopped/idle; no emitted state shows the session active
    with voice alloy; one session:end with reason user."""
    manager = create_realtime_manager(fake)
    manager.set_event_emitter(emitter)
    async with manager:
        await manager.start_session({"provider": "openai", "voice": "marin"})
        gate = fake.gate("update_session")
        fake.clear()
        emitter.clear()

        refresh, stop = Outcome(), Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, refresh, manager.update_session, {"voice": "alloy"})
            await gate.wait_entered()
            tg.start_soon(run, stop, manager.stop_session)
            await settle()
            gate.open()

        assert refresh.error is None
        assert stop.error is None
        assert fake.count("connect") == 0
        assert fake.count("update_session") == 1
        assert fake.count("disconnect") == 1
        state = manager.state
        assert state.session.status == "stopped"
        assert state.connection == "idle"
        for payload in emitter.payloads("realtime:state"):
            s = payload.state
            assert not (
                s.session.status == "active"
                and s.session.config is not None
                and s.session.config.voice == "alloy"
            )
        ends = emitter.payloads("realtime:session:end")
        assert [p.reason for p in ends] == ["user"]
