"""Remote bootstrap (CONTRACT §12): client secrets minted on the app's server, a
transport that fetches a fresh one before every connect and recover, and the local
server's client-secret endpoint and key rules.  Real loopback sockets, real clocks
(the secrets' expiry runs on a clock the test moves), on asyncio and trio."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from openai.types.realtime import RealtimeSessionCreateRequest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request

from charivo_fsm import (
    CharivoProviderError,
    CharivoValidationError,
    ConnectionState,
    RealtimeSessionConfig,
    create_realtime_manager,
)
from charivo_fsm.remote import RemoteRealtimeTransport, create_remote_transport
from charivo_fsm.server import bootstrap_answer, create_client_secret
from charivo_fsm.testing import LocalRealtimeServer, RecordingEmitter

pytestmark = pytest.mark.anyio

LONG_KEY = "sk-proj-LongLivedKey-0123456789abcdef"


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real clocks for real socket I/O."""
    return (request.param, {})


class Clock:
    """Unix seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def service(clock: Clock) -> AsyncIterator[LocalRealtimeServer]:
    with anyio.fail_after(15):
        async with LocalRealtimeServer(api_key=LONG_KEY, clock=clock) as server:
            yield server


def app_endpoint(server: LocalRealtimeServer, **options: Any) -> httpx.AsyncClient:
    """An httpx client whose requests reach an app's ``POST /api/realtime`` (served
    by :func:`bootstrap_answer`, which calls the local server's real endpoint)."""
    calls: list[dict[str, Any]] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"null")
        calls.append(body)
        status, answer = await bootstrap_answer(
            body,
            api_key=LONG_KEY,
            realtime_url=server.url,
            base_url=server.http_url,
            **options,
        )
        return httpx.Response(status, json=answer)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    client.calls = calls  # type: ignore[attr-defined]
    return client


# ----------------------------------------------------------------------------- minting


async def test_a_client_secret_is_minted_for_the_session() -> None:
    clock = Clock()
    async with service(clock) as server:
        config = RealtimeSessionConfig(voice="marin", instructions="Be brief.")
        secret = await create_client_secret(
            config, api_key=LONG_KEY, expires_after=60, base_url=server.http_url
        )
        assert secret.value.startswith("ek_")
        assert secret.expires_at == int(clock.now) + 60
        assert secret.model == "gpt-realtime"
        assert LONG_KEY not in repr(secret) and secret.value not in repr(secret)
        (minted,) = server.client_secrets.minted
        assert minted["instructions"] == "Be brief."
        assert minted["audio"]["output"]["voice"] == "marin"
        RealtimeSessionCreateRequest.model_validate(minted)


async def test_a_refused_key_keeps_the_provider_fields_and_not_the_key() -> None:
    async with service(Clock()) as server:
        wrong = "sk-proj-WrongKey-9876543210fedcba"
        with pytest.raises(CharivoProviderError) as info:
            await create_client_secret(None, api_key=wrong, base_url=server.http_url)
        assert info.value.provider_code == "invalid_api_key"
        assert "401" in info.value.message and wrong not in info.value.message


async def test_a_short_lived_key_cannot_mint_another() -> None:
    async with service(Clock()) as server:
        secret = await create_client_secret(None, api_key=LONG_KEY, base_url=server.http_url)
        with pytest.raises(CharivoProviderError, match="401"):
            await create_client_secret(None, api_key=secret.value, base_url=server.http_url)


@pytest.mark.parametrize("seconds", [0, 9, 7201, float("nan"), True])
async def test_expiry_out_of_range_is_refused_before_any_request(seconds: Any) -> None:
    with pytest.raises(CharivoValidationError, match="expires_after"):
        await create_client_secret(None, api_key=LONG_KEY, expires_after=seconds)


# ----------------------------------------------------------------------------- key rules


async def raw_handshake(
    server: LocalRealtimeServer, *, bearer: str | None = None, subprotocols: list[str] = ()
) -> int:
    """Open a WebSocket by hand; the HTTP status (101 accepted)."""
    stream = await anyio.connect_tcp("127.0.0.1", server.port)
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"authorization", f"Bearer {bearer}".encode())] if bearer else []
        await stream.send(
            ws.send(
                Request(
                    host="127.0.0.1",
                    target="/v1/realtime?model=gpt-realtime",
                    extra_headers=headers,
                    subprotocols=list(subprotocols),
                )
            )
        )
        while True:
            ws.receive_data(await stream.receive())
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return 101
                if isinstance(event, RejectConnection):
                    return event.status_code


async def test_short_lived_keys_work_until_they_expire_and_never_the_long_one_from_a_page() -> (
    None
):
    clock = Clock()
    async with service(clock) as server:
        secret = await create_client_secret(
            None, api_key=LONG_KEY, expires_after=30, base_url=server.http_url
        )
        page = ["realtime", f"openai-insecure-api-key.{secret.value}"]
        assert await raw_handshake(server, bearer=secret.value) == 101
        assert await raw_handshake(server, subprotocols=page) == 101
        assert await raw_handshake(server, bearer=LONG_KEY) == 101
        long_from_page = ["realtime", f"openai-insecure-api-key.{LONG_KEY}"]
        assert await raw_handshake(server, subprotocols=long_from_page) == 401
        clock.now += 31
        assert await raw_handshake(server, bearer=secret.value) == 401
        assert await raw_handshake(server, subprotocols=page) == 401
        assert await raw_handshake(server, bearer="ek_madeup") == 401


