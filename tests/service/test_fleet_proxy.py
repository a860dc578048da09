"""edgefld.server.fleet_proxy: only the Fleet API (and /health) ever reaches the SuperLink.

A real HTTP/1.1 upstream (stdlib http.server) records what it receives; the tests
talk to a real FleetProxy over 127.0.0.1 with raw sockets and http.client.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

from edgefld.server.fleet_proxy import MAX_BODY_BYTES, MAX_HEAD_BYTES, FleetProxy, _forbidden

FORBIDDEN = _forbidden()
FORBIDDEN_BODY = b'{"detail":"only the Fleet API is served on this address"}'
CHUNKS = [b"7;name=value\r\nchunked\r\n", b"1\r\n \r\n", b"A\r\n0123456789\r\n"]
CHUNKED_END = b"0\r\nX-Trailer: yes\r\n\r\n"
TIMEOUT = 5.0


@dataclass
class Seen:
    method: str
    path: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: tuple[str, int]


@dataclass
class Upstream:
    port: int
    requests: list[Seen] = field(default_factory=list)
    connections: list[tuple[str, int]] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _answer(path: str, body: bytes) -> bytes:
    return b"answer to " + path.encode() + b": " + body[::-1]


def _make_handler(upstream: Upstream):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10

        def setup(self) -> None:
            super().setup()
            upstream.connections.append(self.client_address)

        def log_message(self, *args) -> None:  # quiet
            pass

        def _record(self) -> Seen:
            length = int(self.headers.get("Content-Length") or 0)  # the first one, like many servers
            body = self.rfile.read(length) if length else b""
            seen = Seen(self.command, self.path, self.request_version, list(self.headers.items()), body,
                        self.client_address)
            upstream.requests.append(seen)
            return seen

        def _reply(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:
            seen = self._record()
            if self.path.endswith("/chunked"):
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in CHUNKS:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                self.wfile.write(CHUNKED_END)
            elif self.path.endswith("/no-content"):
                self.send_response(204)
                self.end_headers()
            elif self.path.endswith("/close"):
                self._reply(200, b"bye", {"Connection": "close"})
                self.close_connection = True
            elif self.path.endswith("/big-answer"):
                self._reply(200, bytes(range(256)) * 8192)  # 2 MiB
            elif self.path == "/health":
                self._reply(200, b"ok", {"X-Upstream": "1"})
            else:
                self._reply(200, _answer(seen.path, seen.body), {"X-Upstream": "1", "Keep-Alive": "timeout=5"})

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle

    return Handler


@pytest.fixture
def upstream():
    record = Upstream(port=0)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(record))
    server.daemon_threads = True
    record.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield record
    server.shutdown()
    server.server_close()
    thread.join(5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def proxy(upstream):
    for _ in range(5):
        instance = FleetProxy("127.0.0.1", _free_port(), "127.0.0.1", upstream.port)
        try:
            instance.start()
        except OSError:  # someone took the free port meanwhile
            continue
        break
    else:
        pytest.fail("no free port for the proxy")
    yield instance
    instance.stop()


def _connect(proxy: FleetProxy) -> socket.socket:
    sock = socket.create_connection(proxy.listen, timeout=TIMEOUT)
    return sock


def _recv_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


class _Reader:
    """Reads HTTP/1.1 responses with Content-Length bodies off a raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buffer += chunk

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        index = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:index], self.buffer[index:]
        return data

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        head = self.until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return lines[0], headers, self.exactly(int(headers.get(b"content-length", b"0")))


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: superlink\r\nContent-Type: application/protobuf\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


