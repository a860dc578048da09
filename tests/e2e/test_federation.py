"""End to end: real `edgefl server` / `edgefl client` daemons, real SuperLink and SuperNodes, 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from edgefld.cli.main import main as edgefl_main
from tests.e2e.federation import descendants
from tests.faults.helpers import error_lines

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _rounds(fed) -> list[int]:
    return [record["round"] for record in fed.metrics()]


def test_two_clients_two_rounds_on_mnist_format_data(federation, mnist_files, capsys):
    fed = federation(task="mnist", num_partitions=2, rounds=2, min_clients=2, local_epochs=1, batch_size=16)
    # The real offline path: the original IDX files, imported with the CLI.
    assert edgefl_main(["data", "import", str(mnist_files), "--data-dir", str(fed.data_dir)]) == 0
    assert capsys.readouterr().out.startswith("mnist: imported")
    server = fed.start_server()
    clients = [fed.start_client(0), fed.start_client(1)]
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()

    records = fed.metrics()
    assert [r["round"] for r in records] == [1, 2]
    for r in records:  # the figures the README quotes: round wall time vs the boards' own compute
        print(f"round {r['round']}: wall {r['wall_seconds']:.1f} s, clients' training max "
              f"{r['client_train_seconds_max']:.2f} s, eval loss {r['eval_loss']:.4f}")
    for record in records:
        assert record["clients_ok"] == 2 and record["clients_failed"] == 0, record
        assert record["backends"] == {"torch": 2}
        assert record["bytes_sent"] > 0 and record["bytes_received"] > 0
    # The global model learned: its loss on the server's test split fell round over round.
    assert records[1]["eval_loss"] < records[0]["eval_loss"], records
    assert records[1]["eval_accuracy"] > 0.3
    for client in clients:
        log = client.log()
        for round_ in (1, 2):
            assert f"round {round_} train: 540 samples" in log, log
    log = server.log()
    assert "round 1/2: 2 clients ok" in log and "round 2/2: 2 clients ok" in log
    assert "run complete: 2/2 rounds" in log
    checkpoints = sorted(p.name for p in (fed.root / "server" / "checkpoints").iterdir())
    assert checkpoints == ["round-000000.npz", "round-000001.npz", "round-000002.npz"]

    # SIGTERM: each client stops within 10 s and leaves no process behind.
    for client in clients:
        tree = [client.process.pid, *descendants(client.process.pid)]
        code, seconds = fed.stop(client)
        assert code == 0 and seconds < 10, (code, seconds)
        time.sleep(0.5)
        assert not [pid for pid in tree if os.path.exists(f"/proc/{pid}") and
                    open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]


def test_client_started_before_the_server_joins_when_it_comes_up(federation):
    fed = federation(task="digits", num_partitions=2, rounds=1, min_clients=2, local_epochs=1)
    clients = [fed.start_client(0), fed.start_client(1)]
    time.sleep(8)  # the clients retry against a port nobody listens on
    assert all(c.alive() for c in clients)
    assert "not reachable" in clients[0].log()
    server = fed.start_server()
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=180)
    assert server.process.returncode == 0, server.log()
    assert [(r["round"], r["clients_ok"]) for r in fed.metrics()] == [(1, 2)]
    assert "registered with" in clients[0].log() and "registered with" in clients[1].log()


def test_server_killed_mid_run_resumes_from_its_checkpoint(federation):
    # 50 epochs of digits: a second of training per round, so the run is still going when the poll below
    # sees round 1 (a warm client's 1-epoch rounds take a fraction of a second: all three could be done).
    fed = federation(task="digits", num_partitions=2, rounds=3, min_clients=2, local_epochs=50)
    server = fed.start_server("server-first")
    clients = [fed.start_client(0), fed.start_client(1)]
    fed.wait_for("round 1 in the metrics", lambda: len(_rounds(fed)) >= 1, timeout=180)
    assert len(_rounds(fed)) < 3, "the run was over before the server could be killed in it"
    superlink_pids = [pid for pid in descendants(server.process.pid)
                      if b"flower-superlink" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert superlink_pids
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    # Its SuperLink dies with it (PR_SET_PDEATHSIG): no stale server keeps the port.
    fed.wait_for("the SuperLink to exit", lambda: not any(
        os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        for pid in superlink_pids), timeout=20)

    restarted = fed.start_server("server-second")
    fed.wait_for("the restarted server to finish", lambda: not restarted.alive(), timeout=240)
    assert restarted.process.returncode == 0, restarted.log()
    # No round repeated, none lost; the second server started after round 1 (or 2, if it
    # finished in the moment of the kill).
    assert _rounds(fed) == [1, 2, 3], fed.metrics()
    for record in fed.metrics():
        print({k: record[k] for k in ("round", "clients_ok", "clients_failed", "train_loss", "eval_accuracy",
                                      "wall_seconds")})
    log = restarted.log()
    assert "resuming: rounds 1" in log
    assert "task digits: rounds 2..3" in log or "task digits: rounds 3..3" in log
    assert all(c.alive() for c in clients)
    assert fed.metrics()[-1]["clients_ok"] == 2
    # The restarted SuperLink (state in memory) knew neither board: each left at its first refused call,
    # without an ERROR line, and registered again.
    for client in clients:
        assert "the server no longer knows this node" in client.log(), client.log()
        assert client.log().count("registered with") >= 2, client.log()
    errors = error_lines(fed.root)
    assert not errors, "\n".join(errors)


def test_bad_clients_are_reported_on_both_sides_and_the_round_goes_on(federation, mnist_files):
    """cid out of range, and a board without the dataset: failed replies with a reason, no crash loop."""
    fed = federation(task="mnist", num_partitions=2, rounds=1, min_clients=3, local_epochs=1)
    assert edgefl_main(["data", "import", str(mnist_files), "--data-dir", str(fed.data_dir)]) == 0
    server = fed.start_server()
    good = fed.start_client(0)
    out_of_range = fed.start_client(5)
    no_data = fed.start_client(1, "--data-dir", str(fed.root / "empty"))
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=240)
    assert server.process.returncode == 0, server.log()
    (record,) = fed.metrics()
    assert (record["clients_ok"], record["clients_failed"]) == (1, 2), record
    reasons = {f["code"]: f["reason"] for f in record["failures"]}
    assert reasons[4002] == "client 5: cid 5 is out of range: with num_partitions 2, cid must be 0..1"
    assert reasons[4001].startswith("client 1: ") and "edgefl data download mnist" in reasons[4001]
    log = server.log()
    # Each failure names the board by node id (the refusal itself says which client it is).
    assert re.search(r"train failure of node \d+ \(cid \?, board unknown\): client 5: cid 5 is out of range", log), log
    assert re.search(r"train failure of node \d+ \(cid \?, board unknown\): client 1: ", log), log
    fed.wait_for("the clients to report it", lambda: "refused: client 5: cid 5 is out of range" in out_of_range.log()
                 and "refused: client 1: " in no_data.log(), timeout=30)
    assert "round 1 train: 540 samples" in good.log()
    # Refusing a round is not a crash: both daemons are still up, ready for the next run.
    assert out_of_range.alive() and no_data.alive()
