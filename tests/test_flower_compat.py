"""Pins of every Flower internal edgefld.flower_compat uses or changes, and what the changes do.

The pins hash the source of the Flower code each change depends on: an upgrade of flwr
that touches any of it fails here, naming what to re-check, before a federation slows
down (or hangs) for a reason nobody sees.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import itertools
import logging
import signal as signal_module
import threading
import time

import flwr
import pytest
from flwr.app import Message, Metadata, RecordDict
from flwr.compat.common import recorddict_compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi, strategy_utils
from flwr.serverapp.strategy.fedopt import FedOpt
from flwr.supercore.constant import TaskType
from flwr.supercore.corestate.in_memory_corestate import InMemoryCoreState
from flwr.supercore.error import FlowerError
from flwr.supercore.exit import exit as flower_exit
from flwr.supercore.exit import exit_handler, signal_handler
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
from flwr.supercore.inflatable.inflatable_protobuf_utils import make_pull_object_fn_protobuf
from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.protobuf.client import ProtobufClient
from flwr.supercore.retry import http_retry
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.superexec.run_superexec import run_superexec
from flwr.superlink import config_loader
from flwr.superlink.grid import http_grid
from flwr.superlink.grid.http_grid import HttpGrid
from flwr.superlink.servicer.runtime import runtime_handlers
from flwr.supernode import fleet_http_connection
from flwr.supernode import start_client_internal as supernode_internal
from flwr.supernode.fleet_http_client import FleetHttpClient
from flwr.supernode.nodestate import NodeStateFactory
from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState
from flwr.supernode.runtime.run_clientapp import run_clientapp

from edgefld import flower_compat
from edgefld.client import node_events

secaggplus_mod_module = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")


def _digest(function) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


# (function, sha256 prefix of its source in flwr 1.42.0, what edgefld relies on in it)
PINNED = [
    (supernode_internal.start_client_internal, "9e89a6eb68fbec68",
     "its loop calls the module's _pull_and_store_message and sleeps 3 s only when that returns None"),
    (supernode_internal._push_messages, "00bb86faffdec114",
     "it sends every reply get_messages_legacy(is_reply=True) gives, blocking (time.sleep(0.5)) only while "
     "there is none (edgefld calls it only when one waits) or while a reply's objects are still coming; "
     "each push begins with a call of its keyword argument send, and reads each object with its keyword argument "
     "object_store's get, b\"\" (sleeping 0.5 s) while the ClientApp has not uploaded it (on_reply_pushes); a "
     "RunNotRunningException while pushing drops the reply at INFO (leave_when_forgotten)"),
    (supernode_internal._pull_and_store_message, "eaf5d0e36dc34e4c",
     "a message whose run stops while it is received stays stored (its reply comes later, unasked); a new "
     "run's FAB comes from its keyword argument get_fab, after receive(), before anything is stored (refuse_fabs); "
     "it creates the ClientApp's task (its keyword argument state's create_task) before it pulls the message's "
     "objects (node_state_events: the warm runtime claims the task as it is created); a RunNotRunningException "
     "anywhere in it, receive() included, drops the message at INFO (leave_when_forgotten)"),
    (supernode_internal._insert_message, "a0c6f4605e993f04",
     "it stores a reply in the node state and its objects in the store, as Flower's own FAB-verification "
     "error reply is stored (refuse_fabs)"),
    (ProtobufClient.__init__, "ea57554c6ab40501",
     "every request of a protobuf-over-HTTP client goes through the httpx.Client it keeps as _client "
     "(on_protobuf_clients: the SuperNode's reads are bounded there)"),
    (fleet_http_connection.http_request_response, "b80ca36779c2657f",
     "the SuperNode is admitted by its FleetHttpClient's RegisterNode (without a node key) and ActivateNode, "
     "whose response's node_id is the node id; a refusal is an httpx.HTTPStatusError whose body is Flower's "
     "error JSON, given up on at once for a 412 (report_admission); afterwards every call goes through the "
     "FleetHttpClient's methods, under its retry invoker (which retries Exceptions only) except the heartbeat, "
     "whose 401 makes it SIGINT itself (leave_when_forgotten)"),
    (FleetHttpClient.RegisterNode, "86626f63e2f0fc25", "RegisterNode answers a RegisterNodeFleetRequest"),
    (http_retry.make_simple_http_retry_invoker, "49e12326a4b17e26",
     "the SuperNode's retry invoker recovers from httpx errors only, so a RunNotRunningException raised by a "
     "FleetHttpClient method passes through it at once; on a 401 it would SIGINT its own process "
     "(leave_when_forgotten catches the 401 below it)"),
    (config_loader.get_objectstore_linkstate_factories, "9f697d33f4936d22",
     "the SuperLink's LinkState and ObjectStore both come from its --database, Flower's in-memory ones for "
     "SUPERLINK_STATE_IN_MEMORY"),
    (FleetHttpClient.ActivateNode, "560fe67fc99714e1", "ActivateNode answers with an ActivateNodeResponse"),
    (FlowerError.from_json, "b50b62374038193d",
     "it reads the code of an HTTP error body {code, detail} (report_admission)"),
    (signal_handler.register_signal_handlers, "372d224abafddcf8",
     "it installs its graceful exit with signal.signal for SIGINT, SIGTERM and SIGQUIT, which the first "
     "signal resets to the handlers found before (wrap_stop_handlers)"),
    (exit_handler.add_exit_handler, "c153212885dfd1be",
     "a handler added with run_before_force_exit=True runs in the first phase, last added first (on_exit)"),
    (exit_handler.trigger_exit_handlers, "5703e77e3197160c", "each phase runs its handlers last added first"),
    (flower_exit.flwr_exit, "1445f36e9999abb4",
     "the run_before_force_exit handlers run before the force-exit timer starts (on_exit)"),
    (run_superexec, "91e7a33c5b898f33",
     "SuperExec claims a task with RuntimeHttpClient.AcquireTask through RuntimeVersionHttpInterceptor(component_name="
     "\"SuperExec\") and SuperExecAuthHttpInterceptor(_SUPEREXEC_AUTH_METHODS), and launches it when the answer "
     "HasField(\"task\") and carries a token (ClientAppTasks does the same for the warm runtime)"),
    (RuntimeHttpClient.AcquireTask, "f21b3440bebc1206", "AcquireTask answers an AcquireTaskRequest (ClientAppTasks)"),
    (run_clientapp, "6ce09559f3a2f5dc",
     "it is the whole of a flwr-clientapp process's work for one task token; the warm runtime runs it in a fork "
     "(run_clientapp) and exits with its SystemExit; it starts a HeartbeatSender and, on exit, calls the module's "
     "push_task_output before it stops the heartbeat (heartbeat_ends_before_task_output reverses the two)"),
    (InMemoryNodeState.store_message_and_object_tree, "6712f3c6442a9092",
     "a ClientApp's reply is stored through self.store_message (node_state_events wakes the SuperNode's loop)"),
    (InMemoryNodeState._store_error_replies, "3af03090bfae3ea7",
     "the error replies Flower makes for failed or expired tasks are stored through self.store_message too"),
    (InMemoryCoreState.create_task, "ca22dc66c8990283",
     "it returns the new task's id, or None when none was created (node_state_events)"),
    (InMemoryNodeState.get_messages_legacy, "1a5a9140a90c95b9",
     "a reply to send is an entry of msg_store, not retrieved, with a reply_to_message_id (reply_waiting)"),
    (inflatable_utils.pull_objects, "31bb2de46b450e6a",
     "its backoff and bounds come from the keyword defaults initial_backoff, backoff_cap, max_tries_per_object "
     "(None: no bound) and max_time, from the start of the pull (bound_object_pulls)"),
    (inflatable_utils.pull_and_inflate_object_from_tree, "139811483a15e4a6",
     "it passes its own keyword defaults initial_backoff, backoff_cap, max_tries_per_object and max_time to "
     "pull_objects"),
    (strategy_utils.sample_nodes, "5665d8afcffe5ea5",
     "while too few nodes are connected it calls the module's sleep(1), then asks again (patient_node_waits)"),
    (HttpGrid.send_and_receive, "699c9f048f3cff74",
     "push_messages then pull_messages until every reply came or the timeout passed (fast_grid_polls redoes it)"),
    (HttpGrid.pull_messages, "67a5266a5a2ed515",
     "it gets replies from its runtime client's PullMessages, then pulls each one's objects with the module's "
     "pull_objects(object_ids=..., pull_object_fn=...) by keyword, and makes a MESSAGE_UNAVAILABLE error reply of "
     "an ObjectPullError (abandon_uploads_of_nodes_that_left)"),
    (RuntimeHttpClient.PullMessages, "ea555b6e26885573",
     "PullMessages answers with messages_list, each message's metadata carrying its message_id and src_node_id"),
    (iterate_object_tree, "34c0fe845619356a", "the tree is walked in post-order: the message's own id comes last"),
    (make_pull_object_fn_protobuf, "ede05e6314fa253a",
     "an object the SuperLink has not received yet raises ObjectUnavailableError (retried by pull_objects)"),
    (runtime_handlers.pull_messages, "8c998d6d197c09e4",
     "the SuperLink hands a reply out once (deletes it when pulled), whether or not its objects all arrived"),
    # The server optimiser's state (server_optimizer_state, load_server_optimizer_state).
    (FedOpt.__init__, "f78e60e40406bb97", "FedOpt keeps its moments in m_t and v_t (None until the first round)"),
    (FedOpt.configure_train, "8e5b11b6ce85524c",
     "current_arrays is set again from the model every round: it is not state to checkpoint"),
    (FedOpt._compute_deltat_and_mt, "a03c0e5a01cb3066",
     "m_t is a dict of arrays by the model's array names, zeros when empty, and carried from round to round"),
    (FedAdam.aggregate_train, "8755033891800f9d",
     "v_t likewise; the bias correction counts the server_round it is given (ResumableStrategy's true round)"),
    (FedYogi.aggregate_train, "aef6af1030f0f07c", "its state is m_t and v_t alone"),
    (FedAdagrad.aggregate_train, "cc01682011d7c07a", "its state is m_t and v_t alone"),
    (FedAvgM.__init__, "67668f6302d819a8", "FedAvgM keeps its momentum in momentum_vector, a list (None at first)"),
    (FedAvgM.configure_train, "58e3b6959aed0799",
     "current_arrays is the model the first round starts from (a resumed run's checkpoint), set once"),
    (FedAvgM.aggregate_train, "ebb415852dcdffc1",
     "momentum_vector is a list of arrays in the model's order; current_arrays becomes the new global model"),
    # Secure aggregation (edgefld.apps.secure_aggregation through the secure_aggregation_* helpers).
    (SecAggPlusWorkflow.__call__, "204402b446244e5e",
     "it needs a LegacyContext and runs its four stages through grid.send_and_receive, one call each, in order"),
    (SecAggPlusWorkflow._check_threshold, "5cbbc3639376397c",
     "too few answering neighbours is logged at ERROR as \"Insufficient available nodes.\" and halts the round"),
    (SecAggPlusWorkflow.setup_stage, "892a5a68cc6aef04",
     "the round and model come from the context state's \"config\"/\"parameters\" records; configure_fit gives "
     "(proxy, FitIns) pairs keyed by proxy.node_id and sent as fitins_to_recorddict; a float num_shares is a "
     "fraction of the round's boards, a float threshold a fraction of num_shares (at least 2)"),
    (SecAggPlusWorkflow.collect_masked_vectors_stage, "e2e2900e524ba35a",
     "each board's FitIns records travel with the stage's SecAgg+ record; the masked vectors come back as bytes "
     "in the secaggplus_configs record"),
    (SecAggPlusWorkflow.unmask_stage, "c4639d18768446e9",
     "aggregate_fit gets every surviving board's FitRes with the unmasked weighted average as its parameters"),
    (secaggplus_mod_module.secaggplus_mod, "cc0e7d467b4de166",
     "in the masked-vector stage it calls call_next with the FitIns message, reads the reply with "
     "recorddict_to_fitres, empties its array records and keeps its other records; other stages never call it"),
    (secaggplus_mod_module._collect_masked_vectors, "d638fe6563407bc1",
     "the update is weighted by num_examples / max_weight, clipped to the clipping range and quantised"),
    (recorddict_compat.recorddict_to_fitins, "9c48dab31aa95c3e", "a FitIns from the fitins.* records"),
    (recorddict_compat.fitres_to_recorddict, "acf57f4322a2aa17", "the fitres.* records of a FitRes"),
    (recorddict_compat.recorddict_to_fitres, "ab8028bbf3c2a953", "a FitRes from the fitres.* records"),
    (GridClientProxy.__init__, "839ff1d0d282f5fd", "a proxy of a node id (node_proxy)"),
    (LegacyContext.__init__, "7aa64b9361f7017d", "a legacy context shares the ServerApp context's state"),
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
        assert {"initial_backoff", "backoff_cap", "max_tries_per_object", "max_time"} <= set(function.__kwdefaults__)


def test_a_clientapps_heartbeat_has_ended_before_its_task_output_is_pushed(monkeypatch):
    # Flower's order (output, then heartbeat stop) let a heartbeat reach the SuperNode after the task's
    # token was revoked: an ERROR line in secure aggregation's short stages.
    from flwr.supernode.runtime import run_clientapp as module

    monkeypatch.setattr(module, "HeartbeatSender", module.HeartbeatSender)
    monkeypatch.setattr(module, "push_task_output", module.push_task_output)
    flower_compat.heartbeat_ends_before_task_output()
    in_flight = threading.Event()
    events: list[str] = []

    def heartbeat() -> bool:
        in_flight.set()
        time.sleep(0.3)  # a heartbeat request still on its way when the task ends
        events.append("heartbeat answered")
        return True

    class RuntimeClient:  # what push_task_output calls on Flower's RuntimeHttpClient
        def PushTaskOutput(self, request: object) -> None:  # noqa: N802 (Flower's RPC name)
            events.append("task output pushed")

    sender = module.HeartbeatSender(heartbeat)
    sender.start()
    assert in_flight.wait(5)
    module.push_task_output(client=RuntimeClient(), context=None, sub_status="completed", details="")
    assert events == ["heartbeat answered", "task output pushed"]
    assert not sender.is_running


def _pull_after_unavailable(times: int) -> list[float]:
    """When each attempt of an object pull came (monotonic), the object there from attempt ``times`` + 1."""
    attempts: list[float] = []

    def pull(object_id: str) -> bytes:
        attempts.append(time.monotonic())
        if len(attempts) <= times:  # not uploaded yet
            raise ObjectUnavailableError(object_id)
        return b"content"

    assert inflatable_utils.pull_objects(["a" * 64], pull) == {"a" * 64: b"content"}
    return attempts


@pytest.fixture
def pull_defaults():
    saved = {f: dict(f.__kwdefaults__) for f in (inflatable_utils.pull_objects,
                                                   inflatable_utils.pull_and_inflate_object_from_tree)}
    yield
    for function, defaults in saved.items():
        function.__kwdefaults__ = defaults


def test_a_missing_object_is_pulled_again_within_a_fraction_of_a_second(pull_defaults):
    flower_compat.bound_object_pulls(local=False)
    attempts = _pull_after_unavailable(3)  # Flower would wait 1 + 2 + 4 s
    assert len(attempts) == 4
    assert attempts[-1] - attempts[0] < 1.0, attempts
    # A SuperNode or a ServerApp keeps Flower's bound on tries: its retries load a shared server.
    assert inflatable_utils.pull_objects.__kwdefaults__["max_tries_per_object"] == 500


def test_an_app_pulls_again_from_its_own_runtime_within_tens_of_milliseconds(pull_defaults):
    # A ClientApp's SuperNode (a ServerApp's SuperLink) still receives the message's objects while the
    # app asks for them: five misses cost 0.05 + 0.1 + 0.2 + 0.4 + 0.5 s at a server's pace, here 0.3 s.
    flower_compat.bound_object_pulls(local=True)
    attempts = _pull_after_unavailable(5)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert len(attempts) == 6
    assert max(gaps) < 0.1 * 1.2 + 0.05, gaps  # the cap, its 20 % jitter, a loaded machine's scheduling
    assert attempts[-1] - attempts[0] < 0.5, gaps
    # Bounded by time, as long as the SuperNode's own pulls may take, not by a count of fast tries.
    defaults = inflatable_utils.pull_and_inflate_object_from_tree.__kwdefaults__
    assert defaults["max_tries_per_object"] is None
    assert defaults["max_time"] == flower_compat.LOCAL_PULL_MAX_S
    assert 500 * flower_compat.PULL_BACKOFF_CAP_S <= flower_compat.LOCAL_PULL_MAX_S


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


def test_a_board_polls_faster_for_a_moment_after_it_sent_a_reply():
    window = flower_compat.AFTER_REPLY_WINDOW_S
    assert flower_compat.poll_interval(1.0, 0.2, 0.0) == flower_compat.AFTER_REPLY_POLL_S
    assert flower_compat.poll_interval(1.0, 0.2, window - 0.01) == flower_compat.AFTER_REPLY_POLL_S
    assert flower_compat.poll_interval(1.0, 0.05, window + 0.01) == flower_compat.FAST_POLL_S
    # What it costs the server: a few requests a board and round.
    assert window / flower_compat.AFTER_REPLY_POLL_S - window / flower_compat.FAST_POLL_S <= 15


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


@pytest.fixture
def supernode_loop():
    """Flower's SuperNode loop functions, put back as they were after a test wraps or replaces them."""
    saved = supernode_internal._pull_and_store_message, supernode_internal._push_messages, supernode_internal.time
    yield
    supernode_internal._pull_and_store_message, supernode_internal._push_messages, supernode_internal.time = saved


