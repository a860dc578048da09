"""Flower 1.42 internals edgefld uses or changes, all of them here: the waits on a round's path, how
replies flow, the SuperNode's and the SuperLink's hooks, and the warm runtime's use of Flower's
SuperExec and ClientApp runtime.

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
Flower's SuperExec does (superexec_auth_methods).

The SuperNode's hooks (edgefld.client.supernode holds the policy, these the
places in Flower it goes): a FAB check where a run's FAB is first fetched
(refuse_fabs), every Fleet client's httpx client handed over to be bounded
(on_protobuf_clients), a reply push seen from its first byte to its end
(on_reply_pushes), Flower's stop-signal handlers wrapped (wrap_stop_handlers),
an exit handler run first (on_exit), the node id or the server's refusal
code read from the Fleet client's answers (report_admission), not from the log,
and a server that no longer knows the node left quietly (leave_when_forgotten).
The SuperLink's: its FAB checks at StartRun and PullTaskInput
(refuse_superlink_runs; edgefld.server.link holds the policy). The warm runtime
(edgefld.client.warm) claims ClientApp tasks as Flower's SuperExec does
(ClientAppTasks) and runs Flower's ClientApp runtime in its forks (run_clientapp).

Each one is pinned by tests/test_flower_compat.py (the source of the code it
depends on, hashed, and what it does, tried): an upgrade of flwr that changes
any of them fails there first.
"""

from __future__ import annotations

import importlib
import signal
import threading
import time
import types
from collections.abc import Callable, Iterable
from logging import ERROR, INFO, WARNING
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

FLOWER_VERSION = "1.42.0"
# flower-superlink --database for state kept in the process's memory, not in SQLite
# (flwr.supercore.constant.FLWR_IN_MEMORY_DB_NAME: InMemoryLinkState and InMemoryObjectStore).
SUPERLINK_STATE_IN_MEMORY = ":flwr-in-memory:"

# A SuperNode pulling a missing object from the server (its sender still uploading) asks again after
# 0.05 s, doubling up to 0.5 s: Flower's 1 s first retry alone exceeds a round's budget, and a fleet's
# retries load the server.
PULL_INITIAL_BACKOFF_S = 0.05
PULL_BACKOFF_CAP_S = 0.5
# An app pulls from its own machine's runtime: a ClientApp from its SuperNode, whose task exists while
# it still downloads the message's objects; a ServerApp from its SuperLink, which hands out a reply
# while its board still uploads the objects. With the backoff above each started up to 0.35 s after
# the objects were all there. Their pulls go one message at a time, so their retries are a few local
# requests a second whatever the fleet's size: every 0.02 s, doubling to 0.1 s, for as long as a
# SuperNode's own pulls may take (500 tries, at most 0.5 s apart).
LOCAL_PULL_INITIAL_BACKOFF_S = 0.02
LOCAL_PULL_BACKOFF_CAP_S = 0.1
LOCAL_PULL_MAX_S = 250.0

# The SuperNode polls the server every FAST_POLL_S while a federation is busy (FAST_WINDOW_S after the
# last message it received), then slows down by doubling up to IDLE_POLL_S, Flower's own interval:
# an idle fleet loads the server as stock Flower does, a busy one gets its next message within 0.2 s.
FAST_POLL_S = 0.2
FAST_WINDOW_S = 30.0
IDLE_POLL_S = 3.0
# For AFTER_REPLY_WINDOW_S after it sent a reply, a SuperNode polls every AFTER_REPLY_POLL_S: the next
# round's instruction comes as soon as the server has the round's last reply (aggregating and
# evaluating take it a fraction of a second), and the board whose reply came last is the one the
# next round waits for. At most 15 requests more per board and round.
AFTER_REPLY_POLL_S = 0.05
AFTER_REPLY_WINDOW_S = 1.0
# A ClientApp's reply wakes the SuperNode's loop as it is stored (node_state_events); the reply's objects,
# which the ClientApp uploads next, are looked for every REPLY_WAIT_S (Flower: 0.5 s): a local lookup.
REPLY_WAIT_S = 0.02
# What the pull wrapper returns to Flower's loop when no message came but a reply waits: the loop
# only tests it against None, then sends the waiting replies.
REPLY_WAITING = 0


def _original(owner: object, name: str) -> Callable[..., Any]:
    """Flower's ``owner.name`` as it is now, to be wrapped."""
    function: Callable[..., Any] = getattr(owner, name)
    return function


def _patch(owner: object, name: str, replacement: object) -> None:
    """Flower's ``owner.name`` (a module's function or global, a class's method) becomes ``replacement``.

    Every change edgefld makes to Flower goes through here. A replacement is called as Flower calls
    the original, which the original's annotations do not always say (the SuperNode's loop passes
    everything by keyword): what each one relies on is pinned in tests/test_flower_compat.py."""
    if not hasattr(owner, name):
        raise AttributeError(f"{owner!r} has no {name} in flwr {FLOWER_VERSION}: see tests/test_flower_compat.py")
    setattr(owner, name, replacement)


