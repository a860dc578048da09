"""What the SuperNode process tells the client daemon: its node id once admitted, or the code of the
server's refusal; and the environment through which the daemon and the warm runtime (edgefld.client.warm)
set up their SuperNode.

Values, not log lines: the SuperNode (edgefld.client.supernode) reads them where Flower's Fleet
connection gets them (edgefld.flower_compat.report_admission) and writes one JSON object a line to
a pipe the daemon made for it, whose write end NODE_EVENTS_FD_ENV names. Framework-free: the daemon
imports this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

NODE_EVENTS_FD_ENV = "EDGEFL_NODE_EVENTS_FD"
# The bounds on every answer the SuperNode reads (edgefld.client.bounded_reads), set by the daemon.
MAX_REPLY_ENV = "EDGEFL_MAX_REPLY_BYTES"
MIN_RATE_ENV = "EDGEFL_MIN_READ_RATE"
GRACE_ENV = "EDGEFL_READ_GRACE"
# The write end of the warm runtime's pipe, down which the SuperNode it forked writes a byte for each
# ClientApp task it creates (edgefld.client.supernode.task_notifier_from_environment).
TASK_NOTICE_FD_ENV = "EDGEFL_TASK_NOTICE_FD"
MAX_LINE_BYTES = 256  # an event is a few dozen bytes; a longer line is no event of ours

# The codes of Flower's API errors with which a SuperLink turns a SuperNode away
# (flwr.supercore.error.ApiErrorCode; tests/test_flower_compat.py pins them).
REGISTRATION_DISABLED = 2001  # FLEET_SUPERNODE_REGISTRATION_DISABLED: node auth is on, and this node has no key
NODE_ACTIVATION_FAILED = 2004  # FLEET_NODE_ACTIVATION_FAILED: its key is not enrolled (or its last session holds)


@dataclass(frozen=True)
class NodeRegistered:
    """The SuperLink activated this SuperNode as ``node_id``."""

    node_id: int


@dataclass(frozen=True)
class NodeRefused:
    """The SuperLink turned this SuperNode away with Flower's API error ``code``."""

    code: int


NodeEvent = NodeRegistered | NodeRefused


def encode(event: NodeEvent) -> bytes:
    if isinstance(event, NodeRegistered):
        fields: dict[str, str | int] = {"event": "registered", "node_id": event.node_id}
    else:
        fields = {"event": "refused", "code": event.code}
    return json.dumps(fields).encode() + b"\n"


def decode(line: bytes) -> NodeEvent | None:
    """The event a line holds; None for anything else (a torn or foreign line is not an event)."""
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    kind, node_id, code = fields.get("event"), fields.get("node_id"), fields.get("code")
    if kind == "registered" and type(node_id) is int:
        return NodeRegistered(node_id)
    if kind == "refused" and type(code) is int:
        return NodeRefused(code)
    return None


class EventWriter:
    """The SuperNode's end of the pipe. Writes never fail the SuperNode: a daemon that is gone reads nothing."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def from_environment(cls) -> EventWriter | None:
        """The pipe the daemon passed, if any; taken out of the environment, so no child inherits its number."""
        value = os.environ.pop(NODE_EVENTS_FD_ENV, "")
        if not value.isdigit():
            return None
        fd = int(value)
        try:
            os.set_inheritable(fd, False)
        except OSError:  # not open here: nobody to tell
            return None
        return cls(fd)

    def registered(self, node_id: int) -> None:
        self._write(NodeRegistered(node_id))

    def refused(self, code: int) -> None:
        self._write(NodeRefused(code))

    def _write(self, event: NodeEvent) -> None:
        try:
            os.write(self.fd, encode(event))  # one write below PIPE_BUF: never interleaved
        except OSError:
            pass


def read_events(fd: int) -> Iterator[NodeEvent]:
    """The events written to the pipe whose read end is ``fd``, until every write end is closed; closes ``fd``."""
    with open(fd, "rb", closefd=True) as pipe:
        while line := pipe.readline(MAX_LINE_BYTES + 1):
            event = decode(line) if len(line) <= MAX_LINE_BYTES else None
            if event is not None:
                yield event
