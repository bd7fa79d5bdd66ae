"""``charivo-fsm serve``: the embedded local realtime server as a process of its own.

A team can point its own client (any language) or its CI at it instead of the
real service: the WebSocket endpoint speaks the GA OpenAI Realtime protocol with
the service's rules and refusals (see :mod:`charivo_fsm.testing.server`), and the
client-secret endpoint mints short-lived keys for a remote bootstrap.  It prints
the URLs to use and runs until interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

import anyio

from .testing.server import LocalRealtimeServer

__all__ = ["run_serve", "serve"]

DEFAULT_KEY = "sk-local-test-key"


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = DEFAULT_KEY,
    audio: bool = True,
    audio_pace: float | None = None,
    delta_delay: float = 0.0,
    drop_every: float | None = None,
    out: TextIO = sys.stdout,
    ready: Callable[[LocalRealtimeServer], Any] | None = None,
) -> None:
    """Run the server until cancelled (or a signal), announcing its URLs on ``out``.

    ``drop_every`` (seconds) drops every open connection periodically, so a
    client's reconnect can be tested.
    """
    async with LocalRealtimeServer(
        api_key=api_key,
        host=host,
        port=port,
        audio=audio,
        audio_pace=audio_pace,
        delta_delay=delta_delay,
    ) as server:
        print("charivo-fsm local realtime server listening", file=out)
        print(f"  realtime (WebSocket): {server.url}", file=out)
        print(f"  client secrets (HTTP POST): {server.http_url}/realtime/client_secrets", file=out)
        key_text = "any key" if api_key is None else f"Authorization: Bearer {api_key}"
        print(f"  key: {key_text}", file=out)
        out.flush()
        if ready is not None:
            ready(server)
        async with anyio.create_task_group() as group:
            if drop_every is not None:

                async def dropper() -> None:
                    while True:
                        await anyio.sleep(drop_every)
                        if server.active_connections:
                            print("  dropping the open connections (--drop-every)", file=out)
                            out.flush()
                            await server.drop_connection()

                group.start_soon(dropper)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _signum in signals:
                    print("stopping", file=out)
                    out.flush()
                    group.cancel_scope.cancel()
                    break


def run_serve(
    *,
    host: str,
    port: int,
    api_key: str | None,
    audio: bool,
    audio_pace: float | None,
    delta_delay: float,
    drop_every: float | None,
) -> int:
    """The ``charivo-fsm serve`` subcommand."""
    if port < 0 or port > 65535:
        print("--port must be between 0 and 65535", file=sys.stderr)
        return 2
    try:
        anyio.run(
            lambda: serve(
                host=host,
                port=port,
                api_key=api_key,
                audio=audio,
                audio_pace=audio_pace,
                delta_delay=delta_delay,
                drop_every=drop_every,
            )
        )
    except OSError as error:
        print(f"charivo-fsm serve: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
