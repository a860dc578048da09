"""edgefld.client.bounded_reads: a hostile server (real sockets on 127.0.0.1) cannot grow or hang the client."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from edgefld.client.bounded_reads import BoundedBackend, bound

MAX_REPLY = 1024 * 1024
MIN_RATE = 20_000
GRACE = 1.0


def _serve(mode: str, stop: threading.Event, port_box: list[int]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port_box.append(listener.getsockname()[1])
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.5)
                try:
                    conn.recv(65536)
                    _answer(conn, mode, stop)
                except OSError:
                    pass


def _answer(conn: socket.socket, mode: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + 20  # every hostile answer ends on its own, whatever the client does
    if mode == "honest":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    elif mode == "huge":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
        while not stop.is_set() and time.monotonic() < deadline:
            conn.sendall(b"\0" * 65536)
    elif mode == "endless":
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not stop.is_set() and time.monotonic() < deadline:
            conn.sendall(b"10000\r\n" + b"\0" * 65536 + b"\r\n")
    elif mode in ("drip-body", "drip-head"):
        if mode == "drip-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while not stop.is_set() and time.monotonic() < deadline:
            conn.sendall(b"x" if mode == "drip-body" else b"X-A: b\r\n"[:1])
            time.sleep(0.3)
    elif mode == "garbage":
        conn.sendall(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n")


@pytest.fixture
def hostile():
    servers = []

    def start(mode: str) -> int:
        stop, port_box = threading.Event(), []
        thread = threading.Thread(target=_serve, args=(mode, stop, port_box), daemon=True)
        thread.start()
        while not port_box:
            time.sleep(0.01)
        servers.append((stop, thread))
        return port_box[0]

    yield start
    for stop, thread in servers:
        stop.set()
        thread.join(5)


def _client() -> httpx.Client:
    client = httpx.Client(timeout=30.0)  # as Flower's: 30 s per read, no total
    bound(client, MAX_REPLY, MIN_RATE, GRACE)
    return client


def test_the_bound_sits_under_httpx_own_transport():
    client = _client()
    assert isinstance(client._transport._pool._network_backend, BoundedBackend)


def test_an_honest_answer_passes_and_the_connection_is_reused(hostile):
    port = hostile("honest")
    with _client() as client:
        assert client.post(f"http://127.0.0.1:{port}/v1/fleet/get-run", content=b"x").content == b"hello"


@pytest.mark.parametrize("mode,error", [("huge", httpx.ReadError), ("endless", httpx.ReadError),
                                        ("drip-body", httpx.ReadTimeout), ("drip-head", httpx.ReadTimeout),
                                        ("garbage", httpx.RemoteProtocolError)])
def test_a_hostile_answer_is_dropped_in_bounded_time(hostile, mode, error):
    port = hostile(mode)
    started = time.monotonic()
    with _client() as client, pytest.raises(error) as info:
        client.post(f"http://127.0.0.1:{port}/v1/fleet/pull-object", content=b"x")
    assert time.monotonic() - started < 5.0
    if mode in ("huge", "endless"):
        assert f"larger than {MAX_REPLY} bytes" in str(info.value)
    if mode.startswith("drip"):
        assert f"slower than {MIN_RATE} bytes/s" in str(info.value)
