"""Network namespaces of our own: a board on its own link (board_namespace: a veth pair to this host), or
a loopback-only namespace (loopback_namespace: what runs there can reach, and be reached on, 127.0.0.1 only).

Needs root and iproute2. The namespace (and the host end of a pair) is deleted on exit, whatever
happened inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class BoardLink:
    namespace: str  # `ip netns exec NAMESPACE ...` runs a command on the board's side
    host_if: str  # the host's end of the veth pair
    host_ip: str
    board_ip: str

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def set_link(self, up: bool) -> None:
        """Pull (or put back) the cable: the host's end goes down, so nothing crosses either way."""
        _ip("link", "set", self.host_if, "up" if up else "down")


@contextmanager
def board_namespace(name: str, host_ip: str, board_ip: str) -> Iterator[BoardLink]:
    """Namespace NAME with interface board0 (BOARD_IP/30) wired to a host interface (HOST_IP/30)."""
    host_if = f"vef{os.getpid() % 100000}{name[-2:]}"[:15]
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", "board0")
        _ip("link", "set", "board0", "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{board_ip}/30", "dev", "board0")
        _ip("netns", "exec", name, "ip", "link", "set", "board0", "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield BoardLink(name, host_if, host_ip, board_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextmanager
def loopback_namespace(name: str) -> Iterator[str]:
    """Namespace NAME with its loopback up and no other interface; yields NAME."""
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
