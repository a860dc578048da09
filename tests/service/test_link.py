"""edgefld.server.link: the two Flower functions it wraps are where every FAB passes (flwr pinned exactly)."""

from __future__ import annotations

import inspect

from flwr.superlink import main as superlink_main
from flwr.superlink.servicer.control import control_handlers
from flwr.superlink.servicer.runtime import runtime_handlers

from edgefld.server import link
from edgefld.server.fab import build_fab


def test_wrapped_functions_are_looked_up_at_call_time():
    # The HTTP and gRPC routers call control_handlers.start_run by attribute; the Runtime router calls
    # pull_task_input on the module SuperLink installs as its runtime handlers.
    assert superlink_main._RUNTIME_HANDLERS is runtime_handlers
    for module in ("flwr.superlink.routers.control.router", "flwr.superlink.servicer.control.control_servicer"):
        source = inspect.getsource(__import__(module, fromlist=["_"]))
        assert "control_handlers.start_run(" in source, module
    source = inspect.getsource(__import__("flwr.supercore.routers.runtime.router", fromlist=["_"]))
    assert "handlers.pull_task_input(request, state, task)" in source
    assert list(inspect.signature(link._pull_task_input).parameters) == ["request", "state", "task"]
    assert list(inspect.signature(link._start_run).parameters)[0] == "request"


def test_install_puts_the_checks_in_place():
    originals = control_handlers.start_run, runtime_handlers.pull_task_input
    try:
        link.install()
        assert control_handlers.start_run is link._checked_start_run
        assert runtime_handlers.pull_task_input is link._checked_pull_task_input
    finally:
        control_handlers.start_run, runtime_handlers.pull_task_input = originals


def test_submitted_fab_problem():
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.proto.fab_pb2 import Fab

    assert link.submitted_fab_problem(StartRunRequest(fab=Fab(hash_str="x", content=build_fab()))) is None
    assert "stored or remote app" in link.submitted_fab_problem(StartRunRequest(app_spec="@someone/app"))
    assert "stored or remote app" in link.submitted_fab_problem(StartRunRequest(fab=Fab(hash_str="abc")))
    assert "cannot be read" in link.submitted_fab_problem(StartRunRequest(fab=Fab(hash_str="x", content=b"zz")))
