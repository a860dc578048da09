"""`edgefl pki init-ca|server-cert|client-key` and `edgefl enrol`: TLS and node keys for a fleet."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgefld.cli.common import add_config_argument, bounded_int, load_from_args, nonempty_path
from edgefld.config.schema import is_host_name, key, shorten

MAX_DAYS = 36500  # a hundred years: beyond it a date no longer fits an X.509 validity period sensibly


def _host(text: str) -> str:
    """A name or address boards connect to; it goes into the certificate's subjectAltName."""
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not text or not is_host_name(text):
        raise argparse.ArgumentTypeError(f'"{shorten(text)}" is not an IP address or host name')
    return text


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edgefld.pki_layout import CA_DAYS, DEFAULT_PKI_DIR, SERVER_DAYS

    parser = subparsers.add_parser(
        "pki", help="create the fleet's CA, the server's TLS certificate and the boards' node keys",
        description=f"Files go to --dir (default: {DEFAULT_PKI_DIR}); private keys are written 0600 and, when run "
                    "as root, the ones the daemons read are given to the edgefl user. See README: Securing a fleet.",
    )
    commands = parser.add_subparsers(dest="pki_command", metavar="ACTION", required=True)

    init_ca = commands.add_parser("init-ca", help="create the fleet's CA (ca.crt, ca.key)")
    init_ca.add_argument("--name", default="edgefl fleet CA", help="the CA's common name")
    days = bounded_int(1, MAX_DAYS, "days")
    cid = key("client", "cid")
    assert cid.minimum is not None and cid.maximum is not None  # the schema bounds cid on both sides
    init_ca.add_argument("--days", type=days, default=CA_DAYS, help="validity (default: %(default)s)")
    init_ca.set_defaults(handler=run_init_ca)

    server_cert = commands.add_parser(
        "server-cert", help="issue the server's TLS certificate (server.crt, server.key) with the CA in --dir")
    server_cert.add_argument("--host", action="append", required=True, metavar="NAME_OR_IP", type=_host,
                             help="a name or address boards use for the server ([client] server); repeatable")
    server_cert.add_argument("--days", type=days, default=SERVER_DAYS, help="validity (default: %(default)s)")
    server_cert.set_defaults(handler=run_server_cert)

    client_key = commands.add_parser("client-key", help="create a board's node key (client-CID.key and .pub)")
    target = client_key.add_mutually_exclusive_group(required=True)
    target.add_argument("--cid", type=bounded_int(int(cid.minimum), int(cid.maximum)),
                        help="the board's client id: --dir/client-CID.key")
    target.add_argument("--out", metavar="PATH", type=nonempty_path,
                        help="write the key to PATH (and the public key beside it, .pub)")
    client_key.set_defaults(handler=run_client_key)

    for sub in (init_ca, server_cert, client_key):
        sub.add_argument("--dir", default=DEFAULT_PKI_DIR, type=nonempty_path,
                         help="where the files go (default: %(default)s)")
        sub.add_argument("--force", action="store_true", help="replace existing files")

    enrol = subparsers.add_parser(
        "enrol", help="admit a board: register its public key with this server",
        description="Copy a board's public key (from `edgefl pki client-key`) into [server] enrolled_keys; "
                    "a running server admits it within seconds.",
    )
    enrol.add_argument("public_key", metavar="PUBKEY", help="the board's .pub file")
    enrol.add_argument("--name", help="name it is enrolled under (default: the file's name, e.g. client-3)")
    enrol.add_argument("--force", action="store_true", help="replace another key enrolled under that name")
    add_config_argument(enrol)
    enrol.set_defaults(handler=run_enrol)


def run_init_ca(args: argparse.Namespace) -> int:
    from edgefld.pki import init_ca

    print(init_ca(Path(args.dir), args.name, args.days, args.force))
    return 0


def run_server_cert(args: argparse.Namespace) -> int:
    from edgefld.pki import make_server_cert

    print(make_server_cert(Path(args.dir), args.host, args.days, args.force))
    return 0


def run_client_key(args: argparse.Namespace) -> int:
    from edgefld.pki import make_client_key

    path = Path(args.out) if args.out else Path(args.dir) / f"client-{args.cid}.key"
    comment = f"edgefl-client-{args.cid}" if args.cid is not None else path.stem
    print(make_client_key(path, comment, args.force))
    return 0


def run_enrol(args: argparse.Namespace) -> int:
    from edgefld.pki import enrol

    directory = Path(load_from_args(args, optional=True).server.enrolled_keys)
    print(enrol(Path(args.public_key), args.name, directory, args.force))
    return 0
