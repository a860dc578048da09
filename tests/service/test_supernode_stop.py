"""A stop signal and a reply being pushed (edgefld.client.supernode._Push; the push watched by flower_compat)."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from flwr.supercore.object_store import ObjectStoreFactory

from edgefld import flower_compat
from edgefld.client import supernode


@pytest.fixture(autouse=True)
def clean_push_state() -> Any:
    yield
    supernode._Push.active = False
    supernode._Push.awaiting_clientapp = False
    supernode._Push.deferred.clear()


def test_the_watched_store_notes_an_object_announced_but_not_uploaded(monkeypatch: pytest.MonkeyPatch) -> None:
    store = ObjectStoreFactory().store()
    watched = flower_compat._WatchedObjectStore(store, supernode._push_awaiting_clientapp)
    assert watched.get("0" * 64) is None
    assert supernode._Push.awaiting_clientapp is False
    # What Flower's push sees for an object its ClientApp announced and has not sent yet.
    monkeypatch.setattr(store, "get", lambda object_id: b"")
    assert watched.get("0" * 64) == b""
    assert supernode._Push.awaiting_clientapp is True
    monkeypatch.setattr(store, "get", lambda object_id: b"content")
    assert watched.get("0" * 64) == b"content"
    assert supernode._Push.awaiting_clientapp is False


def test_a_stop_waits_for_a_push_in_flight_but_not_for_a_dead_clientapps_objects(
        monkeypatch: pytest.MonkeyPatch) -> None:
    handled: list[int] = []
    monkeypatch.setattr(supernode, "_end_push_after", lambda seconds: None)  # no timer thread here
    handler = supernode._deferring(lambda signum, frame: handled.append(signum))

    supernode._Push.active = True  # bytes on their way to the SuperLink: the stop waits
    handler(signal.SIGTERM, None)
    assert handled == [] and supernode._Push.deferred == [signal.SIGTERM]

    supernode._Push.deferred.clear()
    supernode._Push.awaiting_clientapp = True  # waiting for a ClientApp the stop has ended: it goes on
    handler(signal.SIGTERM, None)
    assert handled == [signal.SIGTERM] and supernode._Push.deferred == []

    supernode._Push.active = False
    supernode._Push.awaiting_clientapp = False
    handler(signal.SIGINT, None)
    assert handled == [signal.SIGTERM, signal.SIGINT]
