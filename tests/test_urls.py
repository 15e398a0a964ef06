"""The URL rule: judged exactly as requests/urllib3 will connect, proven by comparing parsers."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest
import requests
import requests.adapters
from hypothesis import example, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url as urllib3_parse_url

import timeback_tracker as tt
from tests.strategies import examples
from tests.support import SENSOR
from timeback_tracker._urls import check_url, parse_url, safe_url

# Pieces that make parsers disagree: separators, userinfo, backslashes, brackets,
# percent escapes, look-alike Unicode, whitespace and control characters, odd ports.
PIECES = [
    "http://",
    "https://",
    "HTTP://",
    "hTtPs://",
    "http:/",
    "https:\\\\",
    "//",
    "127.0.0.1",
    "127.0.0.2",
    "localhost",
    "LOCALHOST",
    "evil.example.com",
    "example.com",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[fe80::1%25eth0]",
    "[",
    "]",
    "::1",
    ":",
    ":80",
    ":0080",
    ":443",
    ":99999",
    ":0",
    ":65535",
    ":65536",
    ":",
    ":८०",
    ":+1",
    "@",
    "user:pw@",
    "%40",
    "%2e",
    "%2F",
    "%",
    "\\",
    "/",
    "?",
    "#",
    "&",
    ";",
    ",",
    ".",
    "..",
    "-",
    "_",
    "~",
    "*",
    "!",
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x7f",
    "\x85",
    "\u00a0",
    "\u3000",
    "é",
    "。",
    "\uff0f",
    "\uff20",
    "\u200b",
    "\ufe6b",
    "ⓛocalhost",
    "xn--bcher-kva",
    "/caliper/event",
    "?key=secret",
    "a",
    "0",
    "1",
    "9",
]
SCHEMES = ["http://", "https://", "HTTPS://"]

HOSTS = [
    "127.0.0.1",
    "localhost",
    "LocalHost",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[0:0::1]",
    "caliper.example.com",
    "EXAMPLE.com.",
    "a-b_c.example",
    "10.0.0.1",
    "127.1",
    "0x7f.1",
]
PORTS = ["", ":1", ":80", ":0443", ":8080", ":65535", ":00000000080"]
TAILS = ["", "/", "/caliper/event", "?q=1", "/a@b", "/%2e%2e/x", "/é", "/a?b@c", "/.././x"]

free_form = st.builds(
    lambda scheme, parts: scheme + "".join(parts),
    st.sampled_from(SCHEMES),
    st.lists(st.sampled_from(PIECES) | st.text(alphabet="a1.:@/\\?#[]% ", max_size=3), max_size=8),
)
# Mostly well-formed URLs with one hostile piece spliced in somewhere.
spliced = st.builds(
    lambda url, at, piece: url[:at] + piece + url[at:],
    st.builds(
        lambda *parts: "".join(parts),
        st.sampled_from(SCHEMES),
        st.sampled_from(HOSTS),
        st.sampled_from(PORTS),
        st.sampled_from(TAILS),
    ),
    st.integers(0, 60),
    st.sampled_from(["", *PIECES]),
)
hostile_urls = free_form | spliced


def _host(host: str) -> str:
    host = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def connection_target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of the pool requests would open for a POST to ``url``."""
    prepared = requests.Request("POST", url).prepare()
    adapter = requests.adapters.HTTPAdapter()
    try:
        if hasattr(adapter, "get_connection_with_tls_context"):  # requests >= 2.32
            pool = adapter.get_connection_with_tls_context(prepared, verify=True)
        else:
            pool = adapter.get_connection(prepared.url)
    finally:
        adapter.close()
    return pool.scheme, _host(pool.host), pool.port or (443 if pool.scheme == "https" else 80)


