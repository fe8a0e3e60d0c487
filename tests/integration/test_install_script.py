"""``scripts/install`` leaves alone what it did not start: run with its system tools shimmed.

apt-get, systemctl, pkill, killall, service and the Python that makes the venv are
stand-ins on PATH that log how they were called (and do nothing), so the script runs
as a user runs it without touching this machine. It must install its packages and
the venv, and never stop, disable or kill a service. About 1 s.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SHIM = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
"""
#: Makes the venv the script asks for, with a python that logs what it is asked.
PYTHON = """#!/bin/sh
echo "python $*" >> "{log}"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"; cp "$0" "$3/bin/python"
fi
if [ "$1" = "--version" ]; then echo "Python 3.11.0"; fi
"""


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_install_never_stops_disables_or_kills_a_service(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install", checkout / "scripts" / "install")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("apt-get", "systemctl", "pkill", "killall", "service", "kubectl"):
        executable(bin_dir / tool, SHIM.format(log=log))
    executable(bin_dir / "id", "#!/bin/sh\necho 0\n")  # "root"
    executable(bin_dir / "python3", PYTHON.format(log=log))
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHON": str(bin_dir / "python3"),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(checkout / "scripts" / "install")], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert [c for c in calls if c.split()[0] in ("systemctl", "pkill", "killall", "service")] == []
    installs = [c for c in calls if c.startswith("apt-get install")]
    assert len(installs) == 1
    assert "--no-upgrade" in installs[0].split()
    assert "prometheus" in installs[0].split()
    assert any(c.startswith("python -m pip install -q -e .[dev]") for c in calls)
    assert os.access(checkout / ".venv" / "bin" / "python", os.X_OK)