def test_a_reply_waiting_with_no_message_pulled_is_sent_at_once(supernode_loop):
    """The restarted-server case: a reply stored after the loop's one sending turn still goes out."""
    state = NodeStateFactory(ObjectStoreFactory()).state()
    polls: list[float] = []

    def empty_pull(**kwargs) -> int | None:
        polls.append(time.monotonic())
        if len(polls) == 3:
            _message(state, "b" * 64, reply_to="a" * 64)  # a ClientApp finished meanwhile
        return 99 if len(polls) == 6 else None  # a next message (without the fix, the reply waited for it)

    supernode_internal._pull_and_store_message = empty_pull
    flower_compat.adaptive_supernode_polls()
    _message(state, "a" * 64)  # the instruction itself is no reply
    assert not flower_compat.reply_waiting(state)
    started = time.monotonic()
    run_id = supernode_internal._pull_and_store_message(state=state)
    assert run_id is not None and len(polls) == 3 and time.monotonic() - started < 2.0
    assert flower_compat.reply_waiting(state)
    # Looking did not take it: Flower's sending turn still gets it.
    assert [m.metadata.message_id for m in state.get_messages_legacy(is_reply=True)] == ["b" * 64]
    assert not flower_compat.reply_waiting(state)


def test_after_sending_a_reply_the_supernode_asks_the_server_again_within_tens_of_milliseconds(supernode_loop):
    state = NodeStateFactory(ObjectStoreFactory()).state()
    polls: list[float] = []

    def empty_pull(**kwargs) -> int | None:
        polls.append(time.monotonic())
        return 99 if len(polls) == 6 else None  # the next round's instruction

    supernode_internal._pull_and_store_message = empty_pull
    # Flower's send, here only taking the reply from the state.
    supernode_internal._push_messages = lambda **kwargs: kwargs["state"].get_messages_legacy(is_reply=True)
    flower_compat.adaptive_supernode_polls()
    _message(state, "b" * 64, reply_to="a" * 64)
    supernode_internal._push_messages(state=state)  # the reply goes out
    assert supernode_internal._pull_and_store_message(state=state) == 99
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    assert max(gaps) < flower_compat.FAST_POLL_S, gaps  # AFTER_REPLY_POLL_S, and a loaded machine's delay


