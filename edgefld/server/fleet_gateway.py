"""The only door from the network into the server: Flower's Fleet API, and nothing else.

Flower 1.42's SuperLink serves the Fleet, Control and Runtime APIs on one HTTP
port, and its Control API has no authentication: whoever reaches it can submit
a run. So the SuperLink listens on 127.0.0.1 only, and this gateway listens on
``[server] listen``.

Why this design (and not a byte-forwarding proxy, nginx or HAProxy):

- HTTP from the network is parsed by h11 (through uvicorn's protocol), a
  maintained, strict HTTP/1.1 implementation that Flower already ships: it
  refuses obs-folding, bare CR/LF, conflicting Content-Length/Transfer-Encoding
  framing and oversized heads. No byte from the network is ever written to the
  SuperLink: each allowed request (``POST /v1/fleet/<one of Flower's Fleet
  RPCs>`` or ``GET|HEAD /health``) is *re-originated* by httpx, another
  maintained implementation, with a request line, framing and headers that the
  gateway writes itself (a short list of Flower's own headers is copied by
  value). A request smuggled in a body stays a body: there is no byte stream
  for it to escape into.
- nginx or HAProxy would be equally sound terminators, but they are another
  service to package, configure and supervise for every architecture, and
  neither knows which board key the SuperLink refused (``on_node_refused``)
  without log scraping. uvicorn + h11 + httpx are already in the bundled
  runtime and need nothing beyond this module.
- h11 rather than httptools: it is pure Python (one behaviour on every board
  architecture), it is what httpx uses too, and Fleet traffic is a few
  requests per board per second: parsing cost is measured in bench/bench_gateway.py.

Limits (``[server]`` keys, edgefld.config.schema): connections at once; a head
must arrive within ``head_timeout`` (which also bounds the TLS handshake and a
connection that sends nothing); a body, and an answer to a slow reader, must
move at ``min_transfer_rate`` on average once ``transfer_grace`` has passed;
bodies are capped per RPC (``push-object`` carries model chunks of at most
5 MiB; every other RPC is small) and refused by Content-Length before a byte of
them is read. A body is read whole before its request goes upstream: a board
that vanishes mid-upload (power cut, killed daemon) then costs the gateway a
dropped buffer, where a forwarded half-body made the SuperLink log an ERROR
(``UnexpectedError:ClientDisconnect``) and held one of its connections for the
duration of the slow upload. Memory stays bounded by the limits, not by what
clients send: at most ``upstream_connections`` model-sized bodies are held at
once (a further one is not read until a slot frees: uvicorn pauses reading the
connection), each within its cap. ``upstream_connections`` also caps requests
in flight to the SuperLink (and so what it buffers). Running out of descriptors
refuses connections (asyncio pauses accepting for a second) and never ends the
daemon. Refusals are logged as one line per source per minute.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import json
import logging
import resource
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import h11
import httpx
from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

# Flower 1.42's Fleet RPCs (flwr/superlink/routers/fleet/router.py; pinned by a test).
FLEET_RPCS = frozenset({
    "register-node", "activate-node", "deactivate-node", "unregister-node", "send-node-heartbeat",
    "pull-messages", "push-messages", "get-run", "get-fab", "push-object", "pull-object",
    "confirm-message-received",
})
LARGE_BODY_RPCS = frozenset({"push-object"})  # model chunks; every other RPC carries metadata only
# Request headers a SuperNode sends that the SuperLink reads; copied by value, nothing else is.
COPIED_HEADERS = (b"content-type", b"accept", b"flwr-public-key", b"flwr-signature", b"flwr-timestamp")
ANSWER_HEADERS = (b"content-type", b"content-length", b"content-encoding")
NODE_DOOR = frozenset({"activate-node", "register-node"})
MAX_HEAD_BYTES = 16 * 1024  # h11's default; a SuperNode's head is well under 1 KiB
FD_RESERVE = 256  # descriptors kept for the daemon itself (SuperLink pipes, state, control calls)
REFUSAL_INTERVAL_S = 60.0
STOP_GRACE_S = 2.0  # what stop() waits for requests in flight to end
MAX_TRACKED_SOURCES = 1024
_CONNECTION = "edgefl.connection"  # scope key: the protocol serving the request

log = logging.getLogger("edgefl.fleet-gateway")
_http_log = logging.getLogger("edgefl.fleet-gateway.http")
# uvicorn warns once per malformed request; those are counted as refusals instead.
_http_log.addFilter(lambda record: record.levelno >= logging.ERROR)


@dataclass(frozen=True)
class GatewayLimits:
    max_connections: int = 4096
    head_timeout: float = 10.0
    idle_timeout: float = 15.0
    min_transfer_rate: int = 8192  # bytes/s, averaged from the start of a body or answer
    transfer_grace: float = 10.0
    max_object_bytes: int = 8 * 1024 * 1024
    max_request_bytes: int = 1024 * 1024
    upstream_connections: int = 16  # [server] upstream_connections

    def body_limit(self, rpc: str) -> int:
        return self.max_object_bytes if rpc in LARGE_BODY_RPCS else self.max_request_bytes

    @classmethod
    def from_server_config(cls, server: Any) -> GatewayLimits:
        return cls(max_connections=server.max_connections, head_timeout=server.head_timeout,
                   idle_timeout=server.idle_timeout, min_transfer_rate=server.min_transfer_rate,
                   transfer_grace=server.transfer_grace, max_object_bytes=server.max_object_mb * 1024 * 1024,
                   max_request_bytes=server.max_request_kb * 1024,
                   upstream_connections=server.upstream_connections)


@dataclass
class GatewayStats:
    forwarded: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, forwarded: int = 0, refused: int = 0) -> None:
        with self.lock:
            self.forwarded += forwarded
            self.refused += refused


class RefusalLog:
    """One line per source per interval: the first refusal at once, the rest summed up at the interval's end."""

    def __init__(self, interval: float = REFUSAL_INTERVAL_S, max_sources: int = MAX_TRACKED_SOURCES) -> None:
        self.interval = interval
        self.max_sources = max_sources
        self._pending: dict[str, dict[str, int]] = {}  # source -> reason -> count since its last line
        self._window_start: dict[str, float] = {}

    def record(self, source: str, reason: str) -> None:
        now = time.monotonic()
        if source not in self._window_start:
            if len(self._window_start) >= self.max_sources:
                source = "other sources"
            if source not in self._window_start:
                self._window_start[source] = now
                self._pending[source] = {}
                log.warning("refused %s: %s (more refusals from it are summed up every %.0f s)", source, reason,
                            self.interval)
                return
        reasons = self._pending[source]
        reasons[reason] = reasons.get(reason, 0) + 1

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        for source in list(self._window_start):
            if not force and now - self._window_start[source] < self.interval:
                continue
            reasons = self._pending.pop(source)
            started = self._window_start.pop(source)
            if reasons:
                total = sum(reasons.values())
                shown = ", ".join(f"{count} {reason}" for reason, count in
                                  sorted(reasons.items(), key=lambda item: -item[1])[:3])
                log.warning("refused %d more requests from %s in %.0f s (%s)", total, source,
                            now - started, shown)


