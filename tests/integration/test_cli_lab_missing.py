"""``prober lab`` where the prober-lab distribution is not installed (the container image).

Run in a fresh interpreter whose import system cannot find ``prober_lab``, as on a
plain ``pip install prober``: the command says in one line where the lab comes from
(exit 2), ``prober --help`` still lists it, and the other commands are unaffected.
"""

from __future__ import annotations

import subprocess
import sys

# Hides prober_lab (and only it) from imports, then runs prober's CLI with the arguments.
_WITHOUT_LAB = """
import importlib.abc, sys
class HideLab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prober_lab" or name.startswith("prober_lab."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, HideLab())
from prober.cli import main
main(sys.argv[1:])
"""

#: What ``prober lab`` says where prober-lab is not installed (the image's test checks it too).
MISSING_LAB = (
    "prober: error: `prober lab` is not installed here: it comes with the prober-lab package "
    "(from a checkout: pip install ./lab, or scripts/install)"
)


def prober_without_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_LAB, *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_lab_without_its_distribution_says_where_it_comes_from() -> None:
    run = prober_without_lab("lab", "demo")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.splitlines() == [MISSING_LAB]


def test_the_other_commands_do_not_need_the_lab() -> None:
    top = prober_without_lab("--help")
    assert top.returncode == 0
    assert "lab" in top.stdout
    for command in ("agent", "echo", "collector", "sweep", "diagnose"):
        run = prober_without_lab(command, "--help")
        assert (run.returncode, run.stderr) == (0, ""), command


def test_an_import_error_inside_the_lab_is_not_taken_for_a_missing_lab() -> None:
    # A broken lab install (a dependency of the lab missing) is a bug to report, not "install prober-lab".
    code = _WITHOUT_LAB.replace(
        'if name == "prober_lab" or name.startswith("prober_lab."):',
        'if name == "prober_lab.command":',
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "lab", "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert run.returncode == 3
    assert "internal error: ModuleNotFoundError" in run.stderr
