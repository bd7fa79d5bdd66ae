"""Tool argument validation, schema compilation, output checks and the tool registry.

Covers the upstream validation tests V1–V2, the exact T04 messages, and the Decisions D8,
D17.9 and D18.4 (full JSON Schema validation through fastjsonschema, compiled once).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charivo_fsm import tools
from charivo_fsm.errors import CharivoValidationError
from charivo_fsm.model import RealtimeTool, RealtimeToolContext, RealtimeToolRegistration
from charivo_fsm.tools import (
    ProjectorContext,
    ToolEntry,
    ToolRegistry,
    check_tool_output,
    compile_schema,
    format_json_value,
    validate_tool_arguments,
)


def prefix(name: str) -> str:
    return f'Realtime tool "{name}" arguments failed schema validation: '


def rejects(name: str, parameters: Mapping[str, Any], args: Any) -> str:
    """Validate and return the detail of the expected failure (the part after the prefix)."""
    validator = compile_schema(parameters, name)
    with pytest.raises(CharivoValidationError) as info:
        validate_tool_arguments(name, validator, args)
    message = str(info.value)
    assert message.startswith(prefix(name)), message
    assert info.value.code == "CHARIVO_VALIDATION_ERROR"
    return message[len(prefix(name)) :]


def accepts(parameters: Mapping[str, Any], args: Any) -> dict[str, Any]:
    return validate_tool_arguments("t", compile_schema(parameters, "t"), args)


def obj(properties: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), **extra}


async def _noop_handler(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
    return {"success": True}


def registration(
    name: str, parameters: Mapping[str, Any] | None = None
) -> RealtimeToolRegistration:
    definition = RealtimeTool(
        name=name,
        description=f"the {name} tool",
        parameters=parameters if parameters is not None else obj({}),
    )
    return RealtimeToolRegistration(definition=definition, handler=_noop_handler)


SET_AMOUNT = obj({"amount": {"type": "number"}}, required=["amount"])

SET_MOOD = obj(
    {
        "mood": {"type": "string", "enum": ["happy", "calm"]},
        "count": {"type": "integer"},
        "enabled": {"type": "boolean"},
    },
    required=["mood", "count"],
)


# --------------------------------------------------------------------- upstream V1, V2


def test_v1_rejects_top_level_non_object_arguments() -> None:
    assert rejects("setAmount", SET_AMOUNT, []) == "arguments must be an object"


@pytest.mark.parametrize("args", [None, "x", 1, 1.5, True, ["amount", 1], ("a",), {1, 2}])
def test_v1_every_non_mapping_is_refused_first(args: Any) -> None:
    assert rejects("setAmount", SET_AMOUNT, args) == "arguments must be an object"


def test_v2_unsupported_schema_type_is_refused_at_compile_time() -> None:
    """V2, changed by D8: upstream reported ``property "amount" uses unsupported schema
    type "flot"`` when a call carried ``amount``.  This port compiles the schema when the
    tool is registered, so the bad schema is refused there, before any call, with a
    message naming the tool, the property and the type."""
    schema = obj({"amount": {"type": "flot"}}, required=["amount"])
    with pytest.raises(CharivoValidationError) as info:
        compile_schema(schema, "setAmount")
    message = str(info.value)
    assert message.startswith('Realtime tool "setAmount" has an invalid parameters schema')
    assert '"flot"' in message
    assert 'property "amount"' in message

    registry = ToolRegistry()
    with pytest.raises(CharivoValidationError, match="flot"):
        registry.register(registration("setAmount", schema))
    assert len(registry) == 0


# --------------------------------------------------------------------- T04 exact messages


def test_t04_missing_required_property() -> None:
    assert rejects("setMood", SET_MOOD, {"mood": "happy"}) == 'missing required property "count"'


def test_t04_enum_mismatch() -> None:
    detail = rejects("setMood", SET_MOOD, {"mood": "angry", "count": 1})
    assert detail == 'property "mood" must be one of "happy", "calm"'


def test_t04_type_mismatch() -> None:
    detail = rejects("setMood", SET_MOOD, {"mood": "calm", "count": "1"})
    assert detail == 'property "count" must be integer'


def test_t04_valid_arguments_pass_through() -> None:
    args = {"mood": "calm", "count": 2, "enabled": True}
    result = validate_tool_arguments("setMood", compile_schema(SET_MOOD, "setMood"), args)
    assert result == args
    assert type(result) is dict


def test_required_is_reported_in_listed_order() -> None:
    schema = obj({}, required=["b", "a"])
    assert rejects("t", schema, {}) == 'missing required property "b"'
    assert rejects("t", schema, {"b": 1}) == 'missing required property "a"'


# ------------------------------------------------------------------- full JSON Schema


ADDRESS = obj(
    {
        "address": obj(
            {"zip": {"type": "string"}, "city": {"type": "string"}},
            required=["zip"],
            additionalProperties=False,
        ),
        "tags": {"type": "array", "items": {"type": "string"}},
    }
)


def test_nested_property_paths() -> None:
    assert rejects("t", ADDRESS, {"address": {"zip": 1}}) == 'property "address.zip" must be string'
    assert rejects("t", ADDRESS, {"address": "x"}) == 'property "address" must be object'


def test_nested_missing_required_property() -> None:
    detail = rejects("t", ADDRESS, {"address": {"city": "Oslo"}})
    assert detail == 'missing required property "address.zip"'


def test_array_item_paths() -> None:
    assert rejects("t", ADDRESS, {"tags": ["a", 2]}) == 'property "tags[1]" must be string'
    deep = obj(
        {"rows": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}
    )
    assert rejects("t", deep, {"rows": [[1], [2, "x"]]}) == 'property "rows[1][1]" must be integer'
    objects = obj({"people": {"type": "array", "items": obj({"age": {"type": "integer"}})}})
    detail = rejects("t", objects, {"people": [{"age": 1}, {"age": "old"}]})
    assert detail == 'property "people[1].age" must be integer'


def test_additional_properties_false() -> None:
    closed = obj({"a": {"type": "string"}}, additionalProperties=False)
    assert rejects("t", closed, {"a": "x", "extra": 1}) == 'property "extra" is not allowed'
    detail = rejects("t", ADDRESS, {"address": {"zip": "1", "street": "x"}})
    assert detail == 'property "address.street" is not allowed'
    # extra keys are fine when additionalProperties is not restricted
    assert accepts(obj({"a": {"type": "string"}}), {"a": "x", "extra": 1}) == {"a": "x", "extra": 1}


def test_additional_properties_schema_and_pattern_properties() -> None:
    typed = obj({}, additionalProperties={"type": "integer"})
    assert rejects("t", typed, {"k": "v"}) == 'property "k" must be integer'
    patterned = obj(
        {"a": {"type": "string"}},
        patternProperties={"^x-": {"type": "string"}},
        additionalProperties=False,
    )
    assert accepts(patterned, {"a": "1", "x-trace": "2"}) == {"a": "1", "x-trace": "2"}
    assert (
        rejects("t", patterned, {"a": "1", "x-trace": "2", "y": 3}) == 'property "y" is not allowed'
    )


def test_union_types() -> None:
    schema = obj({"u": {"type": ["string", "null"]}})
    assert accepts(schema, {"u": None}) == {"u": None}
    assert accepts(schema, {"u": "x"}) == {"u": "x"}
    assert rejects("t", schema, {"u": 1}) == 'property "u" must be string or null'


def test_ranges_and_lengths() -> None:
    schema = obj(
        {
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "s": {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^a+$"},
            "l": {"type": "array", "minItems": 1, "maxItems": 2, "uniqueItems": True},
            "m": {"type": "integer", "multipleOf": 5},
            "c": {"const": "fixed"},
        }
    )
    assert rejects("t", schema, {"n": 0}) == 'property "n" must be >= 1'
    assert rejects("t", schema, {"n": 11}) == 'property "n" must be <= 10'
    assert rejects("t", schema, {"x": 0}) == 'property "x" must be > 0'
    assert rejects("t", schema, {"x": 1.0}) == 'property "x" must be < 1'
    assert rejects("t", schema, {"s": "a"}) == 'property "s" must be at least 2 characters long'
    assert rejects("t", schema, {"s": "aaaa"}) == 'property "s" must be at most 3 characters long'
    assert rejects("t", schema, {"s": "bb"}) == 'property "s" must match pattern "^a+$"'
    assert rejects("t", schema, {"l": []}) == 'property "l" must contain at least 1 items'
    assert rejects("t", schema, {"l": [1, 2, 3]}) == 'property "l" must contain at most 2 items'
    assert rejects("t", schema, {"l": [1, 1]}) == 'property "l" must not contain duplicate items'
    assert rejects("t", schema, {"m": 7}) == 'property "m" must be a multiple of 5'
    assert rejects("t", schema, {"c": "other"}) == 'property "c" must be equal to "fixed"'
    assert accepts(schema, {"n": 1, "x": 0.5, "s": "aa", "l": [1], "m": 10, "c": "fixed"})


def test_combinators_and_refs() -> None:
    schema = obj(
        {
            "any": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "one": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
            "neg": {"not": {"type": "string"}},
            "pos": {"$ref": "#/definitions/positive"},
            "off": False,
        },
        definitions={"positive": {"type": "integer", "minimum": 0}},
    )
    assert "anyOf" in rejects("t", schema, {"any": 1.5})
    assert "oneOf" in rejects("t", schema, {"one": 1})
    assert rejects("t", schema, {"neg": "s"}).startswith('property "neg" must not')
    assert rejects("t", schema, {"pos": -1}) == 'property "pos" must be >= 0'
    assert rejects("t", schema, {"off": 1}) == 'property "off" is not allowed'
    assert accepts(schema, {"any": "s", "one": 1.5, "neg": 1, "pos": 3})


def test_booleans_are_not_numbers() -> None:
    schema = obj({"n": {"type": "number"}, "i": {"type": "integer"}, "b": {"type": "boolean"}})
    assert rejects("t", schema, {"n": True}) == 'property "n" must be number'
    assert rejects("t", schema, {"i": False}) == 'property "i" must be integer'
    assert rejects("t", schema, {"b": 1}) == 'property "b" must be boolean'
    assert rejects("t", schema, {"b": 0.0}) == 'property "b" must be boolean'


def test_enum_is_type_strict() -> None:
    schema = obj({"e": {"enum": [1, "1"]}, "f": {"enum": [True]}})
    assert rejects("t", schema, {"e": True}) == 'property "e" must be one of 1, "1"'
    assert rejects("t", schema, {"f": 1}) == 'property "f" must be one of true'
    assert accepts(schema, {"e": 1.0}) == {"e": 1.0}  # JS: 1 === 1.0


def test_integral_floats_are_integers() -> None:
    schema = obj({"i": {"type": "integer"}})
    assert accepts(schema, {"i": 2.0}) == {"i": 2.0}
    assert rejects("t", schema, {"i": 2.5}) == 'property "i" must be integer'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected_everywhere(bad: float) -> None:
    schema = obj(
        {
            "n": {"type": "number"},
            "i": {"type": "integer"},
            "free": {},
            "list": {"type": "array", "items": {"type": "number"}},
        }
    )
    assert rejects("t", schema, {"n": bad}) == 'property "n" must be a finite number'
    assert rejects("t", schema, {"i": bad}) == 'property "i" must be a finite number'
    assert rejects("t", schema, {"free": bad}) == 'property "free" must be a finite number'
    assert rejects("t", schema, {"list": [1, bad]}) == 'property "list[1]" must be a finite number'


def test_non_json_values_and_keys_are_rejected() -> None:
    schema = obj({"free": {}})
    assert rejects("t", schema, {"free": {1, 2}}) == 'property "free" is not a JSON value (set)'
    assert rejects("t", schema, {"free": b"x"}) == 'property "free" is not a JSON value (bytes)'
    assert rejects("t", schema, {1: "x"}) == "arguments must have string keys (got 1)"
    assert (
        rejects("t", schema, {"free": {2: "x"}}) == 'property "free" must have string keys (got 2)'
    )


def test_enum_values_are_formatted_like_json_stringify() -> None:
    schema = obj({"e": {"enum": ["é", 1.0, -0.0, 2.5, None, True, {"a": [1, 2.0]}, 1e-7, 1e21]}})
    detail = rejects("t", schema, {"e": "x"})
    assert (
        detail == 'property "e" must be one of "é", 1, 0, 2.5, null, true, {"a":[1,2]}, 1e-7, 1e+21'
    )


def test_format_json_value() -> None:
    assert format_json_value("é") == '"é"'
    assert format_json_value(1.0) == "1"
    assert format_json_value(-0.0) == "0"
    assert format_json_value(0.00001) == "0.00001"
    assert format_json_value(1e-7) == "1e-7"
    assert format_json_value(1e20) == "100000000000000000000"
    assert format_json_value(math.nan) == "null"
    assert format_json_value({"x": [1, "a"]}) == '{"x":[1,"a"]}'
    assert format_json_value(("a", None, False)) == '["a",null,false]'


def test_type_may_be_checked_before_enum() -> None:
    """D17.9: the validator's own check order applies; fastjsonschema checks type first."""
    schema = obj({"mood": {"type": "string", "enum": ["happy"]}})
    assert rejects("t", schema, {"mood": 1}) == 'property "mood" must be string'


