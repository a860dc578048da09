"""Flower's SuperLink, refusing every run but edgefl's thin FAB (installed by edgefld.flower_entry).

Open-source Flower 1.42 starts whatever FAB reaches its (unauthenticated,
loopback-only) Control API: its ServerApp process puts the FAB's files first on
sys.path and imports its components, as the server's service user. So this
SuperLink holds every run to edgefl's thin FAB (edgefld.server.fab
``foreign_fab_problem``) at the two places a FAB passes on its way to a
process: when a run is submitted (``StartRun``: refused, nothing is stored)
and when a ServerApp process asks for its run's inputs (``PullTaskInput``: a
FAB stored by any other path is never handed out). Each refusal is one
WARNING line in the SuperLink's log. The checks wrap two functions of the
pinned flwr (tests/service/test_link.py pins them).
"""

from __future__ import annotations

from logging import WARNING
from typing import Any

from fastapi import HTTPException
from flwr.common.logger import log
from flwr.superlink.servicer.control import control_handlers
from flwr.superlink.servicer.runtime import runtime_handlers

from edgefld.server.fab import foreign_fab_problem

_start_run = control_handlers.start_run
_pull_task_input = runtime_handlers.pull_task_input


def submitted_fab_problem(request: Any) -> str | None:
    """Why a StartRun request does not carry edgefl's thin FAB, or None."""
    if request.app_spec or not request.fab.content:
        return "it names a stored or remote app instead of carrying a FAB"
    return foreign_fab_problem(request.fab.content)


def _checked_start_run(request: Any, *args: Any, **kwargs: Any) -> Any:
    problem = submitted_fab_problem(request)
    if problem is not None:
        message = f"refused a run: its FAB is not edgefl's ({problem}); this server runs only the installed edgefld apps"
        log(WARNING, "%s", message)
        raise HTTPException(403, message)  # a FlowerError would add an ERROR line of Flower's
    return _start_run(request, *args, **kwargs)


def _checked_pull_task_input(request: Any, state: Any, task: Any) -> Any:
    runs = state.get_run_info(run_ids=[task.run_id])
    fab = state.get_fab(runs[0].fab_hash) if runs and runs[0].fab_hash else None
    problem = "it has no FAB" if fab is None else foreign_fab_problem(fab.content)
    if problem is not None:
        message = (f"refused to start run {task.run_id}: its FAB is not edgefl's ({problem}); this server runs only "
                   "the installed edgefld apps")
        log(WARNING, "%s", message)
        raise HTTPException(403, message)
    return _pull_task_input(request, state, task)


def install() -> None:
    control_handlers.start_run = _checked_start_run
    runtime_handlers.pull_task_input = _checked_pull_task_input


