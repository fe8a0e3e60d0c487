"""The package's version: one literal, read by the build, and cheap to import."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import prober


def test_the_installed_version_is_the_literal_in_the_package() -> None:
    assert importlib.metadata.version("prober") == prober.__version__


def test_an_agent_process_does_not_load_importlib_metadata() -> None:
    # importlib.metadata costs a process ~6 MB (email, zipfile, csv...): the agent's memory
    # budget is 40 MB, and it needs one string.
    code = (
        "import sys, prober.cli, prober.agent.runner, prober.agent.echo\n"
        "print('importlib.metadata' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
