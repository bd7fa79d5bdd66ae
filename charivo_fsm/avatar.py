"""Avatar control: tools that let the model drive an avatar, and the projector that turns
their results into avatar events (SEMANTICS Appendix A).

* :func:`create_avatar_control_tools` builds ``setExpression`` (when the catalog lists
  expressions), ``playMotion`` (when it lists motion groups) and ``lookAt`` (always).
* :func:`create_avatar_result_projector` maps their successful outputs to
  ``realtime:expression``, ``realtime:motion`` and ``realtime:gaze``.
* :func:`build_avatar_control_instructions` is an instruction block to append to the
  session instructions of sessions that register these tools.

The handlers check their arguments themselves as well, so they stay correct when called
directly, without the manager's schema validation in front of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeGuard

import attrs

from .errors import CharivoValidationError
from .model import RealtimeTool, RealtimeToolContext, RealtimeToolRegistration
from .tools import ProjectorContext, ResultProjector

__all__ = [
    "EXPRESSION_EVENT",
    "GAZE_EVENT",
    "MOTION_EVENT",
    "AvatarCatalog",
    "ExpressionPayload",
    "GazePayload",
    "MotionPayload",
    "build_avatar_control_instructions",
    "create_avatar_control_tools",
    "create_avatar_result_projector",
]

EXPRESSION_EVENT = "realtime:expression"
MOTION_EVENT = "realtime:motion"
GAZE_EVENT = "realtime:gaze"

SET_EXPRESSION = "setExpression"
PLAY_MOTION = "playMotion"
LOOK_AT = "lookAt"


# ----------------------------------------------------------------------------- catalog


def _to_expressions(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise CharivoValidationError("expressions must be a sequence of strings, not a string")
    result: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise CharivoValidationError(f"expressions must be non-empty strings (got {item!r})")
        if item not in result:
            result.append(item)
    return tuple(result)


def _to_motions(value: Mapping[str, int]) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise CharivoValidationError(
            f"motions must be a mapping of group name to motion count (got {type(value).__name__})"
        )
    result: dict[str, int] = {}
    for group, count in value.items():
        if not isinstance(group, str) or not group:
            raise CharivoValidationError(
                f"motion group names must be non-empty strings ({group!r})"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise CharivoValidationError(
                f"motion group {group!r} needs a non-negative integer count (got {count!r})"
            )
        result[group] = count
    return MappingProxyType(result)


@attrs.frozen(slots=True)
class AvatarCatalog:
    """What the avatar can do: its expression ids and its motion groups with their sizes.

    Any sequence of strings is accepted for ``expressions`` (duplicates are dropped,
    order kept) and any mapping for ``motions`` (group name -> number of motions in it;
    stored read-only).
    """

    expressions: tuple[str, ...] = attrs.field(default=(), converter=_to_expressions)
    motions: Mapping[str, int] = attrs.field(factory=dict, converter=_to_motions, hash=False)


def _as_catalog(catalog: AvatarCatalog | Mapping[str, Any]) -> AvatarCatalog:
    if isinstance(catalog, AvatarCatalog):
        return catalog
    if isinstance(catalog, Mapping):
        unknown = set(catalog) - {"expressions", "motions"}
        if unknown:
            raise CharivoValidationError(
                f"unknown avatar catalog keys: {', '.join(sorted(map(str, unknown)))}"
            )
        return AvatarCatalog(
            expressions=catalog.get("expressions", ()), motions=catalog.get("motions", {})
        )
    raise CharivoValidationError(
        f"catalog must be an AvatarCatalog or a mapping (got {type(catalog).__name__})"
    )


# ------------------------------------------------------------------------------- tools


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_index(value: object) -> int | None:
    """``value`` as an int when it is a finite integral number (``2.0`` counts), else None."""
    if _is_number(value) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def _clamp_unit(value: float) -> float:
    return float(min(1.0, max(-1.0, value)))


def _expression_tool(expressions: tuple[str, ...]) -> RealtimeToolRegistration:
    allowed = frozenset(expressions)

    async def handler(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        expression_id = args.get("expressionId")
        if not isinstance(expression_id, str) or expression_id not in allowed:
            raise ValueError('setExpression requires a valid "expressionId" from the model catalog')
        return {"success": True, "expressionId": expression_id}

    definition = RealtimeTool(
        name=SET_EXPRESSION,
        description=(
            "Change the avatar's facial expression so it matches the feeling of what you "
            "are saying. Pick one expression id from the list; the change is shown on "
            "screen and is never spoken."
        ),
        parameters={
            "type": "object",
            "properties": {
                "expressionId": {
                    "type": "string",
                    "enum": list(expressions),
                    "description": "Which expression to show.",
                }
            },
            "required": ["expressionId"],
        },
    )
    return RealtimeToolRegistration(definition=definition, handler=handler)


def _motion_tool(motions: Mapping[str, int]) -> RealtimeToolRegistration:
    sizes = dict(motions)

    async def handler(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        group = args.get("group")
        if not isinstance(group, str) or group not in sizes:
            raise ValueError('playMotion requires a valid "group" from the model catalog')
        position = _as_index(args.get("index"))
        if position is None:
            raise ValueError('playMotion requires an integer "index"')
        count = sizes[group]
        if not 0 <= position < count:
            if count == 0:
                raise ValueError(f'playMotion group "{group}" has no motions')
            raise ValueError(
                f'playMotion "index" for group "{group}" must be between 0 and {count - 1}'
            )
        return {"success": True, "group": group, "index": position}

    ranges = ", ".join(f"{group}: 0-{count - 1}" for group, count in sizes.items() if count)
    definition = RealtimeTool(
        name=PLAY_MOTION,
        description=(
            "Play a body motion on the avatar, such as a gesture or an idle movement. "
            "Choose a motion group and the index of a motion inside it"
            + (f" (valid indexes per group: {ranges})." if ranges else ".")
        ),
        parameters={
            "type": "object",
            "properties": {
                "group": {
                    "type": "string",
                    "enum": list(sizes),
                    "description": "The motion group to play from.",
                },
                "index": {
                    "type": "number",
                    "description": "Zero-based position of the motion within its group.",
                },
            },
            "required": ["group", "index"],
        },
    )
    return RealtimeToolRegistration(definition=definition, handler=handler)


def _look_tool() -> RealtimeToolRegistration:
    async def handler(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        x = args.get("x")
        y = args.get("y")
        if not _is_number(x) or math.isnan(x):
            raise ValueError('lookAt requires a numeric "x"')
        if not _is_number(y) or math.isnan(y):
            raise ValueError('lookAt requires a numeric "y"')
        return {"success": True, "x": _clamp_unit(x), "y": _clamp_unit(y)}

    definition = RealtimeTool(
        name=LOOK_AT,
        description=(
            "Point the avatar's gaze somewhere on screen, to look at the user or glance "
            "aside. x runs from -1 (left) to 1 (right) and y from -1 (down) to 1 (up); "
            "values outside that range are clamped."
        ),
        parameters={
            "type": "object",
            "properties": {
                "x": {"type": "number", "description": "Horizontal gaze, -1 to 1."},
                "y": {"type": "number", "description": "Vertical gaze, -1 to 1."},
            },
            "required": ["x", "y"],
        },
    )
    return RealtimeToolRegistration(definition=definition, handler=handler)


def create_avatar_control_tools(
    catalog: AvatarCatalog | Mapping[str, Any],
) -> list[RealtimeToolRegistration]:
    """The avatar tools for ``catalog``, in the order setExpression, playMotion, lookAt.

    ``setExpression`` is left out when the catalog has no expressions and ``playMotion``
    when it has no motion groups; ``lookAt`` is always there.
    """
    resolved = _as_catalog(catalog)
    tools: list[RealtimeToolRegistration] = []
    if resolved.expressions:
        tools.append(_expression_tool(resolved.expressions))
    if resolved.motions:
        tools.append(_motion_tool(resolved.motions))
    tools.append(_look_tool())
    return tools


# ---------------------------------------------------------------------------- projector


@attrs.frozen(slots=True)
class ExpressionPayload:
    """``realtime:expression``."""

    expression_id: str


@attrs.frozen(slots=True)
class MotionPayload:
    """``realtime:motion``."""

    group: str
    index: int


@attrs.frozen(slots=True)
class GazePayload:
    """``realtime:gaze``."""

    x: float
    y: float


def _project(ctx: ProjectorContext) -> None:
    output = ctx.output
    if ctx.name == SET_EXPRESSION:
        expression_id = output.get("expressionId")
        if isinstance(expression_id, str):
            ctx.emit(EXPRESSION_EVENT, ExpressionPayload(expression_id))
    elif ctx.name == PLAY_MOTION:
        group = output.get("group")
        index = _as_index(output.get("index"))
        if isinstance(group, str) and index is not None:
            ctx.emit(MOTION_EVENT, MotionPayload(group, index))
    elif ctx.name == LOOK_AT:
        x = output.get("x")
        y = output.get("y")
        if _is_number(x) and _is_number(y):
            ctx.emit(GAZE_EVENT, GazePayload(float(x), float(y)))


def create_avatar_result_projector() -> ResultProjector:
    """A projector emitting avatar events for successful avatar tool results.

    setExpression with a string ``expressionId`` -> ``realtime:expression``; playMotion
    with a string ``group`` and an integral ``index`` -> ``realtime:motion``; lookAt with
    numeric ``x`` and ``y`` -> ``realtime:gaze``.  Other tools and other outputs emit
    nothing.
    """
    return _project


# ------------------------------------------------------------------------- instructions


def build_avatar_control_instructions(catalog: AvatarCatalog | Mapping[str, Any]) -> str:
    """An instruction block telling the model how to drive the avatar through the tools."""
    resolved = _as_catalog(catalog)
    lines = [
        "Avatar control:",
        "- You have an animated avatar. Change what it shows only by calling the avatar "
        "tools; never describe expressions, motions or gaze in your spoken replies.",
    ]
    if resolved.expressions:
        lines.append(
            f"- Expressions available to {SET_EXPRESSION}: {', '.join(resolved.expressions)}."
        )
    if resolved.motions:
        groups = ", ".join(
            f"{group} ({count} motion{'s' if count != 1 else ''})"
            for group, count in resolved.motions.items()
        )
        lines.append(f"- Motion groups available to {PLAY_MOTION} (index starts at 0): {groups}.")
    lines.append(f"- Use {LOOK_AT} to direct the avatar's gaze, with x and y between -1 and 1.")
    lines.append(
        "- Use only the ids listed here, call the tools sparingly and keep talking "
        "naturally while they run."
    )
    return "\n".join(lines)