def _wait_for(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


# --- forwarded -------------------------------------------------------------------------------


def test_fleet_post_is_forwarded_byte_exact(proxy, upstream):
    body = bytes(range(256)) * 300 + b"\r\n\r\nPOST /v1/control/start-run HTTP/1.1\r\n\r\n"
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/pull-messages", body, b"X-Custom: a:b c\r\n"))
        status, headers, answer = _Reader(sock).response()
    assert status == b"HTTP/1.1 200 OK"
    assert answer == _answer("/v1/fleet/pull-messages", body)
    assert headers[b"x-upstream"] == b"1"
    assert headers[b"content-length"] == str(len(answer)).encode()
    assert b"keep-alive" not in headers and b"connection" not in headers  # hop-by-hop, dropped
    assert len(upstream.requests) == 1
    seen = upstream.requests[0]
    assert (seen.method, seen.path, seen.version, seen.body) == ("POST", "/v1/fleet/pull-messages", "HTTP/1.1",
                                                                 body)
    assert seen.headers == [("host", "superlink"), ("content-type", "application/protobuf"),
                            ("content-length", str(len(body))), ("x-custom", "a:b c"),
                            ("x-forwarded-for", "127.0.0.1")]
    assert (proxy.stats.forwarded, proxy.stats.refused) == (1, 0)


def test_body_sent_in_pieces_and_large_bodies_arrive_intact(proxy, upstream):
    body = bytes(range(256)) * (6 * 4096)  # 6 MiB, above Flower's 5 MiB chunks
    with _connect(proxy) as sock:
        request = _post("/v1/fleet/push-object", body)
        head_end = request.index(b"\r\n\r\n") + 4
        sock.sendall(request[:10])
        time.sleep(0.05)
        sock.sendall(request[10:head_end + 3])
        time.sleep(0.05)
        sock.sendall(request[head_end + 3:])
        status, _, answer = _Reader(sock).response()
    assert status == b"HTTP/1.1 200 OK"
    assert upstream.requests[0].body == body
    assert answer == _answer("/v1/fleet/push-object", body)


def test_large_answer_comes_back_intact(proxy, upstream):
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/big-answer", b""))
        status, _, answer = _Reader(sock).response()
    assert status == b"HTTP/1.1 200 OK"
    assert answer == bytes(range(256)) * 8192


def test_keep_alive_several_requests_on_one_connection(proxy, upstream):
    conn = http.client.HTTPConnection(*proxy.listen, timeout=TIMEOUT)
    try:
        expected_paths = []
        for number in range(6):
            if number % 3 == 2:
                conn.request("GET", "/health")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"ok")
                expected_paths.append("/health")
            else:
                body = f"request {number}".encode() * (number + 1)
                path = f"/v1/fleet/rpc-{number}"
                conn.request("POST", path, body=body, headers={"Content-Type": "application/protobuf"})
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, _answer(path, body))
                expected_paths.append(path)
            assert not response.will_close
    finally:
        conn.close()
    assert upstream.paths() == expected_paths
    assert len(upstream.connections) == 1  # one upstream connection per client connection
    assert len({r.connection for r in upstream.requests}) == 1
    assert (proxy.stats.forwarded, proxy.stats.refused) == (6, 0)


def test_pipelined_requests_are_answered_in_order(proxy, upstream):
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/a", b"1") + _post("/v1/fleet/b", b"22") + b"GET /health HTTP/1.1\r\n\r\n")
        reader = _Reader(sock)
        answers = [reader.response()[2] for _ in range(3)]
    assert answers == [_answer("/v1/fleet/a", b"1"), _answer("/v1/fleet/b", b"22"), b"ok"]
    assert upstream.paths() == ["/v1/fleet/a", "/v1/fleet/b", "/health"]


def test_get_and_head_health_are_forwarded(proxy, upstream):
    conn = http.client.HTTPConnection(*proxy.listen, timeout=TIMEOUT)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert (response.status, response.read(), response.getheader("X-Upstream")) == (200, b"ok", "1")
        conn.request("HEAD", "/health")
        response = conn.getresponse()
        assert (response.status, response.getheader("Content-Length"), response.read()) == (200, "2", b"")
        conn.request("GET", "/health")  # the HEAD answer's missing body did not desynchronise the stream
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok")
    finally:
        conn.close()
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/health"), ("HEAD", "/health"),
                                                               ("GET", "/health")]
    assert proxy.stats.forwarded == 3


