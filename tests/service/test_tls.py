"""edgefld.tls: when TLS and node authentication are on, and what the client's probe reports."""

from __future__ import annotations

import socket
import ssl
import threading
from types import SimpleNamespace

import pytest

from edgefld import pki
from edgefld.errors import ConfigError
from edgefld.tls import client_tls, probe_server, server_context, server_security


def _server(tmp_path, **values):
    defaults = dict(listen="0.0.0.0:9092", tls="auto", node_auth="auto", tls_cert=str(tmp_path / "server.crt"),
                    tls_key=str(tmp_path / "server.key"))
    return SimpleNamespace(**dict(defaults, **values))


@pytest.fixture
def certs(tmp_path):
    ca_key, ca_cert = pki.create_ca("test CA")
    key, cert = pki.issue_server_cert(ca_key, ca_cert, ["127.0.0.1", "localhost"])
    (tmp_path / "ca.crt").write_bytes(ca_cert)
    (tmp_path / "server.crt").write_bytes(cert)
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "other-ca.crt").write_bytes(pki.create_ca("another CA")[1])
    return tmp_path


@pytest.mark.parametrize("listen, tls, node_auth, expected", [
    ("0.0.0.0:9092", "auto", "auto", (True, True)),
    ("192.168.1.10:9092", "auto", False, (True, False)),
    ("127.0.0.1:9092", "auto", "auto", (False, False)),
    ("[::1]:9092", "auto", "auto", (False, False)),
    ("localhost:9092", True, "auto", (True, True)),
    ("0.0.0.0:9092", False, "auto", (False, False)),
])
def test_server_switches(certs, listen, tls, node_auth, expected):
    security = server_security(_server(certs, listen=listen, tls=tls, node_auth=node_auth), "edgefl.toml")
    assert (security.tls, security.node_auth) == expected


def test_node_auth_without_tls_is_a_config_error(certs):
    with pytest.raises(ConfigError, match=r"\[server\] node_auth: needs TLS") as caught:
        server_security(_server(certs, tls=False, node_auth=True), "edgefl.toml")
    assert caught.value.exit_code == 78


def test_missing_certificate_says_why_tls_is_on_and_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError) as caught:
        server_security(_server(tmp_path), "/etc/edgefl.toml")
    assert str(caught.value) == (
        f"/etc/edgefl.toml: [server] tls_cert: {tmp_path / 'server.crt'} does not exist; TLS is on (tls = \"auto\" "
        "and listen is not a loopback address): create it with `edgefl pki server-cert --host NAME_OR_IP` "
        "(README: Securing a fleet) or set tls = false")


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(certs):
    (certs / "server.key").write_bytes(pki.create_ca("x")[0])
    with pytest.raises(ConfigError, match=r"\[server\] tls_cert: cannot use"):
        server_context(str(certs / "server.crt"), str(certs / "server.key"), "edgefl.toml")


def test_client_switch():
    assert client_tls(SimpleNamespace(server="192.168.1.10:9092", tls="auto"))
    assert not client_tls(SimpleNamespace(server="127.0.0.1:9092", tls="auto"))
    assert client_tls(SimpleNamespace(server="127.0.0.1:9092", tls=True))


@pytest.fixture
def listener():
    """One-connection servers on 127.0.0.1: with TLS (a context) or answering plain HTTP (None)."""
    sockets = []

    def serve(context: ssl.SSLContext | None, answer: bool = True) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        sockets.append(server)

        def accept():
            conn, _ = server.accept()
            try:
                if context is not None:
                    conn = context.wrap_socket(conn, server_side=True)
                elif answer:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                else:
                    conn.recv(1024)  # a plain server waiting for the rest of a head that never comes
                    threading.Event().wait(3)
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

        threading.Thread(target=accept, daemon=True).start()
        return server.getsockname()[1]

    yield serve
    for server in sockets:
        server.close()


def test_probe_accepts_the_right_ca(certs, listener):
    port = listener(server_context(str(certs / "server.crt"), str(certs / "server.key"), "x"))
    assert probe_server(f"127.0.0.1:{port}", True, str(certs / "ca.crt")).outcome == "ok"


def test_probe_names_a_wrong_ca(certs, listener):
    port = listener(server_context(str(certs / "server.crt"), str(certs / "server.key"), "x"))
    probe = probe_server(f"127.0.0.1:{port}", True, str(certs / "other-ca.crt"))
    assert probe.outcome == "mismatch"
    assert probe.message == (f"TLS: the server's certificate at 127.0.0.1:{port} is not signed by [client] ca "
                             f"({certs / 'other-ca.crt'}) (unable to get local issuer certificate); give this board "
                             "the fleet's ca.crt (README: Securing a fleet)")


def test_probe_names_a_certificate_for_another_host(tmp_path, listener):
    ca_key, ca_cert = pki.create_ca("test CA")
    key, cert = pki.issue_server_cert(ca_key, ca_cert, ["server.lan"])
    for name, data in (("ca.crt", ca_cert), ("s.crt", cert), ("s.key", key)):
        (tmp_path / name).write_bytes(data)
    port = listener(server_context(str(tmp_path / "s.crt"), str(tmp_path / "s.key"), "x"))
    probe = probe_server(f"127.0.0.1:{port}", True, str(tmp_path / "ca.crt"))
    assert probe.outcome == "mismatch" and "does not name 127.0.0.1" in probe.message
    assert "`edgefl pki server-cert --host 127.0.0.1`" in probe.message


def test_probe_names_tls_on_one_side_only(certs, listener):
    port = listener(server_context(str(certs / "server.crt"), str(certs / "server.key"), "x"))
    assert "the server has TLS on" in probe_server(f"127.0.0.1:{port}", False, None).message
    port = listener(None, answer=False)
    probe = probe_server(f"127.0.0.1:{port}", True, str(certs / "ca.crt"), timeout=1.0)
    assert probe.outcome == "mismatch" and "the server does not speak TLS" in probe.message
    port = listener(None)
    assert probe_server(f"127.0.0.1:{port}", False, None).outcome == "ok"


def test_probe_leaves_an_unreachable_server_to_the_supernode():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    assert probe_server(f"127.0.0.1:{port}", True, None).outcome == "unreachable"
