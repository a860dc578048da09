"""Bounded reads for the SuperNode's HTTP client: a hostile or broken server cannot exhaust a board.

Flower's SuperNode reads every answer whole with httpx, whose timeout applies to
each read only: an answer of 1 GiB, a body that never ends, or one byte every
few seconds (head or body) would grow the process or hang it. Here each
connection's socket reads are counted per request (a request starts at its
first write): more than ``max_reply_bytes`` in one answer, or an average below
``min_rate`` bytes/s once ``grace`` seconds have passed, fails the read with
httpx's own ReadError/ReadTimeout, which Flower's SuperNode retries with its
backoff. Each drop is named in one WARNING line on Flower's logger (Flower
itself logs only "Connection attempt failed"). The bound sits under httpx, on
httpcore's network stream, so it covers the head and the body alike and
nothing is buffered beyond it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import httpcore
import httpx

from edgefld.client.node_events import GRACE_ENV, MAX_REPLY_ENV, MIN_RATE_ENV

_log = logging.getLogger("flwr")  # the SuperNode's own log, which the client daemon relays
GRACE_S = 30.0  # Flower's own per-request timeout; a server under load may think this long ([client] read_grace)


class BoundedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, max_reply_bytes: int, min_rate: int, grace: float) -> None:
        self._inner = inner
        self._max = max_reply_bytes
        self._min_rate = min_rate
        self._grace = grace
        self._started = time.monotonic()
        self._received = 0
        self._writing = True

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not self._writing:  # a new request on this connection: its answer is counted afresh
            self._writing, self._received, self._started = True, 0, time.monotonic()
        self._inner.write(buffer, timeout)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._writing:
            self._writing, self._started = False, time.monotonic()
        allowed = max(self._grace, self._received / self._min_rate)
        remaining = self._started + allowed - time.monotonic()
        if remaining <= 0:
            raise self._dropped(httpcore.ReadTimeout(f"the server's answer is slower than {self._min_rate} bytes/s"))
        try:
            data = self._inner.read(max_bytes, remaining if timeout is None else min(timeout, remaining))
        except httpcore.ReadTimeout:
            raise self._dropped(
                httpcore.ReadTimeout(f"the server's answer is slower than {self._min_rate} bytes/s")) from None
        self._received += len(data)
        if self._received > self._max:
            raise self._dropped(httpcore.ReadError(f"the server's answer is larger than {self._max} bytes"))
        return data

    def _dropped(self, error: Exception) -> Exception:
        _log.warning("dropped an answer from the server after %.1f s and %d bytes: %s; retrying",
                     time.monotonic() - self._started, self._received, error)
        return error

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return BoundedStream(inner, self._max, self._min_rate, self._grace)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class BoundedBackend(httpcore.NetworkBackend):
    def __init__(self, max_reply_bytes: int, min_rate: int, grace: float = GRACE_S,
                 inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self.max_reply_bytes, self.min_rate, self.grace = max_reply_bytes, min_rate, grace

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return BoundedStream(stream, self.max_reply_bytes, self.min_rate, self.grace)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return BoundedStream(stream, self.max_reply_bytes, self.min_rate, self.grace)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def bound(client: httpx.Client, max_reply_bytes: int, min_rate: int, grace: float = GRACE_S) -> None:
    """Put the bounds under an httpx.Client's own transport (pinned httpx: tests/service/test_bounded_reads.py)."""
    # httpx offers no public handle on its transport's pool: an internal, pinned by that test.
    pool = client._transport._pool  # type: ignore[attr-defined]
    pool._network_backend = BoundedBackend(max_reply_bytes, min_rate, grace)


def bounds_from_environment() -> tuple[int, int, float] | None:
    """(max_reply_bytes, min_rate, grace) as the client daemon passed them; None: not started by it."""
    try:
        return (int(os.environ[MAX_REPLY_ENV]), int(os.environ[MIN_RATE_ENV]),
                float(os.environ.get(GRACE_ENV, GRACE_S)))
    except (KeyError, ValueError):
        return None
