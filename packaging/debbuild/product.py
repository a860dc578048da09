"""What edgefl's packages are: their names, what edgefl must carry, their descriptions, and
the inputs in the checkout that say so (edgefld's version, packaging/changelog, deb.toml,
backends.toml). check_deb.py checks built packages against the same facts."""

from __future__ import annotations

import re
import textwrap
import tomllib
from email.utils import parsedate_to_datetime

from debbuild.base import PACKAGING, REPO, BuildError, normalize_name
from debbuild.target import Arch

BACKEND_PACKAGE_PREFIX = "edgefl-backend-"  # + the backend's name: edgefl-backend-torch, ...
UNITS = ("edgefl-client.service", "edgefl-client@.service", "edgefl-server.service")
# Flower's commands, which edgefl starts next to its interpreter, and edgefl's own.
FLOWER_SCRIPTS = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                  "flwr-clientapp", "flwr")
EDGEFL_SCRIPTS = ("edgefl", *FLOWER_SCRIPTS)
# edgefl's dpkg trigger (DEBIAN/triggers): byte-compile the venv and try-restart running daemons,
# once per dpkg run, after every package that changed the venv is configured (edgefl.postinst
# "triggered"). Its own postinst activates it; every edgefl-backend-* activates it on unpack,
# configure and remove. noawait: a backend is usable before the daemons are restarted.
VENV_TRIGGER = "edgefl-venv-changed"


# --------------------------------------------------------------- versions and dates

def upstream_version() -> str:
    text = (REPO / "edgefld" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise BuildError("edgefld/__init__.py has no __version__")
    return match.group(1)


def read_changelog() -> str:
    return (PACKAGING / "changelog").read_text(encoding="utf-8")


def changelog_top(text: str) -> tuple[str, int]:
    """(version, unix time) of the newest entry of a Debian changelog."""
    head = re.match(r"(\S+) \(([^)]+)\) ", text)
    trailer = re.search(r"^ -- .+?<[^>]+>  (.+)$", text, re.M)
    if not head or not trailer:
        raise BuildError("packaging/changelog is not a Debian changelog")
    return head.group(2), int(parsedate_to_datetime(trailer.group(1)).timestamp())


def debian_version(upstream: str, revision: str) -> str:
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+~]*", upstream):
        raise BuildError(f"version {upstream!r} is not a valid Debian upstream version")
    if revision and not re.fullmatch(r"[A-Za-z0-9.+~]+", revision):
        raise BuildError(f"DEB_REVISION {revision!r} is not a valid Debian revision")
    return f"{upstream}-{revision}" if revision else upstream


# ------------------------------------------------------------------- configuration

def load_settings() -> dict:
    return tomllib.loads((PACKAGING / "deb.toml").read_text(encoding="utf-8"))


def load_backends(arch: Arch) -> dict[str, dict]:
    """Package name -> its backends.toml entry for ``arch``, in the file's order."""
    backends = tomllib.loads((PACKAGING / "backends.toml").read_text(encoding="utf-8"))
    found = {BACKEND_PACKAGE_PREFIX + name: per_arch[arch.deb]
             for name, per_arch in backends.items() if arch.deb in per_arch}
    if not found:
        raise BuildError(f"packaging/backends.toml has no backend for {arch.deb}")
    return found


def backend_roots(backends: dict[str, dict]) -> set[str]:
    from packaging.requirements import Requirement

    return {normalize_name(Requirement(r).name) for b in backends.values() for r in b["requirements"]}


def backend_find_links(backends: dict[str, dict]) -> list[str]:
    return [url for b in backends.values() for url in b.get("find_links", [])]


# -------------------------------------------------------------------- descriptions

def edgefl_description(backend_packages: list[str]) -> str:
    return checked_description(
        "federated learning appliance for Raspberry Pi and Jetson fleets\n"
        "edgefl runs a federated-learning client daemon on every board and a server\n"
        "daemon that drives the training rounds, on Flower's deployment runtime\n"
        "(SuperLink, SuperNode), configured by one file, /etc/edgefl.toml.\n"
        ".\n"
        "This package bundles Flower 1.42 and edgefl's other Python dependencies in a\n"
        "virtual environment under /opt/edgefl/venv for the system Python 3.11, and\n"
        "installs the systemd units edgefl-client, edgefl-client@ and edgefl-server\n"
        "(not enabled: set cid and server in /etc/edgefl.toml first).\n"
        ".\n"
        + textwrap.fill("No training framework is included: install one or more of "
                        + ", ".join(backend_packages) + ".", 78))


def backend_description(backend: dict) -> str:
    """A backend package's description, from its backends.toml entry (summary, description, note)."""
    paragraphs = (backend["description"].format(tasks=", ".join(backend["tasks"])), backend.get("note", ""))
    return checked_description(backend["summary"] + "\n" + "\n.\n".join(
        textwrap.fill(" ".join(text.split()), 78) for text in paragraphs if text))


def checked_description(text: str) -> str:
    if max(map(len, text.splitlines())) > 79:
        raise BuildError(f"a description line is longer than 79 characters: {text!r}")
    return text
