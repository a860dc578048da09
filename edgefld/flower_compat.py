"""Flower 1.42 internals edgefld changes: the waits on a round's path, and how replies flow.

Flower's fixed waits cost a round seconds whatever the training takes:
the SuperNode sleeps 3 s after every empty poll and 0.5 s while it waits for a
ClientApp's reply and its objects (flwr/supernode/start_client_internal.py);
a missing object is retried after 1, 2, 4 ... 10 s in every process that pulls
objects (flwr/supercore/inflatable/inflatable_utils.py, defaults from
flwr/supercore/constant.py); the ServerApp polls for replies every 3 s
(flwr/superlink/grid/http_grid.py); while too few boards are connected it asks
every second (flwr/serverapp/strategy/strategy_utils.py). None of them is a
setting. Besides the waits: the SuperNode sends every reply as it comes and
never blocks on one (adaptive_supernode_polls), the ServerApp stops waiting for
a node that left (fast_grid_polls), and the warm runtime signs AcquireTask as
Flower's SuperExec does (superexec_auth_methods). Each one changed here is
pinned by tests/test_flower_compat.py (the source of the code it depends on,
hashed): an upgrade of flwr that changes any of them fails there first.
"""

from __future__ import annotations

import time
import types
from typing import Any, Iterable

FLOWER_VERSION = "1.42.0"

# A missing object (its sender still uploading, or the task created before its objects were stored)
# is retried after 0.05 s, doubling up to 0.5 s: Flower's 1 s first retry alone exceeds a round's budget.
PULL_INITIAL_BACKOFF_S = 0.05
PULL_BACKOFF_CAP_S = 0.5

# The SuperNode polls the server every FAST_POLL_S while a federation is busy (FAST_WINDOW_S after the
# last message it received), then slows down by doubling up to IDLE_POLL_S, Flower's own interval:
# an idle fleet loads the server as stock Flower does, a busy one gets its next message within 0.2 s.
FAST_POLL_S = 0.2
FAST_WINDOW_S = 30.0
IDLE_POLL_S = 3.0
# While a ClientApp works, the SuperNode checks its local store for the reply (and the reply's objects)
# every REPLY_WAIT_S (Flower: 0.5 s); a local lookup, no network.
REPLY_WAIT_S = 0.05
# What the pull wrapper returns to Flower's loop when no message came but a reply waits: the loop
# only tests it against None, then sends the waiting replies.
REPLY_WAITING = 0


def superexec_auth_methods() -> frozenset[str]:
    """The Runtime API methods whose callers must hold the SuperExec secret (AcquireTask): edgefld's warm
    runtime (edgefld.client.warm) signs what Flower's SuperExec would sign."""
    from flwr.supercore.superexec.run_superexec import _SUPEREXEC_AUTH_METHODS

    return frozenset(_SUPEREXEC_AUTH_METHODS)


def bound_object_pulls() -> None:
    """Every object pull of this process retries quickly (ClientApp, SuperNode, ServerApp).

    The two pull functions take the backoff as keyword defaults bound at definition time,
    so the defaults themselves are changed: each caller (run_clientapp, the SuperNode, the
    ServerApp's grid) gets them whatever name it imported the function under."""
    from flwr.supercore.inflatable import inflatable_utils

    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = dict(function.__kwdefaults__)
        defaults.update(initial_backoff=PULL_INITIAL_BACKOFF_S, backoff_cap=PULL_BACKOFF_CAP_S)
        function.__kwdefaults__ = defaults


def poll_interval(since_message_s: float, previous_s: float) -> float:
    """Seconds to wait after an empty poll, ``since_message_s`` after the last message received."""
    if since_message_s < FAST_WINDOW_S:
        return FAST_POLL_S
    return min(IDLE_POLL_S, max(FAST_POLL_S, previous_s) * 2)


class _ShortSleeps(types.ModuleType):
    """The ``time`` module as start_client_internal sees it: its waits for a local reply are shorter."""

    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, REPLY_WAIT_S))


def reply_waiting(state: Any) -> bool:
    """Whether the SuperNode's state holds a ClientApp's reply not yet taken for sending.

    Reads InMemoryNodeState's store the way its get_messages_legacy(is_reply=True) selects,
    without marking anything retrieved."""
    with state.lock_msg_store:
        return any(not entry.is_retrieved and entry.message.metadata.reply_to_message_id != ""
                   for entry in state.msg_store.values())


def message_in_work(state: Any) -> bool:
    """Whether the SuperNode's state holds a message from the server (its reply not sent yet)."""
    with state.lock_msg_store:
        return any(entry.message.metadata.reply_to_message_id == "" for entry in state.msg_store.values())


