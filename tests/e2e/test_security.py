"""TLS and node authentication end to end: real daemons, real SuperLink and SuperNodes, 127.0.0.1.

The fleet's files are made with the real commands (`edgefl pki ...`, `edgefl enrol`), as the
README's "Securing a fleet" tells an operator to.
"""

from __future__ import annotations

import stat
import time

import pytest

from edgefld.cli.main import main as edgefl_main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def fleet_pki(tmp_path, capsys):
    pki = tmp_path / "pki"
    for argv in (["pki", "init-ca", "--dir", str(pki)],
                 ["pki", "server-cert", "--dir", str(pki), "--host", "127.0.0.1"],
                 ["pki", "client-key", "--dir", str(pki), "--cid", "0"],
                 ["pki", "client-key", "--dir", str(pki), "--cid", "1"],
                 ["pki", "init-ca", "--dir", str(tmp_path / "other-ca")]):
        assert edgefl_main(argv) == 0
    capsys.readouterr()
    return pki


def _secure_server(pki) -> dict:
    return dict(tls=True, tls_cert=str(pki / "server.crt"), tls_key=str(pki / "server.key"),
                enrolled_keys=str(pki / "enrolled"))


def test_enrolled_client_trains_over_tls_an_unenrolled_one_is_refused_until_enrolled(federation, fleet_pki, capsys):
    for name in ("ca.key", "server.key", "client-0.key", "client-1.key"):
        assert stat.S_IMODE((fleet_pki / name).stat().st_mode) == 0o600, name
    fed = federation(task="digits", num_partitions=2, rounds=1, min_clients=2, local_epochs=1,
                     client_config={"ca": str(fleet_pki / "ca.crt"), "tls": True}, **_secure_server(fleet_pki))
    config = ["--config", str(fed.config_path)]
    assert edgefl_main(["enrol", str(fleet_pki / "client-0.pub"), *config]) == 0
    server = fed.start_server()
    fed.wait_for("the server to listen", lambda: "Fleet API only" in server.log(), timeout=120)
    assert "(Fleet API only; TLS, enrolled boards only)" in server.log()
    assert "admitted client-0 (SHA256:" in server.log()
    enrolled = fed.start_client(0, "--key", str(fleet_pki / "client-0.key"))
    stranger = fed.start_client(1, "--key", str(fleet_pki / "client-1.key"))
    fed.wait_for("client 0 to register", lambda: "registered with" in enrolled.log(), timeout=120)
    fed.wait_for("client 1 to be refused", lambda: "is not enrolled there" in stranger.log(), timeout=120)
    fed.wait_for("the server to name the refused key", lambda: "it is not enrolled" in server.log(), timeout=30)

    fingerprint = next(line for line in stranger.log().splitlines() if "refused this node's key" in line)
    fingerprint = fingerprint.split("refused this node's key (")[1].split(")")[0]
    assert f"refused node key {fingerprint} from 127.0.0.1: it is not enrolled" in server.log()
    assert "run `edgefl enrol client-1.pub` on the server" in stranger.log()
    assert stranger.alive()  # it keeps trying: enrolling it on the server is the fix
    assert not fed.metrics()  # min_clients 2: the round waits for the second board

    # Enrolling it on the running server admits it within seconds; the round then runs with both.
    assert edgefl_main(["enrol", str(fleet_pki / "client-1.pub"), *config]) == 0
    capsys.readouterr()
    fed.wait_for("the server to admit client 1", lambda: "admitted client-1" in server.log(), timeout=30)
    fed.wait_for("the server to finish", lambda: not server.alive(), timeout=300)
    assert server.process.returncode == 0, server.log()
    assert [(r["round"], r["clients_ok"]) for r in fed.metrics()] == [(1, 2)]
    for client in (enrolled, stranger):
        assert "round 1 train:" in client.log(), client.log()
    for daemon in fed.daemons:
        for secret in ("PRIVATE KEY", (fleet_pki / "client-0.key").read_text().splitlines()[1]):
            assert secret not in daemon.log()


