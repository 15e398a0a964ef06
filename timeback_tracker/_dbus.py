"""A minimal D-Bus client over a Unix socket: method calls and their replies, nothing more.

OS presence on Linux asks logind whether the screen is locked and, on GNOME
(Wayland or X11), Mutter how long the user has been idle, once a second. A
``busctl`` or ``gdbus`` subprocess per question costs about 4 ms of CPU; a
method call on a kept connection costs well under a tenth of that (see
``benchmarks/presence.py``). Only the parts of the protocol those calls need
are here: the EXTERNAL authentication of a local socket, and the wire format
of the basic types, strings, variants, arrays and structs (no Unix fds, no
dict entries, no signals subscribed to). The specification:
https://dbus.freedesktop.org/doc/dbus-specification.html
"""

from __future__ import annotations

import os
import socket
import struct
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

__all__ = [
    "METHOD_CALL",
    "METHOD_RETURN",
    "Connection",
    "DBusError",
    "Message",
    "bus_address",
]

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
_NO_REPLY_EXPECTED = 0x1
# Header field codes.
PATH, INTERFACE, MEMBER, ERROR_NAME, REPLY_SERIAL, DESTINATION, SENDER, SIGNATURE = range(1, 9)
_FIELD_TYPES = {1: "o", 2: "s", 3: "s", 4: "s", 5: "u", 6: "s", 7: "s", 8: "g"}

# Fixed-size types: struct format and alignment (the alignment is the size).
_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "d": "d"}
_ALIGN = {"s": 4, "o": 4, "g": 1, "v": 1, "a": 4, "(": 8}
# The replies read here are a few dozen bytes; anything near this is not one of them.
_MAX_MESSAGE = 1 << 20
# Distinct method calls kept encoded per connection (presence makes three).
_MAX_CACHED_CALLS = 16


class DBusError(OSError):
    """The bus could not be reached, refused us, or answered with an error."""


class Message(NamedTuple):
    """One message read from the bus."""

    type: int
    flags: int
    serial: int
    fields: dict[int, Any]
    body: tuple[Any, ...]


def bus_address(bus: str, environ: dict[str, str] | None = None) -> str | None:
    """The address of the ``"session"`` or ``"system"`` bus, as the reference library finds it."""
    env = os.environ if environ is None else environ
    if bus == "system":
        return env.get("DBUS_SYSTEM_BUS_ADDRESS") or "unix:path=/var/run/dbus/system_bus_socket"
    address = env.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return "unix:path=" + os.path.join(runtime, "bus")
    return None


def _unix_socket_paths(address: str) -> Iterator[str]:
    """The socket paths of the ``unix:`` entries of a D-Bus address list, in order."""
    for entry in address.split(";"):
        transport, _, params = entry.partition(":")
        if transport != "unix":
            continue
        values = dict(part.partition("=")[::2] for part in params.split(",") if part)
        if "path" in values:
            yield urllib.parse.unquote(values["path"])
        elif "abstract" in values:
            yield "\0" + urllib.parse.unquote(values["abstract"])


