"""Security: secrets never leak, plain-text links only to loopback, tool input is data.

* A full session over the OpenAI transport and the local server (start, messages, a
  tool call, updates, a rejected update and a server error that echo the key, a
  dropped connection and a reconnect, garbage, a wrong key, the key from the
  environment, stop) with every log record of every logger captured at DEBUG: the API
  key, and any ``Authorization: Bearer`` value, appears in no log record, no exception
  (message, repr, args, cause chain, formatted traceback), no repr, no emitted payload
  or its wire form, no client event the server received and no handshake record.
  The same check runs over the scripted demo (``charivo_fsm.demo.run_demo``).
* The OpenAI transport refuses ``ws://`` to anything but a loopback host.
* Tool schemas are compiled only when the application registers a tool; the
  arguments a model sends are data: validated, never compiled, evaluated or fetched.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from charivo_fsm import (
    CharivoError,
    CharivoValidationError,
    RealtimeSessionConfig,
    RealtimeTool,
    RealtimeToolRegistration,
    create_realtime_manager,
)
from charivo_fsm import tools as tools_module
from charivo_fsm.events import AssistantResponseCompleted, ToolCall
from charivo_fsm.testing import FakeTransport, LocalRealtimeServer, RecordingEmitter, settle
from charivo_fsm.tools import compile_schema, validate_tool_arguments
from charivo_fsm.transports.openai import OpenAIRealtimeTransport
from charivo_fsm.wire import to_wire

KEY = "sk-proj-" + "Zq9" * 12 + "-LeakCanary"
BEARER = re.compile(r"Bearer\s+(?!\[redacted\])\S", re.IGNORECASE)
"""An Authorization value (a scrubbed one reads ``Bearer [redacted]``)."""


class _Everything(logging.Handler):
    """Keeps every record of every logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def all_logs() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("charivo_fsm",)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def record_texts(record: logging.LogRecord) -> list[str]:
    texts = [record.getMessage(), repr(record.args), repr(vars(record))]
    if record.exc_info:
        texts.append(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        texts.append(record.stack_info)
    return texts


def error_texts(error: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts.append(repr(getattr(current, "cause", None)))
        current = current.__cause__ or current.__context__
    return texts


def leaks(texts: list[str], secret: str) -> list[str]:
    return [t[:200] for t in texts if secret in t or BEARER.search(t)]


class _Collector(RecordingEmitter):
    """Records the emitted events and the errors they carry."""

    def errors(self) -> list[BaseException]:
        found: list[BaseException] = []
        for _, payload in self.events:
            for attribute in ("error", "last_error"):
                value = getattr(payload, attribute, None)
                if isinstance(value, BaseException):
                    found.append(value)
            state = getattr(payload, "state", None)
            if state is not None and state.last_error is not None:
                found.append(state.last_error)
        return found


async def _weather_handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
    return await _weather(args)


WEATHER = RealtimeToolRegistration(
    definition=RealtimeTool(
        name="get_weather",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    ),
    handler=_weather_handler,
)


async def _weather(args: dict[str, Any]) -> dict[str, Any]:
    return {"city": args["city"], "sky": "clear"}


async def _full_session(texts: list[str], errors: list[BaseException], api_key: str | None) -> None:
    emitter = _Collector()
    async with LocalRealtimeServer(api_key=KEY) as server:
        transport = OpenAIRealtimeTransport(
            api_key=api_key, url=server.url, close_timeout=0.5, ping_interval=0.2
        )
        async with transport:
            manager = create_realtime_manager(
                transport,
                tools=[WEATHER],
                transport_timeout=2.0,
                reconnect_delays=(0.05, 0.1),
            )
            manager.set_event_emitter(emitter)
            done: list[AssistantResponseCompleted] = []
            transport.on_event(
                lambda e: done.append(e) if isinstance(e, AssistantResponseCompleted) else None
            )

            async def until(check: Any) -> None:
                with anyio.fail_after(5):
                    while not check():
                        await anyio.sleep(0.01)

            async with manager:
                texts += [repr(transport), repr(vars(transport)), repr(manager)]
                await manager.start_session(RealtimeSessionConfig(voice="marin"))
                texts += [repr(transport), repr(vars(transport)), repr(manager.state)]
                await manager.send_message("weather please")
                await until(lambda: emitter.payloads("realtime:tool:result"))
                await until(lambda: len(done) >= 2)
                await manager.update_session({"instructions": "Be brief."})
                server.reject_next_session_update(f"Rejected: key {KEY} is not allowed")
                try:
                    await manager.update_session({"voice": "alloy"})
                except CharivoError as error:
                    errors.append(error)
                await server.send_event(
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "code": "bad",
                            "message": f"Authorization: Bearer {KEY} rejected",
                        },
                    }
                )
                await until(lambda: len(emitter.payloads("realtime:error")) >= 2)
                await server.send_garbage("invalid-json")
                await server.send_raw_text(f'{{"type": "error", "error": {{"message": "{KEY}"}}}}')
                await server.drop_connection()
                await until(lambda: "realtime:reconnect:success" in emitter.names())
                await manager.send_audio_chunk(b"\x01\x00" * 100)
                await manager.interrupt()
                await manager.stop_session()
                texts += [repr(transport), repr(vars(transport)), repr(manager.state)]
        texts += [json.dumps(event) for event in server.received]
        texts += [repr(record) for record in server.requests]
    for _name, payload in emitter.events:
        texts.append(repr(payload))
        try:
            texts.append(json.dumps(to_wire(payload)))
        except CharivoValidationError:
            pass
    errors += emitter.errors()

    async with LocalRealtimeServer(api_key="sk-other-key") as other:
        wrong = OpenAIRealtimeTransport(api_key=KEY, url=other.url)
        async with wrong:
            try:
                await wrong.connect(RealtimeSessionConfig())
            except CharivoError as error:
                errors.append(error)
    unreachable = OpenAIRealtimeTransport(api_key=KEY, url="ws://127.0.0.1:9/v1/realtime")
    async with unreachable:
        try:
            await unreachable.connect(RealtimeSessionConfig())
        except CharivoError as error:
            errors.append(error)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("key_from", ["argument", "environment"])
