"""What the SuperNode tells the client daemon over a pipe (edgefld.client.node_events)."""

from __future__ import annotations

import os

import pytest

from edgefld.client import node_events
from edgefld.client.node_events import EventWriter, NodeRefused, NodeRegistered, decode, encode, read_events


def test_events_round_trip_and_anything_else_is_no_event():
    for event in (NodeRegistered(8127396521), NodeRefused(node_events.NODE_ACTIVATION_FAILED)):
        assert decode(encode(event)) == event and encode(event).endswith(b"\n")
    for line in (b"", b"SuperNode ID: 5\n", b"[1, 2]\n", b'{"event": "registered", "node_id": "5"}\n',
                 b'{"event": "registered", "node_id": true}\n', b'{"event": "refused"}\n', b'{"event": "left"}\n'):
        assert decode(line) is None, line


def test_the_supernodes_events_reach_the_daemon_through_the_pipe_until_it_closes(monkeypatch):
    read_end, write_end = os.pipe()
    monkeypatch.setenv(node_events.NODE_EVENTS_FD_ENV, str(write_end))
    writer = EventWriter.from_environment()
    assert writer is not None and node_events.NODE_EVENTS_FD_ENV not in os.environ  # no child inherits it
    assert not os.get_inheritable(write_end)
    writer.registered(42)
    os.write(write_end, b"x" * (node_events.MAX_LINE_BYTES + 10) + b"\n")  # a line too long is no event
    writer.refused(node_events.REGISTRATION_DISABLED)
    os.close(write_end)
    assert list(read_events(read_end)) == [NodeRegistered(42), NodeRefused(node_events.REGISTRATION_DISABLED)]
    writer.registered(43)  # the daemon's end is gone: nothing raised


@pytest.mark.parametrize("value", ["", "not-a-number", "987654"])
def test_without_a_usable_pipe_there_is_no_writer(monkeypatch, value):
    monkeypatch.setenv(node_events.NODE_EVENTS_FD_ENV, value)
    assert EventWriter.from_environment() is None
