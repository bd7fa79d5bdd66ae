"""Upstream scenarios T03-T09, T13 and T14 (SEMANTICS §3) against the manager.

The avatar tools and the avatar result projector of :mod:`charivo_fsm.avatar` are the
fixtures, as upstream.  Each test names the scenario it ports; where a Decision (D-rule)
changes the upstream outcome, the docstring says which one and how.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
import attrs
import pytest

from charivo_fsm import (
    Character,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
    ResponseState,
    ResponseStatus,
    create_realtime_manager,
)
from charivo_fsm.avatar import (
    AvatarCatalog,
    ExpressionPayload,
    GazePayload,
    MotionPayload,
    create_avatar_control_tools,
    create_avatar_result_projector,
)
from charivo_fsm.events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputEnded,
    ErrorEvent,
    StateUpdate,
    ToolCall,
    ToolResult,
    UserTranscript,
)
from charivo_fsm.payloads import (
    LipsyncPayload,
    TextPayload,
    ToolCallPayload,
    ToolResultPayload,
    UsagePayload,
)
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle

pytestmark = pytest.mark.anyio


def prefix(name: str) -> str:
    return f'Realtime tool "{name}" arguments failed schema validation: '


class Capture(logging.Handler):
    """Collects the records of one logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def capturing_logger(name: str, level: int = logging.DEBUG) -> tuple[logging.Logger, Capture]:
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    capture = Capture()
    logger.addHandler(capture)
    return logger, capture


def tool_call_ids(emitter: RecordingEmitter, name: str) -> list[str | None]:
    return [payload.call_id for payload in emitter.payloads(name)]


async def emit_tool_call(
    fake: FakeTransport, name: str, args: Mapping[str, Any], call_id: str
) -> None:
    fake.emit(ToolCall(name=name, args=args, call_id=call_id))
    await settle()


# ------------------------------------------------------------------------------ T03


