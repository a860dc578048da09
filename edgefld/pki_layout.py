"""Where the fleet's keys and certificates live and how long they last: the names the CLI's
help needs, kept apart from edgefld.pki so that building the parser (every `edgefl`
command, the man page build) does not import the cryptography package."""

DEFAULT_PKI_DIR = "/var/lib/edgefl/pki"
SERVICE_USER = "edgefl"  # the units' User= (packaging/sysusers.conf)
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
ENROLLED_DIR = "enrolled"
CA_DAYS, SERVER_DAYS = 3650, 825