def adaptive_supernode_polls() -> None:
    """The SuperNode's loop polls at poll_interval, never blocks on a reply, and waits REPLY_WAIT_S for a reply's objects.

    Its loop (start_client_internal) pulls with ``_pull_and_store_message`` and sleeps 3 s when
    that returns None: the wrapper installed here polls again itself until a message comes, so
    Flower's sleep is never reached. Call after any other wrapping of that function.

    Replies are sent as they come, and the loop never waits for one: Flower's loop pulls a
    message, then blocks until some reply is there before it pulls again, so a ClientApp hung
    in one round (on a dead run, say) kept the board out of every later round until its task
    token expired (60 s without a heartbeat; never, if its heartbeat thread still runs). Here
    the send step returns at once when no reply waits, and the pull returns as soon as one does:
    ClientApps of consecutive messages may overlap (edgefld.client.warm forks each one).

    The pull also returns as soon as a reply waits in the state with no message pulled. Flower's loop
    sends replies only right after a pull that returned a run, and then only those already there:
    a message whose run was stopped while it was being received (a server restarted mid-round)
    stays stored, its ClientApp still runs, and its reply can take the one sending turn of the
    next run's message, whose own reply then waits, unsent, for a message that never comes while
    the server waits for that reply (seen: a restarted server's round never ended)."""
    from flwr.supernode import start_client_internal as internal

    pull = internal._pull_and_store_message
    last_message = [time.monotonic()]  # a starting node is about to be asked: it polls fast at first

    def polling_pull(**kwargs: Any) -> int | None:
        interval = FAST_POLL_S
        while True:
            run_id = pull(**kwargs)
            if run_id is not None:
                last_message[0] = time.monotonic()
                return run_id
            interval = poll_interval(time.monotonic() - last_message[0], interval)
            # While a ClientApp works, look for its reply every REPLY_WAIT_S (a local lookup) and
            # ask the server again every ``interval``; an idle node only asks the server.
            wake_at = time.monotonic() + interval
            while True:
                if reply_waiting(kwargs["state"]):
                    return REPLY_WAITING
                if time.monotonic() >= wake_at:
                    break
                time.sleep(REPLY_WAIT_S if message_in_work(kwargs["state"]) else interval)

    push = internal._push_messages

    def push_waiting_replies(**kwargs: Any) -> None:
        if reply_waiting(kwargs["state"]):
            push(**kwargs)

    internal._pull_and_store_message = polling_pull
    internal._push_messages = push_waiting_replies
    internal.time = _ShortSleeps()  # type: ignore[attr-defined]


# While the ServerApp waits for enough boards, it asks again after 1 s, then 2 s, ... up to
# NODE_WAIT_CAP_S (Flower: every 1 s, each time a request and a log line pushed to the SuperLink).
NODE_WAIT_CAP_S = 4.0
_NODE_WAIT_RESET_S = 10.0  # a wait this long after the previous one starts a new series


def patient_node_waits() -> None:
    """The ServerApp's wait for min_available_nodes backs off (flwr/serverapp/strategy/strategy_utils.py,
    sample_nodes: ``sleep(1)`` while too few nodes are connected): an idle server waiting for its
    boards costs the SuperLink a third of the requests. Rounds with their boards present never wait."""
    from flwr.serverapp.strategy import strategy_utils

    last = [0.0, 0.0]  # (when the previous wait ended, its length)

    def sleep(seconds: float) -> None:
        now = time.monotonic()
        delay = seconds if now - last[0] > _NODE_WAIT_RESET_S else min(NODE_WAIT_CAP_S, last[1] + seconds)
        time.sleep(delay)
        last[:] = [time.monotonic(), delay]

    strategy_utils.sleep = sleep  # type: ignore[attr-defined]


# While replies are awaited, the ServerApp asks every NODE_CHECK_S which nodes are still online.
NODE_CHECK_S = 2.0


def _node_left_reply(run_id: int, message_id: str) -> Any:
    """The reply Flower's SuperLink itself gives for a node that stopped answering heartbeats."""
    from flwr.app import Metadata
    from flwr.app.error import Error
    from flwr.app.message import make_message
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
    from flwr.server.superlink.linkstate.utils import NODE_UNAVAILABLE_ERROR_REASON
    from flwr.supercore.constant import SYSTEM_MESSAGE_TYPE
    from flwr.supercore.date import now

    return make_message(
        metadata=Metadata(run_id=run_id, message_id="", src_node_id=SUPERLINK_NODE_ID,
                          dst_node_id=SUPERLINK_NODE_ID, reply_to_message_id=message_id, group_id="",
                          created_at=now().timestamp(), ttl=0, message_type=SYSTEM_MESSAGE_TYPE),
        error=Error(code=ErrorCode.NODE_UNAVAILABLE,
                    reason=NODE_UNAVAILABLE_ERROR_REASON + " Its reply was not complete when it left."),
    )


def fast_grid_polls(grid: Any, interval: float) -> None:
    """The ServerApp's grid polls for replies every ``interval`` s instead of Flower's fixed 3 s, and stops
    waiting for a node that left.

    Replaces HttpGrid.send_and_receive on this grid with the same loop over Grid's public
    push_messages / pull_messages, plus one look at the online nodes every NODE_CHECK_S. Flower
    answers a message to a node that stopped sending heartbeats with a "Node Unavailable" error,
    unless that node had begun to send its reply: a reply cut off half-way (the board killed or
    its link lost while it uploaded) is held until Flower's object-push session expires (180 s,
    flwr/supercore/constant.py), and the round with it. Here a pending reply from a node no
    longer online gets the same error as Flower's. (Still open: once the SuperLink hands out
    such a reply, the grid's pull of its missing objects blocks until they come or its 500 tries
    are spent; bounding that pull broke a board's rejoin after a partition, so it is not done.)"""
    def send_and_receive(messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        messages = list(messages)
        pushed = list(grid.push_messages(messages))
        pending = {message_id: message.metadata.dst_node_id
                   for message_id, message in zip(pushed, messages) if message_id}
        run_id = messages[0].metadata.run_id if messages else 0
        deadline = None if timeout is None else time.monotonic() + timeout
        next_check = time.monotonic() + NODE_CHECK_S
        replies: list[Any] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            got = list(grid.pull_messages(list(pending)))
            replies.extend(got)
            for reply in got:
                pending.pop(reply.metadata.reply_to_message_id, None)
            if pending and time.monotonic() >= next_check:
                online = set(grid.get_node_ids())
                for message_id, node_id in list(pending.items()):
                    if node_id not in online:
                        replies.append(_node_left_reply(run_id, message_id))
                        del pending[message_id]
                next_check = time.monotonic() + NODE_CHECK_S
            if pending:
                time.sleep(interval)
        return replies

    grid.send_and_receive = send_and_receive
