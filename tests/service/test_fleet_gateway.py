"""edgefld.server.fleet_gateway: only re-originated Fleet requests (and /health) ever reach the SuperLink.

A real HTTP/1.1 upstream (stdlib http.server, as lenient as many servers) records every request it
parses; the tests talk to a real FleetGateway over 127.0.0.1 with raw sockets and http.client.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

from edgefld.server.fleet_gateway import FLEET_RPCS, MAX_HEAD_BYTES, STOP_GRACE_S, FleetGateway, GatewayLimits

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
            if len(body) < length:  # the sender left inside the body: no request was made
                self.close_connection = True
                raise ConnectionError("truncated body")
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
            try:
                seen = self._record()
            except ConnectionError:
                return
            if self.path.endswith("/chunked"):
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in CHUNKS:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                self.wfile.write(CHUNKED_END)
            elif self.path.endswith("/activate-node") and seen.body == b"412":
                self._reply(412, b'{"detail":"unknown node"}')
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


# Short limits, so each limit is seen to act within a test's time.
TEST_LIMITS = GatewayLimits(max_connections=64, head_timeout=0.5, idle_timeout=2.0, min_transfer_rate=64 * 1024,
                            transfer_grace=0.5, max_object_bytes=8 * 1024 * 1024, max_request_bytes=64 * 1024,
                            upstream_connections=8)


def _start_gateway(upstream_port: int, limits: GatewayLimits = TEST_LIMITS, **kwargs) -> FleetGateway:
    for _ in range(5):
        instance = FleetGateway("127.0.0.1", _free_port(), "127.0.0.1", upstream_port, limits=limits, **kwargs)
        try:
            instance.start()
        except OSError:  # someone took the free port meanwhile
            continue
        return instance
    pytest.fail("no free port for the gateway")


@pytest.fixture
def gateway(upstream):
    instance = _start_gateway(upstream.port)
    yield instance
    instance.stop()


def _connect(gateway: FleetGateway) -> socket.socket:
    return socket.create_connection(gateway.listen, timeout=TIMEOUT)


def _recv_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class _Reader:
    """Reads HTTP/1.1 responses (Content-Length or chunked bodies) off a raw socket."""

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

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        head = self.until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        status = int(lines[0].split(b" ")[1])
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size = int(self.until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    self.until(b"\r\n")
                    return status, headers, body
                body += self.exactly(size)
                self.exactly(2)
        return status, headers, self.exactly(int(headers.get(b"content-length", b"0")))


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: superlink\r\nContent-Type: application/protobuf\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


def _wait_for(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def _only_fleet(upstream: Upstream) -> None:
    for seen in upstream.requests:
        assert (seen.method == "POST" and seen.path.startswith("/v1/fleet/")) or seen.path == "/health", seen


# --- forwarded -------------------------------------------------------------------------------


def test_fleet_rpcs_are_flowers():
    from flwr.superlink.routers.fleet.router import router

    assert {route.path.removeprefix("/v1/fleet/") for route in router.routes} == set(FLEET_RPCS)
    assert {method for route in router.routes for method in route.methods} == {"POST"}


def test_fleet_post_is_re_originated_with_the_gateways_own_headers(gateway, upstream):
    body = bytes(range(256)) * 100 + b"\r\n\r\nPOST /v1/control/start-run HTTP/1.1\r\n\r\n"
    extra = (b"X-Custom: a:b c\r\nAccept: application/protobuf\r\nflwr-public-key: a2V5\r\nflwr-signature: c2ln\r\n"
             b"flwr-timestamp: 2026\r\nX-Forwarded-For: 10.9.8.7\r\nConnection: keep-alive, x-custom\r\n")
    with _connect(gateway) as sock:
        sock.sendall(_post("/v1/fleet/pull-messages", body, extra))
        status, headers, answer = _Reader(sock).response()
    assert status == 200
    assert answer == _answer("/v1/fleet/pull-messages", body)
    assert b"x-upstream" not in headers and b"keep-alive" not in headers  # only the gateway's answer headers
    assert len(upstream.requests) == 1
    seen = upstream.requests[0]
    assert (seen.method, seen.path, seen.version, seen.body) == ("POST", "/v1/fleet/pull-messages", "HTTP/1.1", body)
    names = sorted(name.lower() for name, _ in seen.headers)
    assert names == sorted(["host", "content-length", "content-type", "accept", "flwr-public-key", "flwr-signature",
                            "flwr-timestamp", "x-forwarded-for", "accept-encoding", "connection", "user-agent"])
    sent = {name.lower(): value for name, value in seen.headers}
    assert sent["x-forwarded-for"] == "127.0.0.1" and sent["content-length"] == str(len(body))
    assert sent["host"] == f"127.0.0.1:{upstream.port}"
    assert (gateway.stats.forwarded, gateway.stats.refused) == (1, 0)


def test_body_sent_in_pieces_and_large_bodies_arrive_intact(gateway, upstream):
    body = bytes(range(256)) * (6 * 4096)  # 6 MiB, above Flower's 5 MiB chunks
    with _connect(gateway) as sock:
        request = _post("/v1/fleet/push-object", body)
        head_end = request.index(b"\r\n\r\n") + 4
        sock.sendall(request[:10])
        time.sleep(0.05)
        sock.sendall(request[10:head_end + 3])
        time.sleep(0.05)
        sock.sendall(request[head_end + 3:])
        status, _, answer = _Reader(sock).response()
    assert status == 200
    assert upstream.requests[0].body == body
    assert answer == _answer("/v1/fleet/push-object", body)


def test_keep_alive_pipelining_health_and_chunked_answers(gateway, upstream):
    conn = http.client.HTTPConnection(*gateway.listen, timeout=TIMEOUT)
    try:
        for number in range(4):
            body = f"request {number}".encode() * (number + 1)
            conn.request("POST", "/v1/fleet/pull-messages", body=body, headers={"Content-Type": "application/protobuf"})
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, _answer("/v1/fleet/pull-messages", body))
            assert not response.will_close
        conn.request("HEAD", "/health")
        response = conn.getresponse()
        assert (response.status, response.getheader("Content-Length"), response.read()) == (200, "2", b"")
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok")
    finally:
        conn.close()
    with _connect(gateway) as sock:
        sock.sendall(_post("/v1/fleet/get-run", b"1") + _post("/v1/fleet/get-fab", b"22")
                     + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = _Reader(sock)
        answers = [reader.response()[2] for _ in range(3)]
    assert answers == [_answer("/v1/fleet/get-run", b"1"), _answer("/v1/fleet/get-fab", b"22"), b"ok"]
    assert upstream.paths()[-3:] == ["/v1/fleet/get-run", "/v1/fleet/get-fab", "/health"]


REFUSED = {
    "control-list-runs": b"POST /v1/control/list-runs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "control-start-run": b"POST /v1/control/start-run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "runtime-get-nodes": b"POST /v1/runtime/get-nodes HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "docs": b"GET /docs HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown-rpc": b"POST /v1/fleet/anything HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "dot-dot": b"POST /v1/fleet/../control/list-runs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "encoded-dot-dot": b"POST /v1/fleet/%2e%2e/control/list-runs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "encoded-rpc": b"POST /v1/fleet/get%2drun HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "query": b"POST /v1/fleet/pull-messages?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "absolute-form": b"POST http://127.0.0.1/v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "get-fleet": b"GET /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\n\r\n",
    "post-health": b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "health-slash": b"GET /health/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "health-with-body": b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde",
    "options": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "connect": b"CONNECT 127.0.0.1:9093 HTTP/1.1\r\nHost: x\r\n\r\n",
    "http-1.0": b"POST /v1/fleet/pull-messages HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    "chunked": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "over-rpc-limit": (b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length: "
                       + str(64 * 1024 + 1).encode() + b"\r\n\r\n"),
    "over-object-limit": (b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Length: "
                          + str(8 * 1024 * 1024 + 1).encode() + b"\r\n\r\n"),
    "huge-length": b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "two-keys": (b"POST /v1/fleet/activate-node HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nflwr-public-key: a\r\n"
                 b"flwr-public-key: b\r\n\r\n"),
    # Malformed HTTP: h11 refuses it (400) before any routing.
    "http-0.9": b"GET /health\r\n\r\n",
    "http-2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "lowercase-method-space": b"POST  /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "negative-length": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "plus-length": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
    "empty-length": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
    "no-host": b"POST /v1/fleet/pull-messages HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "oversized-head": _post("/v1/fleet/pull-messages", b"", b"X-Big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_requests_never_reach_upstream(gateway, upstream, name):
    with _connect(gateway) as sock:
        sock.sendall(REFUSED[name])
        answer = _recv_until_closed(sock)  # every refusal ends the connection
    assert answer.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), answer[:100]
    assert upstream.requests == [] and upstream.connections == []
    assert (gateway.stats.forwarded, gateway.stats.refused) == (0, 1)


SMUGGLED = b"POST /v1/control/start-run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
_N = str(len(SMUGGLED)).encode()
_CHUNKED_SMUGGLE = b"0\r\n\r\n" + SMUGGLED
SMUGGLING = {
    # Hop-by-hop tricks on every framing header: the body must stay a body.
    "connection-names-content-length": (b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n"
                                        b"Content-Length: " + _N + b"\r\n\r\n" + SMUGGLED),
    "connection-names-content-length-post": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\n"
                                             b"Connection: keep-alive, Content-Length\r\nContent-Length: " + _N
                                             + b"\r\n\r\n" + SMUGGLED),
    "connection-names-transfer-encoding": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\n"
                                           b"Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
                                           + _CHUNKED_SMUGGLE),
    "connection-names-host": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nConnection: host\r\n"
                              b"Content-Length: " + _N + b"\r\n\r\n" + SMUGGLED),
    # CL/TE combinations.
    "cl-te": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(_CHUNKED_SMUGGLE)).encode()
              + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + _CHUNKED_SMUGGLE),
    "te-cl": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
              + _CHUNKED_SMUGGLE),
    "te-obfuscated": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: xchunked\r\n\r\n" + _CHUNKED_SMUGGLE),
    "te-list": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
                + _CHUNKED_SMUGGLE),
    "te-space-before-colon": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                              b"Transfer-Encoding : chunked\r\n\r\n" + _CHUNKED_SMUGGLE),
    "duplicate-content-length": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                 b"Content-Length: " + _N + b"\r\n\r\n" + SMUGGLED),
    "content-length-list": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 0, " + _N
                            + b"\r\n\r\n" + SMUGGLED),
    # obs-fold and bare line ends.
    "obs-fold-transfer-encoding": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                   b"Transfer-Encoding:\r\n chunked\r\n\r\n" + _CHUNKED_SMUGGLE),
    "obs-fold-other-header": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nX-Pad: a\r\n Content-Length: " + _N
                              + b"\r\nContent-Length: 0\r\n\r\n" + SMUGGLED),
    "bare-lf-header": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nX-Pad: a\nContent-Length: 0\r\n"
                       b"Content-Length: " + _N + b"\r\n\r\n" + SMUGGLED),
    "bare-cr-header": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nX-Pad: a\rContent-Length: " + _N
                       + b"\r\nContent-Length: 0\r\n\r\n" + SMUGGLED),
    # Pipelining: a second request behind an allowed one is routed on its own (and refused).
    "pipelined-behind-fleet": _post("/v1/fleet/get-run", b"x") + SMUGGLED,
    "pipelined-behind-health": b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED,
    # Expect: 100-continue with the smuggled request as (part of) the body.
    "expect-100-continue": (b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                            b"Content-Length: " + _N + b"\r\n\r\n" + SMUGGLED),
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_no_request_smuggling_to_the_control_api(gateway, upstream, name):
    with _connect(gateway) as sock:
        sock.sendall(SMUGGLING[name])
        sock.settimeout(1.0)
        try:
            _recv_until_closed(sock)
        except TimeoutError:
            pass
    # Whatever reached the upstream was one re-originated Fleet request or /health, never the smuggled one,
    # and the upstream parsed exactly as many requests as the gateway forwarded.
    _only_fleet(upstream)
    assert len(upstream.requests) == gateway.stats.forwarded <= 1
    for seen in upstream.requests:
        assert b"/v1/control" not in seen.path.encode()
    # Then an honest request still works.
    with _connect(gateway) as sock:
        sock.sendall(_post("/v1/fleet/pull-messages", b"honest"))
        assert _Reader(sock).response()[2] == _answer("/v1/fleet/pull-messages", b"honest")


def test_expect_100_continue_keeps_the_answers_in_step(gateway, upstream):
    with _connect(gateway) as sock:
        sock.sendall(b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        reader = _Reader(sock)
        assert reader.until(b"\r\n\r\n").startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"abc")
        assert reader.response()[:3:2] == (200, _answer("/v1/fleet/get-run", b"abc"))
        sock.sendall(_post("/v1/fleet/get-fab", b"next"))
        assert reader.response()[2] == _answer("/v1/fleet/get-fab", b"next")  # not one answer behind
    assert upstream.paths() == ["/v1/fleet/get-run", "/v1/fleet/get-fab"]
    assert all(not any(k.lower() == "expect" for k, _ in seen.headers) for seen in upstream.requests)


# --- slow, idle and too many -----------------------------------------------------------------


def test_idle_connection_and_slow_head_are_closed(gateway, upstream):
    idle = _connect(gateway)
    slow = _connect(gateway)
    started = time.monotonic()
    try:
        for byte in b"POST /v1/fleet/get-run HTTP/1.1\r\n"[:8]:
            slow.sendall(bytes([byte]))
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed mid-head, as it should be
    for sock in (idle, slow):
        with sock:
            assert _recv_until_closed(sock) == b""
    assert time.monotonic() - started < 3 * TEST_LIMITS.head_timeout + 1.5
    assert upstream.requests == []


def test_slow_body_is_dropped_and_never_completes_upstream(gateway, upstream):
    body_size = 256 * 1024
    with _connect(gateway) as sock:
        sock.sendall(b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + str(body_size).encode() + b"\r\n\r\n")
        started = time.monotonic()
        closed = False
        for _ in range(40):  # 1 KiB every 50 ms: 20 KiB/s, under the 64 KiB/s minimum
            try:
                sock.sendall(b"x" * 1024)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
        sock.settimeout(2.0)
        answer = _recv_until_closed(sock) if not closed else b""
    assert answer == b""  # dropped: no answer at all
    assert time.monotonic() - started < 5.0
    assert upstream.requests == []  # the upstream never saw a complete request


def test_body_announced_and_never_sent_is_dropped(gateway, upstream):
    with _connect(gateway) as sock:
        sock.sendall(b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n12345")
        started = time.monotonic()
        sock.settimeout(5.0)
        assert _recv_until_closed(sock) == b""
    assert time.monotonic() - started < 3.0
    assert upstream.requests == []


def test_a_body_abandoned_midway_never_reaches_upstream_at_all(gateway, upstream):
    # A board that dies while uploading a model chunk: the SuperLink must not see a half request (it
    # logs "ERROR ... UnexpectedError:ClientDisconnect" for one), so the gateway opens no upstream
    # connection before the body is whole.
    with _connect(gateway) as sock:
        sock.sendall(b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Length: 600000\r\n\r\n")
        sock.sendall(b"x" * 300000)
        time.sleep(0.5)
    time.sleep(0.5)
    assert upstream.connections == [] and upstream.requests == []
    # ...and the next honest upload arrives whole.
    body = bytes(range(256)) * 2000
    with _connect(gateway) as sock:
        sock.sendall(_post("/v1/fleet/push-object", body))
        status, _, answer = _Reader(sock).response()
    assert status == 200 and answer == _answer("/v1/fleet/push-object", body)
    assert len(upstream.requests) == 1 and upstream.requests[0].body == body


def test_connections_over_the_limit_are_closed_and_honest_ones_served_after(upstream):
    limits = GatewayLimits(**{**TEST_LIMITS.__dict__, "max_connections": 16, "head_timeout": 30.0})
    gateway = _start_gateway(upstream.port, limits)
    held = []
    try:
        for _ in range(16):
            held.append(_connect(gateway))
        time.sleep(0.2)
        extra = _connect(gateway)
        extra.settimeout(2.0)
        with extra:
            assert _recv_until_closed(extra) == b""
        for sock in held:
            sock.close()
        held.clear()
        time.sleep(0.2)
        with _connect(gateway) as sock:
            sock.sendall(_post("/v1/fleet/get-run", b"ok"))
            assert _Reader(sock).response()[2] == _answer("/v1/fleet/get-run", b"ok")
        assert gateway.stats.refused >= 1
    finally:
        for sock in held:
            sock.close()
        gateway.stop()


def test_refusals_are_logged_once_per_source_and_interval(upstream, caplog):
    gateway = _start_gateway(upstream.port, refusal_interval=0.5)
    try:
        with caplog.at_level(logging.WARNING, logger="edgefl.fleet-gateway"):
            for _ in range(50):
                with _connect(gateway) as sock:
                    sock.sendall(REFUSED["control-list-runs"])
                    _recv_until_closed(sock)
            _wait_for(lambda: any("more requests" in r.getMessage() for r in caplog.records), 8.0)
    finally:
        gateway.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "edgefl.fleet-gateway"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("refused 127.0.0.1: POST '/v1/control/list-runs' is not the Fleet API")
    assert lines[1].startswith("refused 49 more requests from 127.0.0.1 in ")
    assert gateway.stats.refused == 50


# --- lifecycle -------------------------------------------------------------------------------


def test_stop_is_quick_with_open_connections_and_closes_the_port(upstream):
    gateway = _start_gateway(upstream.port, GatewayLimits(**{**TEST_LIMITS.__dict__, "head_timeout": 30.0}))
    idle = _connect(gateway)
    busy = _connect(gateway)
    busy.sendall(_post("/v1/fleet/pull-messages", b"1"))
    _Reader(busy).response()
    half = _connect(gateway)
    half.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    time.sleep(0.2)
    started = time.monotonic()
    gateway.stop()
    assert time.monotonic() - started < 2.0
    assert not gateway._thread.is_alive()
    for sock in (idle, busy, half):
        with sock:
            assert _recv_until_closed(sock) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(gateway.listen, timeout=TIMEOUT)
    gateway.stop()  # a second stop is harmless


def test_start_on_a_busy_port_raises_oserror(upstream):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        gateway = FleetGateway("127.0.0.1", taken.getsockname()[1], "127.0.0.1", upstream.port)
        with pytest.raises(OSError) as info:
            gateway.start()
        assert info.value.errno == 98  # EADDRINUSE
        gateway.stop()
        assert not gateway._thread.is_alive()


def test_unreachable_upstream_answers_502():
    dead = _start_gateway(_free_port())
    try:
        with _connect(dead) as sock:
            sock.sendall(_post("/v1/fleet/pull-messages", b""))
            assert _recv_until_closed(sock).startswith(b"HTTP/1.1 502 ")
        assert dead.stats.forwarded == 0
    finally:
        dead.stop()


def test_node_refusals_are_reported_with_the_key(upstream):
    seen = []
    gateway = _start_gateway(upstream.port, on_node_refused=lambda *args: seen.append(args))
    try:
        with _connect(gateway) as sock:
            sock.sendall(_post("/v1/fleet/activate-node", b"412", b"flwr-public-key: a2V5\r\n"))
            assert _Reader(sock).response()[0] == 412
    finally:
        gateway.stop()
    assert seen == [("127.0.0.1", 412, b"key")]


def test_stop_while_an_answer_streams_logs_nothing_at_error(caplog):
    """stop() cancels the requests in flight; an answer half sent ends quietly (uvicorn logged an
    'Exception in ASGI application' traceback for each before), and stop() does not wait on an upstream
    that stalled in mid-answer (it waited for ever before)."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)
    held: list[socket.socket] = []

    def serve() -> None:  # answers with a head and half a body, then holds the connection
        connection, _ = upstream.accept()
        held.append(connection)
        connection.settimeout(TIMEOUT)
        data = b""
        while b"\r\n\r\n" not in data:
            data += connection.recv(4096)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\nContent-Length: 100000\r\n\r\n"
                           + b"x" * 1000)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    gateway = _start_gateway(upstream.getsockname()[1], GatewayLimits(**{**TEST_LIMITS.__dict__,
                                                                         "transfer_grace": 30.0}))
    client = _connect(gateway)
    try:
        with caplog.at_level(logging.DEBUG):
            client.sendall(_post("/v1/fleet/pull-messages", b"1"))
            client.settimeout(TIMEOUT)
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            gateway.stop()
            assert not gateway._thread.is_alive()
            assert time.monotonic() - started < 3 * STOP_GRACE_S
            client.close()
            for connection in held:  # the request left behind now fails upstream: still nothing at ERROR
                connection.close()
            time.sleep(0.2)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        client.close()
        for connection in held:
            connection.close()
        upstream.close()
        thread.join(TIMEOUT)
