"""Enrolled boards, kept in step with the SuperLink: the keys in [server] enrolled_keys are the admitted nodes.

With node authentication on, Flower's SuperLink admits only node keys registered with it
(through its Control API). An operator enrols a board by dropping its public key into the
directory (`edgefl enrol`) and revokes it by removing the key; the server daemon calls
``sync`` on every poll, and only a changed directory costs a question to the SuperLink.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgefld.logs import get_logger
from edgefld.pki import NodeKey, enrolled_keys, fingerprint_of_pem

if TYPE_CHECKING:
    from edgefld.server.control import NodeRecord

log = get_logger("server")

# The key directory's files as (name, size, mtime_ns), sorted, or why it could not be read.
Listing = list[tuple[str, int, int]] | str


class NodeRegistry(Protocol):
    """The SuperLink's registered node keys (edgefld.server.control.Control); ControlError when it cannot answer."""

    def nodes(self) -> list[NodeRecord]: ...

    def register_node(self, public_key_pem: bytes, name: str) -> int: ...

    def unregister_node(self, node_id: int) -> None: ...


class EnrolmentSync:
    def __init__(self, directory: Path, registry: NodeRegistry) -> None:
        self.directory = directory
        self.registry = registry
        self.enrolled: dict[bytes, NodeKey] = {}  # PEM -> key, as last registered with the SuperLink
        self._listing: Listing | None = None  # what the directory looked like at the last sync

    def sync(self) -> None:
        """Register new keys in the directory with the SuperLink, unregister removed ones."""
        from edgefld.server.control import ControlError

        listing = _listing(self.directory)
        if listing == self._listing:
            return
        keys, problems = enrolled_keys(self.directory)
        for problem in problems:
            log.warning("%s: not enrolled", problem)
        wanted = {key.pem: key for key in keys}
        try:
            nodes = self.registry.nodes()
            active = {node.public_key: node for node in nodes if node.status != "unregistered"}
            revoked = {node.public_key for node in nodes if node.status == "unregistered"}
            for pem, key in wanted.items():
                if pem in active:
                    continue
                if pem in revoked:
                    log.error("cannot admit %s (%s) again: Flower keeps a revoked key revoked; give that board a "
                              "new key (`edgefl pki client-key --force`) and enrol that", key.name, key.fingerprint)
                    continue
                node_id = self.registry.register_node(pem, key.name)
                log.info("admitted %s (%s) as node %d", key.name, key.fingerprint, node_id)
            for pem, node in active.items():
                if pem not in wanted:
                    self.registry.unregister_node(node.node_id)
                    log.warning("revoked %s (%s, node %d): its key is no longer in %s", node.name or "a board",
                                fingerprint_of_pem(pem), node.node_id, self.directory)
        except ControlError as exc:
            log.warning("enrolled keys not synchronised with the SuperLink yet: %s", exc)
            return  # the listing stays unseen: the next poll tries again
        self.enrolled = {pem: key for pem, key in wanted.items() if pem not in revoked}
        self._listing = listing

    def node_refused(self, peer: str, status: int, public_key: bytes | None) -> None:
        """Called from the Fleet gateway's thread when the SuperLink turns a board away at the door."""
        if status == 401:
            log.warning("refused %s: its node-key signature is invalid or its clock is off by more than 5 minutes "
                        "(boards need NTP)", peer)
        elif public_key is None:
            log.warning("refused a board without a node key at %s: node authentication is on; the board needs "
                        "[client] key (`edgefl pki client-key`), enrolled here with `edgefl enrol`", peer)
        elif public_key in self.enrolled:
            key = self.enrolled[public_key]
            log.info("%s (%s) at %s refused while its previous session is still open; it is admitted once that "
                     "expires (within a minute)", key.name, key.fingerprint, peer)
        else:
            try:
                shown = fingerprint_of_pem(public_key)
            except ValueError:
                shown = "an unreadable key"
            log.warning("refused node key %s from %s: it is not enrolled; to admit that board run `edgefl enrol "
                        "ITS_KEY.pub` on this server", shown, peer)


def _listing(directory: Path) -> Listing:
    """Changes when a key is added, replaced or removed."""
    try:
        with os.scandir(directory) as entries:
            return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    except OSError as exc:
        return f"unreadable: {exc}"
