"""`edgefl status`, the fleet registry it reads, `edgefl report` without matplotlib, and the Prometheus textfile.

The real 3-board run is tests/e2e/test_status_report.py; these build the state files with the
daemons' own writers (edgefld.server.fleet) from round records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgefld.records import BoardIdentity, Evaluation, Failure, RoundRecord, RoundSplit, RoundTraining
from edgefld.server import fleet as fleet_module
from edgefld.server.fleet import FleetRegistry, fold_all
from edgefld.server.prometheus import render
from tests.status_tools import promtool
from tests.unprivileged import NOBODY, run_as_nobody

PI = BoardIdentity(2, "Raspberry Pi 4 Model B Rev 1.4", "raspberry-pi", "litert", "pi4-4gb")
PC = BoardIdentity(0, "", "generic", "torch", "generic")
SPLIT = RoundSplit(startup=0.01, loading=0.5, training=1.25, transfer=0.25)


def _round(n: int, trained: dict[int, RoundSplit], failures: tuple[Failure, ...] = ()) -> RoundRecord:
    training = RoundTraining(
        clients_ok=len(trained), clients_failed=len(failures), failures=failures, train_loss=0.5,
        client_val_loss=0.6, client_val_accuracy=0.7, client_train_seconds_max=1.0, client_startup_seconds_max=0.01,
        client_handler_seconds_max=2.0, client_prepare_seconds_max=0.2, bytes_sent=1000, bytes_received=900,
        backends={"torch": len(trained)}, wall_seconds=3.5, boards={11: PC, 12: PI}, trained=trained)
    return RoundRecord(round=n, task="digits", time=1_700_000_000.0 + n, training=training,
                       evaluation=Evaluation(eval_loss=1.0 / n, eval_accuracy=0.5 + 0.1 * n, eval_samples=100))


REFUSAL = Failure(node=12, cid=2, board=PI.board, phase="train", code=4006, error="resources",
                  reason="client 2 refuses this round: the board is throttled now")
TIMEOUT = Failure(node=13, cid=None, board=None, phase="train", code=None, error="timeout",
                  reason="did not answer within the round timeout")
ROUNDS = [_round(1, {11: SPLIT}, (REFUSAL, TIMEOUT)), _round(2, {11: SPLIT, 12: SPLIT}, (TIMEOUT,))]


def _server_state(directory: Path, rounds: list[RoundRecord] = ROUNDS) -> FleetRegistry:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in rounds))
    registry = FleetRegistry(directory, "digits")
    registry.rebuild(rounds)
    registry.set_state("complete", task="digits", rounds=2, listen="0.0.0.0:9092", detail="2/2 rounds")
    return registry


def test_the_fleet_counts_each_boards_rounds_and_keeps_its_last_failure():
    fleet = fold_all(ROUNDS, "digits")
    boards = {b.node: b for b in fleet.boards}
    assert fleet.last_round == 2 and set(boards) == {11, 12, 13}
    assert (boards[11].rounds_ok, boards[11].rounds_failed, boards[11].last_trained) == (2, 0, 2)
    pi = boards[12]
    assert (pi.rounds_ok, pi.rounds_failed, pi.rounds_refused, pi.last_trained) == (1, 1, 1, 2)
    assert pi.identity == PI and pi.last_split == SPLIT and pi.last_failure is not None
    assert (pi.last_failure.round, pi.last_failure.code) == (1, 4006)
    silent = boards[13]  # never answered: not seen, never named
    assert (silent.identity, silent.last_seen, silent.rounds_failed, silent.rounds_refused) == (None, None, 2, 0)
    # A round folded twice (the daemon restarted between the line and the fold) counts once.
    assert fleet_module.fold(fleet, ROUNDS[-1]) == fleet


def test_the_fleet_stays_bounded_keeping_the_boards_seen_last(monkeypatch):
    monkeypatch.setattr(fleet_module, "MAX_BOARDS", 2)
    fleet = fold_all(ROUNDS + [_round(3, {11: SPLIT, 12: SPLIT})], "digits")
    assert [b.node for b in fleet.boards] == [11, 12]


def _status(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # A subprocess, as an operator runs it; the probe after it lists what it imported.
    code = ("import sys; from edgefld.cli.main import main; rc = main(sys.argv[1:]); "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'flwr', 'torch', 'tensorflow', 'grpc', "
            "'matplotlib', 'ai_edge_litert'}); print('IMPORTED', heavy, file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, "status", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_server_status_text_and_json_from_the_state_files_alone(tmp_path):
    _server_state(tmp_path / "server")
    text = _status("--state-dir", str(tmp_path / "server"))
    assert text.returncode == 0, text.stderr
    assert text.stderr == "IMPORTED []\n"  # no framework, no Flower: it reads files
    assert "round 2 of 2, accuracy 0.7000 (0.600 -> 0.700, rising), loss 0.5000" in text.stdout
    assert "round 1: 4006 resources: client 2 refuses this round" in text.stdout
    data = json.loads(_status("--state-dir", str(tmp_path / "server"), "--json").stdout)
    assert set(data) == {"schema", "role", "state_dir", "time", "daemon", "run", "boards", "problems"}
    assert data["daemon"]["state"] == "complete" and data["daemon"]["running"] is False
    (pi,) = [b for b in data["boards"] if b["node"] == 12]
    assert pi == {"node": 12, "cid": 2, "board": PI.board, "family": "raspberry-pi", "backend": "litert",
                  "profile": "pi4-4gb", "first_round": 1, "last_round": 2, "last_trained": 2,
                  "last_seen": 1_700_000_002.0, "rounds_ok": 1, "rounds_failed": 1, "rounds_refused": 1,
                  "last_failure": {"round": 1, "code": 4006, "error": "resources", "reason": REFUSAL.reason},
                  "last_split": SPLIT.to_json()}


def test_a_daemon_that_was_killed_shows_as_not_running(tmp_path):
    registry = _server_state(tmp_path)
    registry.set_state("training", task="digits", rounds=2, listen="0.0.0.0:9092")
    state = json.loads((tmp_path / "server-state.json").read_text())
    state["pid"] = 2**22 + 7  # above pid_max's default: no such process
    (tmp_path / "server-state.json").write_text(json.dumps(state))
    result = _status("--state-dir", str(tmp_path))
    assert 'edgefl server: not running (pid 4194311 gone; it last said "training")' in result.stdout


@pytest.mark.parametrize("damage", [b"{not json", b'{"format": 99, "state": "x"}', b"[]", b"\xff\xfe"])
def test_damaged_state_files_are_named_in_one_line_each_and_the_rest_is_shown(tmp_path, damage):
    _server_state(tmp_path)
    (tmp_path / "server-state.json").write_bytes(damage)
    (tmp_path / "fleet.json").write_bytes(damage)
    result = _status("--state-dir", str(tmp_path))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, result.stdout
    assert all("not a readable" in w for w in warnings)
    assert "round 2 of ?" in result.stdout  # metrics.jsonl still tells the rounds


def test_no_state_at_all_is_one_line_and_a_failure(tmp_path):
    result = _status("--state-dir", str(tmp_path / "nothing"))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines()[0] == (f"edgefl: no edgefl state in {tmp_path / 'nothing'}: no daemon has run "
                                             "here with this config (another config: --config PATH)")


def test_client_status_of_a_board(tmp_path):
    from edgefld.records import BoardStatus, ClientState, Refused

    state = ClientState(state="refused", since=1.0, pid=os.getpid(), server="10.0.0.1:9092", cid=3, node_id=None,
                        reason="the server refused this node's key", board="NVIDIA Jetson Orin Nano",
                        family="jetson", profile="jetson-orin", backend="torch", device="cuda", threads=6,
                        tasks=("digits", "mnist"), guards=True, memory_margin_mb=128, heavy_task_min_watts=15)
    (tmp_path / "client-state.json").write_text(json.dumps(state.to_json()))
    last = BoardStatus(phase="train", round=4, outcome=Refused(4006, "not enough memory"), time=2.0)
    (tmp_path / "last-round.json").write_text(json.dumps(last.to_json()))
    result = _status("--role", "client", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    # This test's pid runs python, not edgefl: the daemon counts as gone.
    assert 'edgefl client 3: not running (pid' in result.stdout
    assert "profile: jetson-orin: torch on cuda, 6 threads, tasks digits,mnist" in result.stdout
    assert "guards: on (memory margin 128 MB, heavy tasks from 15 W)" in result.stdout
    assert "last round: 4 train" in result.stdout and "refused (4006): not enough memory" in result.stdout
    data = json.loads(_status("--role", "client", "--state-dir", str(tmp_path), "--json").stdout)
    assert data["connected"] is False and data["last_round"]["code"] == 4006


GROUP = 4242  # the edgefl group as this test stands it in


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_an_unprivileged_member_of_the_group_reads_it_and_anyone_else_gets_one_line(tmp_path_factory):
    base = Path("/tmp") / f"edgefl-status-{os.getpid()}"  # pytest's tmp dirs are 0700: the user could not enter
    state = base / "server"
    try:
        _server_state(state)
        os.chmod(base, 0o755)
        os.chown(state, 0, GROUP)
        os.chmod(state, 0o750)  # as the package makes /var/lib/edgefl
        for path in state.iterdir():
            os.chown(path, 0, GROUP)
            os.chmod(path, 0o640)

        # What `edgefl status` runs, in a forked child with the user's ids: the venv's python (under /root) is
        # not theirs to start, so everything it imports is imported here first.
        import contextlib
        import io

        import edgefld.status  # noqa: F401 - imported lazily by the command
        from edgefld.cli.main import main

        def status_as(gid: int) -> str:
            def show() -> str:
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = main(["status", "--state-dir", str(state)])
                return f"{code}\n{out.getvalue()}{err.getvalue()}"

            return run_as_nobody(show, gid)

        member = status_as(GROUP)
        assert member.startswith("0\n") and "round 2 of 2" in member and "warning" not in member, member
        outsider = status_as(NOBODY)
        # The files are there but not theirs to read: that is the answer, in one line, not "no state here".
        code, *lines = outsider.splitlines()
        assert code == "1" and len(lines) == 1 and "Permission denied" in lines[0] and "edgefl group" in lines[0], \
            outsider
        assert "Traceback" not in outsider
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_the_prometheus_textfile_passes_promtool(tmp_path):
    registry = _server_state(tmp_path)
    text = render(registry.state, registry.fleet, ROUNDS[-1])
    assert 'edgefl_round_boards{task="digits",outcome="failed"} 1' in text
    assert 'edgefl_board_rounds_total{task="digits",node="12",cid="2",board="Raspberry Pi 4 Model B Rev 1.4",' \
           'outcome="refused"} 1' in text
    path = tmp_path / "edgefl.prom"
    path.write_text(text)
    promtool(path)


def test_a_textfile_path_that_node_exporter_would_not_read_is_a_config_error(tmp_path):
    config = tmp_path / "edgefl.toml"
    config.write_text('[server]\nprometheus_textfile = "/var/lib/prometheus/node-exporter/edgefl.txt"\n')
    result = subprocess.run([sys.executable, "-m", "edgefld.cli.main", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert result.stderr.strip() == (f'edgefl: {config}:2: [server] prometheus_textfile: must end in ".prom" '
                                     "(node_exporter's textfile collector reads only those), got "
                                     '"/var/lib/prometheus/node-exporter/edg..."')


def test_the_report_without_matplotlib_has_tables(tmp_path, monkeypatch):
    from edgefld.report import build_report

    _server_state(tmp_path / "server")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    written = build_report(tmp_path / "server", tmp_path / "out")
    assert [p.name for p in written] == ["report.html"]
    page = written[0].read_text()
    assert 'id="no-plots"' in page and "<img" not in page
    assert "refused 4006" in page and "failed timeout" in page and "cid ? (node 13)" in page
