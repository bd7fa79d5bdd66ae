"""The local server's client-secret endpoint and key rules (pure: no sockets).

What the real service does, reproduced for tests and development:

* ``POST /v1/realtime/client_secrets`` with the long-lived key in
  ``Authorization: Bearer ...`` and a JSON body ``{"expires_after": {"anchor":
  "created_at", "seconds": 10..7200}, "session": {...}}`` answers ``200`` with
  ``{"value": "ek_...", "expires_at": <unix seconds>, "session": {...}}``; a
  missing or wrong key is ``401`` (``invalid_api_key``), a short-lived key
  cannot mint another (``401``), a bad body is ``400`` naming the field.
* A WebSocket may authenticate with the long-lived key (server side) or with an
  unexpired ``ek_`` key; an expired one is refused (``401``).
* From a browser (the ``openai-insecure-api-key.<key>`` subprotocol, since a
  page cannot set headers) only ``ek_`` keys are accepted: the long-lived key is
  refused there, so it cannot leak into a page unnoticed.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["BROWSER_KEY_PREFIX", "ClientSecretIssuer", "KeyCheck"]

BROWSER_KEY_PREFIX = "openai-insecure-api-key."
"""The WebSocket subprotocol prefix a browser page carries its key in."""

KeyCheck = tuple[bool, str]
"""(accepted, reason when refused)."""


def _error(status: int, message: str, code: str, param: str | None = None) -> tuple[int, bytes]:
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }
    return status, json.dumps(body).encode()


class ClientSecretIssuer:
    """Mints and checks short-lived keys.  ``clock`` gives Unix seconds."""

    def __init__(self, api_key: str | None, clock: Callable[[], float]) -> None:
        self._api_key = api_key
        self._clock = clock
        self._issued: dict[str, float] = {}  # value -> expires_at
        self.minted: list[dict[str, Any]] = []
        """Every answered request body's session, in order (what clients asked for)."""

    # ---------------------------------------------------------------- minting

    def handle(self, authorization: str | None, body: bytes) -> tuple[int, bytes]:
        """Answer one ``POST /v1/realtime/client_secrets``: (status, JSON body)."""
        presented = _bearer(authorization)
        if presented is None:
            return _error(401, "You didn't provide an API key.", "invalid_api_key")
        if presented.startswith("ek_") or (
            self._api_key is not None and presented != self._api_key
        ):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "The body is not valid JSON.", "invalid_json")
        if not isinstance(request, dict):
            return _error(400, "The body must be a JSON object.", "invalid_type")
        seconds = 600
        expires = request.get("expires_after")
        if expires is not None:
            if not isinstance(expires, dict) or expires.get("anchor", "created_at") != "created_at":
                return _error(400, "Invalid expires_after.", "invalid_value", "expires_after")
            seconds = expires.get("seconds", 600)
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int)
                or not 10 <= seconds <= 7200
            ):
                return _error(
                    400,
                    "expires_after.seconds must be an integer between 10 and 7200.",
                    "invalid_value",
                    "expires_after.seconds",
                )
        session = request.get("session", {"type": "realtime"})
        if not isinstance(session, dict) or session.get("type", "realtime") != "realtime":
            return _error(400, "Invalid session.", "invalid_value", "session")
        now = self._clock()
        value = "ek_" + secrets.token_hex(16)
        expires_at = math.floor(now) + seconds
        self._issued[value] = expires_at
        answered = {"type": "realtime", "model": "gpt-realtime", **session}
        self.minted.append(answered)
        answer = {"value": value, "expires_at": expires_at, "session": answered}
        return 200, json.dumps(answer).encode()

    # ---------------------------------------------------------------- checking

    def check_header(self, presented: str | None) -> KeyCheck:
        """A key sent in the ``Authorization`` header (server-side clients)."""
        if self._api_key is None and not (presented or "").startswith("ek_"):
            return True, ""
        if presented is None:
            return False, "You didn't provide an API key."
        if presented.startswith("ek_"):
            return self._check_ephemeral(presented)
        if presented == self._api_key:
            return True, ""
        return False, "Incorrect API key provided."

    def check_browser(self, presented: str) -> KeyCheck:
        """A key sent as a browser subprotocol: only short-lived keys."""
        if not presented.startswith("ek_"):
            return False, (
                "A long-lived API key cannot be used from a browser; mint a client "
                "secret on your server (POST /v1/realtime/client_secrets)."
            )
        return self._check_ephemeral(presented)

    def _check_ephemeral(self, value: str) -> KeyCheck:
        expires_at = self._issued.get(value)
        if expires_at is None:
            return False, "Incorrect API key provided."
        if self._clock() >= expires_at:
            return False, "The client secret has expired."
        return True, ""

    def issued(self) -> Mapping[str, float]:
        return dict(self._issued)


def _bearer(authorization: str | None) -> str | None:
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    return authorization[len("Bearer ") :] or None
