"""charivo_fsm.tool: registrations built from typed async functions.

Schemas are checked as data, then exercised with real tool calls through a manager
and the FakeTransport (asyncio and trio): the manager validates the model's arguments
against the generated schema (D8), the handler converts them to the annotated types.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import attrs
import pytest

from charivo_fsm import (
    CharivoValidationError,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
    create_realtime_manager,
    tool,
)
from charivo_fsm.events import ToolCall
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle
from charivo_fsm.tools import compile_schema, validate_tool_arguments


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(TypedDict):
    street: str
    zip: NotRequired[Annotated[str, "postal code"]]


@attrs.frozen
class Point:
    x: float
    y: float = 0.0
    label: Unit | None = None


@attrs.define
class Route:
    start: Point
    stops: list[Point] = attrs.Factory(list)


def props(registration: RealtimeToolRegistration) -> dict[str, Any]:
    return dict(registration.definition.parameters["properties"])


# ------------------------------------------------------------------ schema as data


def test_decorator_builds_a_registration_with_name_description_and_schema() -> None:
    @tool
    async def get_weather(
        city: Annotated[str, "The city, e.g. Paris"],
        unit: Unit = Unit.CELSIUS,
        days: int = 1,
    ) -> dict[str, Any]:
        """Tell the weather in a city.

        Use it when the user asks about the weather.

        Args:
            city: overridden by the Annotated description
            days: how many days
                to forecast.
        """
        return {}

    assert isinstance(get_weather, RealtimeToolRegistration)
    definition = get_weather.definition
    assert isinstance(definition, RealtimeTool)
    assert definition.name == "get_weather"
    assert definition.description == (
        "Tell the weather in a city.\n\nUse it when the user asks about the weather."
    )
    assert definition.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            "days": {"type": "integer", "description": "how many days to forecast.",
                     "default": 1},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    assert get_weather.timeout is None
    assert get_weather.handler.__wrapped__.__name__ == "get_weather"  # type: ignore[attr-defined]


def test_decorator_with_arguments_and_plain_call() -> None:
    @tool(name="lookUp", description="Look something up.", timeout=2.5)
    async def look_up(query: str) -> dict[str, Any]:
        """Ignored docstring."""
        return {}

    assert look_up.definition.name == "lookUp"
    assert look_up.definition.description == "Look something up."
    assert look_up.timeout == 2.5

    async def ping() -> dict[str, Any]:
        return {"pong": True}

    registration = tool(ping)
    assert registration.definition.name == "ping"
    assert registration.definition.description is None
    assert registration.definition.parameters == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert tool()(ping).definition == registration.definition


def test_scalar_literal_optional_union_and_container_annotations() -> None:
    @tool
    async def everything(
        s: str,
        i: int,
        f: float,
        b: bool,
        lit: Literal["a", "b"],
        mixed: Literal["x", 1],
        flag: Literal[True],
        level: Level,
        maybe: Optional[str],  # noqa: UP045 - the spelling under test
        maybe2: int | None,
        either: str | int,
        tags: list[str],
        seq: Sequence[Unit],
        pair: tuple[float, ...],
        scores: dict[str, float],
        table: Mapping[str, list[int]],
        nested: list[list[Level]] | None = None,
    ) -> dict[str, Any]:
        return {}

    p = props(everything)
    assert p["s"] == {"type": "string"}
    assert p["i"] == {"type": "integer"}
    assert p["f"] == {"type": "number"}
    assert p["b"] == {"type": "boolean"}
    assert p["lit"] == {"type": "string", "enum": ["a", "b"]}
    assert p["mixed"] == {"enum": ["x", 1]}
    assert p["flag"] == {"type": "boolean", "enum": [True]}
    assert p["level"] == {"type": "integer", "enum": [1, 2]}
    assert p["maybe"] == {"type": ["string", "null"]}
    assert p["maybe2"] == {"type": ["integer", "null"]}
    assert p["either"] == {"type": ["string", "integer"]}
    assert p["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["seq"] == {"type": "array", "items": {"type": "string",
                                                   "enum": ["celsius", "fahrenheit"]}}
    assert p["pair"] == {"type": "array", "items": {"type": "number"}}
    assert p["scores"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert p["table"] == {
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "integer"}},
    }
    assert p["nested"] == {
        "anyOf": [
            {"type": "array", "items": {"type": "array",
                                        "items": {"type": "integer", "enum": [1, 2]}}},
            {"type": "null"},
        ],
        "default": None,
    }
    assert everything.definition.parameters["required"] == [
        "s", "i", "f", "b", "lit", "mixed", "flag", "level", "maybe", "maybe2", "either",
        "tags", "seq", "pair", "scores", "table",
    ]


def test_typeddict_and_attrs_classes_are_objects() -> None:
    @tool
    async def plan(address: Address, route: Route) -> dict[str, Any]:
        return {}

    p = props(plan)
    assert p["address"] == {
        "type": "object",
        "properties": {
            "street": {"type": "string"},
            "zip": {"type": "string", "description": "postal code"},
        },
        "required": ["street"],
        "additionalProperties": False,
    }
    point = {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "y": {"type": "number", "default": 0.0},
            "label": {
                "anyOf": [
                    {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    {"type": "null"},
                ],
                "default": None,
            },
        },
        "required": ["x"],
        "additionalProperties": False,
    }
    assert p["route"] == {
        "type": "object",
        "properties": {"start": point, "stops": {"type": "array", "items": point}},
        "required": ["start"],
        "additionalProperties": False,
    }


def test_context_parameter_is_recognised_by_its_type_anywhere() -> None:
    @tool
    async def first(ctx: RealtimeToolContext, city: str) -> dict[str, Any]:
        return {}

    @tool
    async def last(city: str, who: RealtimeToolContext) -> dict[str, Any]:
        return {}

    assert props(first) == {"city": {"type": "string"}}
    assert props(last) == {"city": {"type": "string"}}


def test_docstring_styles_give_parameter_descriptions() -> None:
    @tool
    async def numpy_style(city: str, days: int = 1) -> dict[str, Any]:
        """Forecast.

        Parameters
        ----------
        city : str
            The city.
        days : int
            How many days.

        Returns
        -------
        dict
            The forecast.
        """
        return {}

    @tool
    async def sphinx_style(city: str) -> dict[str, Any]:
        """Forecast.

        :param city: The city,
            by name.
        :returns: the forecast
        """
        return {}

    assert numpy_style.definition.description == "Forecast."
    assert props(numpy_style)["city"]["description"] == "The city."
    assert props(numpy_style)["days"]["description"] == "How many days."
    assert sphinx_style.definition.description == "Forecast."
    assert props(sphinx_style)["city"]["description"] == "The city, by name."


def test_bound_methods_and_partials_work() -> None:
    class Weather:
        async def forecast(self, city: str) -> dict[str, Any]:
            """Forecast for a city."""
            return {"city": city}

    registration = tool(Weather().forecast)
    assert registration.definition.name == "forecast"
    assert props(registration) == {"city": {"type": "string"}}

    async def greet(greeting: str, name: str) -> dict[str, Any]:
        return {"text": f"{greeting} {name}"}

    partial = tool(functools.partial(greet, greeting="hi"), name="greet")
    assert props(partial) == {"greeting": {"type": "string", "default": "hi"},
                              "name": {"type": "string"}}


def test_generated_schemas_compile_and_validate_like_hand_written_ones() -> None:
    @tool
    async def plan(address: Address, unit: Unit, days: int = 1) -> dict[str, Any]:
        return {}

    validator = compile_schema(plan.definition.parameters, "plan")
    ok = {"address": {"street": "Main"}, "unit": "celsius", "days": 2.0}
    assert validate_tool_arguments("plan", validator, ok) == ok
    bad = [
        ({"address": {"street": "Main"}}, 'missing required property "unit"'),
        ({"address": {}, "unit": "celsius"}, 'missing required property "address.street"'),
        ({"address": {"street": 1}, "unit": "celsius"}, 'property "address.street" must be'),
        ({"address": {"street": "M"}, "unit": "kelvin"}, 'property "unit" must be one of'),
        ({"address": {"street": "M"}, "unit": "celsius", "days": True}, '"days" must be'),
        ({"address": {"street": "M"}, "unit": "celsius", "x": 1}, 'property "x" is not allowed'),
        ({"address": {"street": "M", "y": 1}, "unit": "celsius"},
         'property "address.y" is not allowed'),
    ]
    for args, detail in bad:
        with pytest.raises(CharivoValidationError) as info:
            validate_tool_arguments("plan", validator, args)
        assert str(info.value).startswith(
            'Realtime tool "plan" arguments failed schema validation: '
        )
        assert detail in str(info.value), (args, str(info.value))


# ------------------------------------------------------------- refused at decoration


def refused(fn: Any, *fragments: str, **options: Any) -> str:
    with pytest.raises(CharivoValidationError) as info:
        tool(fn, **options)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_refuses_a_function_that_is_not_async() -> None:
    def plain(city: str) -> dict[str, Any]:
        return {}

    async def agen(city: str) -> Any:
        yield {}

    refused(plain, 'tool "plain"', "plain is not async", "async def")
    refused(agen, 'tool "agen"', "async generator")
    refused(42, "not callable", name="x")


def test_refuses_var_args_var_kwargs_and_unannotated_parameters() -> None:
    async def star(city: str, *more: str) -> dict[str, Any]:
        return {}

    async def double_star(city: str, **more: str) -> dict[str, Any]:
        return {}

    async def bare(city, days: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        return {}

    async def positional(city: str, /) -> dict[str, Any]:
        return {}

    refused(star, 'tool "star"', "*more")
    refused(double_star, 'tool "double_star"', "**more")
    refused(bare, 'tool "bare"', 'parameter "city" has no annotation')
    refused(positional, 'parameter "city" is positional-only')


class Opaque:
    pass


class Untyped(TypedDict):
    when: set[int]


@attrs.frozen
class Holder:
    inner: dict[int, str]


class Floaty(enum.Enum):
    HALF = 0.5


class Empty(enum.Enum):
    pass


@pytest.mark.parametrize(
    ("annotation", "fragments"),
    [
        (Any, ['parameter "value" has an unsupported annotation', "Any"]),
        (object, ["object has no JSON Schema counterpart"]),
        (Opaque, ["Opaque has no JSON Schema counterpart"]),
        (list, ["give the item type"]),
        (set[int], ["set[int]"]),
        (bytes, ["bytes"]),
        (None, ["NoneType"]),
        (dict[int, str], ["object keys must be str"]),
        (Untyped, ['at "value.when"', "set[int]"]),
        (Holder, ['at "value.inner"', "object keys must be str"]),
        (list[Opaque], ['at "value[]"', "Opaque"]),
        (Literal[1.5], ["Literal value 1.5"]),
        (Floaty, ["Floaty has a value that is not a str or int"]),
        (Empty, ["Empty has no members"]),
        (Unit | Point, ["whose values need converting"]),
        (list[RealtimeToolContext], ["RealtimeToolContext can only be a parameter"]),
    ],
)
def test_refuses_unsupported_annotations_naming_the_parameter(
    annotation: Any, fragments: list[str]
) -> None:
    async def fn(value: int) -> dict[str, Any]:
        return {}

    fn.__annotations__["value"] = annotation
    message = refused(fn, 'tool "fn"', 'parameter "value"', *fragments)
    assert "Supported:" in message


def test_refuses_recursive_and_unresolvable_annotations() -> None:
    @attrs.frozen
    class Node:
        child: Node | None = None

    async def tree(root: Node) -> dict[str, Any]:
        return {}

    tree.__annotations__["root"] = Node
    # Node's own annotation ("Node | None") is a string that only resolves locally.
    refused(tree, 'parameter "root"', "cannot be resolved")

    async def missing(where: NoSuchType) -> dict[str, Any]:  # type: ignore[name-defined]  # noqa: F821
        return {}

    refused(missing, 'parameter "where" has an annotation that cannot be resolved', "NoSuchType")


@attrs.frozen
class Loop:
    child: Loop | None = None


def test_refuses_a_class_that_refers_to_itself() -> None:
    async def tree(root: Loop) -> dict[str, Any]:
        return {}

    refused(tree, 'parameter "root"', "Loop refers to itself")


def test_refuses_two_context_parameters_and_a_bad_name() -> None:
    async def twice(a: RealtimeToolContext, b: RealtimeToolContext) -> dict[str, Any]:
        return {}

    refused(twice, 'parameter "b"', '"a" already receives the RealtimeToolContext')

    async def fine() -> dict[str, Any]:
        return {}

    refused(fine, "non-empty string", name="")


# ------------------------------------------------------- real calls through a manager


async def call(
    registration: RealtimeToolRegistration, args: Mapping[str, Any]
) -> tuple[FakeTransport, RecordingEmitter]:
    transport, events = FakeTransport(), RecordingEmitter()
    async with create_realtime_manager(transport, tools=[registration]) as manager:
        manager.set_event_emitter(events)
        await manager.start_session()
        transport.emit(
            ToolCall(name=registration.definition.name, args=dict(args), call_id="call-1")
        )
        await settle()
    return transport, events


@pytest.mark.anyio
async def test_a_call_converts_arguments_to_the_annotated_types() -> None:
    seen: dict[str, Any] = {}

    @tool
    async def plan(
        context: RealtimeToolContext,
        unit: Unit,
        level: Level,
        route: Route,
        address: Address,
        days: int,
        ratio: float,
        pair: tuple[int, ...],
        flags: dict[str, Unit] | None = None,
        note: str = "none",
    ) -> dict[str, Any]:
        seen.update(
            unit=unit, level=level, route=route, address=address, days=days, ratio=ratio,
            pair=pair, flags=flags, note=note, call_id=context.call_id,
        )
        return {"success": True, "unit": unit.value}

    transport, events = await call(
        plan,
        {
            "unit": "fahrenheit",
            "level": 2.0,
            "route": {"start": {"x": 1, "label": "celsius"}, "stops": [{"x": 2.5, "y": 3}]},
            "address": {"street": "Main"},
            "days": 3.0,
            "ratio": 2,
            "pair": [1, 2],
            "flags": {"a": "celsius"},
        },
    )
    assert transport.calls_to("send_tool_result") == [
        ("call-1", {"success": True, "unit": "fahrenheit"})
    ]
    assert seen["unit"] is Unit.FAHRENHEIT
    assert seen["level"] is Level.HIGH
    assert seen["route"] == Route(
        start=Point(x=1.0, label=Unit.CELSIUS), stops=[Point(x=2.5, y=3.0)]
    )
    assert type(seen["route"].start.x) is float
    assert seen["address"] == {"street": "Main"}
    assert seen["days"] == 3 and type(seen["days"]) is int
    assert seen["ratio"] == 2.0 and type(seen["ratio"]) is float
    assert seen["pair"] == (1, 2)
    assert seen["flags"] == {"a": Unit.CELSIUS}
    assert seen["note"] == "none"  # the function's own default
    assert seen["call_id"] == "call-1"
    assert events.names().count("realtime:tool:result") == 1


@pytest.mark.anyio
async def test_invalid_arguments_never_reach_the_function() -> None:
    ran: list[str] = []

    @tool
    async def weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, Any]:
        ran.append(city)
        return {"success": True}

    transport, events = await call(weather, {"city": "Paris", "unit": "kelvin"})
    assert ran == []
    ((call_id, output),) = transport.calls_to("send_tool_result")
    assert call_id == "call-1"
    assert output["success"] is False
    assert output["error"].startswith('Realtime tool "weather" arguments failed schema validation')
    (error,) = events.payloads("realtime:tool:error")
    assert isinstance(error.error, CharivoValidationError)


@pytest.mark.anyio
async def test_a_failed_conversion_is_a_validation_error_of_the_call() -> None:
    @attrs.frozen
    class Positive:
        n: int = attrs.field(validator=attrs.validators.gt(0))

    async def count(value: Positive) -> dict[str, Any]:
        return {"success": True}

    count.__annotations__["value"] = Positive
    registration = tool(count)
    transport, events = await call(registration, {"value": {"n": -1}})
    ((_, output),) = transport.calls_to("send_tool_result")
    assert output["success"] is False
    (error,) = events.payloads("realtime:tool:error")
    assert isinstance(error.error, CharivoValidationError)
    assert 'arguments could not be converted: property "value"' in error.error.message


@pytest.mark.anyio
async def test_typed_and_hand_written_tools_work_side_by_side() -> None:
    async def hand(args: dict[str, Any], context: RealtimeToolContext) -> dict[str, Any]:
        return {"success": True, "n": args["n"]}

    hand_written = RealtimeToolRegistration(
        definition=RealtimeTool(
            name="hand",
            parameters={"type": "object", "properties": {"n": {"type": "integer"}},
                        "required": ["n"]},
        ),
        handler=hand,
    )

    @tool
    async def typed(n: int) -> dict[str, Any]:
        """Double n."""
        return {"success": True, "n": n * 2}

    transport = FakeTransport()
    async with create_realtime_manager(transport, tools=[hand_written]) as manager:
        manager.register_tool(typed)
        await manager.start_session()
        assert [t.name for t in manager.registered_tools()] == ["hand", "typed"]
        config = manager.state.session.config
        assert config is not None and config.tools is not None
        assert config.tools[1] == typed.definition
        transport.emit(ToolCall(name="hand", args={"n": 2}, call_id="a"))
        transport.emit(ToolCall(name="typed", args={"n": 2}, call_id="b"))
        await settle()
    assert sorted(transport.calls_to("send_tool_result")) == [
        ("a", {"success": True, "n": 2}),
        ("b", {"success": True, "n": 4}),
    ]
