"""When TLS and node authentication are on, the server's TLS context, and the client's probe.

"auto" means on unless the address is loopback: a server reachable from the
network never speaks plain HTTP and admits only enrolled boards by default.

The probe exists because a SuperNode alone makes some mistakes invisible: with
TLS off against a TLS server it retries forever without a word. So the client
daemon checks the server once before each SuperNode start and names the
problem: a CA that does not sign the server's certificate, a certificate that
does not name the address, or one side with TLS and the other without.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefld.config.schema import parse_host_port, shorten
from edgefld.errors import ConfigError

PROBE_TIMEOUT_S = 10.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _switch(value: Any, host: str) -> bool:
    return (not is_loopback(host)) if value == "auto" else bool(value)


@dataclass(frozen=True)
class ServerSecurity:
    tls: bool
    node_auth: bool

    def describe(self) -> str:
        if not self.tls:
            return "plain HTTP, no node authentication"
        return "TLS, " + ("enrolled boards only" if self.node_auth else "no node authentication")


def server_security(server: Any, source: str) -> ServerSecurity:
    """Decide [server] tls and node_auth; ConfigError (exit 78) on a combination that cannot work."""
    host, _ = parse_host_port(server.listen)
    tls = _switch(server.tls, host)
    node_auth = tls if server.node_auth == "auto" else bool(server.node_auth)
    if node_auth and not tls:
        raise ConfigError("needs TLS (a node key's signature could be replayed over plain HTTP): set [server] "
                          "tls = true, or node_auth = false", source=source, key="[server] node_auth")
    if tls:
        why = "tls = \"auto\" and listen is not a loopback address" if server.tls == "auto" else "tls = true"
        for name in ("tls_cert", "tls_key"):
            path = getattr(server, name)
            if not os.path.isfile(path):
                raise ConfigError(f"{path} does not exist; TLS is on ({why}): create it with `edgefl pki "
                                  "server-cert --host NAME_OR_IP` (README: Securing a fleet) or set tls = false",
                                  source=source, key=f"[server] {name}")
        check_server_files(server.tls_cert, server.tls_key, source)
    return ServerSecurity(tls, node_auth)


def check_server_files(cert_path: str, key_path: str, source: str) -> None:
    """A certificate that is not one, has expired, or is not the key's: exit 78 before anything starts."""
    from cryptography.hazmat.primitives import serialization

    from edgefld.pki import PkiError, load_certificates, validity_problem

    reissue = "issue a new one with `edgefl pki server-cert --host NAME_OR_IP --force`"
    try:
        cert = load_certificates(Path(cert_path).read_bytes(), cert_path)[0]
    except (PkiError, OSError) as exc:
        raise ConfigError(f"{getattr(exc, 'strerror', None) or exc}; {reissue}", source=source,
                          key="[server] tls_cert") from None
    problem = validity_problem(cert)
    if problem:
        raise ConfigError(f"{cert_path} {problem}; {reissue}", source=source, key="[server] tls_cert")
    try:
        key_pem = Path(key_path).read_bytes()
    except PermissionError:
        raise ConfigError(f"{key_path} is not readable by this user; it must belong to the service user (0600)",
                          source=source, key="[server] tls_key") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {key_path} ({exc.strerror or exc})", source=source,
                          key="[server] tls_key") from None
    try:
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key_path} is not a PEM private key ({shorten(str(exc), 80)}); {reissue}",
                          source=source, key="[server] tls_key") from None
    if key.public_key() != cert.public_key():
        raise ConfigError(f"{key_path} does not belong to {cert_path}; {reissue}", source=source,
                          key="[server] tls_key")


def server_context(cert: str, key: str, source: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except PermissionError:
        raise ConfigError(f"{key} is not readable by this user; it must belong to the service user (0600)",
                          source=source, key="[server] tls_key") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot use {cert} with {key}: {getattr(exc, 'reason', None) or exc}",
                          source=source, key="[server] tls_cert") from None
    return context


def client_tls(client: Any) -> bool:
    host, _ = parse_host_port(client.server)
    return _switch(client.tls, host)


