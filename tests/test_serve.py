"""``charivo-fsm serve``: the local server as a process of its own (real sockets)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from charivo_fsm import create_realtime_manager
from charivo_fsm.serve import serve
from charivo_fsm.server import create_client_secret
from charivo_fsm.testing import LocalRealtimeServer, RecordingEmitter
from charivo_fsm.transports.openai import OpenAIRealtimeTransport

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real clocks for real socket I/O."""
    return (request.param, {})


async def answer(url: str, key: str, text: str) -> str:
    emitter = RecordingEmitter()
    transport = OpenAIRealtimeTransport(api_key=key, url=url, close_timeout=1.0)
    async with transport, create_realtime_manager(transport) as manager:
        manager.set_event_emitter(emitter)
        await manager.start_session()
        await manager.send_message(text)
        with anyio.fail_after(5):
            while not emitter.payloads("realtime:assistant:done"):
                await anyio.sleep(0.01)
    return str(emitter.last("realtime:assistant:done").text)


async def test_serve_announces_its_urls_and_answers_clients() -> None:
    out = io.StringIO()
    servers: list[LocalRealtimeServer] = []
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: serve(port=0, out=out, ready=servers.append))
            while not servers:
                await anyio.sleep(0.01)
            server = servers[0]
            assert f"realtime (WebSocket): {server.url}" in out.getvalue()
            assert f"{server.http_url}/realtime/client_secrets" in out.getvalue()
            assert "You said: hello" in await answer(server.url, "sk-local-test-key", "hello")
            secret = await create_client_secret(
                None, api_key="sk-local-test-key", base_url=server.http_url
            )
            assert "You said" in await answer(server.url, secret.value, "again")
            group.cancel_scope.cancel()


async def test_serve_can_drop_connections_periodically() -> None:
    out = io.StringIO()
    servers: list[LocalRealtimeServer] = []
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: serve(port=0, out=out, drop_every=0.2, ready=servers.append)
            )
            while not servers:
                await anyio.sleep(0.01)
            emitter = RecordingEmitter()
            transport = OpenAIRealtimeTransport(
                api_key="sk-local-test-key", url=servers[0].url, close_timeout=1.0
            )
            manager = create_realtime_manager(transport, reconnect_delays=(0.05,))
            manager.set_event_emitter(emitter)
            async with transport, manager:
                await manager.start_session()
                while not emitter.payloads("realtime:reconnect:success"):
                    await anyio.sleep(0.01)
            assert "dropping the open connections" in out.getvalue()
            group.cancel_scope.cancel()
def test_the_serve_command_runs_on_a_fixed_port_and_stops_on_sigterm() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "charivo_fsm", "serve", "--port", str(port), "--audio-pace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        assert f"ws://127.0.0.1:{port}/v1/realtime" in "".join(lines)
        text = anyio.run(answer, f"ws://127.0.0.1:{port}/v1/realtime", "sk-local-test-key", "hi")
        assert "You said: hi" in text
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "stopping" in stdout