@pytest.mark.slow(7)
@settings(max_examples=examples(3000), deadline=None)
@given(hostile_urls)
@example("http://evil.example.com\\@127.0.0.1:9/caliper/event")
@example("http://127.0.0.1:9\\@evil.example.com/caliper/event")
@example("http://evil.example.com#@127.0.0.1/")
@example("http://evil.example.com?@127.0.0.1/")
@example("http://127.0.0.1:9@evil.example.com/")
@example("http://[::1]:8080/caliper/event?x=1")
@example("HTTP://LOCALHOST:0080")
@example("https://caliper.example.com/caliper/event")
def test_accepted_urls_connect_where_the_check_looked(url: str) -> None:
    """Whatever the check accepts, urllib3 and requests' pool agree on scheme, host and port."""
    try:
        check_url("endpoint", url)
    except tt.ConfigurationError:
        pass
    else:
        # Plain http is only ever allowed where requests really connects to loopback.
        scheme, host, _ = connection_target(url)
        if scheme == "http":
            assert host == "localhost" or ipaddress.ip_address(host).is_loopback
    try:
        ours = parse_url("endpoint", url)
    except tt.ConfigurationError:
        return  # refused: nothing will ever connect to it
    expected = (ours.scheme, _host(ours.host), ours.port)
    parsed = urllib3_parse_url(url)
    default = 443 if parsed.scheme == "https" else 80
    assert (parsed.scheme, _host(parsed.host or ""), parsed.port or default) == expected
    assert connection_target(url) == expected


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://evil.example.com\\@127.0.0.1:9/caliper/event", "backslash"),
        ("https://caliper.example.com\\x", "backslash"),
        ("http://user:secret@127.0.0.1:9/caliper/event", "credentials"),
        ("https://token@caliper.example.com/caliper/event", "credentials"),
        ("https://caliper.example.com:99999/caliper/event", "port from 1 to 65535"),
        ("https://caliper.example.com:0/caliper/event", "port from 1 to 65535"),
        ("https://caliper.example.com:/caliper/event", "port from 1 to 65535"),
        ("https://caliper.example.com:८०/caliper/event", "port from 1 to 65535"),
        ("https://caliper.example.com/caliper/event#top", "fragment"),
        ("https://caliper.example.com/caliper event", "whitespace or control"),
        (" https://caliper.example.com/caliper/event", "whitespace or control"),
        ("https://caliper.example.com/caliper/event\n", "whitespace or control"),
        ("https://caliper.exam\tple.com/caliper/event", "whitespace or control"),
        ("https://caliper.example.com/\x00", "whitespace or control"),
        ("https://caliper.example.com/\x85", "whitespace or control"),
        ("https://exämple.com/caliper/event", "xn--"),
        ("http://ⓛocalhost/caliper/event", "xn--"),
        ("https://127.0.0.1%2eevil.com/caliper/event", "xn--"),
        ("https://a..b/caliper/event", "xn--"),
        ("https://" + "a" * 64 + ".example.com/", "xn--"),
        ("https://[fe80::1%25eth0]/caliper/event", "IPv6"),
        ("https://[::1/caliper/event", "IPv6"),
        ("https://[::1]x/caliper/event", ":port"),
        ("https:///caliper/event", "with a host"),
        ("https:caliper.example.com/caliper/event", "with a host"),
        ("ftp://caliper.example.com/caliper/event", "with a host"),
        ("http://example.com/caliper/event", "loopback hosts only"),
        ("http://127.0.0.1.evil.com/caliper/event", "loopback hosts only"),
        ("http://2130706433/caliper/event", "loopback hosts only"),
    ],
)
def test_ambiguous_or_unsafe_urls_are_refused(url: str, rule: str) -> None:
    """Each trick is refused by TrackerConfig, naming the field and the rule."""
    with pytest.raises(tt.ConfigurationError, match=r"^TrackerConfig\.endpoint: ") as caught:
        tt.TrackerConfig(sensor=SENSOR, endpoint=url)
    assert rule in str(caught.value)
    assert "secret" not in str(caught.value)


def test_the_documented_trick_is_refused_and_really_was_ambiguous() -> None:
    """The issue's URL: urlsplit sees loopback, requests would connect to evil.example.com."""
    from urllib.parse import urlsplit

    url = "http://evil.example.com\\@127.0.0.1:9/caliper/event"
    assert urlsplit(url).hostname == "127.0.0.1"
    assert connection_target(url)[1] == "evil.example.com"
    with pytest.raises(tt.ConfigurationError, match=r"^ClientCredentials\.token_url: "):
        tt.ClientCredentials("kiosk", "s3cret", url)
    # Refused by a stdlib-only check: the refusal does not import requests or urllib3.
    code = (
        "import sys, timeback_tracker as tt\n"
        "try:\n"
        f"    tt.TrackerConfig(sensor='https://k.example.com/s', endpoint={url!r})\n"
        "except tt.ConfigurationError as error:\n"
        "    print(error)\n"
        "print(sorted(m for m in ('requests', 'urllib3') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        "TrackerConfig.endpoint: must not contain a backslash (HTTP libraries disagree on its "
        "meaning)",
        "[]",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/caliper/event",
        "http://localhost/caliper/event",
        "http://[::1]:8080/caliper/event",
        "https://caliper.example.com/caliper/event",
        "https://caliper.example.com:8443/caliper/event",
        "https://xn--bcher-kva.example/caliper/event",
        "https://10.0.0.1/caliper/event",
        "HTTPS://Caliper.Example.COM/caliper/event",
        "https://caliper.example.com",
    ],
)
def test_plain_urls_pass_and_are_shown_without_their_query(url: str) -> None:
    """Ordinary endpoints pass, requests connects where the check looked, and a query
    (which may carry a key) never reaches repr(config) or repr(tracker)."""
    ours = parse_url("endpoint", url)
    assert connection_target(url) == (ours.scheme, _host(ours.host), ours.port)
    with_key = url + "?code=Key-Very-Private"
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=with_key, spool_path=None)
    assert config.endpoint == with_key  # sent as given
    assert "Key-Very-Private" not in repr(config)
    assert "?…" in repr(config)
    with tt.Tracker(config) as tracker:
        assert "Key-Very-Private" not in repr(tracker)
    assert "Key-Very-Private" not in repr(tt.ClientCredentials("kiosk", "s3cret", with_key))
    assert safe_url("not a url") == "<invalid URL>"