def superexec_auth_methods() -> frozenset[str]:
    """The Runtime API methods whose callers must hold the SuperExec secret (AcquireTask): edgefld's warm
    runtime (edgefld.client.warm) signs what Flower's SuperExec would sign."""
    from flwr.supercore.superexec.run_superexec import _SUPEREXEC_AUTH_METHODS

    return frozenset(_SUPEREXEC_AUTH_METHODS)


# --- the warm runtime (edgefld.client.warm): Flower's SuperExec and flwr-clientapp, in one process -----


class ClientAppTasks:
    """The SuperNode's Runtime API as Flower's SuperExec claims ClientApp tasks from it (run_superexec):
    AcquireTask over loopback HTTP, signed with the SuperExec secret the SuperNode was started with."""

    def __init__(self, runtime_address: str, secret: bytes) -> None:
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor
        from flwr.supercore.runtime import RuntimeHttpClient

        self._client = RuntimeHttpClient.from_server_address(
            server_address=runtime_address, insecure=True, root_certificates=None,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                          SuperExecAuthHttpInterceptor(master_secret=secret,
                                                       protected_methods=superexec_auth_methods())],
        )

    def claim(self) -> str | None:
        """The token of a ClientApp task, now this caller's alone; None when none waits.

        Raises httpx.HTTPStatusError when the SuperNode answers but refuses, and another
        httpx.HTTPError or ValueError when it is not serving (starting, stopping) or answers garbage."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        response = self._client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        if response.HasField("task") and response.token:
            return str(response.token)
        return None

    def close(self) -> None:
        self._client.close()


def preload_clientapp_runtime() -> None:
    """Import what run_clientapp runs, creating nothing (a process that forks ClientApps does it once)."""
    import flwr.supernode.runtime.run_clientapp  # noqa: F401


def run_clientapp(runtime_address: str, token: str) -> None:
    """Flower's ClientApp process (flwr-clientapp) for the task ``token``, run in this process as Flower's
    SuperExec would start it in a new one; it exits (SystemExit) as that process would."""
    from flwr.supernode.runtime.run_clientapp import run_clientapp as flower_run_clientapp

    heartbeat_ends_before_task_output()
    flower_run_clientapp(runtime_api_address=runtime_address, token=token, insecure=True)


def heartbeat_ends_before_task_output() -> None:
    """A ClientApp's task heartbeat ends before the ClientApp reports its task done, not after.

    Flower's run_clientapp pushes the task's output, on which the SuperNode revokes the task's token,
    and only then stops its heartbeat thread. A heartbeat sent in between, or one held up behind the
    ClientApp's own work (a thread of the same interpreter), reaches the SuperNode with a revoked
    token, and the SuperNode logs "ERROR [/v1/runtime/send-task-heartbeat][ApiError:1008] Runtime
    task-token authentication failed". Secure aggregation's stages run ClientApps of a fraction of
    a second, which made it show. Here the heartbeat is stopped (its thread joined, so no request is
    in flight) just before the output is pushed; Flower's own stop after it then finds nothing running.
    Call once per ClientApp process, before run_clientapp."""
    from flwr.supernode.runtime import run_clientapp as module

    senders: list[Any] = []

    class TrackedHeartbeatSender(module.HeartbeatSender):  # type: ignore[misc, name-defined]
        def start(self) -> None:
            senders.append(self)
            super().start()

    push_task_output = module.push_task_output

    def push_task_output_after_heartbeat(*args: Any, **kwargs: Any) -> Any:
        for sender in senders:
            if sender.is_running:
                sender.stop()
        return push_task_output(*args, **kwargs)

    _patch(module, "HeartbeatSender", TrackedHeartbeatSender)
    _patch(module, "push_task_output", push_task_output_after_heartbeat)


def bound_object_pulls(*, local: bool) -> None:
    """Every object pull of this process retries quickly: ``local`` for an app (a ClientApp, a ServerApp)
    pulling from its own machine's runtime, else (a SuperNode) at the pace a server can afford.

    The two pull functions take the backoff as keyword defaults bound at definition time,
    so the defaults themselves are changed: each caller (run_clientapp, the SuperNode, the
    ServerApp's grid) gets them whatever name it imported the function under."""
    from flwr.supercore.inflatable import inflatable_utils

    if local:
        policy: dict[str, Any] = {"initial_backoff": LOCAL_PULL_INITIAL_BACKOFF_S,
                                  "backoff_cap": LOCAL_PULL_BACKOFF_CAP_S,
                                  "max_tries_per_object": None, "max_time": LOCAL_PULL_MAX_S}
    else:
        policy = {"initial_backoff": PULL_INITIAL_BACKOFF_S, "backoff_cap": PULL_BACKOFF_CAP_S}
    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = dict(function.__kwdefaults__ or {})
        defaults.update(policy)
        function.__kwdefaults__ = defaults


def poll_interval(since_message_s: float, previous_s: float, since_reply_s: float = float("inf")) -> float:
    """Seconds to wait after an empty poll, ``since_message_s`` after the last message received and
    ``since_reply_s`` after the last reply sent."""
    if since_reply_s < AFTER_REPLY_WINDOW_S:
        return AFTER_REPLY_POLL_S
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


def adaptive_supernode_polls(on_task: Callable[[], None] | None = None) -> None:
    """The SuperNode's loop polls at poll_interval (faster after it sent a reply), never blocks on a reply,
    sends a reply as soon as a ClientApp stores it, and waits REPLY_WAIT_S for a reply's objects;
    ``on_task`` is called each time a ClientApp task is created (the warm runtime claims it at once,
    instead of at its next poll).

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
    last_reply = [float("-inf")]
    reply_stored = threading.Event()
    watched: list[Any] = []

    def polling_pull(**kwargs: Any) -> int | None:
        state = kwargs["state"]
        if not watched:
            node_state_events(state, reply_stored.set, on_task)
            watched.append(state)
        interval = FAST_POLL_S
        while True:
            run_id = pull(**kwargs)
            if run_id is not None:
                last_message[0] = time.monotonic()
                return run_id
            now = time.monotonic()
            interval = poll_interval(now - last_message[0], interval, now - last_reply[0])
            # Until the server is asked again, a ClientApp's reply (or the error reply Flower stores
            # for a task that failed) ends the wait as it is stored.
            wake_at = now + interval
            while True:
                reply_stored.clear()  # before looking: a reply stored after the look sets it again
                if reply_waiting(state):
                    return REPLY_WAITING
                remaining = wake_at - time.monotonic()
                if remaining <= 0:
                    break
                reply_stored.wait(remaining)

    push = internal._push_messages

    def push_waiting_replies(**kwargs: Any) -> None:
        if reply_waiting(kwargs["state"]):
            push(**kwargs)
            last_reply[0] = time.monotonic()

    _patch(internal, "_pull_and_store_message", polling_pull)
    _patch(internal, "_push_messages", push_waiting_replies)
    _patch(internal, "time", _ShortSleeps())


def node_state_events(state: Any, on_reply: Callable[[], None], on_task: Callable[[], None] | None) -> None:
    """Calls ``on_reply`` after a reply is stored in this SuperNode's ``state`` (a ClientApp's, through
    store_message_and_object_tree, or an error reply Flower makes for a failed task) and ``on_task``
    after a ClientApp task is created (_pull_and_store_message does it before it pulls the message's
    objects: a ClientApp may start while they download)."""
    store_message = state.store_message

    def storing(message: Any) -> str | None:
        message_id: str | None = store_message(message)
        if message.metadata.reply_to_message_id:
            on_reply()
        return message_id

    _patch(state, "store_message", storing)
    if on_task is None:
        return
    create_task = state.create_task

    def creating(*args: Any, **kwargs: Any) -> Any:
        task_id = create_task(*args, **kwargs)
        if task_id is not None:
            on_task()
        return task_id

    _patch(state, "create_task", creating)


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

    _patch(strategy_utils, "sleep", sleep)


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
    longer online gets the same error as Flower's, and so does a reply whose upload was given up
    because its node left (abandon_uploads_of_nodes_that_left)."""
    from flwr.common.constant import ErrorCode

    def send_and_receive(messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        messages = list(messages)
        pushed = list(grid.push_messages(messages))
        pending = {message_id: message.metadata.dst_node_id
                   for message_id, message in zip(pushed, messages, strict=True) if message_id}
        run_id = messages[0].metadata.run_id if messages else 0
        deadline = None if timeout is None else time.monotonic() + timeout
        next_check = time.monotonic() + NODE_CHECK_S
        replies: list[Any] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            for reply in grid.pull_messages(list(pending)):
                answered = reply.metadata.reply_to_message_id
                if (reply.has_error() and reply.error.code == ErrorCode.MESSAGE_UNAVAILABLE
                        and pending.get(answered) in _LEFT_MID_UPLOAD):
                    reply = _node_left_reply(run_id, answered)
                replies.append(reply)
                pending.pop(answered, None)
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


# Nodes whose reply's upload the grid gave up on because they left (abandon_uploads_of_nodes_that_left).
_LEFT_MID_UPLOAD: set[int] = set()


class _OnlineNodes:
    """The run's online nodes as the SuperLink says, asked at most every NODE_CHECK_S from any thread
    (the grid pulls a reply's objects from a pool of threads)."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self._lock = threading.Lock()
        self._asked_at = -NODE_CHECK_S
        self._nodes: frozenset[int] = frozenset()

    def __contains__(self, node_id: object) -> bool:
        with self._lock:
            if time.monotonic() - self._asked_at >= NODE_CHECK_S:
                self._nodes = frozenset(self._grid.get_node_ids())
                self._asked_at = time.monotonic()
            return node_id in self._nodes


class _UploadWatch:
    installed = False
    online: _OnlineNodes | None = None  # the grid's, for the process's one ServerApp


_UPLOADS = _UploadWatch()


def abandon_uploads_of_nodes_that_left(grid: Any) -> None:
    """The ServerApp's grid stops pulling a reply's missing objects once the node sending them is no
    longer online.

    Flower's grid (http_grid.HttpGrid.pull_messages) takes a reply as soon as the SuperLink has its
    message, then pulls the objects still being uploaded, retrying each up to 500 times: a board
    killed, or its link lost, half-way through its upload held the round for minutes (edgefl's
    0.5 s retry cap, bound_object_pulls) or until the object-push session expired (180 s). The
    SuperLink hands a reply out once (it forgets it when pulled), so the pull cannot simply be
    cut short and tried again later: a board whose link comes back resumes its upload into this
    same pull. So the pull goes on while the node is online and ends when it is not, as Flower ends
    the wait for a node that never began its reply; send_and_receive then names it as the node
    that left. The sender of each pulled reply is read from the SuperLink's answer (PullMessages)."""
    from flwr.common.logger import log
    from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError
    from flwr.supercore.runtime.runtime_http_client import RuntimeHttpClient
    from flwr.superlink.grid import http_grid

    _UPLOADS.online = _OnlineNodes(grid)
    if _UPLOADS.installed:  # once per process: the ServerApp's
        return
    _UPLOADS.installed = True
    senders: dict[str, int] = {}  # a pulled reply's message id (its object tree's root) -> its node
    pull_messages = _original(RuntimeHttpClient, "PullMessages")
    pull_objects = _original(http_grid, "pull_objects")

    def recording_pull_messages(self: Any, request: Any) -> Any:
        response = pull_messages(self, request)
        for message in response.messages_list:
            senders[message.metadata.message_id] = message.metadata.src_node_id
        return response

    def pull_reply_objects(*, object_ids: list[str], pull_object_fn: Callable[[str], bytes], **kwargs: Any
                           ) -> dict[str, bytes]:
        # The tree is walked in post-order (iterate_object_tree): the message itself comes last.
        node = senders.pop(object_ids[-1], None) if object_ids else None
        online = _UPLOADS.online
        if node is None or online is None:
            return dict(pull_objects(object_ids=object_ids, pull_object_fn=pull_object_fn, **kwargs))

        def pull_while_online(object_id: str) -> bytes:
            try:
                return pull_object_fn(object_id)
            except ObjectUnavailableError:
                if node in online:
                    raise  # still uploading: Flower retries
                if node not in _LEFT_MID_UPLOAD:
                    _LEFT_MID_UPLOAD.add(node)
                    log(WARNING, "node %d left before it finished uploading its reply: not waiting for the rest",
                        node)
                raise ObjectPullError(object_id, f"node {node} left before it finished uploading") from None

        return dict(pull_objects(object_ids=object_ids, pull_object_fn=pull_while_online, **kwargs))

    _patch(RuntimeHttpClient, "PullMessages", recording_pull_messages)
    _patch(http_grid, "pull_objects", pull_reply_objects)


# --- the SuperNode's hooks (edgefld.client.supernode) -------------------------------------------------

# The signals whose handlers Flower's SuperNode installs for its graceful exit (register_signal_handlers).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
SignalHandler = Callable[[int, types.FrameType | None], Any]


class _FabRefused(Exception):
    pass


def refuse_fabs(refusal: Callable[[bytes, int], str | None]) -> None:
    """The SuperNode refuses every run whose FAB ``refusal(fab_content, run_id)`` gives a reason for.

    Where the SuperNode first fetches a run's FAB (start_client_internal's _pull_and_store_message
    calls its ``get_fab`` after ``receive``), before anything of it is stored: the message gets
    Flower's own "FAB could not be verified" error reply with the reason, as an unsigned FAB would
    with trusted entities, and the reason is logged at ERROR (someone sent the board foreign code)."""
    from flwr.app import Error, Message
    from flwr.common.logger import log
    from flwr.supernode import start_client_internal as internal

    pull = internal._pull_and_store_message

    def checked_pull(**kwargs: Any) -> int | None:
        received: list[Any] = []
        receive: Callable[[], Any] = kwargs["receive"]
        get_fab: Callable[[str, int], Any] = kwargs["get_fab"]

        def remembering_receive() -> Any:
            got = receive()
            received[:] = [got]
            return got

        def checked_get_fab(fab_hash: str, run_id: int) -> Any:
            fab = get_fab(fab_hash, run_id)
            reason = refusal(fab.content, run_id)
            if reason is not None:
                raise _FabRefused(reason)
            return fab

        try:
            return pull(**dict(kwargs, receive=remembering_receive, get_fab=checked_get_fab))
        except _FabRefused as exc:
            message = received[0][0]
            log(ERROR, "%s", exc)
            reply = Message(Error(internal.FAB_VERIFICATION_ERROR.code, str(exc)), reply_to=message)
            internal._insert_message(reply, kwargs["state"], kwargs["object_store"])
            return int(message.metadata.run_id)

    _patch(internal, "_pull_and_store_message", checked_pull)


def on_protobuf_clients(configure: Callable[[httpx.Client], None]) -> None:
    """Every protobuf-over-HTTP client this process makes (the SuperNode's Fleet client) is handed to
    ``configure`` as the httpx.Client all its requests go through (ProtobufClient._client)."""
    from flwr.supercore.protobuf.client import ProtobufClient

    original_init = ProtobufClient.__init__

    def configured_init(self: ProtobufClient, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        configure(self._client)

    _patch(ProtobufClient, "__init__", configured_init)


class _WatchedObjectStore:
    """The SuperNode's object store as Flower's push reads it (``get``; b"": an object its ClientApp
    announced and has not uploaded yet, which the push sleeps 0.5 s on and asks again), telling
    ``awaiting(True)`` while the push waits for the ClientApp, ``awaiting(False)`` once an object is there."""

    def __init__(self, store: Any, awaiting: Callable[[bool], None]) -> None:
        self._store = store
        self._awaiting = awaiting

    def get(self, object_id: str) -> bytes | None:
        content: bytes | None = self._store.get(object_id)
        self._awaiting(content == b"")
        return content

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def on_reply_pushes(started: Callable[[], None], awaiting_clientapp: Callable[[bool], None],
                    ended: Callable[[], None]) -> None:
    """A reply push of the SuperNode, watched (start_client_internal's _push_messages, the ``send`` and
    ``object_store`` it is given): ``started()`` as it sends the reply to the SuperLink (its first
    request), ``awaiting_clientapp(True)`` while it waits for an object the ClientApp has not uploaded
    yet (False once one is there), ``ended()`` once the push is over, however it ended. Call before
    adaptive_supernode_polls, which wraps what this installs."""
    from flwr.supernode import start_client_internal as internal

    push = internal._push_messages

    def watched_push(**kwargs: Any) -> None:
        send: Callable[..., Any] = kwargs["send"]

        def watched_send(*args: Any) -> Any:
            started()
            return send(*args)

        try:
            push(**dict(kwargs, send=watched_send,
                        object_store=_WatchedObjectStore(kwargs["object_store"], awaiting_clientapp)))
        finally:
            ended()

    _patch(internal, "_push_messages", watched_push)


def wrap_stop_handlers(wrap: Callable[[SignalHandler], SignalHandler]) -> None:
    """The handlers Flower's SuperNode installs for STOP_SIGNALS (its graceful exit, which deactivates
    the node) are installed as ``wrap(handler)``: start_client_internal's register_signal_handlers."""
    from flwr.supernode import start_client_internal as internal

    register = _original(internal, "register_signal_handlers")

    def register_wrapped(*args: Any, **kwargs: Any) -> None:
        register(*args, **kwargs)
        for sig in STOP_SIGNALS:
            handler = signal.getsignal(sig)
            if callable(handler):
                signal.signal(sig, wrap(handler))

    _patch(internal, "register_signal_handlers", register_wrapped)


def on_exit(handler: Callable[[], None]) -> None:
    """Flower calls ``handler`` when this process exits through flwr_exit (a stop signal, a refused
    connection), before its force-exit timer starts and before handlers added earlier."""
    from flwr.supercore.exit import add_exit_handler

    add_exit_handler(handler, run_before_force_exit=True)


def report_admission(registered: Callable[[int], None], refused: Callable[[int], None]) -> None:
    """``registered(node_id)`` once the SuperLink has activated this SuperNode; ``refused(code)`` when it
    turns the node away, with Flower's API error code (flwr.supercore.error.ApiErrorCode).

    Read where Flower's Fleet connection gets them: the answers of FleetHttpClient.RegisterNode and
    .ActivateNode (the node id is ActivateNode's; a refusal is an HTTP error carrying Flower's error
    JSON, which the connection gives up on at once and exits with). Flower itself only logs them."""
    import httpx
    from flwr.proto.fleet_pb2 import ActivateNodeResponse
    from flwr.supercore.error import FlowerError
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from google.protobuf.message import Message as ProtoMessage

    def reporting(method: Callable[[FleetHttpClient, ProtoMessage], ProtoMessage]
                  ) -> Callable[[FleetHttpClient, ProtoMessage], ProtoMessage]:
        def call(self: FleetHttpClient, request: ProtoMessage) -> ProtoMessage:
            try:
                response = method(self, request)
            except httpx.HTTPStatusError as exc:
                error = FlowerError.from_json(exc.response.text)
                if error is not None:
                    refused(error.code)
                raise
            if isinstance(response, ActivateNodeResponse):
                registered(int(response.node_id))
            return response

        return call

    for name in ADMISSION_METHODS:
        _patch(FleetHttpClient, name, reporting(_original(FleetHttpClient, name)))


# The Fleet API calls by which a SuperNode is admitted (RegisterNode only when it has no node key).
ADMISSION_METHODS = ("RegisterNode", "ActivateNode")
# The Fleet API calls a SuperNode makes as an admitted node, each signed and checked against the
# SuperLink's node registry (flwr/superlink/routers/fleet/node_auth.py::authenticate_node).
NODE_METHODS = ("SendNodeHeartbeat", "PullMessages", "PushMessages", "GetRun", "GetFab", "PushObject", "PullObject",
                "ConfirmMessageReceived")


def leave_when_forgotten(forgotten: Callable[[], None]) -> None:
    """``forgotten()``, once, when the SuperLink answers one of an admitted node's calls with 401: it no
    longer knows the node (it restarted: its state is in memory) or no longer accepts its signature.

    Flower leaves on a 401 too: its heartbeat, and its retry invoker for every other call, send SIGINT
    to their own process (the invoker then sleeps 6 s and gives up). But edgefld defers a stop signal
    while a reply is being pushed (edgefld.client.supernode._deferring), so a 401 in the middle of a
    push came back to Flower's loop as a failed push, logged at ERROR ("Failed to send message ...
    401 Unauthorized") before the deferred SIGINT ended the process. So the 401 is caught below the
    retry invoker, in FleetHttpClient's methods: it goes to ``forgotten`` (the policy's exit), and the
    call ends as one for a run that is no longer running: Flower's loop drops the message or reply at
    INFO (RunNotRunningException, which neither the invoker nor any ``except Exception`` catches). A
    heartbeat's 401 is answered as a success instead, so that Flower does not signal a second exit."""
    import httpx
    from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatResponse
    from flwr.supercore.run import RunNotRunningException
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from google.protobuf.message import Message as ProtoMessage

    once = threading.Lock()  # taken by the first 401, never released

    def leaving(name: str, method: Callable[[FleetHttpClient, ProtoMessage], ProtoMessage]
                ) -> Callable[[FleetHttpClient, ProtoMessage], ProtoMessage]:
        def call(self: FleetHttpClient, request: ProtoMessage) -> ProtoMessage:
            try:
                return method(self, request)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != httpx.codes.UNAUTHORIZED:
                    raise
            if once.acquire(blocking=False):
                forgotten()
            if name == "SendNodeHeartbeat":
                return SendNodeHeartbeatResponse(success=True)
            raise RunNotRunningException

        return call

    for name in NODE_METHODS:
        _patch(FleetHttpClient, name, leaving(name, _original(FleetHttpClient, name)))


# --- the SuperLink (edgefld.server.link, run through edgefld.flower_entry) ------------------------------


def refuse_superlink_runs(submitted: Callable[[bytes | None], str | None],
                          starting: Callable[[int, bytes | None], str | None]) -> None:
    """The SuperLink holds every run to what two checks allow, where a FAB passes on its way to a process.

    A run submitted (Control API StartRun) is refused, nothing stored, when ``submitted(fab_content)``
    gives a reason (content None: the request names a stored or remote app instead of carrying a FAB).
    A ServerApp process asking for its run's inputs (Runtime API PullTaskInput) gets nothing when
    ``starting(run_id, fab_content)`` gives one (None: the run has no FAB), so a FAB stored by any
    other path is never handed out. A refusal is an HTTP 403 with the reason and one WARNING line
    (a FlowerError would add an ERROR line of Flower's). Wraps control_handlers.start_run and
    runtime_handlers.pull_task_input, which the routers look up at call time."""
    from fastapi import HTTPException
    from flwr.common.logger import log
    from flwr.proto.control_pb2 import StartRunRequest, StartRunResponse
    from flwr.proto.runtime_pb2 import PullTaskInputRequest, PullTaskInputResponse
    from flwr.proto.task_pb2 import Task
    from flwr.server.superlink.linkstate import LinkState
    from flwr.superlink.servicer.control import control_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    start_run = control_handlers.start_run
    pull_task_input = runtime_handlers.pull_task_input

    def refused(reason: str) -> HTTPException:
        log(WARNING, "%s", reason)
        return HTTPException(403, reason)

    def checked_start_run(request: StartRunRequest, *args: Any, **kwargs: Any) -> StartRunResponse:
        content = None if request.app_spec or not request.fab.content else bytes(request.fab.content)
        reason = submitted(content)
        if reason is not None:
            raise refused(reason)
        return start_run(request, *args, **kwargs)

    def checked_pull_task_input(request: PullTaskInputRequest, state: LinkState, task: Task) -> PullTaskInputResponse:
        runs = state.get_run_info(run_ids=[task.run_id])
        fab = state.get_fab(runs[0].fab_hash) if runs and runs[0].fab_hash else None
        reason = starting(int(task.run_id), None if fab is None else bytes(fab.content))
        if reason is not None:
            raise refused(reason)
        return pull_task_input(request, state, task)

    _patch(control_handlers, "start_run", checked_start_run)
    _patch(runtime_handlers, "pull_task_input", checked_pull_task_input)


def run_simulation(server_app: Any, client_app: Any, node_configs: list[dict[str, Any]], run_config: dict[str, Any],
                   app_dir: str, backend_config: dict[str, Any]) -> None:
    """Run ``server_app`` with one virtual SuperNode per entry of ``node_configs`` on Flower's simulation
    engine (Ray), as `flwr run` does with a simulation federation: the apps' run config is the one of
    the app in ``app_dir`` (its pyproject.toml: the thin FAB's) fused with ``run_config``.

    Flower gives every virtual SuperNode the same two keys (partition-id, num-partitions) as its node
    config (vce_api._register_node_info_stores); edgefl's ClientApp reads its board from the node
    config, so here node i gets ``node_configs[i]`` instead, for the duration of the run."""
    from flwr.app import Context, RecordDict
    from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY, SUPERLINK_NODE_ID
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supercore.telemetry import EventType

    # The module, which the package's function of the same name hides.
    flower_simulation = importlib.import_module("flwr.simulation.run_simulation")
    register = _original(vce_api, "_register_node_info_stores")

    def register_with_node_configs(nodes_mapping: dict[int, int], run: Any, app_dir: str | None = None) -> Any:
        stores = register(nodes_mapping, run, app_dir)
        for node_id, partition_id in nodes_mapping.items():
            store = stores[node_id]
            node_config = {**node_configs[partition_id], PARTITION_ID_KEY: partition_id,
                           NUM_PARTITIONS_KEY: len(node_configs)}
            store.node_config = node_config
            for info in store.run_infos.values():  # the contexts registered above hold the old one
                info.context.node_config = dict(node_config)
        return stores

    run = Run.create_empty(run_id=generate_rand_int_from_bytes(flower_simulation.RUN_ID_NUM_BYTES))
    run.primary_task_id = generate_rand_int_from_bytes(flower_simulation.TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    run.override_config = dict(run_config)
    # What Flower's run_simulation sets for a run it creates itself (its grid reads it).
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    context = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config))
    _patch(vce_api, "_register_node_info_stores", register_with_node_configs)
    try:
        flower_simulation._run_simulation(
            num_supernodes=len(node_configs), exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app, server_app=server_app, backend_name="ray", backend_config=backend_config,
            server_app_context=context, app_dir=app_dir, run=run, is_app=True)
    finally:
        _patch(vce_api, "_register_node_info_stores", register)


# --- the server optimiser's state ------------------------------------------------------------------
# Flower's strategies keep it in attributes and offer no API to read or restore it: FedOpt's
# (FedAdam, FedYogi, FedAdagrad) first and second moments m_t and v_t, dicts of arrays by the model's
# array names, and FedAvgM's momentum_vector, a list of arrays in the model's order. Each stored
# array's name says where it goes back: "m_t/<array name>", "v_t/<array name>", "momentum_vector/<index>".
# FedOpt's current_arrays and FedAvgM's are the global model, set again from the model a run starts
# with (configure_train), so they are not part of the state.
_MOMENT_ATTRIBUTES = ("m_t", "v_t")
_MOMENTUM_ATTRIBUTE = "momentum_vector"


def server_optimizer_state(strategy: object) -> dict[str, Any]:
    """The optimiser state of a Flower strategy by name (numpy arrays); {} for a stateless one."""
    from flwr.serverapp.strategy import FedAvgM
    from flwr.serverapp.strategy.fedopt import FedOpt

    state: dict[str, Any] = {}
    if isinstance(strategy, FedOpt):
        for attribute in _MOMENT_ATTRIBUTES:
            for name, array in (getattr(strategy, attribute) or {}).items():
                state[f"{attribute}/{name}"] = array
    if isinstance(strategy, FedAvgM):
        for index, array in enumerate(getattr(strategy, _MOMENTUM_ATTRIBUTE) or []):
            state[f"{_MOMENTUM_ATTRIBUTE}/{index}"] = array
    return state


def load_server_optimizer_state(strategy: object, state: dict[str, Any]) -> None:
    """Put back what server_optimizer_state read; ValueError for a name this strategy does not keep."""
    from flwr.serverapp.strategy import FedAvgM
    from flwr.serverapp.strategy.fedopt import FedOpt

    moments: dict[str, dict[str, Any]] = {attribute: {} for attribute in _MOMENT_ATTRIBUTES}
    momentum: dict[int, Any] = {}
    for stored, array in state.items():
        attribute, _, name = stored.partition("/")
        if attribute in moments and isinstance(strategy, FedOpt):
            moments[attribute][name] = array
        elif attribute == _MOMENTUM_ATTRIBUTE and isinstance(strategy, FedAvgM) and name.isdigit():
            momentum[int(name)] = array
        else:
            raise ValueError(f"optimiser state {stored!r} does not belong to {type(strategy).__name__}")
    for attribute, arrays in moments.items():
        if arrays:
            setattr(strategy, attribute, arrays)
    if momentum:
        if sorted(momentum) != list(range(len(momentum))):
            raise ValueError(f"optimiser state momentum_vector has gaps: {sorted(momentum)}")
        setattr(strategy, _MOMENTUM_ATTRIBUTE, [momentum[index] for index in range(len(momentum))])


# The train config key under which Flower's DifferentialPrivacyClientSideFixedClipping sends the clipping
# norm and its fixedclipping_mod reads it (flwr.supercore.differential_privacy.KEY_CLIPPING_NORM): the
# ClientApp applies the mod only to a message that carries it ([server.dp] mode = "local").
DP_CLIPPING_NORM_KEY = "clipping_norm"


# --- secure aggregation (edgefld.apps.secure_aggregation) --------------------------------------------
# Flower's SecAgg+ (SecAggPlusWorkflow on the server, secaggplus_mod on the boards) is built on the legacy
# API: the workflow reads the round and the model from a LegacyContext's state, asks a legacy Strategy's
# configure_fit for (ClientProxy, FitIns) pairs, sends each board its FitIns as the legacy "fitins.*"
# records, and hands aggregate_fit every board's FitRes with the unmasked weighted average of the
# updates as its parameters; the mod reads the train reply as "fitres.*" records. These are the pieces
# of that API the glue uses, and the log lines Flower writes at ERROR when a round falls below the
# reconstruction threshold: an expected outcome of a board dropping out, reported by edgefl in one
# WARNING line of its own.

# The ConfigRecord of every SecAgg+ message, both ways (flwr.common.secure_aggregation.secaggplus_constants).
SECAGG_CONFIGS_KEY = "secaggplus_configs"
SECAGG_HALT_LINES = (
    "Insufficient available nodes.",
    "Not enough shares to recover secret in unmask vectors stage",
    "The number of samples should be greater than 1.",
)


def secure_aggregation_context(context: Any, strategy: Any, node_ids: Iterable[int], grid: Any,
                               current_round: int, arrays: Any) -> Any:
    """The LegacyContext SecAggPlusWorkflow runs a round in: ``strategy`` as its legacy Strategy, a client
    manager holding one proxy per node of the round (the workflow counts them in a log line), the round
    number and the model where the workflow reads them (DefaultWorkflow's record keys)."""
    from flwr.app import ConfigRecord
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    manager = SimpleClientManager()
    for node_id in node_ids:
        manager.register(node_proxy(node_id, grid, context.run_id))
    legacy = LegacyContext(context, strategy=strategy, client_manager=manager)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: current_round})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = arrays
    return legacy


