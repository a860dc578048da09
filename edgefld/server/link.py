"""Flower's SuperLink, refusing every run but edgefl's thin FAB (installed by edgefld.flower_entry).

Open-source Flower 1.42 starts whatever FAB reaches its (unauthenticated,
loopback-only) Control API: its ServerApp process puts the FAB's files first on
sys.path and imports its components, as the server's service user. So this
SuperLink holds every run to edgefl's thin FAB (edgefld.server.fab
``foreign_fab_problem``) at the two places a FAB passes on its way to a
process: when a run is submitted (``StartRun``: refused, nothing is stored)
and when a ServerApp process asks for its run's inputs (``PullTaskInput``: a
FAB stored by any other path is never handed out). Each refusal is one
WARNING line in the SuperLink's log. Where the checks go in Flower is
edgefld.flower_compat's (refuse_superlink_runs, pinned); this module holds the policy.
"""

from __future__ import annotations

from edgefld import flower_compat
from edgefld.server.fab import foreign_fab_problem


def submitted_fab_problem(content: bytes | None) -> str | None:
    """Why a submitted run's FAB is not edgefl's thin one, or None; ``content`` None: the request
    carries no FAB (it names a stored or remote app)."""
    if content is None:
        return "it names a stored or remote app instead of carrying a FAB"
    return foreign_fab_problem(content)


def submitted_run_refusal(content: bytes | None) -> str | None:
    problem = submitted_fab_problem(content)
    if problem is None:
        return None
    return f"refused a run: its FAB is not edgefl's ({problem}); this server runs only the installed edgefld apps"


def starting_run_refusal(run_id: int, content: bytes | None) -> str | None:
    problem = "it has no FAB" if content is None else foreign_fab_problem(content)
    if problem is None:
        return None
    return (f"refused to start run {run_id}: its FAB is not edgefl's ({problem}); this server runs only "
            "the installed edgefld apps")


def install() -> None:
    flower_compat.refuse_superlink_runs(submitted_run_refusal, starting_run_refusal)
