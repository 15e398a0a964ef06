"""The one rule for URLs the tracker sends student data to, judged as the HTTP stack reads them.

``requests`` finds the host with urllib3's ``parse_url`` (the authority ends at
the first ``/``, ``?``, ``#`` or backslash; userinfo ends at the *last* ``@``),
while :func:`urllib.parse.urlsplit` has other rules: the two disagree on URLs
such as ``http://evil.example.com\\@127.0.0.1/``. Rather than imitate one of
them (importing urllib3 here would cost ``import timeback_tracker`` about
150 ms), the rule accepts only URLs on which every parser agrees: no
backslash, whitespace, control character, fragment or userinfo anywhere, an
ASCII host, and a port from 1 to 65535. ``tests/test_urls.py`` checks with
Hypothesis that, for every URL accepted here, urllib3 and ``requests``'
connection pool see the same scheme, host and port.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple

from timeback_tracker._rules import MAX_IRI_LENGTH
from timeback_tracker.exceptions import ConfigurationError

__all__ = ["Url", "check_url", "is_loopback", "parse_url", "safe_url"]

_SCHEME = re.compile(r"(https?)://", re.IGNORECASE)
# DNS labels of letters, digits, "-" and "_" (1-63 each), dot-separated, optional final dot.
_LABEL = r"[A-Za-z0-9_-]{1,63}"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Url(NamedTuple):
    """An accepted URL in parts, as the HTTP stack will connect to it.

    Attributes:
        scheme: ``"http"`` or ``"https"`` (lower case).
        host: The host name (lower case) or IP address (IPv6 without brackets).
        port: The port, the scheme's default when the URL names none.
        target: The path and query (``/caliper/event``); ``/`` when empty.
    """

    scheme: str
    host: str
    port: int
    target: str

    @property
    def netloc(self) -> str:
        """``host:port`` as written in a URL (IPv6 in brackets), for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def path(self) -> str:
        """The path without the query (a query may carry a key: never shown)."""
        return self.target.partition("?")[0] or "/"

    @property
    def display(self) -> str:
        """``scheme://host[:port]/path`` — safe for logs, reprs and errors (no query)."""
        where = self.netloc
        if self.port == _DEFAULT_PORTS[self.scheme]:
            where = where.rpartition(":")[0]
        query = "?…" if "?" in self.target else ""
        return f"{self.scheme}://{where}{self.path}{query}"


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


def _refuse(name: str, rule: str) -> ConfigurationError:
    return ConfigurationError(f"{name}: {rule}")


def _bad_character(value: str) -> str | None:
    for char in value:
        if char < " " or "\x7f" <= char <= "\x9f" or char.isspace():
            return "must not contain whitespace or control characters"
        if char == "\\":
            return "must not contain a backslash (HTTP libraries disagree on its meaning)"
        if "\ud800" <= char <= "\udfff":  # a lone surrogate cannot be encoded
            return "must be a URL string"
    return None


def _split_host_port(name: str, authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        literal, bracket, rest = authority[1:].partition("]")
        try:
            address = ipaddress.IPv6Address(literal) if bracket and "%" not in literal else None
        except ValueError:
            address = None
        if address is None:  # a zone id ("%eth0") is refused: parsers disagree on it
            raise _refuse(name, "must have a valid IPv6 address in [brackets]")
        if rest and not rest.startswith(":"):
            raise _refuse(name, "must have nothing but :port after the host")
        return literal.lower(), rest[1:] if rest else None
    host, colon, port = authority.partition(":")
    if not host:
        raise _refuse(name, "must be an http(s) URL with a host")
    if not _HOST_NAME.fullmatch(host) or len(host) > 253:
        raise _refuse(
            name,
            "must have a host name of ASCII letters, digits, '-', '_' and dots "
            "(write an international name in its xn-- form)",
        )
    return host.lower(), port if colon else None


def parse_url(name: str, value: Any) -> Url:
    """The parts of an http(s) URL every HTTP parser reads alike; raise if there is doubt.

    Args:
        name: The field, for the message (e.g. ``"TrackerConfig.endpoint"``).
        value: The URL.

    Returns:
        The :class:`Url`.

    Raises:
        ConfigurationError: The URL is not a plain http(s) URL, or parsers could
            disagree on where it leads; the message names the field and the rule.
    """
    if not isinstance(value, str):
        raise _refuse(name, "must be a URL string")
    problem = _bad_character(value)
    if problem is not None:
        raise _refuse(name, problem)
    scheme = _SCHEME.match(value)
    if scheme is None:
        raise _refuse(name, "must be an http(s) URL with a host")
    if "#" in value:
        raise _refuse(name, "must not have a #fragment")
    rest = value[scheme.end() :]
    split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:split], rest[split:]
    if "@" in authority:
        raise _refuse(name, "must not contain credentials (user:password@); use auth=")
    host, port_text = _split_host_port(name, authority)
    scheme_name = scheme.group(1).lower()
    if port_text is None:
        port = _DEFAULT_PORTS[scheme_name]
    elif port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise _refuse(name, "must have a port from 1 to 65535")
    if target.startswith("?") or not target:
        target = "/" + target
    return Url(scheme_name, host, port, target)


def check_url(name: str, value: Any) -> None:
    """Raise ConfigurationError unless ``value`` is https, or http on a loopback host.

    The URL must also pass :func:`parse_url`: it is judged exactly as the HTTP
    stack will connect to it.

    Args:
        name: The field, for the message (e.g. ``"TrackerConfig.endpoint"``).
        value: The URL.

    Raises:
        ConfigurationError: The URL is refused; the message names the field and the rule.
    """
    if isinstance(value, str) and len(value) > MAX_IRI_LENGTH:  # the limit of every URL given
        raise _refuse(name, f"must be at most {MAX_IRI_LENGTH} characters")
    url = parse_url(name, value)
    if url.scheme == "http" and not is_loopback(url.host):
        raise _refuse(name, "plain http:// is allowed for loopback hosts only; use https://")


def safe_url(value: str) -> str:
    """``value`` for a repr or a log: without its query (which may carry a key)."""
    try:
        return parse_url("url", value).display
    except ConfigurationError:
        return "<invalid URL>"
