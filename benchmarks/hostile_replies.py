"""What a hostile reply costs the kiosk: memory and time of one POST, bounded vs plain requests.

Run: ``.venv/bin/python benchmarks/hostile_replies.py [--megabytes 100]``

A loopback server (in this process) answers every POST with one of: a
``--megabytes`` body, an endless chunked body, or a 1000-byte body trickled
one byte every 0.1 s. Each case runs in a fresh child interpreter, once
through the tracker's transport (64 KiB reply cap, total deadline of connect +
read timeout = 2 s here) and once through ``requests.post(...).content`` (what
0.1.0 did). The child reports its peak RSS growth (``ru_maxrss``) over the
POST and how long the POST took; the plain-requests runs are cut off after
``--limit`` seconds (an endless or trickled body never ends by itself).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time

CHILD = r"""
import json, resource, sys, time, uuid
import requests
from timeback_tracker._transport import Transport

url, how = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
if how == "transport":
    transport = Transport(endpoint=url, sensor="https://k.example.com/s", auth=None,
                          timeout=(1.0, 1.0))
    outcome = transport.send(['{"id":"urn:uuid:%s"}' % uuid.uuid4()])
    result = f"{outcome.verdict} {outcome.status} {outcome.reason}"
else:
    response = requests.post(url, data=b"{}", timeout=(1.0, 1.0))
    result = f"{response.status_code}, {len(response.content)} bytes read"
took = time.monotonic() - started
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"result": result, "seconds": took, "rss_kib": grown}), flush=True)
"""


def serve(kind: str, megabytes: int) -> tuple[socket.socket, int]:
    """A loopback server answering every POST with the ``kind`` of reply."""
    listener = socket.create_server(("127.0.0.1", 0))

    def reply(client: socket.socket) -> None:
        try:
            reader = client.makefile("rb")
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            if kind == "huge":
                size = megabytes * 1024 * 1024
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                block = b"x" * 65536
                for _ in range(size // len(block)):
                    client.sendall(block)
            elif kind == "endless":
                client.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                chunk = b"10000\r\n" + b"y" * 65536 + b"\r\n"
                while True:
                    client.sendall(chunk)
            else:
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(1000):
                    time.sleep(0.1)
                    client.sendall(b"z")
        except OSError:
            pass  # the client hung up: the point of the exercise
        finally:
            client.close()

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=reply, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


def run(url: str, how: str, limit: float) -> dict[str, object]:
    """One POST in a fresh interpreter."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, url, how],
            capture_output=True,
            text=True,
            timeout=limit,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return {"result": f"still reading after {limit:g} s (killed)", "seconds": None}
    result: dict[str, object] = json.loads(done.stdout)
    result["wall"] = time.monotonic() - started
    return result


def main() -> None:
    """Print one line per (reply, client)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100, help="size of the huge reply")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds before a kill")
    args = parser.parse_args()
    print(f"{'reply':<10} {'client':<10} {'POST took':>10} {'peak RSS +':>12}  result")
    for kind in ("huge", "endless", "trickle"):
        listener, port = serve(kind, args.megabytes)
        url = f"http://127.0.0.1:{port}/caliper/event"
        for how in ("transport", "requests"):
            result = run(url, how, args.limit)
            seconds = result.get("seconds")
            took = "-" if seconds is None else f"{seconds:.2f} s"
            rss = result.get("rss_kib")
            grown = "-" if rss is None else f"{rss} KiB"
            print(f"{kind:<10} {how:<10} {took:>10} {grown:>12}  {result['result']}")
        listener.close()


if __name__ == "__main__":
    main()
