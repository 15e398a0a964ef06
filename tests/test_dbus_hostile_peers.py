"""D-Bus peers that are not a bus, or a bus that misbehaves after authentication, and
buses on abstract socket addresses (older Linux desktops): a DBusError in time, never a
hang or a read without end."""

from __future__ import annotations

import socket
import struct
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from timeback_tracker import _dbus

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract unix sockets are Linux's"
)


@contextmanager
def peer(address: str, *replies: bytes) -> Iterator[list[bytes]]:
    """A unix socket at ``address`` (a path, or ``\\0name``): for its first client, it
    reads, then writes the next reply, in turn; yields what it received."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen()
    received: list[bytes] = []

    def serve() -> None:
        client, _ = server.accept()
        with client, suppress(OSError):  # the client may hang up before it read it all
            for reply in replies:
                received.append(client.recv(4096))
                client.sendall(reply)
            client.recv(4096)  # until the other side hangs up

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    try:
        yield received
    finally:
        server.close()
        worker.join(5)


def header(body_length: int, fields_length: int = 0) -> bytes:
    """The fixed 16 bytes of a little-endian method return."""
    return b"l" + struct.pack("<BBBIII", 2, 0, 1, body_length, 1, fields_length)


def test_a_bus_on_an_abstract_address_is_reached() -> None:
    """``unix:abstract=NAME`` connects to the abstract socket NAME: here a peer that
    refuses EXTERNAL, which only a connected client can learn."""
    name = f"timeback-test-{uuid.uuid4().hex}"
    with (
        peer("\0" + name, b"REJECTED DBUS_COOKIE_SHA1\r\n") as received,
        pytest.raises(_dbus.DBusError, match="refused EXTERNAL authentication"),
    ):
        _dbus.Connection(f"unix:abstract={name}", timeout=2)
    assert received[0].startswith(b"\0AUTH EXTERNAL ")


def test_an_abstract_address_nobody_listens_on_is_named_without_its_nul() -> None:
    """The error names the abstract name as people write it, and the next address in the
    list is tried after it."""
    name = f"timeback-test-{uuid.uuid4().hex}"
    with pytest.raises(_dbus.DBusError) as caught:
        _dbus.Connection(f"unix:abstract={name};unix:abstract={name}-2", timeout=2)
    message = str(caught.value)
    assert message.startswith(f"cannot connect to the bus ({name}: ")
    assert f"; {name}-2: " in message
    assert "\0" not in message


@pytest.mark.parametrize(
    ("hello_reply", "problem"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", "not a D-Bus message"),
        (header(body_length=64 << 20), "message too large"),
        (header(body_length=0, fields_length=2 << 20), "message too large"),
    ],
    ids=["not-dbus", "huge-body", "huge-header"],
)
def test_a_peer_that_authenticates_then_answers_nonsense_fails_cleanly(
    tmp_path: Path, hello_reply: bytes, problem: str
) -> None:
    """After "OK", the answer to Hello is read as D-Bus: anything else, or a length
    beyond the 1 MiB cap, is a DBusError before any of it is read."""
    address = str(tmp_path / "bus")
    with (
        peer(address, b"OK 1234deadbeef\r\n", hello_reply),
        pytest.raises(_dbus.DBusError, match=problem),
    ):
        _dbus.Connection(f"unix:path={address}", timeout=2)


def test_an_authentication_line_without_end_is_not_read_forever(tmp_path: Path) -> None:
    """A peer streaming a "line" with no CR LF is cut off at the cap, not buffered."""
    address = str(tmp_path / "bus")
    with (
        peer(address, b"x" * (_dbus._MAX_MESSAGE + 4096)),
        pytest.raises(_dbus.DBusError, match="message too large"),
    ):
        _dbus.Connection(f"unix:path={address}", timeout=2)