def client_context(ca: str | None) -> ssl.SSLContext:
    """What Flower's SuperNode checks: the CA (or the system's), and that the certificate names the host."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class Probe:
    outcome: str  # "ok" | "unreachable" (may come back: let the SuperNode retry) | "mismatch" (configuration)
    message: str = ""


def probe_server(address: str, tls: bool, ca: str | None, timeout: float = PROBE_TIMEOUT_S) -> Probe:
    host, port = parse_host_port(address)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Probe("unreachable", f"{address} unreachable ({exc.strerror or exc})")
    with raw:
        if tls:
            return _probe_tls(raw, address, host, ca)
        return _probe_plain(raw, address)


def _probe_tls(raw: socket.socket, address: str, host: str, ca: str | None) -> Probe:
    trusted = f"[client] ca ({ca})" if ca else "the system's CAs ([client] ca is not set)"
    context = client_context(ca)
    try:
        with context.wrap_socket(raw, server_hostname=host):
            return Probe("ok")
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        if "mismatch" in reason.lower():
            return Probe("mismatch", f"TLS: the server's certificate at {address} does not name {host} ({reason}); "
                                     f"reissue it on the server with `edgefl pki server-cert --host {host}`")
        return Probe("mismatch", f"TLS: the server's certificate at {address} is not signed by {trusted} "
                                 f"({reason}); give this board the fleet's ca.crt (README: Securing a fleet)")
    except (TimeoutError, ssl.SSLError) as exc:
        # A plain-HTTP server waits for a request head that a TLS hello never completes: a timeout.
        reason = getattr(exc, "reason", None) or "no TLS answer"
        return Probe("mismatch", f"TLS handshake with {address} failed ({reason}): the server does not speak "
                                 "TLS; set [client] tls = false, or turn TLS on at the server")
    except OSError as exc:
        return Probe("unreachable", f"TLS handshake with {address} ended early ({exc.strerror or exc})")


def _probe_plain(raw: socket.socket, address: str) -> Probe:
    try:
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: edgefl\r\nConnection: close\r\n\r\n")
        reply = raw.recv(16)
    except TimeoutError:
        return Probe("unreachable", f"{address} did not answer within {raw.gettimeout():.0f} s")
    except ConnectionResetError:
        reply = b""  # a TLS server resets a connection that does not start with a hello
    except OSError as exc:
        return Probe("unreachable", f"{address} closed the connection ({exc.strerror or exc})")
    if reply.startswith(b"HTTP/"):
        return Probe("ok")
    return Probe("mismatch", f"{address} does not answer plain HTTP: the server has TLS on; set [client] tls = true "
                             "and ca to the fleet's ca.crt (README: Securing a fleet)")


def check_client_files(client: Any, key_path: str | None, source: str) -> None:
    """Missing or unreadable CA or key files are configuration errors, found before any connection."""
    for name, path in (("ca", client.ca), ("key", key_path)):
        if path is None:
            continue
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            hint = "`edgefl pki client-key`" if name == "key" else "copy the fleet's ca.crt here"
            raise ConfigError(f"{path} does not exist ({hint})", source=source, key=f"[client] {name}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path} ({exc.strerror or exc}); it must belong to the service user",
                              source=source, key=f"[client] {name}") from None
        if name == "ca":
            _check_ca_file(data, path, source)


def _check_ca_file(data: bytes, path: str, source: str) -> None:
    """The fleet's ca.crt must be a certificate still valid: otherwise every handshake fails, unexplained."""
    from edgefld.pki import PkiError, load_certificates, validity_problem

    fix = "copy the fleet's current ca.crt (`edgefl pki init-ca` on the server's machine) here"
    try:
        certificates = load_certificates(data, path)
    except PkiError as exc:
        raise ConfigError(f"{exc}; {fix}", source=source, key="[client] ca") from None
    problems = [validity_problem(cert) for cert in certificates]
    if all(problems):
        raise ConfigError(f"{path} {problems[0]}; {fix}", source=source, key="[client] ca")
