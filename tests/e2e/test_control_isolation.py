"""Flower's unauthenticated Control API must not be reachable from the network.

A board (here: a network namespace of our own, joined to this host by a veth
pair) can reach the Fleet API on [server] listen, and nothing else: a Control
request through that address gets 403 from edgefl's gateway, and the SuperLink's
own port is bound to 127.0.0.1, so from the namespace nothing answers there.
The same holds over TLS (the default beyond loopback), where the gateway decrypts
and the SuperLink may speak its own loopback TLS behind it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.e2e.federation import descendants
from tests.e2e.netns import board_namespace as board_namespace_link
from tests.e2e.netns import can_make_namespaces

pytestmark = [pytest.mark.e2e]

HOST_IP, BOARD_IP = "10.213.77.1", "10.213.77.2"


@pytest.fixture
def board_namespace():
    if not can_make_namespaces():
        pytest.skip("needs root and iproute2 to create a network namespace")
    with board_namespace_link(f"edgefl-t{os.getpid()}", HOST_IP, BOARD_IP) as link:
        yield link.namespace


PROBE = textwrap.dedent("""
    import json, socket, ssl, sys, http.client
    host, port, superlink_port, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    out = {}
    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/runtime/get-nodes", "/docs",
                 "/v1/fleet/get-run"):
        if ca == "-":
            conn = http.client.HTTPConnection(host, port, timeout=10)
        else:
            conn = http.client.HTTPSConnection(host, port, timeout=10, context=ssl.create_default_context(cafile=ca))
        method = "GET" if path == "/docs" else "POST"
        conn.request(method, path, body=b"" if method == "POST" else None,
                     headers={"content-type": "application/protobuf"})
        response = conn.getresponse()
        out[path] = [response.status, response.read().decode("utf-8", "replace")[:200]]
        conn.close()
    try:
        socket.create_connection((host, superlink_port), timeout=5).close()
        out["superlink-port"] = "open"
    except OSError as exc:
        out["superlink-port"] = type(exc).__name__
    print(json.dumps(out))
""")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_control_api_refused_from_a_non_loopback_address(federation, board_namespace, tmp_path, tls):
    import json

    from edgefld.cli.main import main as edgefl_main

    ca = "-"
    security: dict = {"tls": False}
    if tls:  # the default beyond loopback: TLS and node authentication
        pki = tmp_path / "pki"
        assert edgefl_main(["pki", "init-ca", "--dir", str(pki)]) == 0
        assert edgefl_main(["pki", "server-cert", "--dir", str(pki), "--host", HOST_IP]) == 0
        ca, security = str(pki / "ca.crt"), {"tls_cert": str(pki / "server.crt"), "tls_key": str(pki / "server.key"),
                                              "enrolled_keys": str(pki / "enrolled")}
    fed = federation(listen_host=HOST_IP, task="digits", num_partitions=2, rounds=1, min_clients=2, **security)
    server = fed.start_server()
    fed.wait_for("the server to listen", lambda: "Fleet API only" in server.log(), timeout=120)
    assert ("TLS, enrolled boards only" if tls else "plain HTTP") in server.log()
    superlink = [open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0") for pid in descendants(server.process.pid)]
    superlink = [argv for argv in superlink if b"flower-superlink" in argv][0]
    superlink_port = int(superlink[superlink.index(b"--port") + 1])
    assert superlink[superlink.index(b"--host") + 1] == b"127.0.0.1"

    probe = subprocess.run(
        ["ip", "netns", "exec", board_namespace, sys.executable, "-c", PROBE, HOST_IP, str(fed.port),
         str(superlink_port), ca], capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(probe.stdout)
    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/runtime/get-nodes", "/docs"):
        assert seen[path][0] == 403, (path, seen[path])
        assert "only the Fleet API" in seen[path][1]
    # The Fleet API itself is served (Flower answers the empty request itself, not the gateway's 403).
    assert seen["/v1/fleet/get-run"][0] != 403, seen
    assert seen["superlink-port"] == "ConnectionRefusedError"
    assert "refused 10.213.77.2: POST '/v1/control/list-runs' is not the Fleet API" in server.log()
