"""Pins of every Flower internal edgefld.flower_compat changes, and what the changes do.

The pins hash the source of the Flower code each change depends on: an upgrade of flwr
that touches any of it fails here, naming what to re-check, before a federation slows
down (or hangs) for a reason nobody sees.
"""

from __future__ import annotations

import hashlib
import inspect
import time

import flwr
import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError
from flwr.app import Message, Metadata, RecordDict
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.serverapp.strategy import strategy_utils
from flwr.superlink.grid.http_grid import HttpGrid
from flwr.supernode import start_client_internal as supernode_internal
from flwr.supernode.nodestate import NodeStateFactory
from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

from edgefld import flower_compat


def _digest(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


# (function, sha256 prefix of its source in flwr 1.42.0, what edgefld relies on in it)
PINNED = [
    (supernode_internal.start_client_internal, "9e89a6eb68fbec68",
     "its loop calls the module's _pull_and_store_message and sleeps 3 s only when that returns None"),
    (supernode_internal._push_messages, "00bb86faffdec114",
     "it sends every reply get_messages_legacy(is_reply=True) gives, blocking (time.sleep(0.5)) only while "
     "there is none (edgefld calls it only when one waits) or while a reply's objects are still coming"),
    (supernode_internal._pull_and_store_message, "eaf5d0e36dc34e4c",
     "a message whose run stops while it is received stays stored (its reply comes later, unasked)"),
    (InMemoryNodeState.get_messages_legacy, "1a5a9140a90c95b9",
     "a reply to send is an entry of msg_store, not retrieved, with a reply_to_message_id (reply_waiting)"),
    (inflatable_utils.pull_objects, "31bb2de46b450e6a",
     "its backoff comes from the keyword defaults initial_backoff and backoff_cap"),
    (inflatable_utils.pull_and_inflate_object_from_tree, "139811483a15e4a6",
     "it passes its own keyword defaults initial_backoff and backoff_cap to pull_objects"),
    (strategy_utils.sample_nodes, "5665d8afcffe5ea5",
     "while too few nodes are connected it calls the module's sleep(1), then asks again (patient_node_waits)"),
    (HttpGrid.send_and_receive, "699c9f048f3cff74",
     "push_messages then pull_messages until every reply came or the timeout passed (fast_grid_polls redoes it)"),
]


def test_flower_is_the_pinned_release():
    assert flwr.__version__ == flower_compat.FLOWER_VERSION


@pytest.mark.parametrize("function,digest,relied_on", PINNED, ids=[p[0].__qualname__ for p in PINNED])
def test_flower_code_edgefld_patches_is_unchanged(function, digest, relied_on):
    assert _digest(function) == digest, (
        f"{function.__module__}.{function.__qualname__} changed in flwr {flwr.__version__}: re-check that "
        f"{relied_on} (edgefld/flower_compat.py), then update this pin")


def test_the_waits_edgefld_shortens_are_where_it_expects_them():
    loop = inspect.getsource(supernode_internal.start_client_internal)
    assert "run_id = _pull_and_store_message(" in loop and "time.sleep(3)" in loop
    assert inspect.getsource(supernode_internal._push_messages).count("time.sleep(0.5)") == 2
    assert supernode_internal.time is time or isinstance(supernode_internal.time, flower_compat._ShortSleeps)
    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        assert {"initial_backoff", "backoff_cap"} <= set(function.__kwdefaults__)


def test_a_missing_object_is_pulled_again_within_a_fraction_of_a_second():
    saved = {f: dict(f.__kwdefaults__) for f in (inflatable_utils.pull_objects,
                                                   inflatable_utils.pull_and_inflate_object_from_tree)}
    attempts: list[float] = []

    def pull(object_id: str) -> bytes:
        attempts.append(time.monotonic())
        if len(attempts) <= 3:  # not uploaded yet: Flower would wait 1 + 2 + 4 s
            raise ObjectUnavailableError(object_id)
        return b"content"

    try:
        flower_compat.bound_object_pulls()
        started = time.monotonic()
        assert inflatable_utils.pull_objects(["a" * 64], pull) == {"a" * 64: b"content"}
        assert time.monotonic() - started < 1.0, attempts
        assert len(attempts) == 4
    finally:
        for function, defaults in saved.items():
            function.__kwdefaults__ = defaults


def test_poll_interval_is_fast_after_a_message_and_backs_off_to_flowers_when_idle():
    assert flower_compat.poll_interval(0.0, 0.0) == flower_compat.FAST_POLL_S
    assert flower_compat.poll_interval(flower_compat.FAST_WINDOW_S - 1, 0.2) == flower_compat.FAST_POLL_S
    intervals, previous = [], flower_compat.FAST_POLL_S
    for _ in range(8):
        previous = flower_compat.poll_interval(flower_compat.FAST_WINDOW_S + 1, previous)
        intervals.append(previous)
    assert intervals[:4] == [0.4, 0.8, 1.6, 3.0] and set(intervals[3:]) == {flower_compat.IDLE_POLL_S}
    # Idle, a board polls no more often than stock Flower does.
    assert flower_compat.IDLE_POLL_S >= 3.0


def test_waits_for_a_local_reply_are_short_and_nothing_else_of_time_changes():
    short = flower_compat._ShortSleeps()
    started = time.monotonic()
    short.sleep(0.5)
    assert time.monotonic() - started < 0.3
    assert short.monotonic is time.monotonic and short.time is time.time


def _message(state: InMemoryNodeState, message_id: str, reply_to: str = "") -> None:
    state.store_message(Message(RecordDict(), metadata=Metadata(
        run_id=7, message_id=message_id, src_node_id=1, dst_node_id=2, reply_to_message_id=reply_to,
        group_id="2", created_at=time.time(), ttl=60.0, message_type="train")))


def test_the_supernode_keeps_flowers_in_memory_state():
    assert type(NodeStateFactory(ObjectStoreFactory()).state()) is InMemoryNodeState


def test_a_reply_waiting_with_no_message_pulled_is_sent_at_once():
    """The restarted-server case: a reply stored after the loop's one sending turn still goes out."""
    state = NodeStateFactory(ObjectStoreFactory()).state()
    polls: list[float] = []
    saved = supernode_internal._pull_and_store_message, supernode_internal._push_messages, supernode_internal.time

    def empty_pull(**kwargs) -> int | None:
        polls.append(time.monotonic())
        if len(polls) == 3:
            _message(state, "b" * 64, reply_to="a" * 64)  # a ClientApp finished meanwhile
        return 99 if len(polls) == 6 else None  # a next message (without the fix, the reply waited for it)

    try:
        supernode_internal._pull_and_store_message = empty_pull
        flower_compat.adaptive_supernode_polls()
        _message(state, "a" * 64)  # the instruction itself is no reply
        assert not flower_compat.reply_waiting(state) and flower_compat.message_in_work(state)
        started = time.monotonic()
        run_id = supernode_internal._pull_and_store_message(state=state)
        assert run_id is not None and len(polls) == 3 and time.monotonic() - started < 2.0
        assert flower_compat.reply_waiting(state)
        # Looking did not take it: Flower's sending turn still gets it.
        assert [m.metadata.message_id for m in state.get_messages_legacy(is_reply=True)] == ["b" * 64]
        assert not flower_compat.reply_waiting(state)
    finally:
        supernode_internal._pull_and_store_message, supernode_internal._push_messages, supernode_internal.time = saved


def test_the_supernode_never_blocks_on_a_reply_so_clientapps_may_overlap():
    """Flower's send step waits for a reply before the next pull; here it returns when none waits."""
    state = NodeStateFactory(ObjectStoreFactory()).state()
    sent: list[int] = []
    saved = supernode_internal._pull_and_store_message, supernode_internal._push_messages, supernode_internal.time
    try:
        supernode_internal._push_messages = lambda **kwargs: sent.append(1)  # Flower's, which would block here
        flower_compat.adaptive_supernode_polls()
        _message(state, "a" * 64)  # a ClientApp works on it (or hangs)
        started = time.monotonic()
        supernode_internal._push_messages(state=state)
        assert sent == [] and time.monotonic() - started < 0.1  # back to pulling the next message at once
        _message(state, "b" * 64, reply_to="a" * 64)
        supernode_internal._push_messages(state=state)
        assert sent == [1]
    finally:
        supernode_internal._pull_and_store_message, supernode_internal._push_messages, supernode_internal.time = saved


def test_a_server_waiting_for_boards_asks_ever_less_often_and_its_rounds_never_wait():
    saved = strategy_utils.sleep
    asked: list[float] = []

    class Grid:
        def get_node_ids(self):
            asked.append(time.monotonic())
            return [1, 2, 3] if len(asked) >= 4 else [1]

    try:
        flower_compat.patient_node_waits()
        started = time.monotonic()
        assert strategy_utils.sample_nodes(Grid(), min_available_nodes=3, sample_size=3)[1] == [1, 2, 3]
        gaps = [round(b - a, 1) for a, b in zip(asked, asked[1:])]
        assert gaps == [1.0, 2.0, 3.0], gaps  # Flower: 1.0, 1.0, 1.0
        asked.clear()
        assert strategy_utils.sample_nodes(Grid(), min_available_nodes=1, sample_size=1)  # enough: no wait
        assert len(asked) == 1 and time.monotonic() - started < 6.5
    finally:
        strategy_utils.sleep = saved


def test_the_server_stops_waiting_for_a_reply_from_a_node_that_left():
    """A reply cut off half-way is held by Flower for its object-push session (180 s); a node no
    longer online is answered for, as Flower answers for a node that never began its reply."""
    from flwr.common.constant import ErrorCode

    class Grid:  # the grid's public methods, as the loop uses them
        def __init__(self):
            self.online, self.pulls = [1, 2], 0

        def push_messages(self, messages):
            return [f"m{m.metadata.dst_node_id}" for m in messages]

        def pull_messages(self, ids):
            self.pulls += 1
            if self.pulls == 2:
                self.online = [1]  # node 2 left while its reply was under way
            return [_reply(i) for i in ids if i == "m1" and self.pulls >= 3]

        def get_node_ids(self):
            return self.online

    def _reply(message_id):
        return Message(RecordDict(), metadata=Metadata(
            run_id=7, message_id="r" + message_id, src_node_id=1, dst_node_id=0, reply_to_message_id=message_id,
            group_id="1", created_at=time.time(), ttl=60.0, message_type="train"))

    sent = [Message(RecordDict(), metadata=Metadata(
        run_id=7, message_id="", src_node_id=0, dst_node_id=node, reply_to_message_id="", group_id="1",
        created_at=time.time(), ttl=60.0, message_type="train")) for node in (1, 2)]
    grid = Grid()
    saved = flower_compat.NODE_CHECK_S
    try:
        flower_compat.NODE_CHECK_S = 0.2
        flower_compat.fast_grid_polls(grid, 0.1)
        started = time.monotonic()
        replies = grid.send_and_receive(sent, timeout=30)
    finally:
        flower_compat.NODE_CHECK_S = saved
    assert time.monotonic() - started < 5
    by_id = {r.metadata.reply_to_message_id: r for r in replies}
    assert set(by_id) == {"m1", "m2"}
    assert not by_id["m1"].has_error()
    assert by_id["m2"].has_error() and by_id["m2"].error.code == ErrorCode.NODE_UNAVAILABLE


def test_the_warm_runtime_signs_what_flowers_superexec_signs():
    assert flower_compat.superexec_auth_methods() == frozenset({"/flwr.proto.Runtime/AcquireTask"})
