"""A Debian rootfs booted under systemd-nspawn, driven from the host with nsenter.

Used by tests/system/deb_in_nspawn.py. Needs root, systemd-nspawn (systemd-container),
debootstrap and overlayfs. Nothing here needs systemd as the host's PID 1: the container
is started with --register=no --keep-unit (no machined, no host bus).

- Rootfs: a debootstrapped Debian, cached under $EDGEFL_CACHE (default
  /var/cache/edgefl-test) keyed by suite, arch and package list, built into NAME.tmp and
  renamed when complete, under an flock so parallel jobs share one build.
- Container: an overlayfs mount made here (lower = the cached rootfs, upper/work in a
  scratch directory), booted with `systemd-nspawn -b` on the merged directory. Unlike
  --volatile=overlay (whose upper dir is a tmpfs that dies with the container), the state
  survives a `poweroff` + `boot()`: that is how the test reboots the "device".
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "adduser")
HOST_PACKAGES = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap", "nsenter": "util-linux"}
# Bump when ensure_rootfs() changes what it does after debootstrap (it is part of the cache key).
RECIPE = 2
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_T0 = time.monotonic()


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp} +{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


class HarnessError(RuntimeError):
    pass


def ensure_host_tools() -> None:
    """Install systemd-container / debootstrap on the host when they are missing (needs root + apt)."""
    missing = sorted({pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None})
    if not missing:
        return
    log(f"host: installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env, check=True)


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEFL_CACHE") or "/var/cache/edgefl-test")


def ensure_rootfs(arch: str = "amd64", suite: str = SUITE, packages: Sequence[str] = PACKAGES) -> Path:
    """The cached debootstrapped rootfs for (suite, arch, packages); built once."""
    recipe = f"{RECIPE} {suite} {arch} {MIRROR} minbase {','.join(sorted(packages))}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    root = base / f"rootfs-{suite}-{arch}-{key}"
    with open(base / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").exists():
            log(f"rootfs: cached {root}")
            return root
        tmp = root.with_name(root.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        log(f"rootfs: debootstrap {suite} {arch} ({', '.join(packages)}) into {tmp}")
        started = time.monotonic()
        argv = ["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={','.join(packages)}",
                suite, str(tmp), MIRROR]
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            sys.stdout.write(result.stdout[-4000:])
            raise HarnessError(f"debootstrap failed with status {result.returncode}")
        # A container needs no apt lists or downloaded .debs: smaller cache, and apt inside
        # the container must not think it can fetch anything (it has no network).
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (tmp / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        (tmp / "etc/hostname").write_text("edgefl-test\n")
        # debootstrap writes no /etc/hosts (the installer does): without it "localhost" does not resolve.
        (tmp / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tedgefl-test\n"
                                       "::1\tlocalhost ip6-localhost ip6-loopback\n")
        # Keep the container's own journal; no getty on a console nobody reads.
        (tmp / "etc/systemd/system/console-getty.service").symlink_to("/dev/null")
        (tmp / "etc/systemd/system/getty.target").symlink_to("/dev/null")
        (tmp / ".complete").write_text(f"{suite} {arch} {' '.join(packages)}\n")
        tmp.rename(root)
        log(f"rootfs: built in {time.monotonic() - started:.0f} s: {root}")
        return root


class Container:
    """One booted container on an overlay of ``lower``; ``scratch`` holds upper, work and merged."""

    def __init__(self, lower: Path, scratch: Path, name: str, bind_ro: dict[str, str] | None = None) -> None:
        self.lower = lower
        self.scratch = scratch
        self.name = name
        self.bind_ro = bind_ro or {}
        self.merged = scratch / "merged"
        self.console_log = scratch / "console.log"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.boots = 0

    # --- overlay -------------------------------------------------------------------------------
    def mount(self) -> None:
        for sub in ("upper", "work", "merged"):
            (self.scratch / sub).mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={self.lower},upperdir={self.scratch / 'upper'},workdir={self.scratch / 'work'}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.merged)], check=True)

    def umount(self) -> None:
        if os.path.ismount(self.merged):
            subprocess.run(["umount", str(self.merged)], check=False)

    # --- boot / stop -----------------------------------------------------------------------------
    def boot(self, timeout: float = 120.0) -> str:
        if self.nspawn is not None:
            raise HarnessError("already booted")
        argv = ["systemd-nspawn", "-D", str(self.merged), "--register=no", "--keep-unit", "-M", self.name,
                "--private-network", "-b", "--console=read-only"]
        for src, dst in self.bind_ro.items():
            argv.append(f"--bind-ro={src}:{dst}")
        self.boots += 1
        log(f"container: boot #{self.boots}: {shlex.join(argv)}")
        console = open(self.console_log, "ab")
        console.write(f"\n===== boot {self.boots} =====\n".encode())
        console.flush()
        self.nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        console.close()
        deadline = time.monotonic() + timeout
        while self.leader is None:
            if self.nspawn.poll() is not None:
                raise HarnessError(f"systemd-nspawn exited with {self.nspawn.returncode} at boot; "
                                   f"console:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise HarnessError("the container's init did not appear")
            self.leader = self._find_leader()
            time.sleep(0.1)
        state = ""
        while time.monotonic() < deadline:
            result = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                              timeout=deadline - time.monotonic())
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        else:
            raise HarnessError(f"the container did not finish booting (state {state!r})")
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout.strip()
            log(f"container: degraded: {failed}")
        log(f"container: booted ({state}); init pid {self.leader} on the host")
        return state

    def _find_leader(self) -> int | None:
        """The container's systemd: the child of nspawn (or its grandchild) whose comm is systemd."""
        assert self.nspawn is not None
        todo = [self.nspawn.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                try:
                    comm = Path(f"/proc/{child}/comm").read_text().strip()
                except OSError:
                    continue
                if comm == "systemd":
                    return child
                todo.append(child)
        return None

    def poweroff(self, timeout: float = 90.0) -> None:
        """Clean shutdown from inside; then make sure nspawn and the container's init are gone."""
        if self.nspawn is None:
            return
        leader = self.leader
        log("container: systemctl poweroff --no-block")
        self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=30)
        try:
            code = self.nspawn.wait(timeout)
            log(f"container: systemd-nspawn exited with {code}")
        except subprocess.TimeoutExpired:
            log(f"container: still up after {timeout:.0f} s: SIGTERM to systemd-nspawn pid {self.nspawn.pid}")
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(30)
            except subprocess.TimeoutExpired:
                log(f"container: SIGKILL to systemd-nspawn pid {self.nspawn.pid}")
                self.nspawn.kill()
                self.nspawn.wait()
        self.nspawn = None
        self.leader = None
        if leader is not None:
            self._reap(leader)

    def kill(self) -> None:
        """Emergency stop (after a failure): SIGTERM nspawn (it tells init to halt), then SIGKILL."""
        if self.nspawn is None:
            return
        leader = self.leader
        if self.nspawn.poll() is None:
            try:
                self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
                self.nspawn.wait(45)
            except (subprocess.TimeoutExpired, HarnessError):
                self.nspawn.send_signal(signal.SIGTERM)
                try:
                    self.nspawn.wait(30)
                except subprocess.TimeoutExpired:
                    self.nspawn.kill()
                    self.nspawn.wait()
        self.nspawn = None
        self.leader = None
        if leader is not None:
            self._reap(leader)

    @staticmethod
    def _reap(leader: int) -> None:
        # nspawn has once been seen to exit leaving the container's systemd behind (qemu-user):
        # make sure the init we found is gone, by its pid.
        deadline = time.monotonic() + 10
        while _alive_as_systemd(leader) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive_as_systemd(leader):
            log(f"container: init pid {leader} outlived systemd-nspawn: SIGKILL")
            os.kill(leader, signal.SIGKILL)
            time.sleep(0.5)
        if _alive_as_systemd(leader):
            raise HarnessError(f"the container's init (pid {leader}) is still running")
        log(f"container: init pid {leader} is gone")

    # --- commands inside ----------------------------------------------------------------------
    def run(self, argv: Sequence[str] | str, *, check: bool = True, timeout: float = 120.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv (or a shell string, with sh -c) inside the container, as root."""
        if self.leader is None:
            raise HarnessError("the container is not running")
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        full = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w",
                "env", "-i", f"PATH={CONTAINER_PATH}", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=",
                "SYSTEMD_COLORS=0", "LANG=C.UTF-8", "TERM=dumb", *argv]
        try:
            result = subprocess.run(full, input=input, capture_output=True, text=True, timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"timed out after {timeout:.0f} s: {shlex.join(argv)}") from exc
        if check and result.returncode != 0:
            raise HarnessError(f"exit {result.returncode}: {shlex.join(argv)}\n"
                               f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}")
        return result

    def sh(self, script: str, **kwargs) -> str:
        return self.run(script, **kwargs).stdout

    def console_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _alive_as_systemd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd"
    except OSError:
        return False