class _SlowTransfer(Exception):
    pass


class _ClientGone(Exception):
    pass


def _node_key(header: bytes | None) -> bytes | None:
    if not header:
        return None
    try:
        return base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError):
        return None


class _Connection(H11Protocol):
    """uvicorn's h11 protocol with the limits uvicorn lacks: a connection cap and a deadline for each head."""

    def __init__(self, config: UvicornConfig, server_state: ServerState, gateway: FleetGateway) -> None:
        super().__init__(config, server_state, app_state={})
        self.gateway = gateway
        self.logger = _http_log
        self._head_timer: asyncio.TimerHandle | None = None

    @property
    def source(self) -> str:
        return str(self.client[0]) if self.client else "?"

    # uvicorn's own override narrows the transport likewise: a stream protocol is given an asyncio.Transport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.gateway.limits.max_connections:
            self.gateway.refuse_quietly(self.source, f"over {self.gateway.limits.max_connections} connections")
            transport.abort()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self._arm_head_timer()  # a head has begun (or bytes beyond one): it must end in time

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None:
            self._cancel_head_timer()
            # ASGI lets a server add its own scope keys; uvicorn's TypedDict lists only the specification's.
            self.cycle.scope[_CONNECTION] = self  # type: ignore[literal-required]

    def send_400_response(self, msg: str) -> None:
        self.gateway.refuse_quietly(self.source, "malformed HTTP")
        super().send_400_response(msg)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.gateway.limits.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None:  # never sent a complete request: idle, or a slow head
            self.gateway.refuse_quietly(self.source, f"no request head within {self.gateway.limits.head_timeout:g} s")
        self.transport.abort()

    def abort(self) -> None:
        if self.cycle is not None:
            self.cycle.disconnected = True  # uvicorn learns of the abort only on the next loop turn
        if not self.transport.is_closing():
            self.transport.abort()


