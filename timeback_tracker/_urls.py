"""The one rule for URLs the tracker sends student data to."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from timeback_tracker.exceptions import ConfigurationError

__all__ = ["check_url", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (``localhost``, 127.0.0.0/8, ``::1``).

    The one loopback rule: for endpoints, and for where the collector may listen.
    ``host`` is taken exactly as given (no brackets, no spaces stripped): a URL's
    host must be judged as the HTTP stack will connect to it.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_utf8(value: str) -> bool:
    # A lone surrogate cannot be encoded: requests would fail on every attempt.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_url(name: str, value: Any) -> None:
    """Raise ConfigurationError unless ``value`` is https, or http on a loopback host.

    Args:
        name: The field, for the message (e.g. ``"TrackerConfig.endpoint"``).
        value: The URL.
    """
    if not isinstance(value, str) or not _is_utf8(value):
        raise ConfigurationError(f"{name}: must be a URL string")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
    if not host or parts.scheme not in ("http", "https"):
        raise ConfigurationError(f"{name}: must be an http(s) URL with a host")
    if parts.scheme == "http" and not is_loopback(host):
        raise ConfigurationError(
            f"{name}: plain http:// is allowed for loopback hosts only; use https://"
        )