class Connection:
    """One authenticated connection to a bus. Not thread-safe: one caller at a time.

    Args:
        address: A D-Bus address such as ``unix:path=/run/user/1000/bus``.
        timeout: Seconds any one step (connect, send, a reply) may take.

    Raises:
        DBusError: No ``unix:`` address worked, or authentication failed.
    """

    def __init__(self, address: str, timeout: float = 1.0) -> None:
        self._timeout = timeout
        self._buffer = b""
        self._serial = 0
        self._calls: dict[tuple[Any, ...], bytes] = {}
        self.unique_name = ""
        problems = []
        for path in _unix_socket_paths(address):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except OSError as exc:
                sock.close()
                problems.append(f"{path.lstrip(chr(0))}: {exc.strerror or exc}")
                continue
            self._sock = sock
            break
        else:
            raise DBusError(
                f"cannot connect to the bus ({'; '.join(problems) or 'no unix address'})"
            )
        try:
            self._authenticate()
            self.unique_name = self.call(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello"
            )[0]
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<dbus.Connection {self.unique_name or 'unauthenticated'}>"

    def close(self) -> None:
        """Close the socket. Idempotent."""
        self._sock.close()

    def call(  # noqa: PLR0917 - the parts of a D-Bus method call, in the usual order
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        args: Sequence[Any] = (),
    ) -> tuple[Any, ...]:
        """Call a method and wait for its reply.

        Returns:
            The reply's body, one value per type of its signature.

        Raises:
            DBusError: The call failed (the message names the D-Bus error), or
                the connection broke or timed out (close it then).
        """
        # Presence asks the same questions every second: a call is encoded
        # once, and only its serial (bytes 8-11) changes from then on.
        key = (destination, path, interface, member, signature, *args)
        try:
            message = self._calls.get(key)
            keep = len(self._calls) < _MAX_CACHED_CALLS
        except TypeError:  # an argument that is a list: not kept
            message, keep = None, False
        if message is None:
            fields = {PATH: path, INTERFACE: interface, MEMBER: member, DESTINATION: destination}
            message = encode(METHOD_CALL, 0, fields, signature, args)
            if keep:
                self._calls[key] = message
        self._serial += 1
        serial = self._serial
        self._sendall(message[:8] + struct.pack("<I", serial) + message[12:])
        while True:
            reply = self.read_message()
            if reply.fields.get(REPLY_SERIAL) != serial:
                continue  # a signal, e.g. NameAcquired after Hello
            if reply.type == ERROR:
                detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
                raise DBusError(f"{member}: {reply.fields.get(ERROR_NAME)}: {detail}".rstrip(": "))
            return reply.body

    def get_property(self, destination: str, path: str, interface: str, name: str) -> Any:
        """The value of one property (``org.freedesktop.DBus.Properties.Get``)."""
        (variant,) = self.call(
            destination, path, "org.freedesktop.DBus.Properties", "Get", "ss", (interface, name)
        )
        return variant[1]

    def send(
        self,
        kind: int,
        fields: dict[int, Any],
        signature: str = "",
        args: Sequence[Any] = (),
        *,
        flags: int = 0,
    ) -> int:
        """Send one message; returns its serial."""
        self._serial += 1
        self._sendall(encode(kind, self._serial, fields, signature, args, flags=flags))
        return self._serial

    def read_message(self) -> Message:
        """Read the next message from the bus."""
        fixed = self._read(16)
        endian = {ord("l"): "<", ord("B"): ">"}.get(fixed[0])
        if endian is None:
            raise DBusError("not a D-Bus message")
        kind, flags, _version, body_length, serial, fields_length = struct.unpack(
            endian + "BBBIII", fixed[1:]
        )
        header_end = 16 + fields_length + (-(16 + fields_length) % 8)
        if header_end + body_length > _MAX_MESSAGE:
            raise DBusError("message too large")
        data = fixed + self._read(header_end - 16 + body_length)
        raw_fields, _ = unmarshal(data, 12, "a(yv)", endian)
        fields = {code: value for code, (_sig, value) in raw_fields}
        body: list[Any] = []
        position = header_end
        for code in split_signature(fields.get(SIGNATURE, "")):
            value, position = unmarshal(data, position, code, endian, base=header_end)
            body.append(value)
        return Message(kind, flags, serial, fields, tuple(body))

    # -- internals ------------------------------------------------------------------------

    def _authenticate(self) -> None:
        uid = str(os.getuid()).encode().hex().encode()
        self._sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
        line = self._read_line()
        if not line.startswith(b"OK "):
            raise DBusError(f"the bus refused EXTERNAL authentication: {line[:60]!r}")
        self._sendall(b"BEGIN\r\n")

    def _sendall(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise DBusError(f"the bus connection broke: {exc}") from exc

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill(256)
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill(max(size - len(self._buffer), 4096))
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _fill(self, size: int) -> None:
        try:
            chunk = self._sock.recv(size)
        except OSError as exc:  # socket.timeout included
            raise DBusError(f"no answer from the bus: {exc or 'timed out'}") from exc
        if not chunk:
            raise DBusError("the bus closed the connection")
        if len(self._buffer) + len(chunk) > _MAX_MESSAGE:
            raise DBusError("message too large")
        self._buffer += chunk


# -- the wire format ------------------------------------------------------------------------


def encode(
    kind: int,
    serial: int,
    fields: dict[int, Any],
    signature: str = "",
    args: Sequence[Any] = (),
    *,
    flags: int = 0,
) -> bytes:
    """One whole message, little-endian: the fixed header, the header fields, the body."""
    body = bytearray()
    for code, value in zip(split_signature(signature), args, strict=True):
        marshal(body, code, value)
    header_fields = [(code, (_FIELD_TYPES[code], value)) for code, value in fields.items()]
    if signature:
        header_fields.append((SIGNATURE, ("g", signature)))
    header = bytearray()
    marshal(header, "(yyyyuu)", (ord("l"), kind, flags, 1, len(body), serial))
    marshal(header, "a(yv)", header_fields)
    header += b"\0" * (-len(header) % 8)
    return bytes(header + body)


def split_signature(signature: str) -> list[str]:
    """The complete types of a signature: ``"sa(yv)u"`` -> ``["s", "a(yv)", "u"]``."""
    types, position = [], 0
    while position < len(signature):
        end = _type_end(signature, position)
        types.append(signature[position:end])
        position = end
    return types


def _type_end(signature: str, position: int) -> int:
    code = signature[position]
    if code == "a":
        return _type_end(signature, position + 1)
    if code == "(":
        position += 1
        while signature[position] != ")":
            position = _type_end(signature, position)
        return position + 1
    if code in _FIXED or code in "sogv":
        return position + 1
    raise DBusError(f"unsupported D-Bus type {code!r}")


def _alignment(code: str) -> int:
    return struct.calcsize(_FIXED[code[0]]) if code[0] in _FIXED else _ALIGN[code[0]]


def marshal(buffer: bytearray, code: str, value: Any) -> None:
    """Append ``value`` as type ``code`` (little-endian), aligned from the buffer's start."""
    buffer += b"\0" * (-len(buffer) % _alignment(code))
    kind = code[0]
    if kind in _FIXED:
        buffer += struct.pack("<" + _FIXED[kind], int(value) if kind == "b" else value)
    elif kind in "so":
        data = value.encode()
        buffer += struct.pack("<I", len(data)) + data + b"\0"
    elif kind == "g":
        data = value.encode()
        buffer += bytes([len(data)]) + data + b"\0"
    elif kind == "v":
        inner, inner_value = value
        marshal(buffer, "g", inner)
        marshal(buffer, inner, inner_value)
    elif kind == "a":
        length_at = len(buffer)
        buffer += b"\0\0\0\0"
        buffer += b"\0" * (-len(buffer) % _alignment(code[1:]))
        start = len(buffer)
        for item in value:
            marshal(buffer, code[1:], item)
        struct.pack_into("<I", buffer, length_at, len(buffer) - start)
    else:  # a struct
        for inner, item in zip(split_signature(code[1:-1]), value, strict=True):
            marshal(buffer, inner, item)


def unmarshal(
    data: bytes, position: int, code: str, endian: str, *, base: int = 0
) -> tuple[Any, int]:
    """Read a value of type ``code`` at ``position``; returns it and the position after it.

    Alignment counts from ``base`` (the body starts 8-aligned in the message,
    so ``base`` is 0 or the body's offset).

    Raises:
        DBusError: The data is truncated or malformed.
    """
    try:
        return _unmarshal(data, position, code, endian, base)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        raise DBusError(f"malformed D-Bus message: {exc}") from exc


def _unmarshal(data: bytes, position: int, code: str, endian: str, base: int) -> tuple[Any, int]:
    position += -(position - base) % _alignment(code)
    kind = code[0]
    if kind in _FIXED:
        fmt = endian + _FIXED[kind]
        (value,) = struct.unpack_from(fmt, data, position)
        return (bool(value) if kind == "b" else value), position + struct.calcsize(fmt)
    if kind in "so":
        (length,) = struct.unpack_from(endian + "I", data, position)
        start = position + 4
        if start + length >= len(data):  # the terminating nul byte included
            raise ValueError("string runs past the message")
        return data[start : start + length].decode(), start + length + 1
    if kind == "g":
        length = data[position]
        return data[position + 1 : position + 1 + length].decode(), position + length + 2
    if kind == "v":
        inner, position = _unmarshal(data, position, "g", endian, base)
        if len(split_signature(inner)) != 1:
            raise ValueError("a variant holds exactly one type")
        value, position = _unmarshal(data, position, inner, endian, base)
        return (inner, value), position
    if kind == "a":
        (length,) = struct.unpack_from(endian + "I", data, position)
        position += 4
        position += -(position - base) % _alignment(code[1:])
        end = position + length
        if end > len(data):
            raise ValueError("array runs past the message")
        items = []
        while position < end:
            item, position = _unmarshal(data, position, code[1:], endian, base)
            items.append(item)
        return items, position
    values = []
    for inner in split_signature(code[1:-1]):
        value, position = _unmarshal(data, position, inner, endian, base)
        values.append(value)
    return tuple(values), position