def test_missing_properties_means_empty() -> None:
    schema = {"type": "object", "required": ["a"]}
    assert accepts(schema, {"a": 1, "b": 2}) == {"a": 1, "b": 2}
    assert rejects("t", schema, {}) == 'missing required property "a"'


def test_nesting_deeper_than_64_levels_is_refused() -> None:
    def nest(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    assert accepts(obj({}), nest(64)) == nest(64)
    assert rejects("t", obj({}), nest(65)) == "arguments are nested too deeply"
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert rejects("t", obj({}), cyclic) == "arguments are nested too deeply"


def test_returned_arguments_are_a_fresh_plain_copy() -> None:
    from types import MappingProxyType

    inner = {"x": 1}
    args = MappingProxyType({"inner": inner, "seq": (1, 2)})
    result = accepts(
        obj({"inner": obj({"x": {"type": "integer"}}), "seq": {"type": "array"}}), args
    )
    assert result == {"inner": {"x": 1}, "seq": [1, 2]}
    assert type(result) is dict
    assert result["inner"] is not inner


def test_schema_defaults_do_not_alter_arguments() -> None:
    schema = obj({"a": {"type": "integer", "default": 5}})
    args: dict[str, Any] = {}
    assert accepts(schema, args) == {}
    assert args == {}


def test_unexpected_validator_failures_become_validation_errors() -> None:
    def broken(data: Any) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(CharivoValidationError) as info:
        validate_tool_arguments("t", broken, {"a": 1})
    assert str(info.value).startswith(prefix("t"))
    assert "boom" in str(info.value)


# ------------------------------------------------------------------ schema compilation


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "array"}, 'top-level "type" must be "object"'),
        ({"properties": {}}, 'top-level "type" must be "object"'),
        (
            obj({"a": {"type": "object", "properties": {"b": {"type": ["string", "flot"]}}}}),
            '"a.b"',
        ),
        (obj({"a": {"type": "array", "items": {"type": "strng"}}}), '"strng"'),
        ({"type": "object", "properties": []}, '"properties" must be an object'),
        (obj({}, required="a"), "required"),
        (obj({"a": {"$ref": "#/definitions/missing"}}), "ref"),
        (obj({"a": {"type": "string", "pattern": "("}}), "regular expression"),
        (obj({"a": {"enum": [math.nan]}}), "JSON-serialisable"),
        (obj({"a": object()}), "JSON-serialisable"),
    ],
)
def test_invalid_schemas_are_refused(schema: Any, fragment: str) -> None:
    with pytest.raises(CharivoValidationError) as info:
        compile_schema(schema, "broken")
    message = str(info.value)
    assert message.startswith('Realtime tool "broken" has an invalid parameters schema: ')
    assert fragment in message


