"""Fuzzing every input: wire events, server messages, tool arguments, configs, characters.

* ``event_from_wire``: malformed input of every kind (wrong types, missing fields,
  unknown types, huge strings, deep nesting, invalid UTF-8 bytes, non-JSON values)
  only ever raises ``CharivoValidationError``; whatever parses, and whatever does not
  (handed raw to the callback), leaves a session that still stops in time.
* The OpenAI transport's server-message handler, driven directly and over real
  sockets: never raises, emits only transport events, logs what it drops, and the
  link keeps working (invalid UTF-8 in a text frame fails the connection, as RFC 6455
  says, and the manager reconnects).
* Tool arguments: instances generated from each test tool's schema
  (``hypothesis-jsonschema``) always pass; mutated ones (wrong type, missing required,
  out of range, extra property under ``additionalProperties: false``) always fail with
  a message naming the property.  Payloads over ``MAX_TOOL_ARGUMENT_BYTES`` or deeper
  than ``MAX_ARGUMENT_DEPTH`` are refused before schema validation.
* Config mappings and ``set_character`` input of the wrong types are refused with
  ``CharivoValidationError`` and leave a running session untouched.

``make test`` runs these with modest example counts; ``make soak`` sets
``CHARIVO_FUZZ_PROFILE=soak``, which multiplies every count by 10.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

import anyio
import pytest
import trio.testing
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from charivo_fsm import (
    CharivoError,
    CharivoValidationError,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolRegistration,
    create_realtime_manager,
)
from charivo_fsm.avatar import create_avatar_control_tools
from charivo_fsm.events import EVENT_TYPES, AssistantResponseCompleted, ToolCall
from charivo_fsm.model import SessionStatus
from charivo_fsm.testing import FakeTransport, LocalRealtimeServer, RecordingEmitter, settle
from charivo_fsm.tools import (
    MAX_ARGUMENT_DEPTH,
    MAX_TOOL_ARGUMENT_BYTES,
    compile_schema,
    validate_tool_arguments,
)
from charivo_fsm.transports import openai as openai_transport
from charivo_fsm.transports.openai import (
    IGNORED_SERVER_EVENTS,
    SERVER_ROUTES,
    OpenAIRealtimeProtocol,
    OpenAIRealtimeTransport,
)
from charivo_fsm.wire import event_from_wire

# ------------------------------------------------------------------ profiles

_PROFILE = os.environ.get("CHARIVO_FUZZ_PROFILE", "default")
_SCALE = {"default": 1, "soak": 10}.get(_PROFILE, 1)
settings.register_profile(
    "charivo-fuzz",
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
_FUZZ = settings.get_profile("charivo-fuzz")


def fuzz(examples: int) -> settings:
    """The fuzz settings with ``examples`` examples (times 10 under the soak profile)."""
    return settings(_FUZZ, max_examples=examples * _SCALE)


TRANSPORT_EVENT_CLASSES = tuple(EVENT_TYPES.values())

# ------------------------------------------------------------------ generic values

_SPECIAL_TEXT = st.sampled_from(
    [
        "",
        "\x00",
        "\ud800",  # a lone surrogate: what undecodable bytes become with surrogateescape
        b"\xff\xfe\xfd".decode("utf-8", "surrogateescape"),
        "é" * 10,
        "🎭" * 5,
        "\u202e",
        "null",
        "tool.call",
    ]
)
TEXT = st.one_of(st.text(max_size=20), _SPECIAL_TEXT)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


class _HostileMapping(Mapping[str, Any]):
    """A mapping whose every access fails."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("hostile mapping")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("hostile mapping")

    def __len__(self) -> int:
        return 3


NON_JSON = st.sampled_from(
    [
        b"\xff\xfe\x00",  # invalid UTF-8 bytes
        bytearray(b"\x80\x81"),
        memoryview(b"\xc3\x28"),
        {1, 2},
        frozenset({"a"}),
        (1, "tuple"),
        object(),
        Decimal("NaN"),
        Decimal("1e400"),
        complex(1, 2),
        math.nan,
        math.inf,
        RuntimeError("an exception"),
        int,
        _HostileMapping(),
    ]
)
ANY_VALUE = st.one_of(JSONISH, NON_JSON)


