"""edgefld.server.link: the SuperLink's policy on FABs (where it goes in Flower: edgefld.flower_compat)."""

from __future__ import annotations

from flwr.superlink.servicer.control import control_handlers
from flwr.superlink.servicer.runtime import runtime_handlers

from edgefld.server import link
from edgefld.server.fab import build_fab


def test_install_puts_the_checks_in_place():
    originals = control_handlers.start_run, runtime_handlers.pull_task_input
    try:
        link.install()
        assert control_handlers.start_run is not originals[0]
        assert runtime_handlers.pull_task_input is not originals[1]
    finally:
        control_handlers.start_run, runtime_handlers.pull_task_input = originals


def test_only_edgefls_thin_fab_is_let_through():
    fab = build_fab()
    assert link.submitted_fab_problem(fab) is None
    assert link.submitted_run_refusal(fab) is None and link.starting_run_refusal(3, fab) is None
    assert "stored or remote app" in link.submitted_fab_problem(None)
    assert "cannot be read" in link.submitted_fab_problem(b"zz")
    assert link.submitted_run_refusal(b"zz").startswith("refused a run: its FAB is not edgefl's (")
    assert link.starting_run_refusal(3, None) == ("refused to start run 3: its FAB is not edgefl's (it has no FAB); "
                                                  "this server runs only the installed edgefld apps")
