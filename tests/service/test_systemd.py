"""edgefld.systemd.Notifier: the exact sd_notify datagrams, on a real AF_UNIX socket."""

from __future__ import annotations

import os
import socket
import types

import pytest

from edgefld import systemd
from edgefld.systemd import Notifier


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(systemd, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def systemd_env(monkeypatch):
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def notify_socket(tmp_path, systemd_env):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    systemd_env.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[bytes]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(65536))
        except BlockingIOError:
            return messages


def test_ready_with_and_without_status(notify_socket):
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready()
    notifier.ready("serving 3 boards")
    assert received(notify_socket) == [b"READY=1", b"READY=1\nSTATUS=serving 3 boards"]
    assert notifier.status == "serving 3 boards"


def test_set_status_is_one_line_and_deduplicated(notify_socket):
    notifier = Notifier()
    notifier.set_status("round 1/3")
    notifier.set_status("round 1/3")
    notifier.set_status("  round   1/3 \n")  # the same after whitespace is collapsed
    notifier.set_status("round 2/3:\nloss 0.5\r\n\taccuracy 0.9")
    notifier.set_status("round 2/3: loss 0.5 accuracy 0.9")
    notifier.set_status("")
    assert received(notify_socket) == [
        b"STATUS=round 1/3",
        b"STATUS=round 2/3: loss 0.5 accuracy 0.9",
        b"STATUS=",
    ]
    assert notifier.status == ""


def test_set_status_after_ready_with_the_same_status_is_not_resent(notify_socket):
    notifier = Notifier()
    notifier.ready("waiting for boards")
    notifier.set_status("waiting for boards")
    notifier.set_status("training")
    assert received(notify_socket) == [b"READY=1\nSTATUS=waiting for boards", b"STATUS=training"]


def test_non_ascii_status_is_sent(notify_socket):
    notifier = Notifier()
    notifier.set_status("ok é")
    # sdnotify encodes latin-1
    assert received(notify_socket) == ["STATUS=ok é".encode("latin-1")]


def test_stopping(notify_socket):
    notifier = Notifier()
    notifier.stopping()
    notifier.stopping("shutting down: SIGTERM")
    assert received(notify_socket) == [b"STOPPING=1", b"STOPPING=1\nSTATUS=shutting down: SIGTERM"]


def test_ready_and_stopping_status_cannot_inject_fields(notify_socket):
    notifier = Notifier()
    notifier.ready("up\nWATCHDOG=1")
    notifier.stopping("bye\nREADY=1")
    assert received(notify_socket) == [b"READY=1\nSTATUS=up WATCHDOG=1", b"STOPPING=1\nSTATUS=bye READY=1"]


def test_watchdog_rate_limited_to_half_the_interval(notify_socket, systemd_env, clock):
    systemd_env.setenv("WATCHDOG_USEC", "10000000")  # WatchdogSec=10
    notifier = Notifier()
    assert notifier.watchdog_interval == 5.0
    notifier.watchdog()  # first call pings
    clock.now += 4.999
    notifier.watchdog()
    clock.now += 0.001  # exactly 5 s after the first ping
    notifier.watchdog()
    clock.now += 1.0
    notifier.watchdog()
    notifier.watchdog(force=True)  # forced: pings and restarts the interval
    clock.now += 4.0
    notifier.watchdog()
    clock.now += 1.0
    notifier.watchdog()
    assert received(notify_socket) == [b"WATCHDOG=1"] * 4


@pytest.mark.parametrize(("usec", "interval"), [("1", 0.5e-6), ("2000000", 1.0), ("30000000", 15.0)])
def test_watchdog_interval_is_half_of_watchdog_usec(notify_socket, systemd_env, usec, interval):
    systemd_env.setenv("WATCHDOG_USEC", usec)
    assert Notifier().watchdog_interval == pytest.approx(interval, rel=0, abs=1e-12)


@pytest.mark.parametrize("usec", ["", "abc", "-5", "1.5", " 100"])
def test_watchdog_disabled_without_a_valid_watchdog_usec(notify_socket, systemd_env, clock, usec):
    systemd_env.setenv("WATCHDOG_USEC", usec)
    notifier = Notifier()
    assert notifier.watchdog_interval is None
    notifier.watchdog()
    notifier.watchdog(force=True)
    assert received(notify_socket) == []


def test_watchdog_pid_of_this_process_enables_it(notify_socket, systemd_env, clock):
    systemd_env.setenv("WATCHDOG_USEC", "4000000")
    systemd_env.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    assert notifier.watchdog_interval == 2.0
    notifier.watchdog()
    assert received(notify_socket) == [b"WATCHDOG=1"]


def test_watchdog_pid_of_another_process_disables_it(notify_socket, systemd_env, clock):
    systemd_env.setenv("WATCHDOG_USEC", "4000000")
    systemd_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = Notifier()
    assert notifier.watchdog_interval is None
    notifier.watchdog()
    notifier.watchdog(force=True)
    notifier.ready("still notifies the rest")
    assert received(notify_socket) == [b"READY=1\nSTATUS=still notifies the rest"]


def test_everything_is_a_no_op_without_notify_socket(systemd_env, clock, tmp_path):
    systemd_env.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier._notifier is None
    notifier.ready("x")
    notifier.set_status("y")
    notifier.watchdog()
    notifier.watchdog(force=True)
    notifier.stopping("z")
    assert notifier.status == "y"  # still tracked, for the daemon's own use


def test_empty_notify_socket_is_disabled(systemd_env):
    systemd_env.setenv("NOTIFY_SOCKET", "")
    assert not Notifier().enabled


def test_notify_socket_that_does_not_exist_is_harmless(systemd_env, tmp_path, clock):
    systemd_env.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    systemd_env.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready("x")
    notifier.set_status("y")
    notifier.watchdog(force=True)
    notifier.stopping()


def test_abstract_notify_socket(systemd_env):
    name = f"edgefl-test-{os.getpid()}-{id(systemd_env)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        systemd_env.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().ready("abstract")
        assert received(sock) == [b"READY=1\nSTATUS=abstract"]