def nested(depth: int, *, kind: str = "dict") -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value} if kind == "dict" else [value]
    return value


DEEP = st.builds(nested, st.integers(1, 3000), kind=st.sampled_from(["dict", "list"]))
HUGE_TEXT = st.integers(0, 2_000_000).map(lambda n: "x" * n)

# Every camelCase field any event class has, plus a few it has not.
_EVENT_FIELDS = sorted(
    {
        "text",
        "usage",
        "model",
        "responseId",
        "rms",
        "name",
        "args",
        "callId",
        "output",
        "cause",
        "error",
        "state",
        "extra",
        "type",
    }
)
EVENT_TYPE = st.one_of(
    st.sampled_from(sorted(EVENT_TYPES)),
    st.sampled_from(["", "Tool.Call", "tool.call ", "unknown.event", "response.done"]),
    SCALARS,
)
EVENTISH = st.builds(
    lambda kind, body: {"type": kind, **body},
    EVENT_TYPE,
    st.dictionaries(
        st.sampled_from(_EVENT_FIELDS),
        st.one_of(ANY_VALUE, DEEP, HUGE_TEXT, st.just({"response": {"status": "bogus"}})),
        max_size=5,
    ),
)
WIRE_INPUT = st.one_of(EVENTISH, ANY_VALUE, DEEP)


def parse(data: object) -> object | CharivoValidationError:
    """``event_from_wire(data)``: a transport event, or the validation error it raised."""
    try:
        event = event_from_wire(data)
    except CharivoValidationError as refused:
        assert refused.message.startswith("event")
        return refused
    assert isinstance(event, TRANSPORT_EVENT_CLASSES)
    return event


# ------------------------------------------------------------------ event_from_wire


@fuzz(400)
@given(WIRE_INPUT)
def test_event_from_wire_only_ever_raises_validation_errors(data: object) -> None:
    parse(data)


@fuzz(60)
@given(st.sampled_from(sorted(EVENT_TYPES)), st.integers(1, 200_000), DEEP)
def test_huge_and_deep_fields_of_known_events(kind: str, size: int, deep: Any) -> None:
    for field in ("text", "name", "callId", "cause", "model"):
        parse({"type": kind, field: "é" * size})
    for field in ("args", "output", "usage", "state", "error"):
        parse({"type": kind, field: deep})


def test_event_from_wire_handles_pathological_inputs() -> None:
    for data in (
        nested(100_000),
        nested(100_000, kind="list"),
        {"type": "tool.call", "name": "t", "args": nested(100_000), "callId": "c"},
        {"type": "tool.call", "name": "t", "args": {"k": "x" * 50_000_000}, "callId": "c"},
        {"type": b"tool.call"},
        {b"type": "tool.call"},
        {"type": "assistant.text.delta", "text": b"\xff\xfe"},
        {"type": "audio.lipsync", "rms": 10**400},
        {"type": "audio.lipsync", "rms": Decimal("1e999")},
        _HostileMapping(),
    ):
        parse(data)


async def _ok_handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
    return await _ok(args)


_TOOL = RealtimeToolRegistration(
    definition=RealtimeTool(
        name="t",
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}},
    ),
    handler=_ok_handler,
)


async def _ok(args: Any) -> dict[str, Any]:
    return {"ok": True}


