"""The LocalCollector's OAuth2 token endpoint (client-credentials grant, like Cognito's).

:class:`TokenIssuer` answers ``POST /oauth2/token`` with HTTP Basic or
``client_secret_post`` credentials, issues random bearer tokens that expire
after ``ttl`` seconds, and tells the events endpoint whether a presented
token is valid. Secrets are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import collections
import email.message
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs

from timeback_tracker._collector_server import Answer, IncomingRequest, json_answer, media_type

__all__ = ["OAUTH_PATH", "TokenIssuer", "bearer_token"]

OAUTH_PATH: Final = "/oauth2/token"


def bearer_token(headers: email.message.Message) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    scheme, _, credentials = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _basic(headers: email.message.Message) -> tuple[str, str] | None:
    scheme, _, credentials = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret) if colon else None


class TokenIssuer:
    """Issues and checks the bearer tokens of the OAuth2 token endpoint.

    Args:
        clients: ``client_id -> client_secret`` of the clients allowed to get tokens.
        ttl: Seconds an issued token stays valid (``expires_in``).
    """

    def __init__(self, clients: Mapping[str, str], ttl: float) -> None:
        self._clients = dict(clients)
        self._ttl = ttl
        self._lock = threading.Lock()
        self._issued: dict[str, float] = {}
        self._faults: collections.deque[int] = collections.deque()
        self.requests = 0

    @property
    def enabled(self) -> bool:
        """Whether any client may get tokens (the events endpoint then requires one)."""
        return bool(self._clients)

    def fail_next(self, status: int, times: int) -> None:
        """Answer the next ``times`` token requests with ``status``."""
        with self._lock:
            self._faults.extend([status] * times)

    def clear_faults(self) -> None:
        """Forget the scripted failures."""
        with self._lock:
            self._faults.clear()

    def revoke(self) -> None:
        """Invalidate every token issued so far."""
        with self._lock:
            self._issued.clear()

    def forget_requests(self) -> None:
        """Reset the request count."""
        with self._lock:
            self.requests = 0

    def accepts(self, token: str) -> bool:
        """Whether ``token`` was issued here and has not expired or been revoked."""
        with self._lock:
            expiry = self._issued.get(token)
            if expiry is not None and time.monotonic() >= expiry:
                del self._issued[token]
                expiry = None
        return expiry is not None

    def answer(self, request: IncomingRequest) -> Answer:  # noqa: PLR0911 - a return per status
        """Answer one request to the token endpoint."""
        with self._lock:
            self.requests += 1
            status = self._faults.popleft() if self._faults else None
        if status is not None:
            kind = "invalid_client" if status == 401 else "invalid_request"
            return json_answer(status, {"error": "server_error" if status >= 500 else kind})
        if request.method != "POST":
            return json_answer(405, {"error": "invalid_request"}, ("Allow", "POST"))
        no_store = ("Cache-Control", "no-store")
        if (
            media_type(request.headers) != "application/x-www-form-urlencoded"
            or request.body is None
        ):
            return json_answer(400, {"error": "invalid_request"}, no_store)
        try:
            form = parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return json_answer(400, {"error": "invalid_request"}, no_store)
        credentials = _basic(request.headers)
        if credentials is None and "client_id" in form:
            # client_secret_post, which Cognito accepts as well as HTTP Basic.
            credentials = (form["client_id"][0], form.get("client_secret", [""])[0])
        if credentials is None or not self._client_ok(*credentials):
            challenge = ("WWW-Authenticate", 'Basic realm="oauth2"')
            return json_answer(401, {"error": "invalid_client"}, no_store, challenge)
        grant = form.get("grant_type", [None])[0]
        if grant is None:
            return json_answer(400, {"error": "invalid_request"}, no_store)
        if grant != "client_credentials":
            return json_answer(400, {"error": "unsupported_grant_type"}, no_store)
        access_token = secrets.token_urlsafe(32)
        with self._lock:
            self._issued[access_token] = time.monotonic() + self._ttl
        expires_in: float = int(self._ttl) if self._ttl.is_integer() else self._ttl
        payload = {"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"}
        return json_answer(200, payload, no_store)

    def _client_ok(self, client_id: str, secret: str) -> bool:
        expected = self._clients.get(client_id)
        return expected is not None and hmac.compare_digest(secret.encode(), expected.encode())