# ----------------------------------------------------------------------------- the app endpoint


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"session": {"voicee": "marin"}}, "voicee"),
        ({"session": {"maxTokens": "many"}}, "maxTokens"),
        ({"session": {"turnDetection": {"mode": "loud"}}}, "turnDetection.mode"),
        ({"sesion": {}}, "sesion"),
        ([1, 2], "session"),
    ],
)
async def test_the_app_endpoint_refuses_a_bad_config_naming_the_field(
    body: Any, field: str
) -> None:
    async with service(Clock()) as server:
        status, answer = await bootstrap_answer(
            body, api_key=LONG_KEY, realtime_url=server.url, base_url=server.http_url
        )
        assert status == 400
        assert field in answer["error"]
        assert LONG_KEY not in json.dumps(answer)
        assert server.client_secrets.minted == []


async def test_the_app_endpoint_answers_without_the_long_lived_key() -> None:
    async with service(Clock()) as server:
        status, answer = await bootstrap_answer(
            {"session": {"voice": "marin", "maxTokens": 200}},
            api_key=LONG_KEY,
            realtime_url=server.url,
            base_url=server.http_url,
        )
        assert status == 200
        assert set(answer) == {"clientSecret", "expiresAt", "model", "url"}
        assert answer["clientSecret"].startswith("ek_") and answer["url"] == server.url
        assert LONG_KEY not in json.dumps(answer)
        status, answer = await bootstrap_answer(
            {}, api_key="sk-proj-Wrong-00000000000000", base_url=server.http_url
        )
        assert status == 502 and "sk-proj-Wrong" not in json.dumps(answer)


# ----------------------------------------------------------------------------- the remote transport


async def test_a_remote_session_reconnects_after_its_secret_expired() -> None:
    clock = Clock()
    async with service(clock) as server:
        client = app_endpoint(server, expires_after=10)
        transport = create_remote_transport(
            "https://app.example/api/realtime", http_client=client, close_timeout=1.0
        )
        assert isinstance(transport, RemoteRealtimeTransport)
        emitter = RecordingEmitter()
        manager = create_realtime_manager(
            transport, reconnect_delays=(0.05, 0.1), reconnect_jitter=0
        )
        manager.set_event_emitter(emitter)
        async with transport, manager:
            await manager.start_session({"voice": "marin"})
            assert transport.secrets_fetched == 1
            first = server.requests[-1]
            assert first.authorized
            await manager.send_message("Remember the word teapot.")
            with anyio.fail_after(5):
                while not emitter.payloads("realtime:assistant:done"):
                    await anyio.sleep(0.01)
            clock.now += 60  # the first secret has expired
            await server.drop_connection()
            with anyio.fail_after(5):
                while not emitter.payloads("realtime:reconnect:success"):
                    await anyio.sleep(0.01)
            assert transport.secrets_fetched == 2
            assert manager.state.connection == ConnectionState.CONNECTED
            assert [r.authorized for r in server.requests] == [True, True]
            calls = client.calls  # type: ignore[attr-defined]
            assert [c["session"]["voice"] for c in calls] == ["marin", "marin"]
        minted = list(server.client_secrets.issued())
        assert len(minted) == 2 and minted[0] != minted[1]
        assert LONG_KEY not in repr(transport)


async def test_the_remote_transport_takes_no_api_key() -> None:
    with pytest.raises(CharivoValidationError, match="no api_key"):
        create_remote_transport("https://app.example/api/realtime", api_key=LONG_KEY)
    with pytest.raises(CharivoValidationError, match="http"):
        create_remote_transport("ftp://app.example/api/realtime")


async def test_a_refusing_endpoint_fails_the_start_clearly() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": "sign in first"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    transport = create_remote_transport("https://app.example/api/realtime", http_client=client)
    async with transport, create_realtime_manager(transport) as manager:
        with pytest.raises(CharivoProviderError, match=r"refused \(HTTP 403\): sign in first"):
            await manager.start_session()


# ----------------------------------------------------------------------------- the web app


async def test_the_web_app_serves_the_bootstrap_for_a_remote_transport() -> None:
    from charivo_fsm.testing import FakeTransport
    from charivo_fsm.web import create_app
    from charivo_fsm.web.app import Bootstrap

    async with service(Clock()) as server:
        app = create_app(
            FakeTransport,
            bootstrap=Bootstrap(
                api_key=LONG_KEY, realtime_url=server.url, base_url=server.http_url
            ),
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app.test"
        )
        async with client:
            bad = await client.post("/api/realtime", json={"session": {"voicee": "x"}})
            assert bad.status_code == 400 and "voicee" in bad.json()["error"]
            garbage = await client.post("/api/realtime", content=b"{nope")
            assert garbage.status_code == 400
            assert LONG_KEY not in bad.text + garbage.text
            transport = create_remote_transport(
                "http://app.test/api/realtime", http_client=client, close_timeout=1.0
            )
            emitter = RecordingEmitter()
            manager = create_realtime_manager(transport)
            manager.set_event_emitter(emitter)
            async with transport, manager:
                await manager.start_session({"voice": "cedar"})
                await manager.send_message("hello")
                with anyio.fail_after(5):
                    while not emitter.payloads("realtime:assistant:done"):
                        await anyio.sleep(0.01)
            assert "You said: hello" in emitter.last("realtime:assistant:done").text
        assert server.client_secrets.minted[-1]["audio"]["output"]["voice"] == "cedar"
        assert not await _served_without_bootstrap(create_app(FakeTransport))


async def _served_without_bootstrap(app: Any) -> bool:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app.test"
    ) as client:
        response = await client.post("/api/realtime", json={})
        return response.status_code != 404
