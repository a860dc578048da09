"""edgefld.server.enrolment: the key directory is what the SuperLink admits, without starting Flower.

``NodeTable`` stands in for the SuperLink's registered node keys as
edgefld.server.control.Control reports them (the real one: tests/e2e/test_security.py).
"""

from __future__ import annotations

import logging

from edgefld.pki import create_node_key, read_node_public_key
from edgefld.server.control import ControlError, NodeRecord
from edgefld.server.enrolment import EnrolmentSync


class NodeTable:
    def __init__(self) -> None:
        self.table: dict[bytes, NodeRecord] = {}
        self.questions = 0
        self.unreachable = False

    def nodes(self) -> list[NodeRecord]:
        self.questions += 1
        if self.unreachable:
            raise ControlError("ListNodes failed: SuperLink unreachable")
        return list(self.table.values())

    def register_node(self, public_key_pem: bytes, name: str) -> int:
        node_id = 100 + len(self.table)
        self.table[public_key_pem] = NodeRecord(node_id, public_key_pem, name, "registered")
        return node_id

    def unregister_node(self, node_id: int) -> None:
        for pem, node in self.table.items():
            if node.node_id == node_id:  # Flower keeps a revoked key, revoked
                self.table[pem] = NodeRecord(node_id, pem, node.name, "unregistered")


def _enrol(directory, name: str) -> bytes:
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.pub").write_bytes(create_node_key(name)[1])
    return read_node_public_key(directory / f"{name}.pub").pem


def test_keys_added_and_removed_are_admitted_and_revoked(tmp_path, caplog):
    keys = tmp_path / "enrolled"
    table = NodeTable()
    sync = EnrolmentSync(keys, table)
    first, second = _enrol(keys, "pi-1"), _enrol(keys, "pi-2")
    with caplog.at_level(logging.INFO, logger="edgefl.server"):
        sync.sync()
        assert set(sync.enrolled) == {first, second} and {n.status for n in table.table.values()} == {"registered"}
        sync.sync()
        assert table.questions == 1  # an unchanged directory costs the SuperLink nothing
        (keys / "pi-2.pub").unlink()
        sync.sync()
        assert table.table[second].status == "unregistered" and set(sync.enrolled) == {first}
        (keys / "pi-3.pub").write_text("not a key\n")
        sync.sync()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("admitted pi-1 (SHA256:") and messages[0].endswith(") as node 100")
    assert messages[2].startswith("revoked pi-2 (SHA256:") and messages[2].endswith(f"node 101): its key is no "
                                                                                    f"longer in {keys}")
    assert messages[3].startswith(f"{keys / 'pi-3.pub'} is not an OpenSSH public key") and messages[3].endswith(
        ": not enrolled")


def test_a_superlink_that_cannot_answer_is_asked_again_at_the_next_poll(tmp_path, caplog):
    keys = tmp_path / "enrolled"
    table = NodeTable()
    table.unreachable = True
    sync = EnrolmentSync(keys, table)
    pem = _enrol(keys, "jetson")
    sync.sync()
    assert sync.enrolled == {} and caplog.records[-1].getMessage() == (
        "enrolled keys not synchronised with the SuperLink yet: ListNodes failed: SuperLink unreachable")
    table.unreachable = False
    sync.sync()
    assert set(sync.enrolled) == {pem} and pem in table.table


def test_a_refused_board_is_named_for_what_it_lacks(tmp_path, caplog):
    keys = tmp_path / "enrolled"
    sync = EnrolmentSync(keys, NodeTable())
    pem = _enrol(keys, "pi-1")
    sync.sync()
    stranger = read_node_public_key(_write(tmp_path / "stranger.pub", create_node_key("x")[1])).pem
    with caplog.at_level(logging.INFO, logger="edgefl.server"):
        sync.node_refused("10.0.0.5:4000", 412, pem)
        sync.node_refused("10.0.0.6:4000", 412, stranger)
        sync.node_refused("10.0.0.7:4000", 412, None)
        sync.node_refused("10.0.0.8:4000", 401, pem)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("pi-1 (SHA256:") and "at 10.0.0.5:4000 refused while its previous session" in (
        messages[0])
    assert messages[1].startswith("refused node key SHA256:") and "from 10.0.0.6:4000: it is not enrolled" in (
        messages[1])
    assert messages[2].startswith("refused a board without a node key at 10.0.0.7:4000")
    assert messages[3].startswith("refused 10.0.0.8:4000: its node-key signature is invalid")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
