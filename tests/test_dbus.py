"""The minimal D-Bus client of OS presence, against a real dbus-daemon and busctl."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.dbus_fakes import Logind, dbus_available, private_bus
from timeback_tracker import _dbus

unix_only = pytest.mark.skipif(
    not hasattr(socket, "AF_UNIX") or not hasattr(os, "getuid"),
    reason="D-Bus connections are Unix sockets (Linux only in the library)",
)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """The address of a private dbus-daemon."""
    reason = dbus_available()
    if reason is not None:
        pytest.skip(reason)
    with private_bus(tmp_path) as address:
        yield address


# -- the wire format -------------------------------------------------------------------------

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "y": st.integers(0, 255),
    "b": st.booleans(),
    "n": st.integers(-(2**15), 2**15 - 1),
    "q": st.integers(0, 2**16 - 1),
    "i": st.integers(-(2**31), 2**31 - 1),
    "u": st.integers(0, 2**32 - 1),
    "x": st.integers(-(2**63), 2**63 - 1),
    "t": st.integers(0, 2**64 - 1),
    "s": st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))),
}


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[str, Any]:
    """A signature of basic types, arrays, structs and variants, and a value of it."""
    code = draw(st.sampled_from([*VALUES, "a", "(", "v"]))
    if code in VALUES:
        return code, draw(VALUES[code])
    if code == "v":
        inner, value = draw(
            st.sampled_from(list(VALUES)).flatmap(lambda c: st.tuples(st.just(c), VALUES[c]))
        )
        return "v", (inner, value)
    inner = draw(st.sampled_from(list(VALUES)))
    if code == "a":
        return "a" + inner, draw(st.lists(VALUES[inner], max_size=5))
    second = draw(st.sampled_from(list(VALUES)))
    return f"({inner}{second})", (draw(VALUES[inner]), draw(VALUES[second]))


@given(st.integers(0, 7), st.lists(typed_values(), min_size=1, max_size=4))
def test_marshalled_values_read_back_equal(offset: int, items: list[tuple[str, Any]]) -> None:
    """Every supported type survives marshal/unmarshal at any starting alignment."""
    buffer = bytearray(b"\xff" * offset)
    for code, value in items:
        _dbus.marshal(buffer, code, value)
    position = offset
    for code, value in items:
        read, position = _dbus.unmarshal(bytes(buffer), position, code, "<")
        assert read == value
    assert position == len(buffer)


def test_big_endian_messages_are_read() -> None:
    """A reply marshalled big-endian by another implementation reads the same."""
    data = struct.pack(">I", 5) + b"hello\0" + b"\0" * 6 + struct.pack(">Q", 2**40)
    text, position = _dbus.unmarshal(data, 0, "s", ">")
    number, _ = _dbus.unmarshal(data, position, "t", ">")
    assert (text, number) == ("hello", 2**40)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (struct.pack("<I", 100) + b"short", "s"),  # a string past the end
        (b"\x01", "u"),  # a truncated integer
        (struct.pack("<I", 64) + b"\0\0\0\0", "au"),  # an array past the end
        (b"\x02uu\0" + b"\0" * 8, "v"),  # a variant of two types
        (struct.pack("<I", 2) + b"\xff\xfe\0", "s"),  # not UTF-8
    ],
)
def test_malformed_data_raises_dbus_error(data: bytes, code: str) -> None:
    """Truncated or malformed replies raise DBusError, never IndexError or struct.error."""
    with pytest.raises(_dbus.DBusError, match="malformed"):
        _dbus.unmarshal(data, 0, code, "<")


def test_signatures_split_into_complete_types() -> None:
    """A signature splits into its complete types; unsupported types are refused."""
    assert _dbus.split_signature("sa(yv)uaau") == ["s", "a(yv)", "u", "aau"]
    with pytest.raises(_dbus.DBusError, match="unsupported"):
        _dbus.split_signature("a{sv}")


def test_bus_addresses_follow_the_environment(tmp_path: Path) -> None:
    """The variables win; the session bus falls back to $XDG_RUNTIME_DIR/bus if it exists."""
    assert _dbus.bus_address("system", {}) == "unix:path=/var/run/dbus/system_bus_socket"
    assert (
        _dbus.bus_address("system", {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x"}) == "unix:path=/x"
    )
    assert _dbus.bus_address("session", {"XDG_RUNTIME_DIR": str(tmp_path)}) is None
    (tmp_path / "bus").touch()
    assert _dbus.bus_address("session", {"XDG_RUNTIME_DIR": str(tmp_path)}) == (
        f"unix:path={tmp_path}/bus"
    )


# -- against dbus-daemon -----------------------------------------------------------------------


def test_calls_and_errors_on_a_real_bus(bus: str) -> None:
    """Hello, a method call, a property read, and a D-Bus error with its name."""
    connection = _dbus.Connection(bus)
    try:
        assert connection.unique_name.startswith(":")
        (names,) = connection.call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ListNames"
        )
        assert connection.unique_name in names
        features = connection.get_property(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Features"
        )
        assert isinstance(features, list)
        with pytest.raises(_dbus.DBusError, match="ServiceUnknown"):
            connection.call("org.example.Nobody", "/", "org.example.Nobody", "Anything")
    finally:
        connection.close()


def test_repeated_calls_reuse_their_encoding_with_a_new_serial(bus: str) -> None:
    """The same call twice is encoded once; replies still match their own serials."""
    connection = _dbus.Connection(bus)
    try:
        call = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
        first = connection.call(*call, "NameHasOwner", "s", ("org.example.Nobody",))
        second = connection.call(*call, "NameHasOwner", "s", (connection.unique_name,))
        third = connection.call(*call, "NameHasOwner", "s", ("org.example.Nobody",))
        assert (first, second, third) == ((False,), (True,), (False,))
        assert len(connection._calls) == 3  # Hello and the two distinct questions
        (names,) = connection.call(*call, "ListNames", "", ())
        listed = connection.call(*call, "ListQueuedOwners", "s", (connection.unique_name,))
        assert listed == ([connection.unique_name],)
        assert connection.unique_name in names
    finally:
        connection.close()


def test_busctl_reads_what_the_fake_logind_answers(bus: str) -> None:
    """The reference client (busctl) understands the messages our marshalling writes."""
    if shutil.which("busctl") is None:
        pytest.skip("busctl not installed")
    logind = Logind(bus)
    try:
        logind.locked = True
        done = subprocess.run(
            [
                "busctl",
                f"--address={bus}",
                "get-property",
                "org.freedesktop.login1",
                Logind.PATH,
                "org.freedesktop.login1.Session",
                "LockedHint",
                "Active",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert done.stdout.split("\n")[:2] == ["b true", "b true"]
    finally:
        logind.service.close()


@unix_only
def test_unreachable_and_silent_buses_fail_cleanly(tmp_path: Path) -> None:
    """No socket, a refused connection, or a server that never answers: DBusError, in time."""
    with pytest.raises(_dbus.DBusError, match="cannot connect"):
        _dbus.Connection(f"unix:path={tmp_path / 'nothing'}")
    with pytest.raises(_dbus.DBusError, match="no unix"):
        _dbus.Connection("tcp:host=localhost,port=1")
    path = tmp_path / "silent"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    try:
        with pytest.raises(_dbus.DBusError, match="no answer"):
            _dbus.Connection(f"unix:path={path}", timeout=0.2)
    finally:
        for connection in accepted:
            connection.close()
        server.close()


@unix_only
def test_a_bus_that_closes_or_refuses_auth_fails_cleanly(tmp_path: Path) -> None:
    """A peer that rejects EXTERNAL, or hangs up, gives DBusError naming the problem."""
    for reply, expected in ((b"REJECTED DBUS_COOKIE_SHA1\r\n", "refused"), (b"", "closed")):
        path = tmp_path / f"peer-{len(reply)}"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen()

        def answer(server: socket.socket = server, reply: bytes = reply) -> None:
            peer, _ = server.accept()
            peer.recv(256)
            if reply:
                peer.sendall(reply)
            peer.close()

        worker = threading.Thread(target=answer, daemon=True)
        worker.start()
        try:
            with pytest.raises(_dbus.DBusError, match=expected):
                _dbus.Connection(f"unix:path={path}", timeout=2)
        finally:
            worker.join(5)
            server.close()