def test_the_api_key_never_leaks_from_a_full_session(
    backend: str, key_from: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if key_from == "environment":
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
    else:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    texts: list[str] = []
    errors: list[BaseException] = []
    with all_logs() as logs:
        anyio.run(
            _full_session,
            texts,
            errors,
            KEY if key_from == "argument" else None,
            backend=backend,
        )
    assert len(errors) >= 4  # rejected update, echoed error, 401, unreachable
    for error in errors:
        texts += error_texts(error)
    for record in logs.records:
        texts += record_texts(record)
    assert len(logs.records) > 30
    assert leaks(texts, KEY) == []
    everything = "\n".join(texts)
    assert "[redacted]" in everything  # the echoed key was scrubbed, not dropped


def test_the_demo_never_prints_or_logs_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    demo = pytest.importorskip("charivo_fsm.demo")
    run_demo = getattr(demo, "run_demo", None)
    if run_demo is None:
        pytest.skip("charivo_fsm.demo.run_demo does not exist yet")
    key = getattr(demo, "DEMO_API_KEY", None)
    texts: list[str] = []
    with all_logs() as logs:
        kwargs: dict[str, Any] = {}
        if "live" in inspect.signature(run_demo).parameters:
            kwargs["live"] = False
        try:
            run_demo(**kwargs)
        except SystemExit:
            pass
    out = capsys.readouterr()
    texts += [out.out, out.err]
    for record in logs.records:
        texts += record_texts(record)
    assert out.out  # the demo narrates what it does
    if key:
        assert leaks(texts, key) == []
    assert [t[:200] for t in texts if BEARER.search(t)] == []


# ------------------------------------------------------------------ plain text links


@pytest.mark.parametrize(
    "url",
    [
        "ws://api.openai.com/v1/realtime",
        "ws://example.com/",
        "WS://EXAMPLE.COM/",
        "ws://0.0.0.0/",
        "ws://10.0.0.7:8080/",
        "ws://192.168.1.2/",
        "ws://169.254.169.254/latest",
        "ws://[::]/",
        "ws://[fe80::1]/",
        "ws://127.0.0.1.nip.io/",
        "ws://localhost.evil.example/",
        "ws://127.1/",  # resolves to 127.0.0.1, but not a literal loopback address
        "ws://evil.example#@127.0.0.1/",
        "ws://127.0.0.1@evil.example/",
        "ws://user:pass@127.0.0.1/",
        "http://127.0.0.1/",
        "https://api.openai.com/v1/realtime",
        "file:///etc/passwd",
        "",
    ],
)
def test_plain_text_websocket_is_refused_unless_the_host_is_loopback(url: str) -> None:
    with pytest.raises(CharivoValidationError):
        OpenAIRealtimeTransport(api_key=KEY, url=url)


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8000/v1/realtime",
        "ws://127.255.0.1/",
        "ws://[::1]:8000/",
        "ws://localhost/",
        "wss://api.openai.com/v1/realtime",
        "wss://10.0.0.7/",
    ],
)
def test_loopback_plain_text_and_any_tls_url_are_accepted(url: str) -> None:
    transport = OpenAIRealtimeTransport(api_key=KEY, url=url)
    assert KEY not in repr(transport)
    assert KEY not in repr(vars(transport))


