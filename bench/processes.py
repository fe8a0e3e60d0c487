"""Child processes of the benchmarks: stopped the same way by every one of them.

A benchmark starts the real thing (a collector, an agent, blackbox_exporter) as a
child process and must leave nothing behind, however it ends.
"""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """Stop a child: SIGTERM, then SIGKILL if it is still running after ``grace_s`` seconds.

    Returns its exit status; a child that has already exited is only reaped.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