async def test_t03_starts_with_registry_tools_and_runs_builtin_and_custom_handlers(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T03: registry tools reach `connect`; an avatar tool and a custom tool both run,
    their results are sent, and the projector turns setExpression into
    `realtime:expression`. (No D-rule changes the outcome; Python names: temperature and
    max_tokens are None, tool_choice "auto".)"""
    avatar_tools = create_avatar_control_tools(
        AvatarCatalog(expressions=["exp_happy"], motions={"TapBody": 2})
    )
    seen: list[tuple[dict[str, Any], RealtimeToolContext]] = []

    async def describe_scene(args: dict[str, Any], ctx: RealtimeToolContext) -> Mapping[str, Any]:
        seen.append((args, ctx))
        return {
            "success": True,
            "characterId": ctx.character.id if ctx.character is not None else None,
            "responseStatus": str(ctx.state.response.status),
        }

    describe = RealtimeToolRegistration(
        definition=RealtimeTool(
            name="describeScene",
            description="Describe the current scene.",
            parameters={"type": "object", "properties": {}},
        ),
        handler=describe_scene,
    )
    tools = [*avatar_tools, describe]
    manager = create_realtime_manager(
        fake, tools=tools, result_projectors=[create_avatar_result_projector()]
    )
    manager.set_event_emitter(emitter)
    manager.set_character(Character(id="char-1", name="Hiyori"))
    async with manager:
        await manager.start_session(
            {"provider": "openai", "model": "gpt-realtime-mini", "voice": "marin"}
        )

        starts = emitter.payloads("realtime:session:start")
        assert len(starts) == 1
        assert starts[0].state.session.status == "active"
        assert starts[0].reason == "user"

        assert [tool.name for tool in manager.registered_tools()] == [
            "setExpression",
            "playMotion",
            "lookAt",
            "describeScene",
        ]

        assert fake.count("connect") == 1
        (config,) = fake.calls_to("connect")[0]
        assert isinstance(config.instructions, str) and config.instructions
        assert config == RealtimeSessionConfig(
            provider="openai",
            transport="webrtc",
            model="gpt-realtime-mini",
            voice="marin",
            instructions=config.instructions,
            temperature=None,
            max_tokens=None,
            tools=tuple(tool.definition for tool in tools),
            tool_choice="auto",
        )

        await emit_tool_call(fake, "setExpression", {"expressionId": "exp_happy"}, "call-1")
        await emit_tool_call(fake, "describeScene", {}, "call-2")

        assert fake.calls_to("send_tool_result") == [
            ("call-1", {"success": True, "expressionId": "exp_happy"}),
            ("call-2", {"success": True, "characterId": "char-1", "responseStatus": "idle"}),
        ]
        assert len(seen) == 1
        args, ctx = seen[0]
        assert args == {}
        assert ctx.character is not None and ctx.character.id == "char-1"
        assert ctx.state.session.status == "active"
        assert ctx.call_id == "call-2"

        assert emitter.payloads("realtime:expression") == [ExpressionPayload("exp_happy")]
        assert ToolCallPayload(
            "setExpression", {"expressionId": "exp_happy"}, "call-1"
        ) in emitter.payloads("realtime:tool:call")
        assert ToolResultPayload(
            "describeScene",
            {"success": True, "characterId": "char-1", "responseStatus": "idle"},
            "call-2",
        ) in emitter.payloads("realtime:tool:result")
        assert emitter.payloads("realtime:tool:error") == []


# ------------------------------------------------------------------------------ T04


async def test_t04_validates_custom_tool_args_before_invoking_handlers(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T04: a missing required property, an enum mismatch and a type mismatch are each
    refused with the R69-R70 detail formats without running the handler; a valid call runs
    it once. D17.10: each `realtime:tool:error` carries a `CharivoValidationError`."""
    calls: list[tuple[dict[str, Any], RealtimeToolContext]] = []

    async def set_mood(args: dict[str, Any], ctx: RealtimeToolContext) -> Mapping[str, Any]:
        calls.append((args, ctx))
        return {"success": True, "args": args}

    tool = RealtimeToolRegistration(
        definition=RealtimeTool(
            name="setMood",
            description="Set the mood.",
            parameters={
                "type": "object",
                "properties": {
                    "mood": {"type": "string", "enum": ["happy", "calm"]},
                    "count": {"type": "integer"},
                    "enabled": {"type": "boolean"},
                },
                "required": ["mood", "count"],
            },
        ),
        handler=set_mood,
    )
    async with create_realtime_manager(fake, tools=[tool]) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session({"provider": "openai"})

        await emit_tool_call(fake, "setMood", {"mood": "happy"}, "call-missing-required")
        await emit_tool_call(fake, "setMood", {"mood": "angry", "count": 1}, "call-enum-mismatch")
        await emit_tool_call(fake, "setMood", {"mood": "calm", "count": "1"}, "call-type-mismatch")

        assert calls == []
        p = prefix("setMood")
        assert fake.calls_to("send_tool_result") == [
            (
                "call-missing-required",
                {"success": False, "error": p + 'missing required property "count"'},
            ),
            (
                "call-enum-mismatch",
                {"success": False, "error": p + 'property "mood" must be one of "happy", "calm"'},
            ),
            (
                "call-type-mismatch",
                {"success": False, "error": p + 'property "count" must be integer'},
            ),
        ]
        errors = emitter.payloads("realtime:tool:error")
        assert [(e.name, e.call_id) for e in errors] == [
            ("setMood", "call-missing-required"),
            ("setMood", "call-enum-mismatch"),
            ("setMood", "call-type-mismatch"),
        ]
        assert all(isinstance(e.error, CharivoValidationError) for e in errors)
        sent_messages = [output["error"] for _, output in fake.calls_to("send_tool_result")]
        assert [e.error.message for e in errors] == sent_messages

        valid = {"mood": "calm", "count": 2, "enabled": True}
        await emit_tool_call(fake, "setMood", valid, "call-valid")
        assert len(calls) == 1
        assert calls[0][0] == valid
        assert calls[0][1].call_id == "call-valid"
        sends = fake.calls_to("send_tool_result")
        assert len(sends) == 4
        assert sends[3] == ("call-valid", {"success": True, "args": valid})
        assert len(emitter.payloads("realtime:tool:error")) == 3


# ------------------------------------------------------------------------------ T05


async def test_t05_emits_canonical_avatar_action_events_for_direct_tools(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T05: with the avatar projector, setExpression/playMotion/lookAt results become
    `realtime:expression`/`realtime:motion`/`realtime:gaze`, each after its
    `realtime:tool:result` (D8: send, then tool:result, then projectors)."""
    tools = create_avatar_control_tools(AvatarCatalog(expressions=["Smile"], motions={"Idle": 1}))
    manager = create_realtime_manager(
        fake, tools=tools, result_projectors=[create_avatar_result_projector()]
    )
    async with manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await emit_tool_call(fake, "setExpression", {"expressionId": "Smile"}, "call-expression")
        await emit_tool_call(fake, "playMotion", {"group": "Idle", "index": 0}, "call-motion")
        await emit_tool_call(fake, "lookAt", {"x": 0.4, "y": -0.2}, "call-gaze")

        assert emitter.payloads("realtime:expression") == [ExpressionPayload("Smile")]
        assert emitter.payloads("realtime:motion") == [MotionPayload("Idle", 0)]
        assert emitter.payloads("realtime:gaze") == [GazePayload(0.4, -0.2)]

        names = emitter.names()
        first_expression = names.index("realtime:expression")
        result_index = next(
            index
            for index, (name, payload) in enumerate(emitter.events)
            if name == "realtime:tool:result" and payload.call_id == "call-expression"
        )
        assert first_expression > result_index
        assert emitter.payloads("realtime:tool:error") == []


# ------------------------------------------------------------------------------ T06


async def test_t06_does_not_emit_avatar_events_without_a_result_projector(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T06: without a projector a successful setExpression emits only its
    `realtime:tool:result`, no `realtime:expression`."""
    tools = create_avatar_control_tools(AvatarCatalog(expressions=["Smile"], motions={"Idle": 1}))
    async with create_realtime_manager(fake, tools=tools) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await emit_tool_call(fake, "setExpression", {"expressionId": "Smile"}, "call-expression")

        assert emitter.payloads("realtime:expression") == []
        assert emitter.payloads("realtime:tool:result") == [
            ToolResultPayload(
                "setExpression", {"success": True, "expressionId": "Smile"}, "call-expression"
            )
        ]
        assert fake.calls_to("send_tool_result") == [
            ("call-expression", {"success": True, "expressionId": "Smile"})
        ]


# ------------------------------------------------------------------------------ T07


async def test_t07_isolates_projector_failures_after_tool_results_are_sent(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T07: a raising projector neither adds a `tool:error` nor a second send; the
    configured logger gets one warning `Realtime result projector failed` with name,
    call_id and the error message (D1: context event `projector.failed`)."""
    logger, capture = capturing_logger("test.scenarios.t07", logging.WARNING)

    def broken(_ctx: Any) -> None:
        raise RuntimeError("projector boom")

    tools = create_avatar_control_tools(AvatarCatalog(expressions=["Smile"], motions={"Idle": 1}))
    manager = create_realtime_manager(fake, tools=tools, result_projectors=[broken], logger=logger)
    async with manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        before = manager.state
        await emit_tool_call(fake, "setExpression", {"expressionId": "Smile"}, "call-projector")

        assert fake.count("send_tool_result") == 1
        assert emitter.payloads("realtime:tool:error") == []
        assert emitter.payloads("realtime:tool:result") == [
            ToolResultPayload(
                "setExpression", {"success": True, "expressionId": "Smile"}, "call-projector"
            )
        ]
        assert manager.state == before

        failed = [
            r for r in capture.records if r.getMessage() == "Realtime result projector failed"
        ]
        assert len(failed) == 1
        record = failed[0]
        assert record.levelno == logging.WARNING
        context = record.charivo  # type: ignore[attr-defined]
        assert context["name"] == "setExpression"
        assert context["call_id"] == "call-projector"
        assert context["error"] == "projector boom"
        assert context["event"] == "projector.failed"
        assert context["session_id"] == manager.session_id


# ------------------------------------------------------------------------------ T08


async def test_t08_normalizes_tool_failures_and_relays_transport_events(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T08: tool failures are sent as `{"success": False, "error": ...}` and relayed as
    `tool:error`; remote tool results, lipsync, transcripts and errors are relayed.

    Adjusted by D7: `interrupt()` while the response is idle leaves it idle (upstream:
    interrupted), so the following `completed ""` is accepted from idle (response
    completed with text "", `assistant:done ""`) instead of being ignored.
    D17.10: both tool errors are `CharivoValidationError`; D11: `realtime:error` carries
    a `CharivoTransportError` wrapping the raw error, the very object in `last_error`."""
    tools = create_avatar_control_tools(AvatarCatalog(expressions=["Smile"], motions={"Idle": 1}))
    async with create_realtime_manager(fake, tools=tools) as manager:
        manager.set_event_emitter(emitter)
        manager.set_character(Character(id="char-1", name="Hiyori"))
        await manager.start_session()

        await manager.send_message("hello")
        await manager.interrupt()
        assert fake.calls_to("send_text") == [("hello",)]
        assert fake.count("interrupt") == 1
        # D7: only a responding response becomes interrupted.
        assert manager.state.response == ResponseState(ResponseStatus.IDLE, "")

        fake.emit(AssistantResponseCompleted(text=""))
        # D7: completed from idle is accepted.
        assert manager.state.response == ResponseState(ResponseStatus.COMPLETED, "")
        assert emitter.payloads("realtime:assistant:done") == [TextPayload("")]

        fake.emit(AssistantResponseStarted())
        fake.emit(AssistantTextDelta(text="hel"))
        await emit_tool_call(fake, "setExpression", {"expressionId": "Missing"}, "call-invalid")
        await emit_tool_call(fake, "missingTool", {}, "call-missing")
        fake.emit(ToolResult(name="serverTool", output={"success": True}, call_id="call-server"))
        fake.emit(AudioLipsync(rms=0.4))
        fake.emit(AudioOutputEnded())
        fake.emit(UserTranscript(text="hello there"))
        fake.emit(AssistantResponseCompleted(text="hello"))
        boom = RuntimeError("boom")
        fake.emit(ErrorEvent(error=boom))
        await settle()

        assert fake.calls_to("send_tool_result") == [
            (
                "call-invalid",
                {
                    "success": False,
                    "error": prefix("setExpression")
                    + 'property "expressionId" must be one of "Smile"',
                },
            ),
            (
                "call-missing",
                {"success": False, "error": 'No realtime tool registered for "missingTool"'},
            ),
        ]
        assert emitter.payloads("realtime:assistant:delta") == [TextPayload("hel")]
        assert emitter.payloads("realtime:text:delta") == [TextPayload("hel")]
        assert emitter.payloads("realtime:tool:result") == [
            ToolResultPayload("serverTool", {"success": True}, "call-server")
        ]
        tool_errors = emitter.payloads("realtime:tool:error")
        assert [(e.name, e.call_id) for e in tool_errors] == [
            ("setExpression", "call-invalid"),
            ("missingTool", "call-missing"),
        ]
        assert all(isinstance(e.error, CharivoValidationError) for e in tool_errors)
        lipsync = emitter.payloads("tts:lipsync:update")
        assert LipsyncPayload(0.4) in lipsync
        assert lipsync.index(LipsyncPayload(0.4)) < lipsync.index(LipsyncPayload(0.0))
        assert len(emitter.payloads("tts:audio:start")) == 1
        assert len(emitter.payloads("tts:audio:end")) == 1
        assert emitter.payloads("realtime:user:transcript") == [TextPayload("hello there")]

        errors = emitter.payloads("realtime:error")
        assert len(errors) == 1
        assert isinstance(errors[0].error, CharivoTransportError)
        assert errors[0].error.cause is boom

        state = manager.state
        assert state.response.text == "hello"
        assert state.response.status == "completed"
        assert state.last_error is errors[0].error
        assert state.last_error is not None and state.last_error.message == "boom"


# ------------------------------------------------------------------------------ T09


async def test_t09_emits_realtime_usage_events_when_transport_usage_is_available(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T09: a completed response with usage emits exactly one `realtime:usage` carrying
    the usage, model, response id and the current session id."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        usage = {"input_tokens": 10, "output_tokens": 5}
        fake.emit(
            AssistantResponseCompleted(
                text="hello", usage=usage, model="gpt-realtime", response_id="resp_123"
            )
        )
        session_id = manager.session_id
        assert isinstance(session_id, str) and session_id
        assert emitter.payloads("realtime:usage") == [
            UsagePayload(usage, "gpt-realtime", "resp_123", session_id)
        ]
        assert emitter.payloads("realtime:usage")[0].usage is usage


# ------------------------------------------------------------------------------ T13


async def test_t13_times_out_slow_tools_and_keeps_the_registry_across_sessions(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T13: a tool with `timeout=0.05` that never returns gets
    `{"success": False, "error": 'Realtime tool "slowTool" timed out after 0.05s'}` once the
    (virtual) 50 ms have passed; the registry survives a stop.

    Adjusted by D8/D17.10: the message uses seconds (upstream `after 50ms`), the handler is
    cancelled at the timeout (upstream: left running), and the `tool:error` carries a
    `CharivoTimeoutError`."""
    cancelled: list[bool] = []

    async def slow(_args: dict[str, Any], _ctx: RealtimeToolContext) -> Mapping[str, Any]:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise
        return {}  # pragma: no cover

    tool = RealtimeToolRegistration(
        definition=RealtimeTool(
            name="slowTool",
            description="Never finishes.",
            parameters={"type": "object", "properties": {}},
        ),
        handler=slow,
        timeout=0.05,
    )
    async with create_realtime_manager(fake, tools=[tool]) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        started = anyio.current_time()
        await emit_tool_call(fake, "slowTool", {}, "call-timeout")

        await anyio.sleep(0.04)
        await settle()
        assert fake.calls_to("send_tool_result") == []
        assert cancelled == []

        await anyio.sleep(0.02)
        await settle()
        assert anyio.current_time() - started < 1.0
        assert fake.calls_to("send_tool_result") == [
            (
                "call-timeout",
                {"success": False, "error": 'Realtime tool "slowTool" timed out after 0.05s'},
            )
        ]
        assert cancelled == [True]
        errors = emitter.payloads("realtime:tool:error")
        assert len(errors) == 1
        assert isinstance(errors[0].error, CharivoTimeoutError)
        assert errors[0].error.message == 'Realtime tool "slowTool" timed out after 0.05s'

        await manager.stop_session()
        assert [t.name for t in manager.registered_tools()] == ["slowTool"]
        assert fake.count("send_tool_result") == 1


# ------------------------------------------------------------------------------ T14


async def test_t14_merges_state_updates_emitted_by_the_transport(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """T14: a transport `state` event sets the response to exactly
    `{responding, "partial"}` (D9: only the response can be set that way)."""
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        before = manager.state
        fake.emit(StateUpdate(response_status=ResponseStatus.RESPONDING, response_text="partial"))
        after = manager.state
        assert after.response == ResponseState(ResponseStatus.RESPONDING, "partial")
        assert attrs.evolve(after, response=before.response) == before
        assert emitter.payloads("realtime:state")[-1].state == after