def test_non_mapping_parameters_are_refused() -> None:
    with pytest.raises(CharivoValidationError, match="parameters must be an object"):
        compile_schema(["type", "object"], "broken")  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", ["http://127.0.0.1:9/schema.json", "file:///etc/passwd", "x.json"])
def test_remote_refs_are_never_fetched(ref: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("urlopen must not be called")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(CharivoValidationError, match="not allowed"):
        compile_schema(obj({"a": {"$ref": ref}}), "remote")


def test_compile_does_not_mutate_the_schema() -> None:
    schema = obj(
        {"a": {"$ref": "#/definitions/x"}}, definitions={"x": {"type": "integer"}}, title="m1"
    )
    snapshot = repr(schema)
    compile_schema(schema, "t")
    assert repr(schema) == snapshot


def test_same_schema_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real_compile = fastjsonschema.compile

    def counting_compile(definition: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(definition)
        return real_compile(definition, *args, **kwargs)

    monkeypatch.setattr(fastjsonschema, "compile", counting_compile)
    schema = obj({"q": {"type": "string"}}, title="compiled-once-test")
    first = compile_schema(schema, "a")
    # an equal schema built separately, with keys in another order, hits the cache
    reordered = {
        "properties": {"q": {"type": "string"}},
        "title": "compiled-once-test",
        "type": "object",
    }
    second = compile_schema(reordered, "b")
    registries = [ToolRegistry([registration("tool", schema)]) for _ in range(50)]
    assert len(calls) == 1
    assert first is second
    assert all(reg.get("tool").validator is first for reg in registries)  # type: ignore[union-attr]

    compile_schema(obj({"q": {"type": "integer"}}, title="compiled-once-test"), "c")
    assert len(calls) == 2


def test_schema_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "SCHEMA_CACHE_SIZE", 3)
    tools.clear_schema_cache()
    schemas = [obj({}, title=f"bounded-{i}") for i in range(5)]
    for schema in schemas:
        compile_schema(schema)
    info = tools.schema_cache_info()
    assert info.size == 3
    assert info.misses == 5
    compile_schema(schemas[-1])
    assert tools.schema_cache_info().hits == 1
    tools.clear_schema_cache()
    assert tools.schema_cache_info().size == 0


def test_compile_error_without_a_tool_name() -> None:
    with pytest.raises(CharivoValidationError, match=r"^Invalid tool parameters schema: "):
        compile_schema({"type": "string"})


# ---------------------------------------------------------------------- tool output


def test_check_tool_output_accepts_json_mappings() -> None:
    output = {
        "success": True,
        "n": 1,
        "x": 0.5,
        "s": "é",
        "none": None,
        "l": [1, (2, 3), {"k": []}],
    }
    assert check_tool_output("t", output) is output


@pytest.mark.parametrize("output", [None, [], ["success"], "ok", 1, ({"a": 1},)])
def test_check_tool_output_requires_an_object(output: Any) -> None:
    with pytest.raises(CharivoValidationError) as info:
        check_tool_output("myTool", output)
    assert str(info.value) == 'Realtime tool "myTool" must return an object'


@pytest.mark.parametrize(
    ("output", "path"),
    [
        ({"when": object()}, 'property "when"'),
        ({"a": {"b": [1, {2, 3}]}}, 'property "a.b[1]"'),
        ({"score": math.nan}, 'property "score"'),
        ({"score": [math.inf]}, 'property "score[0]"'),
        ({1: "x"}, "the output"),
        ({"a": {None: 1}}, 'property "a"'),
        ({"blob": b"bytes"}, 'property "blob"'),
    ],
)
def test_check_tool_output_names_the_offending_path(output: Any, path: str) -> None:
    with pytest.raises(CharivoValidationError) as info:
        check_tool_output("myTool", output)
    message = str(info.value)
    assert message.startswith('Realtime tool "myTool" must return a JSON-serialisable object: ')
    assert path in message


def test_check_tool_output_refuses_cycles() -> None:
    output: dict[str, Any] = {}
    output["self"] = output
    with pytest.raises(CharivoValidationError, match="nested too deeply"):
        check_tool_output("t", output)


# ------------------------------------------------------------------------- registry


def test_registry_keeps_insertion_order() -> None:
    registry = ToolRegistry([registration("a"), registration("b")])
    registry.register(registration("c"))
    assert registry.names() == ("a", "b", "c")
    assert [tool.name for tool in registry.definitions()] == ["a", "b", "c"]
    assert len(registry) == 3
    assert "b" in registry
    assert "z" not in registry
    assert ["not", "hashable"] not in registry
    assert list(registry) == ["a", "b", "c"]


def test_registry_replace_keeps_the_original_position() -> None:
    registry = ToolRegistry([registration("a"), registration("b"), registration("c")])
    replacement = registration("a", obj({"n": {"type": "integer"}}))
    entry = registry.register(replacement)
    assert isinstance(entry, ToolEntry)
    assert registry.names() == ("a", "b", "c")
    assert registry.get("a") == entry
    assert registry.definitions()[0] is replacement.definition


def test_registry_unregister_then_register_moves_to_the_end() -> None:
    registry = ToolRegistry([registration("a"), registration("b")])
    assert registry.unregister("a") is True
    assert registry.unregister("a") is False
    assert registry.unregister("never") is False
    assert registry.get("a") is None
    registry.register(registration("a"))
    assert registry.names() == ("b", "a")


def test_registry_definitions_are_cached_and_invalidated() -> None:
    registry = ToolRegistry([registration("a")])
    first = registry.definitions()
    assert registry.definitions() is first
    registry.register(registration("b"))
    second = registry.definitions()
    assert second is not first
    assert [tool.name for tool in second] == ["a", "b"]
    registry.unregister("zzz")
    assert registry.definitions() is second
    registry.unregister("a")
    assert [tool.name for tool in registry.definitions()] == ["b"]


def test_registry_refuses_a_bad_schema_and_stays_unchanged() -> None:
    registry = ToolRegistry([registration("a"), registration("b")])
    before = registry.definitions()
    bad = registration("a", obj({"x": {"type": "flot"}}))
    with pytest.raises(CharivoValidationError, match='Realtime tool "a"'):
        registry.register(bad)
    assert registry.definitions() is before
    assert registry.get("a").registration.definition is before[0]  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [None, "tool", {"definition": 1}, RealtimeTool(name="x")])
