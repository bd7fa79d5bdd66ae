"""``charivo-fsm web``: the voice page served by uvicorn, against OpenAI or the local server.

* With ``OPENAI_API_KEY`` set, every browser connection gets an
  :class:`~charivo_fsm.transports.openai.OpenAIRealtimeTransport` to the real
  service (the key stays in this process).
* Otherwise (the default) an embedded
  :class:`~charivo_fsm.testing.LocalRealtimeServer` runs in the same process, on
  127.0.0.1, with audio output paced in real time, server VAD, and a demo
  weather tool: a message containing "weather" makes the model call
  ``get_weather``, whose handler is registered in every connection's manager.
  The local server does not recognise speech: it hears a spoken turn as
  "(spoken audio, 1.2 s)" and answers it in a synthetic voice.

:func:`running_web` is the same as an async context manager (asyncio only:
uvicorn runs on asyncio); the browser test uses it.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import attrs
import uvicorn
from starlette.applications import Starlette

from ..model import RealtimeTool, RealtimeToolContext, RealtimeToolRegistration
from ..testing.server import DEFAULT_TOOL_TRIGGERS, LocalRealtimeServer
from ..transports.openai import OpenAIRealtimeTransport
from .app import Bootstrap, create_app
from .protocol import DEFAULT_MAX_FRAME_BYTES
from .session import TransportFactory

__all__ = [
    "WEATHER_TOOL",
    "WebServer",
    "demo_reply",
    "get_weather",
    "run_web",
    "running_web",
    "web_tools",
]

WEATHER_TOOL = RealtimeTool(
    name="get_weather",
    description="Get the current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
"""The demo tool; the local server's default :class:`ToolTrigger` calls it
(``get_weather`` with ``{"city": "Paris"}``) when a user message mentions the weather."""

TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"


async def get_weather(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
    """The demo tool's handler: a fixed forecast for the city asked about."""
    return {"city": str(args["city"]), "forecast": "sunny, light breeze", "high_c": 21}


def web_tools() -> list[RealtimeToolRegistration]:
    """The tools every page's manager gets."""
    return [RealtimeToolRegistration(definition=WEATHER_TOOL, handler=get_weather, timeout=5.0)]


def demo_reply(text: str) -> str:
    """What the local server answers (long enough to talk over it)."""
    return (
        f"You said: {text}. This is the local test server of charivo-fsm speaking. "
        "It cannot understand speech, but it hears when you talk, so you can interrupt "
        "me at any moment, and if you type a message about the weather it calls a tool."
    )


@attrs.frozen(slots=True)
class WebServer:
    """A running web app: its URL, the app, the local realtime server (or ``None``)."""

    url: str
    app: Starlette
    local: LocalRealtimeServer | None
    stopped: anyio.Event
    """Set once uvicorn has stopped (Ctrl+C, or the end of the block)."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@asynccontextmanager
async def running_web(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    live: bool = False,
    server_options: Mapping[str, Any] | None = None,
    app_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[WebServer]:
    """Serve the voice page with uvicorn until the block ends (asyncio only).

    ``live``: every connection talks to OpenAI (``OPENAI_API_KEY``); otherwise to
    a :class:`LocalRealtimeServer` started here (``server_options`` go to it).
    ``app_options`` go to :func:`~charivo_fsm.web.create_app`.  ``port=0`` picks
    a free port; the URL says which.
    """
    async with AsyncExitStack() as stack:
        local: LocalRealtimeServer | None = None
        factory: TransportFactory
        if live:
            info: dict[str, Any] = {"backend": "openai", "model": "gpt-realtime"}

            def factory() -> OpenAIRealtimeTransport:
                return OpenAIRealtimeTransport(transcription_model=TRANSCRIPTION_MODEL)

        else:
            token = secrets.token_urlsafe(24)  # the local server's key: never on the page
            options: dict[str, Any] = {
                "audio": True,
                "audio_pace": 1.0,
                "tool_triggers": DEFAULT_TOOL_TRIGGERS,
                "reply": demo_reply,
            }
            options.update(server_options or {})
            local = await stack.enter_async_context(LocalRealtimeServer(api_key=token, **options))
            url = local.url
            info = {"backend": "local", "model": "gpt-realtime (local test server)"}

            def factory() -> OpenAIRealtimeTransport:
                return OpenAIRealtimeTransport(api_key=token, url=url)

        settings: dict[str, Any] = {
            "tools": web_tools(),
            "session_config": {"input_transcription_model": TRANSCRIPTION_MODEL},
            "info": info,
            # POST /api/realtime: client secrets for remote clients
            "bootstrap": (
                Bootstrap()
                if local is None
                else Bootstrap(api_key=token, realtime_url=local.url, base_url=local.http_url)
            ),
        }
        settings.update(app_options or {})
        app = create_app(factory, **settings)
        sock = _bind(host, port)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            ws="wsproto",
            ws_max_size=int(settings.get("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES)),
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        stopped = anyio.Event()

        async def serve() -> None:
            try:
                await server.serve(sockets=[sock])
            finally:
                sock.close()
                stopped.set()

        group = await stack.enter_async_context(anyio.create_task_group())
        group.start_soon(serve)
        while not server.started and not stopped.is_set():
            await anyio.sleep(0.01)
        if stopped.is_set():
            raise RuntimeError(f"the web server could not start on {host}:{port}")
        try:
            yield WebServer(_url(host, sock.getsockname()[1]), app, local, stopped)
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True):
                await stopped.wait()


async def _serve_forever(host: str, port: int, live: bool) -> None:
    async with running_web(host=host, port=port, live=live) as web:
        if web.local is not None:
            where = f"the local realtime server at {web.local.url} (no API key needed)"
        else:
            where = "the OpenAI Realtime API (OPENAI_API_KEY)"
        print(f"charivo-fsm web: open {web.url} in a browser; talking to {where}.")
        print("Press Ctrl+C to stop.", flush=True)
        await web.stopped.wait()


def run_web(host: str = "127.0.0.1", port: int = 8765) -> int:
    """The ``charivo-fsm web`` command."""
    live = bool(os.environ.get("OPENAI_API_KEY", "").strip())
    try:
        anyio.run(_serve_forever, host, port, live, backend="asyncio")
    except KeyboardInterrupt:
        print("\ncharivo-fsm web: stopped", file=sys.stderr)
        return 0
    except OSError as error:
        print(f"charivo-fsm web: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 1
    return 0