def node_proxy(node_id: int, grid: Any, run_id: int) -> Any:
    """The legacy ClientProxy of a node (the workflow keys its FitIns by the proxy's node_id)."""
    from flwr.server.compat.grid_client_proxy import GridClientProxy

    return GridClientProxy(node_id, grid, run_id)


def legacy_strategy_base() -> type:
    """Flower's legacy Strategy, the interface SecAggPlusWorkflow drives."""
    from flwr.server.strategy import Strategy

    return Strategy


def fit_instruction(packed: Any, config: dict[str, Any]) -> Any:
    """A legacy FitIns of one packed array and a train config (what configure_fit returns per node)."""
    from flwr.common import FitIns, ndarrays_to_parameters

    return FitIns(parameters=ndarrays_to_parameters([packed]), config=config)


def fit_instruction_from(content: Any) -> tuple[Any, dict[str, Any]]:
    """(the packed array, the train config) of a message the workflow sent as its FitIns."""
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common.recorddict_compat import recorddict_to_fitins

    fitins = recorddict_to_fitins(content, keep_input=True)
    arrays = parameters_to_ndarrays(fitins.parameters)
    if len(arrays) != 1:
        raise ValueError(f"expected one packed array in the secure aggregation instruction, got {len(arrays)}")
    return arrays[0], dict(fitins.config)