def test_a_reply_stored_ends_the_supernodes_wait_at_once(monkeypatch, supernode_loop):
    """No fixed wait between a ClientApp's reply (or Flower's error reply for a failed task) and its push."""
    monkeypatch.setattr(flower_compat, "FAST_POLL_S", 30.0)  # the next ask of the server is far off
    state = NodeStateFactory(ObjectStoreFactory()).state()
    supernode_internal._pull_and_store_message = lambda **kwargs: None  # the server has nothing
    flower_compat.adaptive_supernode_polls()
    # No instruction in work here: a reply Flower makes itself for a task that failed comes unasked.
    threading.Timer(0.1, _message, (state, "b" * 64, "a" * 64)).start()
    started = time.monotonic()
    assert supernode_internal._pull_and_store_message(state=state) == flower_compat.REPLY_WAITING
    assert time.monotonic() - started < 10.0  # not the 30 s until the next poll
    assert flower_compat.reply_waiting(state)


def test_the_supernodes_state_tells_of_each_task_created_and_each_reply_stored():
    state = NodeStateFactory(ObjectStoreFactory()).state()
    events: list[str] = []
    flower_compat.node_state_events(state, lambda: events.append("reply"), lambda: events.append("task"))
    assert state.create_task(task_type=TaskType.CLIENT_APP, run_id=7, fab_hash="f" * 64) is not None
    assert events == ["task"]
    _message(state, "a" * 64)  # the server's instruction: no reply
    assert events == ["task"]
    _message(state, "b" * 64, reply_to="a" * 64)
    assert events == ["task", "reply"]


