"""A FAB carrying code runs nothing on an edgefl board.

Whoever reaches a SuperLink's Control API (on the server: anyone on its loopback) can
submit any FAB, and Flower puts a FAB's files first on the ClientApp's sys.path. Here
such FABs go to a real SuperLink on 127.0.0.1 with two boards: a real `edgefl client`
and, as the control that proves the attack is real, a bare Flower SuperNode. The bare
one runs the FAB's code; the edgefl one refuses the run and answers with an error.
"""

from __future__ import annotations

import hashlib
import io
import json
import textwrap
import time
import zipfile

import pytest

from edgefld.procs import flower_environment, free_loopback_port, spawn, stop_tree, tool_path
from edgefld.server.control import Control
from edgefld.server.fab import CLIENT_APP, SERVER_APP
from edgefld.server.superlink import SuperLink
from tests.e2e.federation import Federation

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVER_CODE = """
import json, time
from flwr.app import Message, RecordDict
from flwr.serverapp import ServerApp

app = ServerApp()

@app.main()
def main(grid, context):
    deadline = time.time() + 60
    while len(list(grid.get_node_ids())) < 2 and time.time() < deadline:
        time.sleep(0.5)
    messages = [Message(content=RecordDict(), dst_node_id=node, message_type="train")
                for node in grid.get_node_ids()]
    replies = grid.send_and_receive(messages, timeout=90)
    with open({out!r}, "w") as out:
        json.dump([reply.error.reason if reply.has_error() else "ran" for reply in replies], out)
"""

CLIENT_CODE = """
import os
from flwr.app import Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()

@app.train()
def train(msg, context):
    with open(os.path.join({markers!r}, "ran-on-cid-%s" % context.node_config.get("cid")), "w") as marker:
        marker.write("the FAB's code ran here")
    return Message(RecordDict(), reply_to=msg)
"""


def _fab(components: tuple[str, str], files: dict[str, str]) -> bytes:
    pyproject = textwrap.dedent(f"""
        [project]
        name = "innocent"
        version = "1.0.0"

        [tool.flwr.app]
        publisher = "someone"

        [tool.flwr.app.components]
        serverapp = "{components[0]}"
        clientapp = "{components[1]}"

        [tool.flwr.app.config]
        x = 1
    """).encode()
    members = {"pyproject.toml": pyproject, **{name: text.encode() for name, text in files.items()}}
    manifest = "\n".join(f"{name},{hashlib.sha256(data).hexdigest()},{len(data) * 8}"
                         for name, data in members.items())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(".info/CONTENT", manifest)
    return buffer.getvalue()


class BareSuperLink(SuperLink):
    """Flower's own SuperLink, without edgefl's server-side FAB check: the board's check alone is tested here."""

    def command(self) -> list[str]:
        return [tool_path("flower-superlink")]


def test_a_fab_carrying_code_cannot_run_it_on_an_edgefl_board(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    superlink = BareSuperLink(tmp_path / "link", tmp_path / "superlink.log")
    bare = None
    fed = None
    try:
        superlink.start(timeout=120)
        control = Control(superlink.address)
        fed = Federation(tmp_path, {}, port=superlink.port)
        board = fed.start_client(0)
        with open(tmp_path / "bare-supernode.log", "ab") as output:
            bare = spawn([tool_path("flower-supernode"), "--insecure", "--superlink", superlink.address,
                          "--node-config", "cid=99", "--port", str(free_loopback_port())],
                         flower_environment(tmp_path / "bare-flwr"), output)
        fed.wait_for("the edgefl board to register", lambda: "registered with" in board.log(), timeout=120)

        attacks = {
            # Shadows the installed package while naming edgefld's own components.
            "shadowing edgefld": _fab((SERVER_APP, CLIENT_APP), {
                "edgefld/__init__.py": "", "edgefld/apps/__init__.py": "",
                "edgefld/apps/server_app.py": SERVER_CODE.format(out=str(tmp_path / "shadow.json")),
                "edgefld/apps/client_app.py": CLIENT_CODE.format(markers=str(markers / "shadow"))}),
            # Names components of its own.
            "own components": _fab(("evil_server:app", "evil_client:app"), {
                "evil_server.py": SERVER_CODE.format(out=str(tmp_path / "own.json")),
                "evil_client.py": CLIENT_CODE.format(markers=str(markers / "own"))}),
        }
        for (attack, fab), result in zip(attacks.items(), ("shadow", "own"), strict=True):
            (markers / result).mkdir()
            run_id = control.submit(fab, {})
            deadline = time.monotonic() + 180
            while not control.run(run_id).finished and time.monotonic() < deadline:
                time.sleep(1)
            replies = json.loads((tmp_path / f"{result}.json").read_text())
            ran = sorted(p.name for p in (markers / result).iterdir())
            print(f"{attack}: replies {replies}, code ran on {ran}")
            # The bare SuperNode ran the FAB's code (the attack is real); the edgefl board did not.
            assert ran == ["ran-on-cid-99"], (attack, ran)
            assert sorted(replies, key=lambda r: r != "ran")[0] == "ran"
            refused = [r for r in replies if r != "ran"]
            assert len(refused) == 1 and refused[0].startswith(f"refused run {run_id}: its FAB is not edgefl's"), \
                refused
            assert f"refused run {run_id}: its FAB is not edgefl's" in board.log()
        assert not list((tmp_path / "client-0" / "flwr").glob("apps/someone.*"))  # nothing of it installed
    finally:
        if fed is not None:
            fed.teardown()
        if bare is not None:
            stop_tree(bare)
        superlink.stop()
