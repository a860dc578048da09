"""The fleet's keys and certificates: a CA, the server's TLS certificate, one key per board.

    CA (ca.crt, ca.key)  --signs-->  server.crt (+ server.key): TLS on the Fleet API
    board: client-N.key (+ client-N.pub)  --`edgefl enrol` on the server-->  enrolled/*.pub

TLS is one-way (Flower 1.42 has no client certificates): boards check the server
with ca.crt, and the server knows boards by their node keys, EC keys in OpenSSH
format as Flower's SuperNode authentication expects. Private keys are written
0600 and atomically; run as root, the keys the daemons read are handed to the
units' user. Nothing here logs key material: only paths and public fingerprints.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefld.errors import EdgeflError, StateWriteError
from edgefld.persist import atomic_write_bytes
from edgefld.pki_layout import (  # noqa: F401  (re-exported: the names belong to this module's API)
    CA_CERT,
    CA_DAYS,
    CA_KEY,
    DEFAULT_PKI_DIR,
    ENROLLED_DIR,
    SERVER_CERT,
    SERVER_DAYS,
    SERVER_KEY,
    SERVICE_USER,
)

_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PkiError(EdgeflError):
    pass


@dataclass(frozen=True)
class NodeKey:
    """An enrolled board's public key."""

    name: str
    path: Path
    pem: bytes  # SubjectPublicKeyInfo PEM: the bytes Flower's SuperLink registers
    fingerprint: str  # "SHA256:..." as `ssh-keygen -lf` shows it


# --- files ------------------------------------------------------------------------------
def write_private(path: Path, data: bytes, *, service_owned: bool) -> None:
    """0600 from the first byte on (mkstemp), renamed into place; the service's keys go to its user."""
    atomic_write_bytes(path, data, mode=0o600)
    if service_owned:
        hand_to_service_user(path)


def write_public(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, mode=0o644)
    hand_to_service_user(path)


def make_dir(path: Path, mode: int = 0o750) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as exc:
        raise StateWriteError(f"cannot create {path}: {exc.strerror or exc}") from None
    hand_to_service_user(path)


def hand_to_service_user(path: Path) -> None:
    """Run as root where the units' user exists: give it the file (the daemons run as that user)."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return
    os.chown(path, user.pw_uid, user.pw_gid)


def refuse_overwrite(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise PkiError(f"{path} already exists; pass --force to replace it (whatever relies on the old "
                           "one stops working)")


def _load(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


# --- the CA and the server certificate --------------------------------------------------------
def load_certificates(data: bytes, path: Path | str) -> list[x509.Certificate]:
    """The PEM certificates in a file (a CA file may hold several); PkiError when there is none."""
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise PkiError(f"{path} is not a PEM certificate")
    return certificates


def validity_problem(certificate: x509.Certificate) -> str | None:
    """"expired on DATE" or "is not valid before DATE" (the board's clock may be wrong), or None."""
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now:
        return f"expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
    if certificate.not_valid_before_utc > now:
        return (f"is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this machine's "
                "clock right?)")
    return None


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefl"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(common_name: str, days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """A new CA: (private key PEM, certificate PEM)."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return _private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def issue_server_cert(ca_key_pem: bytes, ca_cert_pem: bytes, hosts: list[str],
                      days: int = SERVER_DAYS, ca_name: str = "the CA certificate") -> tuple[bytes, bytes]:
    """A server key and a certificate for ``hosts`` (names and IP addresses boards connect to)."""
    try:
        ca_key = serialization.load_pem_private_key(ca_key_pem, None)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"the CA's key or certificate cannot be read: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_key.public_key() != ca_cert.public_key():
        raise PkiError("the CA's key does not belong to its certificate")
    problem = validity_problem(ca_cert)
    if problem:
        # Boards would reject whatever it signs: say so now, not at the first TLS handshake.
        raise PkiError(f"{ca_name} {problem}; create a new CA with `edgefl pki init-ca --force` and give every "
                       "board its ca.crt")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return _private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_ca(directory: Path) -> tuple[bytes, bytes]:
    return _load(directory / CA_KEY, "the CA key"), _load(directory / CA_CERT, "the CA certificate")


