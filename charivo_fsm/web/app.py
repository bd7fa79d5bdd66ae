"""The Starlette app: the voice page and its ``/session`` WebSocket."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..model import Character, RealtimeSessionConfig, RealtimeToolRegistration
from ..server import DEFAULT_API_BASE, bootstrap_answer
from .protocol import DEFAULT_MAX_FRAME_BYTES
from .session import PageGone, PageSettings, TransportFactory, serve_page

__all__ = ["STATIC_DIR", "Bootstrap", "create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page's files (plain HTML, JavaScript and CSS, shipped in the package)."""

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_CLOSE_POLICY = 1008


class _StarletteSocket:
    """A Starlette WebSocket as a :class:`~charivo_fsm.web.session.PageSocket`."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._gone = False

    async def receive(self) -> str | bytes | None:
        if self._gone:
            return None
        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, RuntimeError, OSError):
            message = {"type": "websocket.disconnect"}
        if message["type"] == "websocket.disconnect":
            self._gone = True
            return None
        data: bytes | None = message.get("bytes")
        if data is not None:
            return data
        text: str | None = message.get("text")
        return text if text is not None else ""

    async def send_text(self, text: str) -> None:
        if self._gone:
            raise PageGone
        try:
            await self._ws.send_text(text)
        except Exception as error:  # the server's own "closed" errors differ
            self._gone = True
            raise PageGone from error

    async def close(self, code: int, reason: str) -> None:
        if self._ws.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self._ws.close(code, reason)
        except Exception:
            pass


@attrs.frozen
class Bootstrap:
    """Where ``POST /api/realtime`` mints client secrets (the remote bootstrap).

    :param api_key: the long-lived key (``None``: ``OPENAI_API_KEY``); it never
        leaves the server.
    :param realtime_url: the realtime WebSocket URL a client connects to with the
        secret (answered as ``url``).
    :param base_url: the API base of the client-secret endpoint.
    :param expires_after: seconds a secret lives (10 to 7200).
    """

    api_key: str | None = attrs.field(default=None, repr=False)
    realtime_url: str = "wss://api.openai.com/v1/realtime"
    base_url: str = DEFAULT_API_BASE
    expires_after: float = 60.0


def _same_origin(origin: str, host: str | None) -> bool:
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host


def create_app(
    transport_factory: TransportFactory,
    *,
    tools: Iterable[RealtimeToolRegistration] = (),
    session_config: RealtimeSessionConfig | Mapping[str, Any] | None = None,
    character: Character | Mapping[str, Any] | None = None,
    transport_timeout: float = 10.0,
    reconnect_delays: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 5.0),
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_event_buffer: int = 4096,
    allowed_origins: Iterable[str] | None = None,
    info: Mapping[str, Any] | None = None,
    bootstrap: Bootstrap | None = None,
) -> Starlette:
    """The browser voice app: ``GET /`` (the page), ``/static/*`` (its files) and
    ``WebSocket /session`` (the page protocol of ``docs/web.md``).

    :param transport_factory: called once per browser connection for a fresh
        transport (entered with ``async with`` when it has a lifetime of its own);
        the API key stays in it, on the server.
    :param tools: tool registrations every connection's manager gets.
    :param session_config: the managers' default session config (instructions,
        voice, model, transcription...); never sent to the page.
    :param character: the managers' character, if any.
    :param transport_timeout: each manager's bound on transport lifecycle calls;
        a page that goes away has its session stopped within it.
    :param max_frame_bytes: a larger message from the page closes its socket (1009).
    :param max_event_buffer: events a page may fall behind by before its socket
        is closed (1011).
    :param allowed_origins: ``Origin`` values allowed to open ``/session``
        (default: the page's own origin; a request without ``Origin``, from a
        non-browser client, is allowed).  ``["*"]`` allows any origin.
    :param info: shown to the page in its ``hello`` message (e.g. which model or
        server it talks to); must not hold secrets.
    :param bootstrap: serve ``POST /api/realtime`` (the remote bootstrap of
        :mod:`charivo_fsm.remote`): body ``{"session": <wire session config>}``,
        answer ``{"clientSecret", "expiresAt", "model", "url"}``; a body that is
        not a valid session config is refused with 400 and a message naming the
        field; the long-lived key is never echoed.  ``None``: not served (404).

    ``app.state.page_sessions`` counts the connections being served.
    """
    settings = PageSettings(
        transport_factory=transport_factory,
        tools=tools,
        session_config=session_config,
        character=character,
        transport_timeout=transport_timeout,
        reconnect_delays=reconnect_delays,
        max_frame_bytes=max_frame_bytes,
        max_event_buffer=max_event_buffer,
        info=info,
    )
    origins = None if allowed_origins is None else frozenset(allowed_origins)
    index_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    async def index(_request: Request) -> HTMLResponse:
        return HTMLResponse(
            index_html,
            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store"},
        )

    async def remote_bootstrap(request: Request) -> JSONResponse:
        assert bootstrap is not None
        body = await request.body()
        if len(body) > 1024 * 1024:
            return JSONResponse({"error": "the body is too large"}, status_code=413)
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
        status, answer = await bootstrap_answer(
            parsed,
            api_key=bootstrap.api_key,
            realtime_url=bootstrap.realtime_url,
            base_url=bootstrap.base_url,
            expires_after=bootstrap.expires_after,
        )
        return JSONResponse(answer, status_code=status, headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "pageSessions": request.app.state.page_sessions})

    async def session(websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if origin is not None and not (
            (origins is None and _same_origin(origin, websocket.headers.get("host")))
            or (origins is not None and ("*" in origins or origin in origins))
        ):
            await websocket.close(_CLOSE_POLICY, "origin not allowed")
            return
        await websocket.accept()
        state = websocket.app.state
        state.page_sessions += 1
        socket = _StarletteSocket(websocket)
        try:
            await serve_page(socket, settings)
        finally:
            state.page_sessions -= 1
            await socket.close(1000, "session over")

    routes = [
        Route("/", index),
        Route("/healthz", health),
        WebSocketRoute("/session", session),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    if bootstrap is not None:
        routes.append(Route("/api/realtime", remote_bootstrap, methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.page_sessions = 0
    app.state.settings = settings
    return app
