"""The session config in ``manager.state`` shows the transport kind and model actually
in use (a transport's optional ``applied_config`` hook), over real sockets."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from charivo_fsm import RealtimeSessionConfig, create_realtime_manager
from charivo_fsm.testing import FakeTransport, LocalRealtimeServer
from charivo_fsm.transports.openai import OpenAIRealtimeTransport

pytestmark = pytest.mark.anyio

KEY = "sk-local-test-key"


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real clocks for real socket I/O."""
    return (request.param, {})


async def test_the_state_shows_the_websocket_transport_and_its_model() -> None:
    with anyio.fail_after(10):
        async with LocalRealtimeServer(api_key=KEY) as server:
            transport = OpenAIRealtimeTransport(
                api_key=KEY, url=server.url, model="gpt-realtime-mini", close_timeout=1.0
            )
            async with transport, create_realtime_manager(transport) as manager:
                await manager.start_session({"voice": "marin"})
                config = manager.state.session.config
                assert config is not None
                assert (config.transport, config.model, config.provider) == (
                    "websocket",
                    "gpt-realtime-mini",
                    "openai",
                )
                assert server.requests[-1].query["model"] == "gpt-realtime-mini"
                # The GA interface cannot switch models in place: the state keeps the
                # model in use until a new connection carries the new one.
                await manager.update_session({"model": "gpt-realtime"})
                config = manager.state.session.config
                assert config is not None and config.model == "gpt-realtime-mini"
                await server.drop_connection()
                with anyio.fail_after(5):
                    while manager.state.session.config.model != "gpt-realtime":  # type: ignore[union-attr]
                        await anyio.sleep(0.01)
                assert server.requests[-1].query["model"] == "gpt-realtime"


async def test_a_transport_without_the_hook_shows_the_config_as_built() -> None:
    async with create_realtime_manager(FakeTransport()) as manager:
        await manager.start_session()
        config = manager.state.session.config
        assert config is not None
        assert (config.transport, config.model) == ("webrtc", None)


async def test_a_failing_hook_is_logged_and_the_config_used_as_built(
    captured: Any,
) -> None:
    logger, records = captured

    class Broken(FakeTransport):
        def applied_config(self, config: RealtimeSessionConfig) -> RealtimeSessionConfig:
            raise RuntimeError("no idea")

    async with create_realtime_manager(Broken(), logger=logger) as manager:
        await manager.start_session()
        assert manager.state.session.config is not None
    assert any("applied_config failed" in r.getMessage() for r in records)
