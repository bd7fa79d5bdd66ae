"""The client side of the remote bootstrap (the seed's ``createRemoteRealtimeClient``).

An app that must not hold the long-lived API key (a desktop or phone app, a bot
run by users, a browser behind a Python relay) asks the app's own server for a
short-lived client secret before every connection::

    transport = create_remote_transport("https://app.example.com/api/realtime")
    async with transport, create_realtime_manager(transport) as manager:
        await manager.start_session({"voice": "marin"})

:func:`create_remote_transport` returns an
:class:`~charivo_fsm.transports.openai.OpenAIRealtimeTransport` that, before each
``connect`` *and* each ``recover``, POSTs ``{"session": <wire config>}`` to
``api_endpoint`` and connects with the ``clientSecret`` of the answer, to the
``url`` it names, for its ``model``.  Secrets expire (a minute by default), so a
reconnect long after the start still works: it gets a fresh one.  The endpoint's
server side is :func:`charivo_fsm.server.bootstrap_answer` (served by
:mod:`charivo_fsm.web` as ``POST /api/realtime``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import CharivoProviderError, CharivoTransportError, CharivoValidationError
from .model import RealtimeSessionConfig
from .transports.openai import OpenAIRealtimeTransport, _parse_url
from .wire import to_wire

if TYPE_CHECKING:
    import httpx

__all__ = ["RemoteRealtimeTransport", "create_remote_transport"]


class RemoteRealtimeTransport(OpenAIRealtimeTransport):
    """An OpenAI transport whose key comes from the app's bootstrap endpoint."""

    def __init__(
        self,
        api_endpoint: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        request_headers: Mapping[str, str] | None = None,
        request_timeout: float = 10.0,
        **transport_options: Any,
    ) -> None:
        if "api_key" in transport_options:
            raise CharivoValidationError(
                "create_remote_transport takes no api_key: the key comes from the endpoint"
            )
        if not isinstance(api_endpoint, str) or not api_endpoint.startswith(
            ("https://", "http://")
        ):
            raise CharivoValidationError("api_endpoint must be an http(s) URL")
        super().__init__(**transport_options)
        self.api_endpoint = api_endpoint
        self._http_client = http_client
        self._request_headers = dict(request_headers or {})
        self._request_timeout = request_timeout
        self.secrets_fetched = 0
        """How many client secrets were fetched (one per connect and recover)."""

    async def _credentials(self, config: RealtimeSessionConfig) -> str:
        import httpx

        client = self._http_client or httpx.AsyncClient(timeout=self._request_timeout)
        try:
            try:
                response = await client.post(
                    self.api_endpoint,
                    json={"session": to_wire(config)},
                    headers=self._request_headers,
                )
            except httpx.HTTPError as exc:
                raise CharivoTransportError(
                    f"could not reach the bootstrap endpoint: {type(exc).__name__}"
                ) from None
        finally:
            if self._http_client is None:
                await client.aclose()
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200 or not isinstance(answer, dict):
            detail = answer.get("error") if isinstance(answer, dict) else None
            raise CharivoProviderError(
                f"the bootstrap endpoint refused (HTTP {response.status_code})"
                + (f": {str(detail)[:300]}" if detail else "")
            )
        secret, url, model = answer.get("clientSecret"), answer.get("url"), answer.get("model")
        if not isinstance(secret, str) or not secret:
            raise CharivoProviderError("the bootstrap endpoint answered without a clientSecret")
        if isinstance(url, str) and url:
            self._endpoint = _parse_url(url)
        if isinstance(model, str) and model:
            self._model = model
        self._remember_secret(secret)
        self.secrets_fetched += 1
        return secret


def create_remote_transport(
    api_endpoint: str, **transport_options: Any
) -> OpenAIRealtimeTransport:
    """An :class:`OpenAIRealtimeTransport` that fetches a fresh client secret from
    ``api_endpoint`` (the app's ``POST /api/realtime``) before every connect and
    recover.  ``transport_options`` are those of the transport (no ``api_key``),
    plus ``http_client`` (an ``httpx.AsyncClient`` to reuse), ``request_headers``
    (e.g. the app's own session cookie or token) and ``request_timeout``."""
    return RemoteRealtimeTransport(api_endpoint, **transport_options)