def fit_result_content(update: Any, num_examples: int) -> Any:
    """A RecordDict in the shape secaggplus_mod masks: a legacy FitRes of one array (the update) and its weight."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict

    fitres = FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters([update]),
                    num_examples=num_examples, metrics={})
    return fitres_to_recorddict(fitres, keep_input=True)


def fit_result_arrays(fitres: Any) -> list[Any]:
    """The arrays of a FitRes aggregate_fit receives (for SecAgg+: the unmasked weighted average)."""
    from flwr.common import parameters_to_ndarrays

    return list(parameters_to_ndarrays(fitres.parameters))


def aggregate_parameters(arrays: list[Any]) -> Any:
    """Legacy Parameters of ``arrays``: what aggregate_fit returns to the workflow."""
    from flwr.common import ndarrays_to_parameters

    return ndarrays_to_parameters(arrays)


def _secagg_halt(text: str) -> bool:
    return text in SECAGG_HALT_LINES


def secure_aggregation_halts_at_info() -> None:
    """Flower's SecAgg+ halt lines (SECAGG_HALT_LINES) at INFO in this process (the ServerApp's): edgefl says
    what happened in its own WARNING."""
    expected_errors_at_info(_secagg_halt)


class ExpectedErrorsAtInfo:
    """A filter on Flower's logger: the ERROR records whose message ``expected`` accepts are logged at INFO.

    Flower logs some outcomes that are part of edgefl's normal operation at ERROR (edgefld.flower_entry's
    SuperLink lines, the SecAgg+ halts); every other error stays an ERROR."""

    def __init__(self, expected: Callable[[str], bool]) -> None:
        self.expected = expected

    def filter(self, record: Any) -> bool:
        if record.levelno == ERROR and self.expected(str(record.msg)):
            record.levelno, record.levelname = INFO, "INFO"
        return True


def expected_errors_at_info(expected: Callable[[str], bool]) -> None:
    """Install ExpectedErrorsAtInfo(expected) on Flower's logger, once however often it is asked."""
    import logging

    logger = logging.getLogger("flwr")
    if not any(isinstance(f, ExpectedErrorsAtInfo) and f.expected is expected for f in logger.filters):
        logger.addFilter(ExpectedErrorsAtInfo(expected))
