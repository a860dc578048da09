"""The only door from the network into the server: Flower's Fleet API, and nothing else.

Flower 1.42's SuperLink serves the Fleet, Control and Runtime APIs on one HTTP
port, and its Control API has no authentication: whoever reaches it can submit
a run, i.e. make every board in the fleet execute what it is told. So the
SuperLink listens on 127.0.0.1 only, and this proxy listens on ``[server]
listen`` and forwards exactly what a SuperNode sends (``POST /v1/fleet/<rpc>``)
plus ``/health``; everything else gets 403 without ever reaching the SuperLink.

HTTP/1.1 with keep-alive, one upstream connection per client connection;
requests must carry Content-Length bodies (SuperNodes never send chunked ones).
TLS, when configured, terminates here; the SuperLink behind may speak its own
loopback TLS (``upstream_ssl``). A board the SuperLink refuses at the door (node
authentication) is reported to ``on_node_refused``, so the server's own log
says which key was refused and why, not only Flower's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import ssl
import threading
from dataclasses import dataclass, field
from typing import Callable

ALLOWED_REQUEST = re.compile(rb"^(POST /v1/fleet/[a-z0-9-]+|GET /health|HEAD /health) HTTP/1\.1$")
MAX_HEAD_BYTES = 64 * 1024
# Flower sends models in chunks of at most 5 MiB (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE); leave room.
MAX_BODY_BYTES = 64 * 1024 * 1024
IDLE_TIMEOUT_S = 120.0  # SuperNodes heartbeat every 30 s; a silent connection beyond this is dead
# Where a SuperNode shows its node key; the SuperLink answers 412 to an unknown or still-active
# key and to a node without one, 401 to a bad signature or a clock too far off.
NODE_DOOR = re.compile(rb"^POST /v1/fleet/(activate-node|register-node) ")
NODE_KEY_HEADER = b"flwr-public-key"
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
              b"transfer-encoding"}

log = logging.getLogger("edgefl.fleet-proxy")


class _Refused(Exception):
    pass


def _forbidden() -> bytes:
    body = b'{"detail":"only the Fleet API is served on this address"}'
    return (b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


_HEADER_NAME = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")
# Headers that decide where one request ends and the next begins, or where it goes: a second
# copy is how a request is smuggled past a proxy to the server behind it.
_SINGLE = (b"content-length", b"transfer-encoding", b"host")


async def _read_head(reader: asyncio.StreamReader, timeout: float, *,
                     strict: bool) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """Read one head; with ``strict`` (requests from the network) refuse anything ambiguous.

    The SuperLink's HTTP parser must never see a different request boundary than this
    proxy did, so bare LF or CR, obs-folding, malformed names and repeated framing headers
    are refused rather than normalised.
    """
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError("connection closed inside a head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _Refused("head too large") from None
    lines = head[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if strict and (not colon or not _HEADER_NAME.match(name) or not _HEADER_VALUE.match(value)):
            raise _Refused("malformed header line")
        headers.append((name.strip().lower(), value.strip()))
    if strict:
        if b"\n" in lines[0] or b"\r" in lines[0]:
            raise _Refused("malformed request line")
        names = [name for name, _ in headers]
        if any(names.count(single) > 1 for single in _SINGLE):
            raise _Refused("repeated framing header")
    return lines[0], headers


async def _copy_exact(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    while size:
        chunk = await reader.read(min(size, 1 << 16))
        if not chunk:
            raise ConnectionError("connection closed inside a body")
        writer.write(chunk)
        size -= len(chunk)
    await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        writer.write(size_line)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(trailer)
            writer.write(b"\r\n")
            await writer.drain()
            return
        await _copy_exact(reader, writer, size + 2)


def _node_key(header: bytes | None) -> bytes | None:
    if not header:
        return None
    try:
        return base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass
class ProxyStats:
    forwarded: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class FleetProxy:
    """Runs in its own thread with its own event loop, beside the server daemon's main loop."""

    def __init__(self, listen_host: str, listen_port: int, upstream_host: str, upstream_port: int,
                 ssl_context: ssl.SSLContext | None = None, upstream_ssl: ssl.SSLContext | None = None,
                 on_node_refused: Callable[[str, int, bytes | None], None] | None = None) -> None:
        self.listen = (listen_host, listen_port)
        self.upstream = (upstream_host, upstream_port)
        self.ssl_context = ssl_context
        self.upstream_ssl = upstream_ssl
        self.on_node_refused = on_node_refused  # (peer, HTTP status, the node's public key PEM or None)
        self.stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-proxy", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(
                self._handle, self.listen[0], self.listen[1], ssl=self.ssl_context, limit=MAX_HEAD_BYTES,
                reuse_address=True))
        except OSError as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        # Stop accepting, then end the open connections before the loop goes away.
        self._server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _refuse(self, writer: asyncio.StreamWriter, peer_host: str, what: str) -> None:
        with self.stats.lock:
            self.stats.refused += 1
        log.warning("refused %s: %s", peer_host, what)
        writer.write(_forbidden())
        await writer.drain()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        peer = client_writer.get_extra_info("peername")
        peer_host = str(peer[0]) if peer else "?"
        up_reader = up_writer = None
        try:
            while True:
                try:
                    request = await _read_head(client_reader, IDLE_TIMEOUT_S, strict=True)
                except _Refused as exc:
                    await self._refuse(client_writer, peer_host, str(exc))
                    return
                if request is None:
                    return
                request_line, headers = request
                header_map = dict(headers)
                length = header_map.get(b"content-length", b"0")
                if (not ALLOWED_REQUEST.match(request_line) or b"transfer-encoding" in header_map
                        or b"upgrade" in header_map or not length.isdigit() or int(length) > MAX_BODY_BYTES):
                    await self._refuse(client_writer, peer_host, repr(request_line[:100].decode("latin-1")))
                    return
                # Headers the client named in Connection: are hop-by-hop too (RFC 9110 7.6.1).
                named = {n.strip().lower() for n in header_map.get(b"connection", b"").split(b",")}
                if up_writer is None:
                    up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=MAX_HEAD_BYTES,
                                                                         ssl=self.upstream_ssl)
                forwarded = [request_line] + [k + b": " + v for k, v in headers
                                              if k not in HOP_BY_HOP and k not in named and k != b"x-forwarded-for"]
                forwarded.append(b"x-forwarded-for: " + peer_host.encode())
                up_writer.write(b"\r\n".join(forwarded) + b"\r\n\r\n")
                await _copy_exact(client_reader, up_writer, int(length))
                with self.stats.lock:
                    self.stats.forwarded += 1
                response = await _read_head(up_reader, 300.0, strict=False)
                if response is None:
                    raise ConnectionError("the SuperLink closed the connection")
                status_line, response_headers = response
                response_map = dict(response_headers)
                client_writer.write(b"\r\n".join(
                    [status_line] + [k + b": " + v for k, v in response_headers if k not in HOP_BY_HOP
                                     or k == b"transfer-encoding"]) + b"\r\n\r\n")
                status = int(status_line.split(b" ")[1])
                if status in (401, 412) and NODE_DOOR.match(request_line) and self.on_node_refused is not None:
                    self.on_node_refused(peer_host, status, _node_key(header_map.get(NODE_KEY_HEADER)))
                if request_line.startswith(b"HEAD ") or status in (204, 304) or 100 <= status < 200:
                    pass
                elif b"chunked" in response_map.get(b"transfer-encoding", b"").lower():
                    await _copy_chunked(up_reader, client_writer)
                else:
                    await _copy_exact(up_reader, client_writer, int(response_map.get(b"content-length", b"0")))
                if b"close" in (response_map.get(b"connection", b"").lower(), header_map.get(b"connection", b"").lower()):
                    return
        except (_Refused, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                ssl.SSLError, OSError) as exc:
            log.debug("connection from %s ended: %s", peer_host, exc)
        except asyncio.CancelledError:
            pass  # the proxy is stopping; end the connection quietly
        finally:
            for writer in (client_writer, up_writer):
                if writer is not None:
                    writer.close()
