"""The server side of the remote bootstrap: mint short-lived client secrets.

The long-lived API key stays on the app's server.  A browser (or any client the
app does not trust with the key) asks the app's server for a *client secret*: a
short-lived key (``ek_...``) for one realtime session, minted through the
provider's client-secret endpoint (``POST /v1/realtime/client_secrets`` for
OpenAI).  :func:`create_client_secret` does that call; :mod:`charivo_fsm.web`
exposes it as ``POST /api/realtime``, and
:func:`charivo_fsm.remote.create_remote_transport` is the client that uses it.

The HTTP client is ``httpx`` (``pip install charivo-fsm[web]`` or ``[remote]``).
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import TYPE_CHECKING, Any

import attrs

from .errors import CharivoProviderError, CharivoTransportError, CharivoValidationError
from .model import RealtimeSessionConfig
from .transports.openai import build_session_update
from .wire import structure_config

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_API_BASE",
    "ClientSecret",
    "bootstrap_answer",
    "create_client_secret",
    "session_body",
]

DEFAULT_API_BASE = "https://api.openai.com/v1"
"""Where the client-secret endpoint lives (``{base}/realtime/client_secrets``)."""

_DEFAULT_MODEL = "gpt-realtime"
_MIN_SECONDS, _MAX_SECONDS = 10, 7200  # the provider's accepted range
_KEY_SHAPE = re.compile(r"\b(?:sk|ek)-?[A-Za-z0-9_\-]{6,}")


@attrs.frozen(slots=True)
class ClientSecret:
    """A short-lived key for one realtime session.

    ``value`` is the key (``ek_...``), ``expires_at`` its expiry as a Unix time in
    seconds, ``model`` the model the session was minted for.
    """

    value: str = attrs.field(repr=lambda value: value[:6] + "…")
    expires_at: float
    model: str | None

    def expired(self, now: float | None = None) -> bool:
        """Whether the secret has expired (at ``now``, default the wall clock)."""
        return (time.time() if now is None else now) >= self.expires_at


def session_body(config: RealtimeSessionConfig) -> dict[str, Any]:
    """The ``session`` object of a client-secret request for ``config`` (the GA
    session shape, the same fields a ``session.update`` carries, plus the model)."""
    session = build_session_update(config)["session"]
    session["model"] = config.model or _DEFAULT_MODEL
    return dict(session)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_SHAPE.sub("[redacted]", text)


async def create_client_secret(
    config: RealtimeSessionConfig | dict[str, Any] | None,
    *,
    api_key: str | None = None,
    expires_after: float = 60.0,
    base_url: str = DEFAULT_API_BASE,
    http_client: httpx.AsyncClient | None = None,
    timeout: float = 10.0,
) -> ClientSecret:
    """Mint a client secret for a session with ``config``.

    :param config: the session config (a value object or a snake_case mapping);
        the secret is bound to it (model, voice, instructions, tools, ...).
    :param api_key: the long-lived key; ``None`` reads ``OPENAI_API_KEY``.
    :param expires_after: seconds until the secret expires (10 to 7200; whole
        seconds are sent).  A started session outlives its secret; a new
        connection (a reconnect) needs a fresh one.
    :param base_url: the API base (the embedded local server's ``http_url`` in
        tests and development).
    :param http_client: an ``httpx.AsyncClient`` to reuse (one is made otherwise).

    Raises :class:`CharivoValidationError` for a bad config or ``expires_after``,
    :class:`CharivoProviderError` when the provider refuses (its ``code``, ``type``
    and ``param`` kept), :class:`CharivoTransportError` when it cannot be reached.
    The key never appears in an error message.
    """
    import httpx

    parsed = structure_config(config) or RealtimeSessionConfig()
    if (
        isinstance(expires_after, bool)
        or not isinstance(expires_after, (int, float))
        or not math.isfinite(expires_after)
        or not _MIN_SECONDS <= expires_after <= _MAX_SECONDS
    ):
        raise CharivoValidationError(
            f"expires_after must be between {_MIN_SECONDS} and {_MAX_SECONDS} seconds "
            f"(got {expires_after!r})"
        )
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    if not key:
        raise CharivoValidationError("no API key: pass api_key= or set OPENAI_API_KEY")
    body = {
        "expires_after": {"anchor": "created_at", "seconds": int(expires_after)},
        "session": session_body(parsed),
    }
    url = base_url.rstrip("/") + "/realtime/client_secrets"
    headers = {"Authorization": f"Bearer {key}"}
    client = http_client or httpx.AsyncClient(timeout=timeout)
    try:
        try:
            response = await client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CharivoTransportError(
                f"could not reach the client-secret endpoint: {_scrub(str(exc), (key,))}"
                or type(exc).__name__
            ) from None
    finally:
        if http_client is None:
            await client.aclose()
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400 or not isinstance(data, dict):
        error = data.get("error") if isinstance(data, dict) else None
        error = error if isinstance(error, dict) else {}
        message = error.get("message") if isinstance(error.get("message"), str) else ""
        raise CharivoProviderError(
            f"the client-secret endpoint refused (HTTP {response.status_code})"
            + (f": {_scrub(message, (key,))[:300]}" if message else ""),
            provider_code=error.get("code") if isinstance(error.get("code"), str) else None,
            provider_type=error.get("type") if isinstance(error.get("type"), str) else None,
            param=error.get("param") if isinstance(error.get("param"), str) else None,
        )
    value, expires_at = data.get("value"), data.get("expires_at")
    session = data.get("session")
    model = session.get("model") if isinstance(session, dict) else None
    if not isinstance(value, str) or not value or not isinstance(expires_at, (int, float)):
        raise CharivoProviderError("the client-secret endpoint answered without a secret")
    return ClientSecret(
        value=value,
        expires_at=float(expires_at),
        model=model if isinstance(model, str) else None,
    )


async def bootstrap_answer(
    body: Any,
    *,
    api_key: str | None = None,
    realtime_url: str = "wss://api.openai.com/v1/realtime",
    base_url: str = DEFAULT_API_BASE,
    expires_after: float = 60.0,
    http_client: httpx.AsyncClient | None = None,
) -> tuple[int, dict[str, Any]]:
    """The answer of an app's ``POST /api/realtime`` (what :mod:`charivo_fsm.web`
    serves and :func:`charivo_fsm.remote.create_remote_transport` calls).

    ``body`` is the parsed JSON request: ``{"session": <wire session config>}``
    (camelCase, as :func:`charivo_fsm.wire.to_wire` writes it; ``session`` may be
    omitted).  Returns ``(status, json)``: ``200`` with ``{"clientSecret",
    "expiresAt", "model", "url"}``; ``400`` with ``{"error": message}`` naming
    the bad field; ``502`` when the provider refused or could not be reached.
    The long-lived key is never part of an answer.
    """
    from .errors import CharivoError
    from .wire import config_from_wire

    if not isinstance(body, dict):
        return 400, {"error": "the body must be a JSON object with a \"session\" field"}
    unknown = sorted(set(body) - {"session"})
    if unknown:
        return 400, {"error": f'unknown field "{unknown[0][:60]}"'}
    try:
        config = config_from_wire(body.get("session") or {})
    except CharivoValidationError as invalid:
        return 400, {"error": invalid.message}
    keys = (api_key or os.environ.get("OPENAI_API_KEY") or "",)
    try:
        secret = await create_client_secret(
            config,
            api_key=api_key,
            expires_after=expires_after,
            base_url=base_url,
            http_client=http_client,
        )
    except CharivoValidationError as invalid:
        return 400, {"error": _scrub(invalid.message, keys)}
    except CharivoError as failure:
        return 502, {"error": _scrub(failure.message, keys)}
    return 200, {
        "clientSecret": secret.value,
        "expiresAt": secret.expires_at,
        "model": secret.model,
        "url": realtime_url,
    }