def test_the_supernode_never_blocks_on_a_reply_so_clientapps_may_overlap(supernode_loop):
    """Flower's send step waits for a reply before the next pull; here it returns when none waits."""
    state = NodeStateFactory(ObjectStoreFactory()).state()
    sent: list[int] = []
    supernode_internal._push_messages = lambda **kwargs: sent.append(1)  # Flower's, which would block here
    flower_compat.adaptive_supernode_polls()
    _message(state, "a" * 64)  # a ClientApp works on it (or hangs)
    started = time.monotonic()
    supernode_internal._push_messages(state=state)
    assert sent == [] and time.monotonic() - started < 0.1  # back to pulling the next message at once
    _message(state, "b" * 64, reply_to="a" * 64)
    supernode_internal._push_messages(state=state)
    assert sent == [1]


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
        gaps = [round(b - a, 1) for a, b in itertools.pairwise(asked)]
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


def test_the_server_gives_up_a_replys_upload_only_once_its_node_left(monkeypatch):
    """A reply whose objects are still coming is waited for while its node is online (a board whose
    link comes back resumes its upload into the same pull) and given up once it is not."""
    from types import SimpleNamespace

    from flwr.proto.message_pb2 import Message as MessageProto
    from flwr.proto.runtime_pb2 import PullAppMessagesResponse

    class Grid:
        online = [1, 2]

        def get_node_ids(self):
            return list(self.online)

    def pulled(self, request):  # what the SuperLink answers: two replies, from nodes 1 and 2
        response = PullAppMessagesResponse()
        for node in (1, 2):
            message = MessageProto()
            message.metadata.message_id = f"reply-{node}"
            message.metadata.src_node_id = node
            response.messages_list.append(message)
        return response

    monkeypatch.setattr(RuntimeHttpClient, "PullMessages", pulled)
    monkeypatch.setattr(http_grid, "pull_objects", http_grid.pull_objects)
    monkeypatch.setattr(flower_compat, "_UPLOADS", flower_compat._UploadWatch())
    monkeypatch.setattr(flower_compat, "_LEFT_MID_UPLOAD", set())
    monkeypatch.setattr(flower_compat, "NODE_CHECK_S", 0.1)
    grid = Grid()
    flower_compat.abandon_uploads_of_nodes_that_left(grid)
    RuntimeHttpClient.PullMessages(SimpleNamespace(), None)
    tries = {"reply-1": 0, "reply-2": 0}

    def pull_object(object_id: str) -> bytes:
        reply = object_id.split(":")[0]
        tries[reply] += 1
        if reply == "reply-1" and tries[reply] == 6:
            grid.online = [2]  # node 1 is gone half-way through its upload
        if reply == "reply-2" and tries[reply] >= 6:
            return b"uploaded at last"  # node 2 is slow, but online
        raise ObjectUnavailableError(object_id)

    fast = {"initial_backoff": 0.01, "backoff_cap": 0.05}
    started = time.monotonic()
    got = http_grid.pull_objects(object_ids=["reply-2:array", "reply-2"], pull_object_fn=pull_object, **fast)
    assert got == {"reply-2:array": b"uploaded at last", "reply-2": b"uploaded at last"}
    with pytest.raises(ObjectPullError, match="node 1 left before it finished uploading"):
        http_grid.pull_objects(object_ids=["reply-1:array", "reply-1"], pull_object_fn=pull_object, **fast)
    assert time.monotonic() - started < 10
    assert flower_compat._LEFT_MID_UPLOAD == {1}
    # Objects of anything else (not a reply the grid pulled) are pulled as Flower pulls them.
    with pytest.raises(ObjectPullError, match="not here"):
        http_grid.pull_objects(object_ids=["other"], pull_object_fn=lambda i: (_ for _ in ()).throw(
            ObjectPullError(i, "not here")))