def test_wrong_ca_or_tls_on_one_side_only_is_named_retried_and_a_fixed_server_rejoined(federation, fleet_pki,
                                                                                      tmp_path, capsys):
    """What the network answers never stops a board for good: one line per try, a growing backoff, and once
    the server is fixed (a certificate the board's CA signed; TLS off like the board) the same client
    processes register and train a round, untouched."""
    fed = federation(task="digits", num_partitions=2, rounds=1, min_clients=1, node_auth=False,
                     client_config={"refusal_backoff_max": 10}, **_secure_server(fleet_pki))
    server = fed.start_server()
    fed.wait_for("the server to listen", lambda: "Fleet API only" in server.log(), timeout=120)
    other_ca = tmp_path / "other-ca"
    wrong_ca = fed.start_client(0, "--tls", "true", "--ca", str(other_ca / "ca.crt"))
    no_tls = fed.start_client(1, "--tls", "false")
    for client in (wrong_ca, no_tls):
        fed.wait_for("a second refusal", lambda client=client: client.log().count("trying again in") >= 2,
                     timeout=120)
        assert client.alive(), client.log()
    lines = [line for line in wrong_ca.log().splitlines() if "trying again in" in line]
    assert (f"TLS: the server's certificate at 127.0.0.1:{fed.port} is not signed by [client] ca "
            f"({other_ca / 'ca.crt'})") in lines[0], lines
    assert "give this board the fleet's ca.crt" in lines[0]
    assert [line.rsplit("trying again in ", 1)[1] for line in lines[:2]] == ["5 s", "10 s"]  # growing
    lines = [line for line in no_tls.log().splitlines() if "trying again in" in line]
    assert (f"127.0.0.1:{fed.port} does not answer plain HTTP: the server has TLS on; set [client] tls = true and "
            "ca to the fleet's ca.crt (README: Securing a fleet); trying again in 5 s") in lines[0], lines
    fed.wait_for("the backoff to reach its cap", lambda: "trying again in 10 s" in no_tls.log(), timeout=60)
    assert "trying again in 20 s" not in no_tls.log() + wrong_ca.log()  # [client] refusal_backoff_max

    def fixed(name: str, *extra: str):
        assert fed.stop(server if name == "server-2" else fixed.last)[0] == 0
        fed.write_config()
        started = fixed.last = fed.start_server(name, *extra)
        fed.wait_for(f"{name} to listen", lambda: "Fleet API only" in started.log(), timeout=120)
        return started, time.monotonic()

    # The server gets a certificate that the first board's CA signed: that board rejoins and trains.
    assert edgefl_main(["pki", "server-cert", "--dir", str(other_ca), "--host", "127.0.0.1"]) == 0
    capsys.readouterr()
    fed.server_config.update(tls_cert=str(other_ca / "server.crt"), tls_key=str(other_ca / "server.key"))
    rejoin: dict[str, float] = {}
    second, listening = fixed("server-2")
    fed.wait_for("the first board to register", lambda: "registered with" in wrong_ca.log(), timeout=120)
    rejoin["wrong CA, server given a certificate it signs"] = time.monotonic() - listening
    fed.wait_for("its round", lambda: not second.alive(), timeout=240)
    assert second.process.returncode == 0, second.log()
    assert "round 1 train:" in wrong_ca.log(), wrong_ca.log()
    assert fed.stop(wrong_ca)[0] == 0  # done: what it would meet next is another test's server

    # The server turns TLS off, as the second board has it: that board rejoins and trains too.
    fed.server_config.update(tls=False)
    third, listening = fixed("server-3", "--state-dir", "server-3")
    fed.wait_for("the second board to register", lambda: "registered with" in no_tls.log(), timeout=120)
    rejoin["TLS on one side, server's TLS turned off"] = time.monotonic() - listening
    fed.wait_for("its round", lambda: not third.alive(), timeout=240)
    assert third.process.returncode == 0, third.log()
    assert "round 1 train:" in no_tls.log(), no_tls.log()
    assert no_tls.alive(), no_tls.log()
    print("\nrejoin after the fix (from the fixed server listening to the board registered):",
          *(f"  {k}: {v:.1f} s" for k, v in rejoin.items()), sep="\n")
    for client in (wrong_ca, no_tls):
        assert "Traceback" not in client.log() and "ERROR" not in client.log(), client.log()
