"""The lab's hands on the kernel: ``ip``, ``iptables-restore``, sysctls and sockets in a namespace.

The only module of prober that runs ``ip``/``iptables`` or enters network namespaces.
Sysctls and sockets use ``setns(2)`` on the calling thread (a socket keeps the
namespace it was created in), so the lab needs no process per namespace for them;
``ip`` runs once per namespace with ``-batch`` and iptables once per namespace with
``iptables-restore``. Errors become :class:`LabError` with the failing command and its
stderr: the user sees what the kernel refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from prober.errors import ProberError

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


class LabError(ProberError):
    """The lab could not be built, changed or torn down; the message says why."""


def check_can_run() -> None:
    """Raise :class:`LabError` unless this process can build network namespaces."""
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it creates network namespaces and iptables rules "
            "(run it with sudo, or as root in a VM or container with CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        )
    missing = [tool for tool in ("ip", "iptables-restore", "iptables") if shutil.which(tool) is None]
    if missing:
        raise LabError(
            f"the lab needs {', '.join(missing)} on PATH (Debian/Ubuntu: apt-get install iproute2 iptables)"
        )
    if not Path("/proc/self/ns/net").exists():
        raise LabError("this kernel has no network namespaces (/proc/self/ns/net is missing)")


def run(
    argv: Sequence[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise LabError(f"{argv[0]} not found; the lab needs iproute2 and iptables") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} did not finish within 60 s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)} failed: {' / '.join(detail[-3:]) or f'exit {proc.returncode}'}")
    return proc


def run_all(jobs: Sequence[tuple[Sequence[str], str]]) -> None:
    """Run independent commands (argv, stdin) at once; raise for the first that failed."""
    procs = []
    for argv, stdin in jobs:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append((argv, stdin, proc))
    failures = []
    for argv, stdin, proc in procs:
        out, err = proc.communicate(stdin, timeout=60)
        if proc.returncode != 0:
            detail = (err or out).strip().splitlines()
            failures.append(
                f"{' '.join(argv)} failed: {' / '.join(detail[-3:]) or f'exit {proc.returncode}'}"
            )
    if failures:
        raise LabError(failures[0])


def ip_batch_job(lines: Iterable[str], *, ns: str) -> tuple[list[str], str]:
    return ["ip", "-n", ns, "-batch", "-"], "\n".join(lines) + "\n"


def iptables_restore_job(ns: str, rules: str) -> tuple[list[str], str]:
    return ["ip", "netns", "exec", ns, "iptables-restore", "-w"], rules


def ip_batch(lines: Iterable[str], *, ns: str | None = None, force: bool = False) -> None:
    """``ip [-n NS] -batch -``: many changes for the price of one process."""
    text = "\n".join(lines) + "\n"
    argv = ["ip"]
    if ns is not None:
        argv += ["-n", ns]
    if force:
        argv.append("-force")
    run([*argv, "-batch", "-"], stdin=text)


def iptables_restore(ns: str, rules: str, *, noflush: bool = False) -> None:
    argv = ["ip", "netns", "exec", ns, "iptables-restore", "-w"]
    if noflush:
        argv.append("--noflush")
    run(argv, stdin=rules)


def exec_in(ns: str, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", ns, *argv], check=check)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace ``ns``; always switch back."""
    with _setns_lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            try:
                target = os.open(NETNS_DIR / ns, os.O_RDONLY)
            except FileNotFoundError:
                raise LabError(f"network namespace {ns} does not exist (is the lab up?)") from None
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)


def socket_in(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in namespace ``ns`` (for its whole life, wherever it is used)."""
    with entered(ns):
        return socket.socket(family, kind)


def write_sysctls(ns: str, sysctls: Iterable[tuple[str, str]]) -> None:
    with entered(ns):
        for path, value in sysctls:
            try:
                Path("/proc/sys", path).write_text(value)
            except OSError as exc:
                raise LabError(f"sysctl {path.replace('/', '.')}={value} in {ns}: {exc.strerror}") from None


def read_proc_net(ns: str, name: str) -> str:
    """``/proc/net/<name>`` as seen from namespace ``ns`` (snmp, netstat, ...)."""
    with entered(ns):
        return Path("/proc/thread-self/net", name).read_text()


def netstat_counters(ns: str) -> dict[str, int]:
    """TcpExt/IpExt/Tcp/Ip counters of one namespace, keyed ``"TcpExt.IPReversePathFilter"``."""
    out: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        lines = read_proc_net(ns, name).splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=False):
            section, _, keys = header.partition(":")
            _, _, vals = values.partition(":")
            for k, v in zip(keys.split(), vals.split(), strict=False):
                with contextlib.suppress(ValueError):
                    out[f"{section}.{k}"] = int(v)
    return out


def namespaces_with_prefix(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{prefix}-"))


def pids_in(ns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in proc.stdout.split() if x.isdigit()]
