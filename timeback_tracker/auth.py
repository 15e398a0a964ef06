"""How the tracker authenticates to the Caliper endpoint.

An auth object gives the ``Authorization`` header value for the next request
and forgets a token the endpoint refused. It is used from the delivery thread
only; secrets never appear in ``repr``, logs or errors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from timeback_tracker._rules import credential_problem, token_problem
from timeback_tracker._urls import check_url, parse_url, safe_url
from timeback_tracker.exceptions import ConfigurationError, TokenError

if TYPE_CHECKING:
    import requests

__all__ = ["Auth", "BearerToken", "ClientCredentials", "TokenError"]

log = logging.getLogger("timeback_tracker.auth")

REFRESH_MARGIN = 60.0
"""Seconds before ``expires_in`` runs out at which a cached token is replaced."""


class Auth(Protocol):
    """The interface the transport uses; implement it for a custom scheme."""

    def authorization(self, http: requests.Session, timeout: tuple[float, float]) -> str:
        """The ``Authorization`` header value for the next request.

        Args:
            http: The tracker's HTTP session, for fetching a token.
            timeout: (connect, read) timeout for any token request.

        Raises:
            Exception: Getting a token failed; the batch is retried later.
        """
        ...

    def invalidate(self) -> bool:
        """Forget the current token after a 401.

        Returns:
            True when a fresh token may be obtained (worth one more try).
        """
        ...


@attrs.frozen
class BearerToken:
    """A fixed bearer token, sent as ``Authorization: Bearer <token>``.

    Args:
        token: The access token (never shown in ``repr``).
    """

    token: str = attrs.field(repr=False)

    @token.validator
    def _check_token(self, _: attrs.Attribute[str], value: str) -> None:
        problem = token_problem(value)
        if problem:  # never echoed: the value is a secret
            raise ConfigurationError(f"BearerToken.token: {problem}")

    def authorization(self, http: requests.Session, timeout: tuple[float, float]) -> str:
        """``Bearer <token>``."""
        return f"Bearer {self.token}"

    def invalidate(self) -> bool:
        """A fixed token cannot be refreshed."""
        return False


def _check_text(name: str) -> Any:
    def check(_: Any, __: Any, value: Any) -> None:
        problem = credential_problem(value)
        if problem:
            raise ConfigurationError(f"ClientCredentials.{name}: {problem}")
        if name == "client_id" and ":" in value:
            raise ConfigurationError("ClientCredentials.client_id: must not contain ':'")

    return check


def _check_token_url(_: Any, __: Any, value: Any) -> None:
    check_url("ClientCredentials.token_url", value)


@attrs.define
class ClientCredentials:
    """OAuth2 client-credentials grant: fetches, caches and refreshes an access token.

    The token is requested with HTTP Basic ``client_id:client_secret`` and
    ``grant_type=client_credentials``, cached, and replaced about 60 s before
    it expires; concurrent callers share one fetch. After a 401 from the
    events endpoint the token is dropped and fetched once more.

    Args:
        client_id: The OAuth2 client id.
        client_secret: The OAuth2 client secret (never shown in ``repr``, logs or errors).
        token_url: The token endpoint URL (https, or http on loopback).
        scope: Optional space-separated scopes to request.

    Raises:
        ConfigurationError: A field is empty or the URL is not allowed.
    """

    client_id: str = attrs.field(validator=_check_text("client_id"))
    client_secret: str = attrs.field(repr=False, validator=_check_text("client_secret"))
    token_url: str = attrs.field(validator=_check_token_url, repr=lambda url: repr(safe_url(url)))
    scope: str | None = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False, eq=False)
    _pid: int = attrs.field(factory=os.getpid, init=False, repr=False, eq=False)
    _token: str | None = attrs.field(default=None, init=False, repr=False, eq=False)
    _expires_at: float = attrs.field(default=0.0, init=False, repr=False, eq=False)

    def authorization(self, http: requests.Session, timeout: tuple[float, float]) -> str:
        """``Bearer <token>``, fetching a token first when none is cached or it is about to expire.

        Raises:
            TokenError: The token endpoint failed or answered without a token.
        """
        with self._own_lock():  # one fetch shared by every concurrent caller
            if self._token is None or time.monotonic() >= self._expires_at:
                self._token, self._expires_at = self._fetch(http, timeout)
            return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        """Forget the cached token (after a 401); the next request fetches a new one."""
        with self._own_lock():
            self._token = None
        return True

    def _own_lock(self) -> threading.Lock:
        """The lock, a fresh one in a forked child: the parent's delivery thread may
        have held it at fork time, and no thread of the child ever releases it."""
        if self._pid != os.getpid():
            self._lock, self._pid = threading.Lock(), os.getpid()
        return self._lock

    def _fetch(self, http: requests.Session, timeout: tuple[float, float]) -> tuple[str, float]:
        import requests

        from timeback_tracker import _http

        url = parse_url("token_url", self.token_url)
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        started = time.monotonic()
        try:
            response = http.post(
                self.token_url,
                data=form,
                auth=(self.client_id, self.client_secret),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=timeout,
                allow_redirects=False,  # never send the credentials anywhere else
                stream=True,
            )
            body, complete = _http.read_capped(response)
        except (requests.RequestException, *_http.NETWORK_ERRORS) as exc:
            reason = _http.describe_failure(exc, url, _http.current_attempt())
            raise TokenError(f"token endpoint unreachable: {reason}") from None
        where = f"POST {url.display} (token endpoint)"
        status = response.status_code
        if status != 200:
            hint = {
                400: ": check the client id and secret",
                401: ": check the client id and secret",
                403: ": check the client id and secret",
            }.get(status, "")
            if 300 <= status < 400:
                hint = ": redirects are never followed; set the token URL to the final URL"
            retry_after = _http.parse_retry_after(response.headers.get("Retry-After"))
            raise TokenError(f"{where} answered HTTP {status}{hint}", status, retry_after)
        decoded = _http.decode_body(body, response.headers.get("Content-Encoding"))
        try:
            if not complete or decoded is None:
                raise ValueError("reply too large")  # noqa: TRY301 - one message for all
            payload = json.loads(decoded)
            token = payload["access_token"]
            expires_in = float(payload.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TokenError(f"{where} answered without an access_token", 200) from None
        if token_problem(token):
            raise TokenError(f"{where} answered without an access_token", 200)
        if not math.isfinite(expires_in):  # NaN would keep the token forever
            expires_in = 3600.0
        log.debug("fetched an access token valid for %.0f s", expires_in)
        # Refresh ahead of expiry; a very short lifetime is refreshed at half-life.
        margin = min(REFRESH_MARGIN, expires_in / 2)
        return token, started + expires_in - margin
