"""Avatar control tools, their result projector and the instruction block (Appendix A),
including the upstream fixture test T02."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import pytest

from charivo_fsm.avatar import (
    AvatarCatalog,
    ExpressionPayload,
    GazePayload,
    MotionPayload,
    build_avatar_control_instructions,
    create_avatar_control_tools,
    create_avatar_result_projector,
)
from charivo_fsm.errors import CharivoValidationError
from charivo_fsm.model import RealtimeState, RealtimeToolContext, RealtimeToolRegistration
from charivo_fsm.tools import ProjectorContext, ToolRegistry, validate_tool_arguments

CONTEXT = RealtimeToolContext(character=None, state=RealtimeState(), call_id="call-1")


def by_name(tools: list[RealtimeToolRegistration]) -> dict[str, RealtimeToolRegistration]:
    return {tool.definition.name: tool for tool in tools}


def call(tool: RealtimeToolRegistration, args: dict[str, Any]) -> Mapping[str, Any]:
    async def run() -> Mapping[str, Any]:
        return await tool.handler(args, CONTEXT)

    return asyncio.run(run())


def project(name: str, output: Mapping[str, Any]) -> list[tuple[str, Any]]:
    emitted: list[tuple[str, Any]] = []
    projector = create_avatar_result_projector()
    projector(
        ProjectorContext(
            name=name,
            output=output,
            call_id="c1",
            emit=lambda event, payload: emitted.append((event, payload)),
        )
    )
    return emitted


# ------------------------------------------------------------------------------ T02


def test_t02_builds_catalog_based_avatar_control_tools() -> None:
    tools = create_avatar_control_tools(AvatarCatalog(expressions=["Smile"], motions={"Idle": 2}))
    assert [tool.definition.name for tool in tools] == ["setExpression", "playMotion", "lookAt"]
    named = by_name(tools)

    expression = named["setExpression"].definition
    assert expression.parameters["properties"]["expressionId"]["enum"] == ["Smile"]
    assert expression.parameters["properties"]["expressionId"]["type"] == "string"
    assert expression.parameters["required"] == ["expressionId"]
    motion = named["playMotion"].definition
    assert motion.parameters["properties"]["group"]["enum"] == ["Idle"]
    assert motion.parameters["properties"]["index"]["type"] == "number"
    assert motion.parameters["required"] == ["group", "index"]
    look = named["lookAt"].definition
    assert look.parameters["properties"]["x"]["type"] == "number"
    assert look.parameters["properties"]["y"]["type"] == "number"
    assert look.parameters["required"] == ["x", "y"]

    assert "expression" in (expression.description or "").lower()
    assert "motion" in (motion.description or "").lower()
    look_text = (look.description or "").lower()
    assert "look" in look_text or "gaze" in look_text

    with pytest.raises(ValueError, match='setExpression requires a valid "expressionId"'):
        call(named["setExpression"], {"expressionId": "Missing"})
    result = call(named["lookAt"], {"x": 4, "y": -4})
    assert result["x"] == 1
    assert result["y"] == -1
    assert result["success"] is True


def test_t02_catalog_may_be_a_plain_mapping() -> None:
    tools = create_avatar_control_tools({"expressions": ["Smile"], "motions": {"Idle": 2}})
    assert [tool.definition.name for tool in tools] == ["setExpression", "playMotion", "lookAt"]


# ------------------------------------------------------------------------- the tools


def test_tools_are_left_out_when_the_catalog_has_nothing_for_them() -> None:
    assert [t.definition.name for t in create_avatar_control_tools(AvatarCatalog())] == ["lookAt"]
    only_motions = create_avatar_control_tools(AvatarCatalog(motions={"Tap": 1}))
    assert [t.definition.name for t in only_motions] == ["playMotion", "lookAt"]
    only_expressions = create_avatar_control_tools(AvatarCatalog(expressions=("Smile",)))
    assert [t.definition.name for t in only_expressions] == ["setExpression", "lookAt"]


def test_set_expression_handler() -> None:
    tool = by_name(create_avatar_control_tools(AvatarCatalog(expressions=["Smile", "Sad"])))[
        "setExpression"
    ]
    assert call(tool, {"expressionId": "Sad"}) == {"success": True, "expressionId": "Sad"}
    for bad in ({}, {"expressionId": 1}, {"expressionId": None}, {"expressionId": "smile"}):
        with pytest.raises(ValueError, match="from the model catalog"):
            call(tool, bad)


def test_play_motion_handler() -> None:
    tool = by_name(create_avatar_control_tools(AvatarCatalog(motions={"Idle": 2, "Empty": 0})))[
        "playMotion"
    ]
    assert call(tool, {"group": "Idle", "index": 1}) == {
        "success": True,
        "group": "Idle",
        "index": 1,
    }
    assert call(tool, {"group": "Idle", "index": 0.0}) == {
        "success": True,
        "group": "Idle",
        "index": 0,
    }
    bad_args: list[dict[str, Any]] = [
        {"group": "Nope", "index": 0},
        {"group": 1, "index": 0},
        {"index": 0},
        {"group": "Idle", "index": 0.5},
        {"group": "Idle", "index": True},
        {"group": "Idle", "index": "0"},
        {"group": "Idle", "index": math.nan},
        {"group": "Idle", "index": math.inf},
        {"group": "Idle", "index": 2},
        {"group": "Idle", "index": -1},
        {"group": "Empty", "index": 0},
    ]
    for bad in bad_args:
        with pytest.raises(ValueError, match="playMotion"):
            call(tool, bad)


def test_look_at_handler_clamps() -> None:
    tool = by_name(create_avatar_control_tools(AvatarCatalog()))["lookAt"]
    assert call(tool, {"x": 0.4, "y": -0.2}) == {"success": True, "x": 0.4, "y": -0.2}
    assert call(tool, {"x": -7, "y": 1}) == {"success": True, "x": -1.0, "y": 1.0}
    assert call(tool, {"x": math.inf, "y": -math.inf}) == {"success": True, "x": 1.0, "y": -1.0}
    for bad in ({"x": 0}, {"x": "0", "y": 0}, {"x": 0, "y": math.nan}, {"x": True, "y": 0}):
        with pytest.raises(ValueError, match="lookAt"):
            call(tool, bad)


def test_avatar_schemas_compile_and_validate() -> None:
    registry = ToolRegistry(
        create_avatar_control_tools(AvatarCatalog(expressions=["Smile"], motions={"Idle": 1}))
    )
    entry = registry.get("setExpression")
    assert entry is not None
    with pytest.raises(
        CharivoValidationError, match='property "expressionId" must be one of "Smile"'
    ):
        validate_tool_arguments("setExpression", entry.validator, {"expressionId": "Missing"})
    look = registry.get("lookAt")
    assert look is not None
    assert validate_tool_arguments("lookAt", look.validator, {"x": 4, "y": -4}) == {"x": 4, "y": -4}


# ------------------------------------------------------------------------- catalog


def test_catalog_normalises_and_validates() -> None:
    catalog = AvatarCatalog(expressions=["A", "B", "A"], motions={"Idle": 2})
    assert catalog.expressions == ("A", "B")
    assert dict(catalog.motions) == {"Idle": 2}
    assert catalog == AvatarCatalog(expressions=("A", "B"), motions={"Idle": 2})
    hash(catalog)
    with pytest.raises(TypeError):
        catalog.motions["New"] = 1  # type: ignore[index]
    for kwargs in (
        {"expressions": "Smile"},
        {"expressions": [1]},
        {"motions": {"Idle": -1}},
        {"motions": {"Idle": True}},
        {"motions": {"Idle": 1.5}},
        {"motions": ["Idle"]},
    ):
        with pytest.raises(CharivoValidationError):
            AvatarCatalog(**kwargs)
    with pytest.raises(CharivoValidationError, match="unknown avatar catalog keys"):
        create_avatar_control_tools({"expression": ["Smile"]})


# ------------------------------------------------------------------------ projector


def test_projector_maps_outputs_to_avatar_events() -> None:
    assert project("setExpression", {"success": True, "expressionId": "Smile"}) == [
        ("realtime:expression", ExpressionPayload("Smile"))
    ]
    assert project("playMotion", {"success": True, "group": "Idle", "index": 0}) == [
        ("realtime:motion", MotionPayload("Idle", 0))
    ]
    assert project("lookAt", {"success": True, "x": 0.4, "y": -0.2}) == [
        ("realtime:gaze", GazePayload(0.4, -0.2))
    ]


def test_projector_ignores_other_tools_and_malformed_outputs() -> None:
    assert project("describeScene", {"expressionId": "Smile"}) == []
    assert project("setExpression", {"expressionId": 1}) == []
    assert project("setExpression", {"success": False, "error": "x"}) == []
    assert project("playMotion", {"group": "Idle", "index": 0.5}) == []
    assert project("playMotion", {"group": "Idle", "index": True}) == []
    assert project("playMotion", {"group": None, "index": 0}) == []
    assert project("lookAt", {"x": "0", "y": 0}) == []
    assert project("lookAt", {"x": 0}) == []


def test_projector_accepts_integral_float_index() -> None:
    assert project("playMotion", {"group": "Idle", "index": 1.0}) == [
        ("realtime:motion", MotionPayload("Idle", 1))
    ]


def test_projector_runs_on_real_handler_output() -> None:
    tools = by_name(create_avatar_control_tools(AvatarCatalog(["Smile"], {"Idle": 1})))
    output = call(tools["lookAt"], {"x": 3, "y": 0.5})
    assert project("lookAt", output) == [("realtime:gaze", GazePayload(1.0, 0.5))]


# ---------------------------------------------------------------------- instructions


def test_instructions_list_the_catalog_and_point_to_the_tools() -> None:
    text = build_avatar_control_instructions(
        AvatarCatalog(expressions=["Smile", "Angry"], motions={"Idle": 2, "TapBody": 1})
    )
    assert isinstance(text, str)
    for fragment in ("Smile", "Angry", "Idle", "TapBody", "setExpression", "playMotion", "lookAt"):
        assert fragment in text
    assert "never describe" in text


def test_instructions_for_an_empty_catalog_mention_only_gaze() -> None:
    text = build_avatar_control_instructions({})
    assert "lookAt" in text
    assert "setExpression" not in text
    assert "playMotion" not in text