def test_registry_type_checks_registrations(value: Any) -> None:
    registry = ToolRegistry()
    with pytest.raises(CharivoValidationError, match="RealtimeToolRegistration"):
        registry.register(value)
    assert len(registry) == 0


def test_registry_entry_validates_arguments() -> None:
    registry = ToolRegistry([registration("setMood", SET_MOOD)])
    entry = registry.get("setMood")
    assert entry is not None
    with pytest.raises(CharivoValidationError, match='missing required property "count"'):
        validate_tool_arguments("setMood", entry.validator, {"mood": "happy"})


def test_projector_context_is_frozen() -> None:
    emitted: list[tuple[str, Any]] = []
    ctx = ProjectorContext(
        name="t", output={"a": 1}, call_id="c1", emit=lambda n, p: emitted.append((n, p))
    )
    ctx.emit("x", 1)
    assert emitted == [("x", 1)]
    with pytest.raises(AttributeError):
        ctx.name = "other"  # type: ignore[misc]


# ------------------------------------------------------------------------ properties


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children)
        | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=4)
    ),
    max_leaves=25,
)
weird_values = st.sampled_from([object(), {1, 2}, b"x", 1 + 2j, frozenset()])

RICH_SCHEMA = obj(
    {
        "mood": {"type": "string", "enum": ["happy", "calm"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 2},
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "address": obj({"zip": {"type": "string"}}, required=["zip"], additionalProperties=False),
        "either": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "only": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
        "free": {},
        "set": {"type": "array", "uniqueItems": True},
    },
    required=["mood"],
    patternProperties={"^x-": {"type": "integer"}},
    additionalProperties=False,
)
KEYS = st.sampled_from([*RICH_SCHEMA["properties"], "x-a", "other"])


@settings(max_examples=300, deadline=None)
@given(
    args=json_values | weird_values | st.dictionaries(KEYS, json_values | weird_values, max_size=6)
)
def test_validation_only_ever_raises_validation_errors(args: Any) -> None:
    validator = compile_schema(RICH_SCHEMA, "rich")
    try:
        result = validate_tool_arguments("rich", validator, args)
    except CharivoValidationError as exc:
        assert str(exc).startswith(prefix("rich"))
    else:
        assert isinstance(result, dict)
        assert isinstance(args, Mapping)


@settings(max_examples=200, deadline=None)
@given(output=json_values | weird_values)
def test_output_check_only_ever_raises_validation_errors(output: Any) -> None:
    try:
        assert check_tool_output("t", output) is output
    except CharivoValidationError as exc:
        assert str(exc).startswith('Realtime tool "t" must return ')