class FleetGateway:
    """Runs in its own thread with its own event loop, beside the server daemon's main loop."""

    def __init__(self, listen_host: str, listen_port: int, upstream_host: str, upstream_port: int,
                 ssl_context: ssl.SSLContext | None = None, upstream_ssl: ssl.SSLContext | None = None,
                 on_node_refused: Callable[[str, int, bytes | None], None] | None = None,
                 limits: GatewayLimits | None = None, refusal_interval: float = REFUSAL_INTERVAL_S) -> None:
        self.listen = (listen_host, listen_port)
        self.upstream = (upstream_host, upstream_port)
        self.ssl_context = ssl_context
        self.upstream_ssl = upstream_ssl
        self.on_node_refused = on_node_refused  # (peer, HTTP status, the node's public key PEM or None)
        self.limits = _within_descriptors(limits or GatewayLimits())
        self.stats = GatewayStats()
        self.refusals = RefusalLog(refusal_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._state = ServerState()
        self._client: httpx.AsyncClient | None = None
        self._large_body_slots: asyncio.Semaphore | None = None  # model-sized bodies held at once

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-gateway", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and end the connections; waits at most ``timeout`` s (about 2 * STOP_GRACE_S)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass  # the loop already closed
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("fleet gateway: not stopped within %.0f s; leaving it to the process's exit", timeout)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(self._loop_problem)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._large_body_slots = asyncio.Semaphore(self.limits.upstream_connections)
        config = UvicornConfig(app=self._app, http="h11", ws="none", interface="asgi3", lifespan="off",
                               access_log=False, log_config=None, proxy_headers=False, server_header=False,
                               date_header=False,
                               timeout_keep_alive=max(1, int(self.limits.idle_timeout)),
                               h11_max_incomplete_event_size=MAX_HEAD_BYTES)
        config.load()
        scheme = "https" if self.upstream_ssl is not None else "http"
        self._client = httpx.AsyncClient(
            base_url=f"{scheme}://{self.upstream[0]}:{self.upstream[1]}", verify=self.upstream_ssl or False,
            trust_env=False, follow_redirects=False,
            limits=httpx.Limits(max_connections=self.limits.upstream_connections,
                                max_keepalive_connections=self.limits.upstream_connections),
            timeout=httpx.Timeout(connect=5.0, read=300.0, write=60.0, pool=60.0))
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: _Connection(config, self._state, self), self.listen[0], self.listen[1],
                ssl=self.ssl_context, reuse_address=True, backlog=1024,
                ssl_handshake_timeout=self.limits.head_timeout if self.ssl_context else None)
        except OSError as exc:
            self._error = exc
            self._started.set()
            await self._client.aclose()
            return
        self._started.set()
        flusher = asyncio.ensure_future(self._flush_refusals())
        await self._stop.wait()
        server.close()
        for connection in list(self._state.connections):
            # uvicorn types the set as any of its protocols; every one here is a _Connection (create_server above).
            cast(_Connection, connection).abort()
        flusher.cancel()
        tasks = [task for task in self._state.tasks]
        for task in tasks:
            task.cancel()
        # A request whose answer the SuperLink stopped sending in mid-body does not end on cancellation:
        # httpcore closes the stream shielded from it. Stopping does not wait for such a request
        # (STOP_GRACE_S), nor for the client's connections to close.
        await asyncio.wait([flusher, *tasks], timeout=STOP_GRACE_S)
        try:
            await asyncio.wait_for(self._client.aclose(), STOP_GRACE_S)
        except TimeoutError:
            log.debug("fleet gateway: upstream connections not closed within %s s", STOP_GRACE_S)
        self.refusals.flush(force=True)

    async def _flush_refusals(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.refusals.interval))
            self.refusals.flush()

    def _loop_problem(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio reports a failed accept (out of descriptors or memory) here: one line, no traceback."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self.refuse_quietly("new connections", f"out of resources ({errno.errorcode[exc.errno]}); "
                                                    "accepting again in 1 s")
            return
        log.warning("fleet gateway: %s%s", context.get("message"), f" ({exc!r})" if exc else "")

    def refuse_quietly(self, source: str, reason: str) -> None:
        self.stats.count(refused=1)
        self.refusals.record(source, reason)

    # --- the ASGI application ----------------------------------------------------------------
    async def _app(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            return
        connection: _Connection | None = scope.get(_CONNECTION)
        try:
            await self._serve(scope, receive, send, connection)
        except (_SlowTransfer, _ClientGone, OSError, MemoryError, TimeoutError, h11.LocalProtocolError,
                RuntimeError, httpx.HTTPError) as exc:
            # Whatever one connection did wrong ends that connection only; so does a SuperLink that stops
            # answering in mid-answer (httpx.HTTPError: it is restarting, or the daemon is stopping).
            log.debug("connection ended: %r", exc)
            if connection is not None:
                connection.abort()
        except asyncio.CancelledError:
            # stop() cancels the requests in flight: end them quietly (uvicorn would log a traceback for
            # each). A cancellation while not stopping is nobody's of ours: let it surface.
            if connection is not None:
                connection.abort()
            if self._stop is None or not self._stop.is_set():
                raise

    async def _serve(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any],
                     connection: _Connection | None) -> None:
        source = str(scope["client"][0]) if scope.get("client") else "?"
        method, raw_path = scope["method"], scope["raw_path"]
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, []).append(value)
        shown = f"{method} {raw_path[:80].decode('latin-1')!r}"
        rpc: str | None = None
        if scope["http_version"] != "1.1" or scope["query_string"]:
            pass
        elif method == "POST" and raw_path.startswith(b"/v1/fleet/"):
            name = raw_path[len(b"/v1/fleet/"):].decode("latin-1")
            rpc = name if name in FLEET_RPCS else None
        elif method in ("GET", "HEAD") and raw_path == b"/health":
            rpc = "health"
        if rpc is None:
            return await self._refuse(send, source, 403, f"{shown} is not the Fleet API")
        if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > MAX_HEAD_BYTES:
            return await self._refuse(send, source, 431, f"{shown} with a head over {MAX_HEAD_BYTES} bytes")
        if b"transfer-encoding" in headers:
            return await self._refuse(send, source, 411, f"{shown} with a chunked body (SuperNodes send lengths)")
        lengths = headers.get(b"content-length", [b"0"])
        length = int(lengths[0])  # h11 refused malformed and conflicting ones
        if rpc == "health" and length:
            return await self._refuse(send, source, 400, f"{shown} with a body")
        if length > self.limits.body_limit(rpc):
            return await self._refuse(send, source, 413, f"{shown} with a {length}-byte body (at most "
                                                         f"{self.limits.body_limit(rpc)})")
        forwarded = {"content-length": str(length), "x-forwarded-for": source}
        for name in COPIED_HEADERS:
            values = headers.get(name)
            if values is None:
                continue
            if len(values) > 1:
                return await self._refuse(send, source, 400, f"{shown} with {len(values)} {name.decode()} headers")
            forwarded[name.decode()] = values[0].decode("latin-1")
        if rpc == "health":
            forwarded.pop("content-length")
        assert self._client is not None and self._large_body_slots is not None
        # A model-sized body holds a slot from its first byte read until its answer is relayed (the
        # request, which keeps the body, lives as long as the answer).
        async with self._large_body_slots if rpc in LARGE_BODY_RPCS else contextlib.nullcontext():
            body = await self._body(receive, length) if length else None
            request = self._client.build_request(method, raw_path.decode("ascii"), headers=forwarded,
                                                 content=body)
            try:
                answer = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                self.refuse_quietly("the SuperLink", f"no answer ({type(exc).__name__})")
                return await self._answer_error(send, 502, "the SuperLink did not answer")
            self.stats.count(forwarded=1)
            try:
                await self._relay(answer, send, source, rpc, headers)
            finally:
                await answer.aclose()

    async def _relay(self, answer: httpx.Response, send: Callable[[Any], Any], source: str, rpc: str,
                     headers: dict[bytes, list[bytes]]) -> None:
        if rpc in NODE_DOOR and answer.status_code in (401, 412) and self.on_node_refused is not None:
            key = headers.get(b"flwr-public-key")
            self.on_node_refused(source, answer.status_code, _node_key(key[0] if key else None))
        out = [(name.lower(), value) for name, value in answer.headers.raw if name.lower() in ANSWER_HEADERS]
        await self._send_paced(send, {"type": "http.response.start", "status": answer.status_code,
                                      "headers": out}, 0, time.monotonic())
        started, sent = time.monotonic(), 0
        async for chunk in answer.aiter_raw():
            sent += len(chunk)
            await self._send_paced(send, {"type": "http.response.body", "body": chunk, "more_body": True},
                                   sent, started)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _deadline(self, moved: int, started: float) -> float:
        """Seconds left before ``moved`` bytes since ``started`` fall below the minimum average rate."""
        allowed = max(self.limits.transfer_grace, moved / self.limits.min_transfer_rate)
        return started + allowed - time.monotonic()

    async def _body(self, receive: Callable[[], Any], length: int) -> bytes:
        """The whole body, read at ``min_transfer_rate`` at least; exactly ``length`` bytes (h11 enforces it)."""
        started, received, chunks = time.monotonic(), 0, []
        while True:
            remaining = self._deadline(received, started)
            if remaining <= 0:
                raise _SlowTransfer("body slower than the minimum rate")
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise _SlowTransfer("body slower than the minimum rate") from None
            if message["type"] == "http.disconnect":
                raise _ClientGone("client left inside a body")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > length:
                raise _ClientGone("body longer than its Content-Length")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if received != length:
            raise _ClientGone("body shorter than its Content-Length")
        return b"".join(chunks)

    async def _send_paced(self, send: Callable[[Any], Any], message: dict[str, Any], sent: int,
                          started: float) -> None:
        try:
            await asyncio.wait_for(send(message), max(0.001, self._deadline(sent, started)))
        except TimeoutError:
            raise _SlowTransfer("client reads slower than the minimum rate") from None

    async def _refuse(self, send: Callable[[Any], Any], source: str, status: int, reason: str) -> None:
        self.refuse_quietly(source, reason)
        await self._answer_error(send, status, "only the Fleet API is served on this address" if status == 403
                                 else reason)

    @staticmethod
    async def _answer_error(send: Callable[[Any], Any], status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _within_descriptors(limits: GatewayLimits) -> GatewayLimits:
    """Raise this process's descriptor limit to its hard limit; keep max_connections within it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    budget = soft - FD_RESERVE - limits.upstream_connections
    if soft != resource.RLIM_INFINITY and limits.max_connections > budget:
        fitted = max(16, budget)
        log.warning("[server] max_connections = %d does not fit this process's %d file descriptors: serving at "
                    "most %d connections (raise LimitNOFILE)", limits.max_connections, soft, fitted)
        return replace(limits, max_connections=fitted)
    return limits