def test_chunked_answer_is_relayed_verbatim_and_the_connection_stays_usable(proxy, upstream):
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/chunked", b"x"))
        reader = _Reader(sock)
        head = reader.until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\ntransfer-encoding: chunked\r\n" in head.lower()
        body = reader.until(CHUNKED_END)
        assert body == b"".join(CHUNKS) + CHUNKED_END
        sock.sendall(_post("/v1/fleet/after", b"y"))
        status, _, answer = reader.response()
    assert (status, answer) == (b"HTTP/1.1 200 OK", _answer("/v1/fleet/after", b"y"))
    conn = http.client.HTTPConnection(*proxy.listen, timeout=TIMEOUT)
    try:
        conn.request("POST", "/v1/fleet/chunked", body=b"")
        assert conn.getresponse().read() == b"chunked 0123456789"
    finally:
        conn.close()


def test_no_content_answer_keeps_the_stream_in_step(proxy, upstream):
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/no-content", b"") + _post("/v1/fleet/next", b"z"))
        reader = _Reader(sock)
        status, _, body = reader.response()
        assert (status, body) == (b"HTTP/1.1 204 No Content", b"")
        status, _, body = reader.response()
        assert (status, body) == (b"HTTP/1.1 200 OK", _answer("/v1/fleet/next", b"z"))


def test_upstream_connection_close_ends_the_client_connection(proxy, upstream):
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/close", b""))
        data = _recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nbye")


def test_client_connection_close_is_honoured(proxy, upstream):
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/x", b"q", b"Connection: close\r\n"))
        data = _recv_until_closed(sock)
    assert data.endswith(b"\r\n\r\n" + _answer("/v1/fleet/x", b"q"))
    assert ("connection", "close") not in upstream.requests[0].headers  # hop-by-hop, not forwarded


def test_x_forwarded_for_is_set_and_a_client_one_replaced(proxy, upstream):
    extra = b"X-Forwarded-For: 10.9.8.7\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8\r\n"
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/pull-messages", b"b", extra))
        _Reader(sock).response()
    forwarded_for = [v for k, v in upstream.requests[0].headers if k.lower() == "x-forwarded-for"]
    assert forwarded_for == ["127.0.0.1"]


def test_hop_by_hop_request_headers_are_dropped(proxy, upstream):
    extra = b"Connection: keep-alive, x-secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x\r\n" \
            b"Proxy-Connection: keep-alive\r\n"
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/pull-messages", b"b", extra))
        _Reader(sock).response()
    names = [k.lower() for k, _ in upstream.requests[0].headers]
    assert names == ["host", "content-type", "content-length", "x-forwarded-for"]


# --- refused ---------------------------------------------------------------------------------