# --- node keys ------------------------------------------------------------------------------
def create_node_key(comment: str) -> tuple[bytes, bytes]:
    """A board's key for Flower's SuperNode authentication: (OpenSSH private, OpenSSH public line)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b" " + comment.encode() + b"\n"


def read_node_public_key(path: Path) -> NodeKey:
    """An OpenSSH public key line (what `edgefl pki client-key` writes to .pub), checked as Flower does."""
    text = _load(path, "the public key")
    try:
        key = serialization.load_ssh_public_key(text.strip())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{path} is not an OpenSSH public key ({exc}); give the .pub file that "
                       "`edgefl pki client-key` wrote") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
            "secp256r1", "secp384r1", "secp521r1"):
        raise PkiError(f"{path} is not an ECDSA P-256/384/521 key, which Flower's node authentication needs")
    return NodeKey(name=path.stem, path=path, fingerprint=fingerprint(key),
                   pem=key.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo))


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    blob = base64.b64decode(key.public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def fingerprint_of_pem(pem: bytes) -> str:
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return fingerprint(key)


def check_node_name(name: str) -> str:
    if not _NODE_NAME.match(name):
        raise PkiError(f'node name "{name}" must be 1-64 letters, digits, ".", "_" or "-" (not first)')
    return name


def enrolled_keys(directory: Path) -> tuple[list[NodeKey], list[str]]:
    """The enrolled public keys (``NAME.pub``), and one problem line per file that is not one."""
    keys, problems = [], []
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix == ".pub")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"cannot read the enrolled keys in {directory}: {exc.strerror or exc}"]
    for path in paths:
        try:
            keys.append(read_node_public_key(path))
        except PkiError as exc:
            problems.append(str(exc))
    return keys, problems


# --- what the `edgefl pki` and `edgefl enrol` commands do ---------------------------------------
def init_ca(directory: Path, common_name: str, days: int, force: bool) -> str:
    key_path, cert_path = directory / CA_KEY, directory / CA_CERT
    if not force:
        refuse_overwrite(key_path, cert_path)
    make_dir(directory)
    key, cert = create_ca(common_name, days)
    # The CA key stays with whoever runs this (root, or an admin on an offline machine): the
    # daemons never need it, and a compromised service must not be able to mint certificates.
    write_private(key_path, key, service_owned=False)
    write_public(cert_path, cert)
    return (f"CA certificate {cert_path} (copy it to every board: [client] ca), key {key_path} (0600; keep it "
            f"safe, offline if you can). Next: `edgefl pki server-cert --host NAME_OR_IP`")


def make_server_cert(directory: Path, hosts: list[str], days: int, force: bool) -> str:
    key_path, cert_path = directory / SERVER_KEY, directory / SERVER_CERT
    if not force:
        refuse_overwrite(key_path, cert_path)
    ca_key, ca_cert = load_ca(directory)
    make_dir(directory)
    key, cert = issue_server_cert(ca_key, ca_cert, hosts, days, ca_name=f"the CA certificate {directory / CA_CERT}")
    write_private(key_path, key, service_owned=True)
    write_public(cert_path, cert)
    return (f"server certificate {cert_path} for {', '.join(hosts)}, key {key_path} (0600); the server "
            f"reads them as [server] tls_cert and tls_key")


def make_client_key(private_path: Path, comment: str, force: bool) -> str:
    public_path = private_path.with_name(private_path.name.removesuffix(".key") + ".pub")
    if not force:
        refuse_overwrite(private_path, public_path)
    make_dir(private_path.parent)
    private, public = create_node_key(comment)
    write_private(private_path, private, service_owned=True)
    write_public(public_path, public)
    node = read_node_public_key(public_path)
    return (f"node key {private_path} (0600; set [client] key to it), public key {public_path} ({node.fingerprint}). "
            f"Next: copy {public_path.name} to the server and run `edgefl enrol {public_path.name}` there")


def enrol(public_path: Path, name: str | None, directory: Path, force: bool) -> str:
    node = read_node_public_key(public_path)
    name = check_node_name(name or node.name)
    target = directory / f"{name}.pub"
    current, _ = enrolled_keys(directory)
    for other in current:
        if other.pem == node.pem and other.name != name:
            raise PkiError(f"this key ({node.fingerprint}) is already enrolled as {other.name} ({other.path})")
        if other.name == name and other.pem != node.pem and not force:
            raise PkiError(f"another key ({other.fingerprint}) is enrolled as {name}; pass --force to replace "
                           "it (that board is then refused) or choose another --name")
    make_dir(directory)
    write_public(target, public_path.read_bytes())
    return (f"enrolled {name} ({node.fingerprint}) as {target}; a running edgefl server admits it within "
            "seconds (delete the file to revoke it)")


def node_key_fingerprint(private_path: Path) -> str:
    """The public fingerprint of a board's node key (what the server's log shows for it)."""
    try:
        key = serialization.load_ssh_private_key(_load(private_path, "the node key"), None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PkiError(f"{private_path} is not an OpenSSH EC private key (create one with `edgefl pki client-key`)") \
            from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{private_path} is not an EC key, which Flower's node authentication needs")
    return fingerprint(key.public_key())