def test_the_warm_runtime_signs_what_flowers_superexec_signs():
    assert flower_compat.superexec_auth_methods() == frozenset({"/flwr.proto.Runtime/AcquireTask"})


# --- the SuperNode's hooks (edgefld.client.supernode) ----------------------------------------------


def test_the_supernode_calls_the_hooked_functions_by_the_names_edgefld_replaces():
    loop = inspect.getsource(supernode_internal.start_client_internal)
    assert "register_signal_handlers(" in loop and "_push_messages(" in loop
    assert supernode_internal.register_signal_handlers is signal_handler.register_signal_handlers
    assert set(flower_compat.STOP_SIGNALS) == set(signal_handler.SIGNAL_TO_EXIT_CODE)
    connection = inspect.getsource(fleet_http_connection.http_request_response)
    assert "client.RegisterNode" in connection and "client.ActivateNode" in connection
    assert "node = Node(node_id=response.node_id)" in connection
    assert "FlowerError.from_json(exc.response.text)" in connection
    assert fleet_http_connection.FleetHttpClient is FleetHttpClient
    assert set(flower_compat.ADMISSION_METHODS) <= set(vars(FleetHttpClient))


def test_the_refusal_codes_the_daemon_names_are_flowers():
    from flwr.supercore.error import ApiErrorCode

    assert node_events.REGISTRATION_DISABLED == ApiErrorCode.FLEET_SUPERNODE_REGISTRATION_DISABLED
    assert node_events.NODE_ACTIVATION_FAILED == ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED


class _FleetServer:
    """A loopback HTTP server answering the Fleet API's admission calls as a SuperLink would."""

    def __init__(self, answers: dict[str, tuple[int, bytes]]) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                status, body = answers[self.path]
                self.send_response(status)
                self.send_header("content-type", "application/protobuf" if status == 200 else "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_node_id_and_the_servers_refusal_code_are_read_from_the_fleet_clients_answers():
    import json

    import httpx
    from flwr.proto.fleet_pb2 import ActivateNodeRequest, ActivateNodeResponse, RegisterNodeFleetRequest

    refusal = json.dumps({"code": 2001, "detail": "SuperNode authentication is enabled."}).encode()
    server = _FleetServer({"/v1/fleet/register-node": (412, refusal),
                           "/v1/fleet/activate-node": (200, ActivateNodeResponse(node_id=4242).SerializeToString())})
    saved = {name: vars(FleetHttpClient)[name] for name in flower_compat.ADMISSION_METHODS}
    registered: list[int] = []
    refused: list[int] = []
    try:
        flower_compat.report_admission(registered.append, refused.append)
        with FleetHttpClient.from_server_address(server.address, True, None, interceptors=[]) as client:
            with pytest.raises(httpx.HTTPStatusError):  # Flower's connection still gets the error and exits
                client.RegisterNode(RegisterNodeFleetRequest(public_key=b"key"))
            assert (registered, refused) == ([], [node_events.REGISTRATION_DISABLED])
            assert client.ActivateNode(ActivateNodeRequest(public_key=b"key", heartbeat_interval=30)).node_id == 4242
            assert (registered, refused) == ([4242], [node_events.REGISTRATION_DISABLED])
    finally:
        for name, method in saved.items():
            setattr(FleetHttpClient, name, method)
        server.close()


def test_a_server_that_forgot_the_node_makes_it_leave_once_and_its_calls_end_as_for_a_stopped_run():
    import httpx
    from flwr.proto.fleet_pb2 import PullMessagesRequest, PushMessagesRequest
    from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest
    from flwr.proto.message_pb2 import PushObjectRequest
    from flwr.proto.node_pb2 import Node
    from flwr.supercore.run import RunNotRunningException

    forgotten = b'{"detail": "Invalid SuperNode authentication"}'  # what node_auth.authenticate_node answers
    server = _FleetServer({"/v1/fleet/pull-messages": (401, forgotten), "/v1/fleet/push-messages": (401, forgotten),
                           "/v1/fleet/push-object": (500, b'{"detail": "boom"}'),
                           "/v1/fleet/send-node-heartbeat": (401, forgotten)})
    saved = {name: vars(FleetHttpClient)[name] for name in flower_compat.NODE_METHODS}
    left: list[str] = []
    try:
        flower_compat.leave_when_forgotten(lambda: left.append(threading.current_thread().name))
        node = Node(node_id=7)
        with FleetHttpClient.from_server_address(server.address, True, None, interceptors=[]) as client:
            # Not an Exception: Flower's `except Exception` (ERROR lines) lets it through to its INFO handlers.
            assert not issubclass(RunNotRunningException, Exception)
            with pytest.raises(RunNotRunningException):
                client.PullMessages(PullMessagesRequest(node=node))
            assert len(left) == 1
            with pytest.raises(RunNotRunningException):
                client.PushMessages(PushMessagesRequest(node=node))
            assert client.SendNodeHeartbeat(SendNodeHeartbeatRequest(node=node, heartbeat_interval=30)).success
            with pytest.raises(httpx.HTTPStatusError):  # any other refusal is Flower's to handle, as before
                client.PushObject(PushObjectRequest(node=node, run_id=1, object_id="a" * 64, object_content=b"x"))
        assert len(left) == 1  # the policy's exit, once, whichever calls were refused
    finally:
        for name, method in saved.items():
            setattr(FleetHttpClient, name, method)
        server.close()
    # Every call of an admitted node, and no other, is watched: admission has its own refusals.
    assert set(flower_compat.NODE_METHODS) == {
        name for name in vars(FleetHttpClient) if name[0].isupper()} - set(flower_compat.ADMISSION_METHODS) - {
        "DeactivateNode", "UnregisterNode"}


def test_the_superlink_keeps_its_state_in_memory_when_told_so():
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.superlink.federation.noop_federation_manager import NoOpFederationManager

    assert flower_compat.SUPERLINK_STATE_IN_MEMORY == FLWR_IN_MEMORY_DB_NAME
    objects = ObjectStoreFactory(flower_compat.SUPERLINK_STATE_IN_MEMORY)
    assert type(objects.store()) is InMemoryObjectStore
    factory = LinkStateFactory(flower_compat.SUPERLINK_STATE_IN_MEMORY, NoOpFederationManager(), objects)
    assert type(factory.state()) is InMemoryLinkState


def test_a_foreign_fab_is_answered_with_flowers_verification_error_and_nothing_of_it_is_stored():
    from flwr.app import Error
    from flwr.supercore.fab import Fab
    from flwr.supercore.run import Run

    state = NodeStateFactory(ObjectStoreFactory()).state()
    store = ObjectStoreFactory().store()
    state.set_node_id(5)
    incoming = Message(RecordDict(), metadata=Metadata(
        run_id=7, message_id="", src_node_id=0, dst_node_id=5, reply_to_message_id="", group_id="1",
        created_at=time.time(), ttl=60.0, message_type="train"))
    incoming.metadata.__dict__["_message_id"] = incoming.object_id  # as Flower's SuperLink names it
    asked: list[tuple[bytes, int]] = []

    def refusal(content: bytes, run_id: int) -> str | None:
        asked.append((content, run_id))
        return f"refused run {run_id}: not ours"

    saved = supernode_internal._pull_and_store_message
    try:
        flower_compat.refuse_fabs(refusal)
        run_id = supernode_internal._pull_and_store_message(
            state=state, object_store=store, node_config={},
            receive=lambda: (incoming, supernode_internal.get_object_tree(incoming)),
            get_run=lambda run_id: Run.create_empty(run_id),
            get_fab=lambda fab_hash, run_id: Fab(fab_hash, b"foreign code", {}),
            pull_object=lambda run_id, object_id: b"", confirm_message_received=lambda run_id, object_id: None,
            trusted_entities=None)
    finally:
        supernode_internal._pull_and_store_message = saved
    assert run_id == 7 and asked == [(b"foreign code", 7)]
    assert state.get_run(7) is None and not state.get_messages_legacy(is_reply=False)
    (reply,) = state.get_messages_legacy(is_reply=True)
    assert reply.metadata.reply_to_message_id == incoming.metadata.message_id
    assert reply.has_error() and reply.error.code == supernode_internal.FAB_VERIFICATION_ERROR.code
    assert isinstance(reply.error, Error) and reply.error.reason == "refused run 7: not ours"


def test_every_protobuf_client_is_handed_over_as_the_httpx_client_its_requests_use():
    import httpx

    handed: list[httpx.Client] = []
    saved = vars(ProtobufClient)["__init__"]
    try:
        flower_compat.on_protobuf_clients(handed.append)
        client = FleetHttpClient.from_server_address("127.0.0.1:9", True, None, interceptors=[])
    finally:
        ProtobufClient.__init__ = saved
    assert handed == [client._client] and isinstance(handed[0], httpx.Client)
    client.close()


def test_a_reply_push_is_seen_from_its_first_request_to_its_end():
    """With Flower's own _push_messages: started() before the first send, ended() after, even when it fails."""
    events: list[str] = []
    state = NodeStateFactory(ObjectStoreFactory()).state()
    store = ObjectStoreFactory().store()
    _message(state, "a" * 64)
    instruction = state.get_messages_legacy(is_reply=False)[0]
    saved = supernode_internal._push_messages

    def send(message, object_tree, runtime):
        events.append("send")
        raise RuntimeError("the link went down")  # Flower logs it and drops the reply

    try:
        flower_compat.on_reply_pushes(lambda: events.append("started"),
                                      lambda awaiting: events.append(f"awaiting {awaiting}"),
                                      lambda: events.append("ended"))
        supernode_internal._insert_message(Message(RecordDict(), reply_to=instruction), state, store)
        supernode_internal._push_messages(state=state, object_store=store, send=send,
                                          push_object=lambda *args: None)
    finally:
        supernode_internal._push_messages = saved
    assert events == ["started", "send", "ended"]


def test_flowers_stop_handlers_are_installed_wrapped_and_edgefls_exit_handler_runs_first():
    from flwr.supercore.telemetry import EventType

    saved_register = supernode_internal.register_signal_handlers
    saved_signals = {sig: signal_module.getsignal(sig) for sig in flower_compat.STOP_SIGNALS}
    saved_exit_handlers = list(exit_handler.registered_exit_handlers)
    wrapped: list[object] = []
    ran: list[str] = []

    def wrap(handler):
        def run(signum, frame):
            handler(signum, frame)
        wrapped.append(handler)
        return run

    try:
        exit_handler.registered_exit_handlers[:] = []
        flower_compat.wrap_stop_handlers(wrap)
        supernode_internal.register_signal_handlers(event_type=EventType.RUN_SUPERNODE_LEAVE)
        assert len(wrapped) == len(flower_compat.STOP_SIGNALS)
        for sig in flower_compat.STOP_SIGNALS:
            assert signal_module.getsignal(sig).__qualname__.endswith("wrap.<locals>.run")
        exit_handler.add_exit_handler(lambda: ran.append("added before, by Flower"), run_before_force_exit=True)
        flower_compat.on_exit(lambda: ran.append("edgefl"))
        exit_handler.trigger_exit_handlers(run_before_force_exit=True)
        assert ran == ["edgefl", "added before, by Flower"]
    finally:
        supernode_internal.register_signal_handlers = saved_register
        for sig, handler in saved_signals.items():
            signal_module.signal(sig, handler)
        exit_handler.registered_exit_handlers[:] = saved_exit_handlers


def test_a_reply_push_waiting_for_its_clientapps_objects_says_so():
    """Flower's push reads b"" for an object the ClientApp announced and has not uploaded, and waits."""
    events: list[str] = []
    state = NodeStateFactory(ObjectStoreFactory()).state()
    store = ObjectStoreFactory().store()
    _message(state, "a" * 64)
    instruction = state.get_messages_legacy(is_reply=False)[0]

    class LateUploads:  # each object is there only the second time the push asks for it
        def __init__(self) -> None:
            self.asked: set[str] = set()

        def get(self, object_id: str) -> bytes | None:
            if object_id not in self.asked:
                self.asked.add(object_id)
                return b""
            return store.get(object_id)

        def __getattr__(self, name: str):
            return getattr(store, name)

    def send(message, object_tree, runtime):
        events.append("send")
        return {tree.object_id for tree in supernode_internal.iterate_object_tree(object_tree)}, "session"

    saved = supernode_internal._push_messages
    try:
        flower_compat.on_reply_pushes(lambda: events.append("started"),
                                      lambda awaiting: events.append(f"awaiting {awaiting}"),
                                      lambda: events.append("ended"))
        supernode_internal._insert_message(Message(RecordDict(), reply_to=instruction), state, store)
        supernode_internal._push_messages(state=state, object_store=LateUploads(), send=send,
                                          push_object=lambda *args: events.append("object pushed"))
    finally:
        supernode_internal._push_messages = saved
    assert events[:3] == ["started", "send", "awaiting True"] and events[-1] == "ended", events
    waits = [e for e in events if e.startswith("awaiting")]
    assert waits == ["awaiting True", "awaiting False"] * (len(waits) // 2) and "object pushed" in events, events


# --- the SuperLink's hook (edgefld.server.link) ------------------------------------------------------


def test_the_superlinks_routers_look_up_the_checked_functions_at_call_time():
    from flwr.server.superlink.linkstate import LinkState
    from flwr.superlink import main as superlink_main
    from flwr.superlink.servicer.control import control_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    # The HTTP and gRPC routers call control_handlers.start_run by attribute; the Runtime router calls
    # pull_task_input on the module SuperLink installs as its runtime handlers.
    assert superlink_main._RUNTIME_HANDLERS is runtime_handlers
    for module in ("flwr.superlink.routers.control.router", "flwr.superlink.servicer.control.control_servicer"):
        assert "control_handlers.start_run(" in inspect.getsource(__import__(module, fromlist=["_"])), module
    router = inspect.getsource(__import__("flwr.supercore.routers.runtime.router", fromlist=["_"]))
    assert "handlers.pull_task_input(request, state, task)" in router
    assert list(inspect.signature(runtime_handlers.pull_task_input).parameters) == ["request", "state", "task"]
    assert list(inspect.signature(control_handlers.start_run).parameters)[0] == "request"
    # What the PullTaskInput check reads of a run: its FAB, by the run's fab_hash.
    assert "run_ids" in inspect.signature(LinkState.get_run_info).parameters
    assert list(inspect.signature(LinkState.get_fab).parameters) == ["self", "fab_hash"]


def test_a_run_the_superlink_refuses_is_a_403_with_the_reason_and_the_handler_is_not_called():
    from fastapi import HTTPException
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.proto.fab_pb2 import Fab
    from flwr.superlink.servicer.control import control_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    seen: list[object] = []
    originals = control_handlers.start_run, runtime_handlers.pull_task_input
    try:
        control_handlers.start_run = lambda request, *args, **kwargs: seen.append(request) or "started"
        flower_compat.refuse_superlink_runs(lambda content: None if content == b"ours" else f"not ours: {content!r}",
                                            lambda run_id, content: None)
        with pytest.raises(HTTPException) as refused:
            control_handlers.start_run(StartRunRequest(app_spec="@someone/app"), None, None, None)
        assert (refused.value.status_code, refused.value.detail) == (403, "not ours: None")
        with pytest.raises(HTTPException):
            control_handlers.start_run(StartRunRequest(fab=Fab(hash_str="x", content=b"theirs")), None, None, None)
        assert seen == []
        ours = StartRunRequest(fab=Fab(hash_str="x", content=b"ours"))
        assert control_handlers.start_run(ours, None, None, None) == "started" and seen == [ours]
    finally:
        control_handlers.start_run, runtime_handlers.pull_task_input = originals


def test_the_simulation_engine_code_edgefl_relies_on_is_unchanged():
    """flower_compat.run_simulation: each virtual SuperNode's node config is set where Flower makes it."""
    pytest.importorskip("ray", reason="Flower's simulation engine needs edgefl[simulation]")
    import importlib

    from flwr.server.superlink.fleet.vce import vce_api

    flower_simulation = importlib.import_module("flwr.simulation.run_simulation")
    pinned = [
        (vce_api._register_node_info_stores, "09f302a270d22f1e",
         "(nodes_mapping, run, app_dir) -> {node_id: DeprecatedRunInfoStore}, whose node_config and registered "
         "contexts' node_config edgefl replaces, node i getting partition i's"),
        (vce_api.start_vce, "2d5e267f893950a7", "it calls the module's _register_node_info_stores by name"),
        (flower_simulation._run_simulation, "da43f120d1afc492",
         "with is_app, app_dir's pyproject.toml fused with run.override_config is every ClientApp's run config, "
         "and server_app_context is the ServerApp's context"),
    ]
    for function, digest, relied_on in pinned:
        assert _digest(function) == digest, f"{function.__qualname__} changed; edgefld relies on: {relied_on}"


def test_the_dp_clipping_norm_travels_under_flowers_key():
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    assert flower_compat.DP_CLIPPING_NORM_KEY == KEY_CLIPPING_NORM


def test_the_optimiser_state_is_where_edgefld_reads_it():
    """The attributes exist as edgefld expects them on fresh strategies (None until the first round)."""
    adam, momentum = FedAdam(), FedAvgM(server_momentum=0.9)
    assert adam.m_t is None and adam.v_t is None and momentum.momentum_vector is None
    assert flower_compat.server_optimizer_state(adam) == {} == flower_compat.server_optimizer_state(momentum)


def test_secure_aggregation_messages_are_where_the_glue_reads_them():
    """The SecAgg+ record's key, and Flower's halt lines, each logged at ERROR where edgefl expects them."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    assert flower_compat.SECAGG_CONFIGS_KEY == RECORD_KEY_CONFIGS
    workflow = inspect.getsource(SecAggPlusWorkflow)
    for line in flower_compat.SECAGG_HALT_LINES:
        assert f'ERROR, "{line}"' in " ".join(workflow.split()), line


def test_an_instruction_and_a_result_round_trip_through_flowers_legacy_records():
    import numpy as np

    packed = np.arange(5, dtype=np.float16)
    instruction = recorddict_compat.fitins_to_recorddict(
        flower_compat.fit_instruction(packed, {"server-round": 3}), keep_input=True)
    array, config = flower_compat.fit_instruction_from(instruction)
    assert array.dtype == np.float16 and np.array_equal(array, packed) and config == {"server-round": 3}
    update = np.linspace(-1, 1, 7, dtype=np.float32)
    fitres = recorddict_compat.recorddict_to_fitres(flower_compat.fit_result_content(update, 42), keep_input=True)
    assert fitres.num_examples == 42
    (back,) = flower_compat.fit_result_arrays(fitres)
    np.testing.assert_array_equal(back, update)


def test_flowers_secure_aggregation_halt_lines_are_logged_at_info():
    flower_compat.secure_aggregation_halts_at_info()
    flower_compat.secure_aggregation_halts_at_info()  # once, however often it is asked
    logger = logging.getLogger("flwr")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.log(logging.ERROR, flower_compat.SECAGG_HALT_LINES[0])
        logger.log(logging.ERROR, "something else went wrong")
    finally:
        logger.removeHandler(handler)
    assert [r.levelname for r in records] == ["INFO", "ERROR"]
    assert sum(isinstance(f, flower_compat.ExpectedErrorsAtInfo) for f in logger.filters) == 1