REFUSED = {
    "control-list-runs": b"POST /v1/control/list-runs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "control-start-run": b"POST /v1/control/start-run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "runtime-get-nodes": b"POST /v1/runtime/get-nodes HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "docs": b"GET /docs HTTP/1.1\r\nHost: x\r\n\r\n",
    "openapi": b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n",
    "dot-dot": b"POST /v1/fleet/../control/list-runs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "encoded-dot-dot": b"POST /v1/fleet/%2e%2e/control/list-runs HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "fleet-subpath": b"POST /v1/fleet/x/../../control/list-runs HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "query": b"POST /v1/fleet/pull-messages?x=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "absolute-form": b"POST http://127.0.0.1/v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "get-fleet": b"GET /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase-method": b"post /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "post-health": b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "health-slash": b"GET /health/ HTTP/1.1\r\n\r\n",
    "options": b"OPTIONS * HTTP/1.1\r\n\r\n",
    "connect": b"CONNECT 127.0.0.1:9093 HTTP/1.1\r\n\r\n",
    "http-1.0": b"POST /v1/fleet/pull-messages HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    "http-0.9": b"GET /health\r\n\r\n",
    "http-2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "extra-space": b"POST  /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "chunked": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    "chunked-and-length": (b"POST /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n"),
    "chunked-odd-spelling": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nTRANSFER-ENCODING :  chunked\r\n\r\n",
    "upgrade": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: 0\r\nUpgrade: h2c\r\n\r\n",
    "negative-length": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "plus-length": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
    "list-length": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
    "empty-length": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length:\r\n\r\n",
    "over-max-body": (b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Length: "
                      + str(MAX_BODY_BYTES + 1).encode() + b"\r\n\r\n"),
    "huge-body": b"POST /v1/fleet/push-object HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_requests_get_403_and_never_reach_upstream(proxy, upstream, name):
    with _connect(proxy) as sock:
        sock.sendall(REFUSED[name])
        assert _recv_until_closed(sock) == FORBIDDEN
    assert upstream.requests == [] and upstream.connections == []
    assert (proxy.stats.forwarded, proxy.stats.refused) == (0, 1)


def test_forbidden_answer_is_well_formed():
    head, _, body = FORBIDDEN.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"HTTP/1.1 403 Forbidden", b"content-type: application/json",
                                   b"content-length: " + str(len(FORBIDDEN_BODY)).encode(), b"connection: close"]
    assert body == FORBIDDEN_BODY


def test_body_exactly_at_the_limit_is_not_refused_for_size(proxy, upstream):
    # Only the head is sent: the proxy must accept the size and wait for the body.
    with _connect(proxy) as sock:
        sock.sendall(b"POST /v1/fleet/push-object HTTP/1.1\r\nContent-Length: "
                     + str(MAX_BODY_BYTES).encode() + b"\r\n\r\n" + b"x" * 1000)
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            sock.recv(1)
    assert proxy.stats.refused == 0


def test_refusal_after_a_forwarded_request_on_the_same_connection(proxy, upstream):
    with _connect(proxy) as sock:
        sock.sendall(_post("/v1/fleet/pull-messages", b"ok"))
        reader = _Reader(sock)
        assert reader.response()[2] == _answer("/v1/fleet/pull-messages", b"ok")
        sock.sendall(REFUSED["control-start-run"])
        rest = reader.buffer
        rest += _recv_until_closed(sock)
    assert rest == FORBIDDEN
    assert upstream.paths() == ["/v1/fleet/pull-messages"]
    assert (proxy.stats.forwarded, proxy.stats.refused) == (1, 1)


def test_stats_count_forwarded_and_refused(proxy, upstream):
    for _ in range(3):
        with _connect(proxy) as sock:
            sock.sendall(_post("/v1/fleet/pull-messages", b"a") + _post("/v1/fleet/pull-messages", b"b"))
            reader = _Reader(sock)
            reader.response()
            reader.response()
    for name in ("docs", "chunked"):
        with _connect(proxy) as sock:
            sock.sendall(REFUSED[name])
            _recv_until_closed(sock)
    assert (proxy.stats.forwarded, proxy.stats.refused) == (6, 2)
    assert len(upstream.requests) == 6


def test_oversized_head_never_reaches_upstream(proxy, upstream):
    head = _post("/v1/fleet/pull-messages", b"", b"X-Big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n")
    with _connect(proxy) as sock:
        try:
            sock.sendall(head)
            _recv_until_closed(sock)
        except ConnectionResetError:
            pass  # the proxy may close with unread bytes pending
    assert upstream.requests == [] and upstream.connections == []
    assert proxy.stats.forwarded == 0


def test_oversized_head_gets_403(proxy, upstream):
    head = _post("/v1/fleet/pull-messages", b"", b"X-Big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n")
    with _connect(proxy) as sock:
        sock.sendall(head)
        assert _recv_until_closed(sock) == FORBIDDEN
    assert proxy.stats.refused == 1