class _EngineBugs(logging.Handler):
    """Collects the manager's reports of its own failures."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and "could not be handled" in record.getMessage():
            self.reports.append(record.getMessage())


@fuzz(40)
@given(st.lists(WIRE_INPUT, min_size=1, max_size=12))
def test_fuzzed_wire_input_never_wedges_a_session(inputs: list[object]) -> None:
    """What parses is delivered as an event, what does not is delivered raw (a transport
    handing garbage to the callback); the session must still stop within bounds."""
    bugs = _EngineBugs()
    logging.getLogger("charivo_fsm").addHandler(bugs)

    async def main() -> None:
        fake = FakeTransport(emit_session_started_on_connect=True)
        manager = create_realtime_manager(
            fake, tools=[_TOOL], transport_timeout=1.0, default_tool_timeout=0.5
        )
        async with manager:
            await manager.start_session()
            for data in inputs:
                parsed = parse(data)
                delivered = data if isinstance(parsed, CharivoValidationError) else parsed
                for callback in fake.callbacks:
                    callback(delivered)  # type: ignore[arg-type]
                await settle()
            with anyio.fail_after(1.0 + 1.0):
                await manager.stop_session()
        assert manager.state.session.status in (SessionStatus.STOPPED, SessionStatus.IDLE)

    try:
        anyio.run(main, backend="trio", backend_options={"clock": trio.testing.MockClock(0)})
    finally:
        logging.getLogger("charivo_fsm").removeHandler(bugs)
    assert bugs.reports == []


# ------------------------------------------------------------------ server messages

_DISPATCHED = sorted(route.source for route in SERVER_ROUTES if route.dispatch)
_SERVER_FIELDS = [
    "delta",
    "response",
    "error",
    "session",
    "name",
    "call_id",
    "arguments",
    "transcript",
    "response_id",
    "event_id",
    "item",
]
SERVER_TYPE = st.one_of(
    st.sampled_from(_DISPATCHED),
    st.sampled_from(sorted(IGNORED_SERVER_EVENTS)),
    st.sampled_from(["response.teleported", "", "ERROR"]),
    SCALARS,
)
_RESPONSEISH = st.fixed_dictionaries(
    {},
    optional={
        "id": SCALARS,
        "status": st.sampled_from(["completed", "failed", "cancelled", 7]),
        "status_details": JSONISH,
        "output": JSONISH,
        "usage": JSONISH,
    },
)
SERVER_EVENT = st.builds(
    lambda kind, body: {"type": kind, **body},
    SERVER_TYPE,
    st.dictionaries(
        st.sampled_from(_SERVER_FIELDS),
        st.one_of(
            JSONISH,
            _RESPONSEISH,
            st.builds(lambda n: "QUJD" * n, st.integers(0, 20_000)),  # base64 audio
            st.just("!!not base64!!"),
            st.builds(json.dumps, JSONISH),  # tool arguments as a JSON string
            st.builds(lambda n: "x" * n, st.integers(0, 300_000)),
        ),
        max_size=5,
    ),
)


def _dump(event: Any, ascii_only: bool) -> str:
    return json.dumps(event, ensure_ascii=ascii_only)  # NaN/Infinity included on purpose


SERVER_TEXT = st.one_of(
    st.builds(_dump, SERVER_EVENT, st.booleans()),
    st.builds(_dump, JSONISH, st.booleans()),
    st.text(max_size=50),
    st.sampled_from(
        [
            "",
            "{",
            "NaN",
            "[1,]",
            "{'type': 'error'}",
            '{"type": "error", "error": {"message": "x"}}garbage',
            '{"type": "response.output_text.delta", "delta": "\\ud800"}',
            b'{"type": "\xff\xfe"}'.decode("utf-8", "surrogateescape"),
        ]
    ),
    st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 50_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _classify(text: str) -> str:
    """What the transport must do with ``text``: "drop" (with a warning) or "handle"."""
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return "drop"
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return "drop"
    if event["type"] not in _DISPATCHED and event["type"] not in IGNORED_SERVER_EVENTS:
        return "drop"
    return "handle"


@fuzz(150)
@given(st.lists(SERVER_TEXT, min_size=1, max_size=8))
def test_server_message_handler_never_raises(texts: list[str]) -> None:
    records = _Records()
    log = logging.getLogger(openai_transport.logger.name)
    log.addHandler(records)
    previous = log.level
    log.setLevel(logging.DEBUG)

    def main() -> None:
        # The protocol layer holds every server-event rule; the transport's
        # reader hands it each text message as is.
        protocol = OpenAIRealtimeProtocol()
        for text in texts:
            before = len(records.records)
            protocol.receive_text(text)
            if _classify(text) == "drop":
                warned = [r for r in records.records[before:] if r.levelno >= logging.WARNING]
                assert warned, f"dropped without a warning: {text[:80]!r}"
        events = protocol.events_to_emit()
        assert all(isinstance(event, TRANSPORT_EVENT_CLASSES) for event in events)
        # Still in working order: a pending session.update completes on its ack.
        event_id = protocol.session_update(RealtimeSessionConfig())
        protocol.receive_text('{"type": "session.updated", "session": {}}')
        assert (event_id, None) in protocol.settled_updates()

    try:
        main()
    finally:
        log.removeHandler(records)
        log.setLevel(previous)


_KEY = "sk-fuzz-" + "k" * 32


def _invalid_utf8_frame() -> bytes:
    payload = b'{"type": "response.output_text.delta", "delta": "\xff\xfe"}'
    return bytes([0x81, len(payload)]) + payload  # FIN + text, unmasked (server side)


async def _garbage_over_sockets(texts: list[str]) -> None:
    async with LocalRealtimeServer(api_key=_KEY) as server:
        transport = OpenAIRealtimeTransport(
            api_key=_KEY, url=server.url, close_timeout=0.5, max_message_size=256 * 1024
        )
        emitter = RecordingEmitter()
        async with transport:
            manager = create_realtime_manager(
                transport, transport_timeout=2.0, reconnect_delays=(0.05, 0.1, 0.2)
            )
            manager.set_event_emitter(emitter)
            done: list[AssistantResponseCompleted] = []

            def spy(event: object) -> None:
                if isinstance(event, AssistantResponseCompleted):
                    done.append(event)

            transport.on_event(spy)
            async with manager:
                with anyio.fail_after(10):
                    await manager.start_session()
                    for text in texts:
                        await server.send_raw_text(text)
                    await manager.send_message("still there?")
                    while not any(d.text == "You said: still there?" for d in done):
                        await anyio.sleep(0.01)
                    # Invalid UTF-8 in a text frame: the client must fail the
                    # connection (RFC 6455 8.1); the manager reconnects.
                    for conn in tuple(server._conns):
                        await conn.ws._stream.send(_invalid_utf8_frame())
                    while "realtime:reconnect:success" not in emitter.names():
                        await anyio.sleep(0.01)
                    await manager.send_message("and now?")
                    while not any(d.text == "You said: and now?" for d in done):
                        await anyio.sleep(0.01)
                with anyio.fail_after(2.0 + 1.0):
                    await manager.stop_session()
    assert emitter.names().count("realtime:session:start") == 1
    assert emitter.names().count("realtime:session:end") == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_garbage_over_real_sockets_never_wedges_the_session(backend: str) -> None:
    texts = [
        "not json",
        "[" * 50_000 + "]" * 50_000,
        '{"type": "response.done", "response": []}',
        '{"type": "error", "error": "flat"}',
        '{"type": "response.output_audio.delta", "delta": "!!"}',
        '{"type": "response.function_call_arguments.done", "name": "x", "call_id": 1}',
        '{"type": "session.updated", "session": null}',
        "\u0000",
        '{"type": "response.output_text.delta", "delta": "' + "é" * 100_000 + '"}',
    ]
    anyio.run(_garbage_over_sockets, texts, backend=backend)


# ------------------------------------------------------------------ tool arguments

BOOKING = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40},
        "party": {"type": "integer", "minimum": 1, "maximum": 12},
        "when": {
            "type": "object",
            "properties": {
                "day": {"type": "string", "enum": ["mon", "tue", "wed"]},
                "hour": {"type": "integer", "minimum": 0, "maximum": 23},
            },
            "required": ["day", "hour"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "budget": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
        "vip": {"type": "boolean"},
    },
    "required": ["name", "party", "when"],
    "additionalProperties": False,
}
SEARCH = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 2, "maxLength": 100},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        "filters": {
            "type": "object",
            "properties": {
                "min_price": {"type": "number", "minimum": 0},
                "in_stock": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    },
    "required": ["query"],
    "additionalProperties": False,
}
_AVATAR = create_avatar_control_tools({"expressions": ["smile", "frown"], "motions": {"idle": 3}})
TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "bookTable": BOOKING,
    "search": SEARCH,
    **{tool.definition.name: dict(tool.definition.parameters) for tool in _AVATAR},
}
_NAMES = sorted(TOOL_SCHEMAS)


def _type_names(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    if declared is None:
        return set()
    names = set(declared) if isinstance(declared, list) else {declared}
    if "number" in names:
        names.add("integer")
    return names


_SAMPLES = {
    "string": "text",
    "integer": 7,
    "number": 2.5,
    "boolean": True,
    "null": None,
    "array": [1],
    "object": {"k": 1},
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


Site = tuple[str, dict[str, Any], Any, list[Any]]  # (path, subschema, value, access keys)


def _sites(schema: dict[str, Any], value: Any, path: str, keys: list[Any]) -> Iterator[Site]:
    """Every (path, subschema, value) of ``value`` that ``schema`` describes."""
    yield path, schema, value, keys
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                where = f"{path}.{name}" if path else name
                yield from _sites(child, value[name], where, [*keys, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _sites(schema["items"], item, f"{path}[{index}]", [*keys, index])


def _replace(instance: Any, keys: list[Any], new: Any) -> Any:
    if not keys:
        return new
    copied = copy.deepcopy(instance)
    target = copied
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = new
    return copied


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _mutations(instance: dict[str, Any], schema: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """Every single-fault mutation of a valid ``instance``: (kind, bad instance, path)."""
    found: list[tuple[str, Any, str]] = []
    for path, sub, value, keys in _sites(schema, instance, "", []):
        allowed = _type_names(sub)
        if path and allowed:
            for type_name, sample in _SAMPLES.items():
                if type_name not in allowed and _json_type(sample) not in allowed:
                    found.append(("wrong type", _replace(instance, keys, sample), path))
                    break
        if isinstance(value, dict):
            for name in sub.get("required") or ():
                if name in value:
                    smaller = {k: v for k, v in value.items() if k != name}
                    found.append(
                        ("missing required", _replace(instance, keys, smaller), _join(path, name))
                    )
            if sub.get("additionalProperties") is False:
                bigger = {**value, "zzExtra": 1}
                found.append(
                    ("extra property", _replace(instance, keys, bigger), _join(path, "zzExtra"))
                )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for bound, beyond in (
                ("minimum", lambda b: b - 1),
                ("exclusiveMinimum", lambda b: b),
                ("maximum", lambda b: b + 1),
                ("exclusiveMaximum", lambda b: b),
            ):
                if isinstance(sub.get(bound), (int, float)):
                    found.append(
                        ("out of range", _replace(instance, keys, beyond(sub[bound])), path)
                    )
        if isinstance(value, str):
            if isinstance(sub.get("maxLength"), int):
                long = "x" * (sub["maxLength"] + 1)
                found.append(("out of range", _replace(instance, keys, long), path))
            if isinstance(sub.get("minLength"), int) and sub["minLength"] > 0:
                found.append(("out of range", _replace(instance, keys, ""), path))
        if isinstance(value, list) and isinstance(sub.get("maxItems"), int):
            many = [*value, *(value[:1] or ["x"]) * (sub["maxItems"] + 1)]
            found.append(("out of range", _replace(instance, keys, many), path))
    return found


@st.composite
def tool_instances(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(_NAMES))
    return name, draw(from_schema(TOOL_SCHEMAS[name]))


@fuzz(120)
@given(tool_instances())
def test_instances_generated_from_each_schema_pass(case: tuple[str, dict[str, Any]]) -> None:
    name, instance = case
    validator = compile_schema(TOOL_SCHEMAS[name], name)
    assert validate_tool_arguments(name, validator, instance) == instance


@fuzz(150)
@given(tool_instances(), st.data())
def test_mutated_instances_fail_naming_the_property(
    case: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    name, instance = case
    mutations = _mutations(instance, TOOL_SCHEMAS[name])
    assume(mutations)
    kind, bad, path = data.draw(st.sampled_from(mutations), label="mutation")
    validator = compile_schema(TOOL_SCHEMAS[name], name)
    with pytest.raises(CharivoValidationError) as refused:
        validate_tool_arguments(name, validator, bad)
    message = refused.value.message
    assert message.startswith(f'Realtime tool "{name}" arguments failed schema validation: ')
    assert f'"{path}"' in message, (kind, path, message)


def test_every_mutation_kind_is_exercised() -> None:
    kinds = {
        kind
        for kind, _, _ in _mutations(
            {
                "name": "Ann",
                "party": 2,
                "when": {"day": "mon", "hour": 9},
                "tags": ["a"],
                "budget": 5.5,
                "vip": False,
            },
            BOOKING,
        )
    }
    assert kinds == {"wrong type", "missing required", "extra property", "out of range"}


# ------------------------------------------------------------------ sizes


def test_argument_size_limit_defaults_to_one_mib() -> None:
    assert MAX_TOOL_ARGUMENT_BYTES == 1024 * 1024
    assert MAX_ARGUMENT_DEPTH == 64


_FREE = compile_schema({"type": "object", "properties": {"s": {"type": "string"}}})
_CHARS = st.sampled_from(["x", "é", "€", "🎭", "\ud800", '"', "\\", "\n"])


@fuzz(200)
@given(st.integers(16, 4096), st.lists(_CHARS, max_size=400), st.integers(-8, 8))
def test_payloads_over_the_limit_are_refused_before_validation(
    limit: int, chars: list[str], slack: int
) -> None:
    text = "".join(chars)
    args = {"s": text}
    size = len(
        json.dumps(args, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    )
    limit = max(1, size + slack)
    if size > limit:
        with pytest.raises(CharivoValidationError, match="too large") as refused:
            validate_tool_arguments("t", _FREE, args, max_bytes=limit)
        assert f"{size} bytes" in refused.value.message and str(limit) in refused.value.message
    else:
        assert validate_tool_arguments("t", _FREE, args, max_bytes=limit) == args


def test_size_check_comes_before_schema_validation_and_reads_the_module_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strict = compile_schema(
        {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}
    )
    huge = {"blob": "x" * (MAX_TOOL_ARGUMENT_BYTES + 1)}  # also invalid for the schema
    with pytest.raises(CharivoValidationError, match="too large"):
        validate_tool_arguments("t", strict, huge)
    fits = {"blob": "x" * (MAX_TOOL_ARGUMENT_BYTES - 20)}
    with pytest.raises(CharivoValidationError, match='"blob" is not allowed'):
        validate_tool_arguments("t", strict, fits)
    monkeypatch.setattr("charivo_fsm.tools.MAX_TOOL_ARGUMENT_BYTES", 10)
    with pytest.raises(CharivoValidationError, match="too large"):
        validate_tool_arguments("t", strict, {"n": 123456789012})
    assert validate_tool_arguments("t", strict, {"n": 1}) == {"n": 1}


@pytest.mark.parametrize("depth", [MAX_ARGUMENT_DEPTH, MAX_ARGUMENT_DEPTH + 1, 10_000])
def test_nesting_deeper_than_the_limit_is_refused_before_validation(depth: int) -> None:
    args = nested(depth)  # depth containers, the outermost one included
    if depth <= MAX_ARGUMENT_DEPTH:
        assert validate_tool_arguments("t", _FREE, args) == args
    else:
        with pytest.raises(CharivoValidationError, match="nested too deeply"):
            validate_tool_arguments("t", _FREE, args)


@pytest.mark.anyio
async def test_an_oversized_tool_call_fails_without_running_the_handler(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    ran: list[Any] = []

    async def handler(args: Any, context: Any) -> dict[str, Any]:
        ran.append(args)
        return {"ok": True}

    tool = RealtimeToolRegistration(definition=RealtimeTool(name="t"), handler=handler)
    async with create_realtime_manager(fake, tools=[tool]) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        blob = "x" * (MAX_TOOL_ARGUMENT_BYTES + 1)
        fake.emit(ToolCall(name="t", args={"blob": blob}, call_id="big"))
        fake.emit(ToolCall(name="t", args=nested(MAX_ARGUMENT_DEPTH + 1), call_id="deep"))
        await settle()
    assert ran == []
    errors = emitter.payloads("realtime:tool:error")
    assert [e.call_id for e in errors] == ["big", "deep"]
    assert all(isinstance(e.error, CharivoValidationError) for e in errors)
    assert "too large" in errors[0].error.message
    assert "nested too deeply" in errors[1].error.message
    sent = fake.calls_to("send_tool_result")
    assert [call_id for call_id, _ in sent] == ["big", "deep"]
    assert all(output["success"] is False for _, output in sent)
    assert emitter.payloads("realtime:tool:result") == []


# ------------------------------------------------------------------ configs, characters

_CONFIG_FIELDS: dict[str, Callable[[Any], bool]] = {
    "provider": lambda v: isinstance(v, str),
    "voice": lambda v: isinstance(v, str),
    "model": lambda v: isinstance(v, str),
    "instructions": lambda v: isinstance(v, str),
    "transport": lambda v: v in ("webrtc", "websocket"),
    "temperature": lambda v: (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ),
    "max_tokens": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "tool_choice": lambda v: v in ("auto", "none", "required"),
    "tools": lambda v: False,  # only wrong values are drawn for it (see below)
}
_CHARACTER_FIELDS: dict[str, Callable[[Any], bool]] = {
    "id": lambda v: isinstance(v, str),
    "name": lambda v: isinstance(v, str),
    "description": lambda v: isinstance(v, str),
    "personality": lambda v: isinstance(v, str),
    "avatar": lambda v: isinstance(v, str),
    "voice": lambda v: False,
}
_NOT_NONE = st.one_of(ANY_VALUE, DEEP).filter(lambda v: v is not None)
_BAD_TOOLS = st.one_of(
    TEXT.filter(bool),
    st.integers(),
    st.lists(
        st.one_of(st.integers(), TEXT, st.just({"name": 3}), st.just({"nam": "x"})), min_size=1
    ),
)
_BAD_VOICES = st.one_of(
    TEXT,
    st.integers(),
    st.fixed_dictionaries({"voice_id": st.one_of(st.integers(), st.booleans())}),
    st.fixed_dictionaries({"rate": st.one_of(TEXT, st.just(math.nan))}),
    st.fixed_dictionaries({"pitch": st.just(math.inf)}),
    st.fixed_dictionaries({"timbre": TEXT}),
)


def _bad_mapping(fields: dict[str, Callable[[Any], bool]], special: dict[str, Any]) -> Any:
    wrong_value = st.sampled_from(sorted(fields)).flatmap(
        lambda name: st.tuples(
            st.just(name),
            special[name] if name in special else _NOT_NONE.filter(lambda v: not fields[name](v)),
        )
    )
    return st.one_of(
        st.builds(lambda pair: {pair[0]: pair[1]}, wrong_value),
        st.dictionaries(TEXT.filter(lambda k: k not in fields), SCALARS, min_size=1, max_size=3),
        st.dictionaries(st.one_of(st.integers(), st.none()), SCALARS, min_size=1, max_size=2),
        _NOT_NONE.filter(lambda v: not isinstance(v, Mapping)),
    )


BAD_CONFIGS = _bad_mapping(_CONFIG_FIELDS, {"tools": _BAD_TOOLS})
BAD_CHARACTERS = _bad_mapping(_CHARACTER_FIELDS, {"voice": _BAD_VOICES})


@fuzz(60)
@given(
    st.lists(
        st.tuples(st.sampled_from(["update", "start", "character"]), st.data()),
        min_size=1,
        max_size=6,
    )
)
def test_wrong_config_and_character_types_leave_the_session_untouched(
    steps: list[tuple[str, st.DataObject]],
) -> None:
    inputs = [
        (what, data.draw(BAD_CHARACTERS if what == "character" else BAD_CONFIGS, label=what))
        for what, data in steps
    ]

    async def main() -> None:
        fake = FakeTransport(emit_session_started_on_connect=True)
        emitter = RecordingEmitter()
        async with create_realtime_manager(fake) as manager:
            manager.set_event_emitter(emitter)
            manager.set_character({"id": "hiyori", "name": "Hiyori"})
            await manager.start_session(RealtimeSessionConfig(voice="marin"))
            before, calls, emitted = manager.state, len(fake.calls), len(emitter.events)
            for what, value in inputs:
                with pytest.raises(CharivoValidationError):
                    if what == "update":
                        await manager.update_session(value)
                    elif what == "start":
                        await manager.start_session(value)
                    else:
                        manager.set_character(value)
                await settle()
                assert manager.state == before
                assert len(fake.calls) == calls
                assert len(emitter.events) == emitted
            assert manager.state.session.status == SessionStatus.ACTIVE

    anyio.run(main, backend="trio", backend_options={"clock": trio.testing.MockClock(0)})


def test_validation_errors_are_charivo_errors() -> None:
    # A caller catching CharivoError also catches every refusal above.
    assert issubclass(CharivoValidationError, CharivoError)
