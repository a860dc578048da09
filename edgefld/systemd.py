"""sd_notify for the daemons: READY, STATUS, WATCHDOG, STOPPING.

Outside systemd (NOTIFY_SOCKET unset) every call is a no-op, so the daemons
run the same way from a terminal, from tests and under a unit.
"""

from __future__ import annotations

import os
import time

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        # WATCHDOG_USEC=0 means the watchdog is off (sd_watchdog_enabled(3)).
        watchdog_for_us = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping at half the interval, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval: float | None = int(usec) / 2e6 if watchdog_for_us else None
        self._last_ping = 0.0
        self.status = ""

    @property
    def enabled(self) -> bool:
        return self._enabled

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self, status: str | None = None) -> None:
        status = _one_line(status)
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))
        if status:
            self.status = status

    def set_status(self, status: str) -> None:
        status = _one_line(status)
        if status != self.status:
            self.status = status
            self._send(f"STATUS={status}")

    def watchdog(self, *, force: bool = False) -> None:
        """Call from the daemon's main loop: pings only when the interval asks for it."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if force or now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        status = _one_line(status)
        self._send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def _one_line(status: str | None) -> str:
    # A newline would start another sd_notify field (READY=1, WATCHDOG=1, ...). Never put secrets
    # in STATUS: `systemctl status` shows it to every user.
    return " ".join(status.split()) if status else ""
