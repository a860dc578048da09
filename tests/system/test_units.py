"""Static checks of the systemd units in systemd/ (fast; part of `make test`).

The behaviour under a real systemd is proved by deb_in_nspawn.py (`make test-system`);
these keep the units consistent with the code they start.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgefld.config.schema import key
from edgefld.exit_codes import ExitCode

UNITS_DIR = Path(__file__).resolve().parents[2] / "systemd"
CLIENTS = ("edgefl-client.service", "edgefl-client@.service")
SERVER = "edgefl-server.service"
ALL = (*CLIENTS, SERVER)


def parse(name: str) -> dict[str, list[str]]:
    """KEY -> every value assigned in [Unit]/[Service]/[Install] (systemd allows repeats)."""
    values: dict[str, list[str]] = {}
    for line in (UNITS_DIR / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        values.setdefault(k.strip(), []).append(v.strip())
    return values


def one(unit: dict[str, list[str]], name: str) -> str:
    assert name in unit, f"{name}= missing"
    return unit[name][-1]


def seconds(text: str) -> float:
    total = 0.0
    for number, suffix in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|min|h)?", text):
        total += float(number) * {"ms": 0.001, "": 1, "s": 1, "min": 60, "h": 3600}[suffix]
    return total


@pytest.mark.parametrize("name", ALL)
def test_notify_watchdog_and_restart_policy(name):
    unit = parse(name)
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    # The daemons ping every 0.5 s (edgefld/client/daemon.py and edgefld/server/run_driver.py POLL_S) at most every
    # WatchdogSec/2 (edgefld/systemd.py): leave a wide margin for a slow board.
    assert seconds(one(unit, "WatchdogSec")) >= 10
    assert seconds(one(unit, "TimeoutStopSec")) == 15
    prevent = one(unit, "RestartPreventExitStatus").split()
    assert str(int(ExitCode.CONFIG)) in prevent and str(int(ExitCode.UNAVAILABLE)) in prevent
    assert seconds(one(unit, "StartLimitIntervalSec")) > 0 and int(one(unit, "StartLimitBurst")) > 0
    # A crash loop must be able to trip the start limit: burst restarts fit in the interval.
    assert int(one(unit, "StartLimitBurst")) * seconds(one(unit, "RestartSec")) < seconds(
        one(unit, "StartLimitIntervalSec"))
    # The daemon stops its Flower children with one SIGTERM; a second one (control-group)
    # hits Flower's default handler and kills them before they deregister.
    assert one(unit, "KillMode") == "mixed"
    assert one(unit, "User") == one(unit, "Group") == "edgefl"
    assert one(unit, "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("name", CLIENTS)
def test_client_unit(name):
    unit = parse(name)
    assert one(unit, "Restart") == "always"
    # On a host that also runs the server: started after it, stopped before it.
    assert "edgefl-server.service" in one(unit, "After").split()
    # READY comes after registration or [client] ready_timeout; board detection (a Jetson's
    # CUDA probe) and the interpreter's start come before.
    assert seconds(one(unit, "TimeoutStartSec")) >= key("client", "ready_timeout").default + 60
    # The GPU of a Jetson and /dev/vchiq of a Pi; /proc/meminfo, cpuinfo, device-tree.
    assert unit.get("PrivateDevices", ["no"])[-1] == "no"
    assert "DevicePolicy" not in unit and "DeviceAllow" not in unit
    assert unit.get("ProtectClock", ["no"])[-1] == "no"  # it would imply DeviceAllow=char-rtc
    assert "ProcSubset" not in unit
    # oneDNN (PyTorch) generates code at run time: conv2d fails with it (seen in the system test).
    assert unit.get("MemoryDenyWriteExecute", ["no"])[-1] == "no"


def test_template_instance_is_the_cid():
    unit = parse("edgefl-client@.service")
    assert one(unit, "ExecStart") == "/usr/bin/edgefl client --cid %i --state-dir /var/lib/edgefl/client-%i"
    assert set(one(unit, "StateDirectory").split()) >= {"edgefl", "edgefl/client-%i", "edgefl/data"}


def test_server_unit():
    unit = parse(SERVER)
    # Exit 0 = every round done: restarting would start the run again.
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "PrivateDevices") == "yes"
    assert one(unit, "ExecStart") == "/usr/bin/edgefl server"


@pytest.mark.parametrize("name", ALL)
def test_sandbox(name):
    unit = parse(name)
    for setting, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "ProtectHostname": "yes", "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "UMask": "0027", "RemoveIPC": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "StateDirectory": None, "CacheDirectory": "edgefl", "LogsDirectory": "edgefl",
    }.items():
        assert setting in unit, f"{setting}= missing"
        if value is not None:
            assert unit[setting][-1] == value, f"{setting}={unit[setting][-1]}"
    assert unit["SystemCallFilter"][0] == "@system-service"
    # ~@resources would break PyTorch (sched_setaffinity, mbind: seen with SystemCallErrorNumber=kill).
    assert not any("@resources" in v for v in unit["SystemCallFilter"][1:])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ALL)
def test_security_exposure(name):
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNITS_DIR / name)],
                            capture_output=True, text=True)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline unsupported here: {result.stderr.strip()[:200]}")
    assert float(found.group(1)) <= 3.0
