"""A FAB with code runs nowhere on the server: edgefl's SuperLink refuses it, whoever submits it.

Someone with a shell on the server reaches Flower's Control API on loopback. Here
such FABs go to edgefl's real SuperLink (edgefld.server.link) over 127.0.0.1: each
is refused at submission with one log line, and nothing of it is stored, extracted
or imported; edgefl's own thin FAB is still accepted.
"""

from __future__ import annotations

import pytest

from edgefld.server.control import Control, ControlError
from edgefld.server.fab import CLIENT_APP, SERVER_APP, build_fab
from edgefld.server.superlink import SuperLink
from tests.e2e.test_fab_isolation import CLIENT_CODE, SERVER_CODE, _fab

pytestmark = [pytest.mark.e2e]


def foreign_fabs(tmp_path) -> dict[str, bytes]:
    marker = str(tmp_path / "ran")
    return {
        "shadowing edgefld": _fab((SERVER_APP, CLIENT_APP), {
            "edgefld/__init__.py": "", "edgefld/apps/__init__.py": "",
            "edgefld/apps/server_app.py": SERVER_CODE.format(out=marker),
            "edgefld/apps/client_app.py": CLIENT_CODE.format(markers=marker)}),
        "own components": _fab(("evil_server:app", "evil_client:app"), {
            "evil_server.py": SERVER_CODE.format(out=marker), "evil_client.py": CLIENT_CODE.format(markers=marker)}),
        "not a zip": b"PK\x03\x04 not really",
    }


def test_the_server_refuses_every_foreign_fab_and_runs_its_own(tmp_path):
    superlink = SuperLink(tmp_path / "link", tmp_path / "superlink.log")
    try:
        superlink.start(timeout=120)
        control = Control(superlink.address)
        for attack, fab in foreign_fabs(tmp_path).items():
            with pytest.raises(ControlError) as info:
                control.submit(fab, {})
            assert "HTTP 403" in str(info.value) and "its FAB is not edgefl's" in str(info.value), (attack, info.value)
        assert control.runs() == []  # nothing was stored as a run
        run_id = control.submit(build_fab(), {})
        assert [run.run_id for run in control.runs()] == [run_id]
        control.stop(run_id)
    finally:
        superlink.stop()
    log = (tmp_path / "superlink.log").read_text()
    refusals = [line for line in log.splitlines() if "refused a run: its FAB is not edgefl's" in line]
    assert len(refusals) == 3, refusals
    assert "Traceback" not in log
    assert not (tmp_path / "ran").exists()
    assert not list((tmp_path / "link").rglob("evil_server.py"))  # never extracted
