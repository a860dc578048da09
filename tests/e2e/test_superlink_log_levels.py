"""What Flower's SuperLink logs at ERROR, as edgefl runs it (edgefld.flower_entry).

A client that leaves inside a request body is the server daemon's own gateway dying or stopping:
expected, logged at INFO. An API error that is not expected stays an ERROR. Each case drives a real
SuperLink over HTTP on 127.0.0.1, so a Flower upgrade that changes the message's shape fails here.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request

import pytest

from edgefld.server.superlink import SuperLink

pytestmark = [pytest.mark.e2e]


def _lines(log_path, needle: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))  # Flower colours levels
        found = [line for line in text.splitlines() if needle in line]
        if found:
            return found
        time.sleep(0.1)
    return []


def test_a_client_leaving_inside_a_body_is_info_and_other_errors_stay_errors(tmp_path):
    log_path = tmp_path / "superlink.log"
    superlink = SuperLink(tmp_path / "link", log_path)
    try:
        superlink.start(timeout=120)
        host, port = superlink.address.split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: superlink\r\n"
                         b"Content-Type: application/protobuf\r\nContent-Length: 1000\r\n\r\n12345")
            time.sleep(0.5)
        left = _lines(log_path, "UnexpectedError:ClientDisconnect")
        # A body that is not a PullMessagesRequest: Flower's ApiError 1003, not one edgefl expects.
        request = urllib.request.Request(f"http://{superlink.address}/v1/fleet/pull-messages", data=b"\xff\xff\xff",
                                         headers={"Content-Type": "application/protobuf"}, method="POST")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=5)
        other = _lines(log_path, "[/v1/fleet/pull-messages][ApiError:1003]")
    finally:
        superlink.stop()
    assert left, log_path.read_text()[-2000:]
    assert all(re.search(r"\bINFO\b", line) and not re.search(r"\bERROR\b", line) for line in left), left
    assert other and all(re.search(r"\bERROR\b", line) for line in other), (other, log_path.read_text()[-2000:])