# ------------------------------------------------------------------ tool input is data


def test_schemas_are_compiled_at_registration_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arguments never reach the schema compiler (fastjsonschema generates code)."""
    validator = compile_schema(
        {"type": "object", "properties": {"q": {"type": "string"}}},
        "search",
    )

    def no_compiling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a schema was compiled while validating arguments")

    monkeypatch.setattr(tools_module.fastjsonschema, "compile", no_compiling)
    hostile = [
        {"q": "__import__('os').system('echo pwned')"},
        {"q": "x", "$ref": "http://169.254.169.254/latest/meta-data"},
        {"q": "x", "$schema": "http://json-schema.org/draft-07/schema#", "type": "eval"},
        {"q": "'); import os; os._exit(1); ('"},
        {"q": "{{7*7}}", "properties": {"q": {"pattern": "(a+)+$"}}},
    ]
    for args in hostile:
        assert validate_tool_arguments("search", validator, args) == args


def test_arguments_never_make_the_process_fetch_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    def no_fetching(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("something was fetched")

    monkeypatch.setattr(urllib.request, "urlopen", no_fetching)
    validator = compile_schema(
        {
            "type": "object",
            "properties": {"ref": {"$ref": "#/definitions/any"}},
            "definitions": {"any": {"type": "object"}},
        }
    )
    args = {"ref": {"$ref": "https://example.com/schema.json", "$id": "https://x/"}}
    assert validate_tool_arguments("t", validator, args) == args


@pytest.mark.anyio
async def test_tool_arguments_reach_the_handler_as_plain_data(fake: FakeTransport) -> None:
    seen: list[Any] = []

    async def handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(args)
        return {"echo": args["code"]}

    tool = RealtimeToolRegistration(
        definition=RealtimeTool(
            name="run",
            parameters={"type": "object", "properties": {"code": {"type": "string"}}},
        ),
        handler=handler,
    )
    async with create_realtime_manager(fake, tools=[tool]) as manager:
        await manager.start_session()
        payload = "__import__('os').system('false')"
        fake.emit(ToolCall(name="run", args={"code": payload}, call_id="c1"))
        await settle()
    assert seen == [{"code": payload}]
    assert type(seen[0]) is dict
    assert fake.calls_to("send_tool_result") == [("c1", {"echo": payload})]


@pytest.mark.parametrize(
    "url",
    [
        "wss://example.openai.azure.com/openai/realtime?api-key=abc123def456",
        "wss://api.openai.com/v1/realtime?api_key=sk-secret",
        "wss://api.openai.com/v1/realtime?access_token=xyz",
        "wss://api.openai.com/v1/realtime?apikey=xyz&deployment=d",
        "wss://api.openai.com/v1/realtime?sig=xyz",
    ],
)
def test_a_key_in_the_url_query_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(CharivoValidationError) as info:
        OpenAIRealtimeTransport(api_key="sk-test-key-000000", url=url)
    message = info.value.message
    assert "Authorization header" in message and "api_key=" in message
    value = url.split("=", 1)[1].split("&", 1)[0]
    assert value not in message


def test_ordinary_query_parameters_are_kept() -> None:
    transport = OpenAIRealtimeTransport(
        api_key="sk-test-key-000000",
        url="wss://example.com/openai/realtime?deployment=voice&api-version=2025-08-28",
    )
    assert "deployment=voice" in transport.url
    assert "api-version=2025-08-28" in transport.url