def test_head_just_under_the_limit_is_forwarded(proxy, upstream):
    filler = b"X-Big: " + b"a" * (MAX_HEAD_BYTES - 300) + b"\r\n"
    request = _post("/v1/fleet/pull-messages", b"k", filler)
    assert request.index(b"\r\n\r\n") + 4 < MAX_HEAD_BYTES
    with _connect(proxy) as sock:
        sock.sendall(request)
        status, _, answer = _Reader(sock).response()
    assert (status, answer) == (b"HTTP/1.1 200 OK", _answer("/v1/fleet/pull-messages", b"k"))


SMUGGLED = b"POST /v1/control/start-run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
SMUGGLING = {
    # Two Content-Length headers: the proxy frames by the last, many servers by the first.
    "duplicate-content-length": (b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                 b"Content-Length: " + str(len(SMUGGLED)).encode() + b"\r\n\r\n" + SMUGGLED),
    # A bare LF inside a header value: forwarded as is, it is a line break to lenient parsers.
    "bare-lf-header": (b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nX-Pad: a\nContent-Length: 0\r\n"
                       b"Content-Length: " + str(len(SMUGGLED)).encode() + b"\r\n\r\n" + SMUGGLED),
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_no_request_smuggling_to_the_control_api(proxy, upstream, name):
    with _connect(proxy) as sock:
        sock.sendall(SMUGGLING[name])
        sock.settimeout(0.3)
        try:
            _recv_until_closed(sock)
        except (socket.timeout, ConnectionResetError):
            pass
    time.sleep(0.2)
    assert all(path.startswith("/v1/fleet/") or path == "/health" for path in upstream.paths()), upstream.paths()


# --- lifecycle -------------------------------------------------------------------------------


def test_stop_is_quick_with_open_connections_and_closes_the_port(upstream):
    proxy = FleetProxy("127.0.0.1", _free_port(), "127.0.0.1", upstream.port)
    proxy.start()
    idle = _connect(proxy)  # an idle keep-alive client
    busy = _connect(proxy)
    busy.sendall(_post("/v1/fleet/pull-messages", b"1"))
    _Reader(busy).response()
    half = _connect(proxy)
    half.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")  # body pending
    _wait_for(lambda: len(upstream.requests) == 1 and len(upstream.connections) == 2)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 2.0
    assert not proxy._thread.is_alive()
    for sock in (idle, busy):
        with sock:
            assert _recv_until_closed(sock) == b""
    with half:
        try:  # bytes the proxy had not read yet make the close a reset
            assert _recv_until_closed(half) == b""
        except ConnectionResetError:
            pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.listen, timeout=TIMEOUT)
    proxy.stop()  # a second stop is harmless


def test_stop_without_connections_ends_the_thread_cleanly(upstream, monkeypatch):
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda hook_args: errors.append(hook_args.exc_value))
    proxy = FleetProxy("127.0.0.1", _free_port(), "127.0.0.1", upstream.port)
    proxy.start()
    with _connect(proxy) as sock:  # a finished connection leaves no task behind
        sock.sendall(_post("/v1/fleet/pull-messages", b"1", b"Connection: close\r\n"))
        _recv_until_closed(sock)
    proxy.stop()
    assert not proxy._thread.is_alive()
    assert errors == []
    assert proxy._loop is not None and proxy._loop.is_closed()


def test_start_on_a_busy_port_raises_oserror(upstream):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy = FleetProxy("127.0.0.1", taken.getsockname()[1], "127.0.0.1", upstream.port)
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            proxy.start()
        assert time.monotonic() - started < 5.0
        assert info.value.errno == 98  # EADDRINUSE
        proxy.stop()
        assert not proxy._thread.is_alive()


def test_unreachable_upstream_closes_the_client_connection():
    dead = FleetProxy("127.0.0.1", _free_port(), "127.0.0.1", _free_port())
    dead.start()
    try:
        with _connect(dead) as sock:
            sock.sendall(_post("/v1/fleet/pull-messages", b""))
            assert _recv_until_closed(sock) == b""
        assert dead.stats.forwarded == 0
    finally:
        dead.stop()
