"""A browser voice page behind a Python backend (CONTRACT §12).

``create_app(transport_factory, ...)`` builds a Starlette ASGI app:

* ``GET /`` — the voice page (plain HTML, JavaScript and CSS shipped in this
  package under ``static/``, no build step): microphone capture resampled to
  PCM16 24 kHz in an AudioWorklet, the model's voice played with Web Audio and
  cut at once on barge-in or interrupt (with played positions reported for
  truncation), live transcripts of both sides, session state, tool calls, a
  lip-sync meter, start/stop and push-to-talk buttons;
* ``WebSocket /session`` — one :class:`~charivo_fsm.RealtimeManager` per browser
  connection, with a fresh transport from the factory; the page protocol is in
  ``docs/web.md`` (:mod:`charivo_fsm.web.protocol`).

Starlette and uvicorn are the ``web`` extra (``pip install 'charivo-fsm[web]'``).
``charivo-fsm web`` (:func:`charivo_fsm.web.run.run_web`) serves the app against
OpenAI when ``OPENAI_API_KEY`` is set, otherwise against the embedded local
realtime server.
"""

from .app import STATIC_DIR, create_app
from .protocol import AUDIO_FORMAT, PROTOCOL_VERSION, PageProtocolError, parse_page_message
from .session import PageGone, PageSettings, PageSocket, TransportFactory, serve_page

__all__ = [
    "AUDIO_FORMAT",
    "PROTOCOL_VERSION",
    "STATIC_DIR",
    "PageGone",
    "PageProtocolError",
    "PageSettings",
    "PageSocket",
    "TransportFactory",
    "create_app",
    "parse_page_message",
    "serve_page",
]
