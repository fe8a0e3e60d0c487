"""A plain ``pip install prober`` works, and the ``generate`` extra is asked for by name.

Each test runs Python in a subprocess whose ``PYTHONPATH`` starts with a directory of
blockers: one module per top-level name a package outside the allowed set installs,
each raising ``ImportError`` on import, so those packages cannot be imported although
this environment (the ``dev`` extra) has them. What is allowed is computed, not
listed: ``[project] dependencies`` of pyproject.toml and everything they require in
turn, from the installed packages' own metadata.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from prober.model import Outcome, ProbeResult, Proto, SrcKind
from prober.records import encode_records

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRA_HINT = "pip install 'prober[generate]'"

#: Names never blocked: setuptools's start-up hook is imported by a .pth file as the
#: interpreter starts, before any test code, and prober never imports it.
NEVER_BLOCKED = frozenset({"_distutils_hack"})


def closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, transitively (markers evaluated here)."""
    todo = [(Requirement(r), "") for r in requirements]
    seen: set[tuple[str, str]] = set()
    while todo:
        req, _ = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        for extra in {"", *req.extras}:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                dist = md.distribution(req.name)
            except md.PackageNotFoundError:
                continue
            for dep in dist.requires or []:
                dep_req = Requirement(dep)
                if dep_req.marker is None or dep_req.marker.evaluate({"extra": extra}):
                    todo.append((dep_req, ""))
    return {name for name, _ in seen}


def blockers(tmp: Path, allowed: set[str]) -> tuple[Path, list[str]]:
    """A directory of modules that shadow every top-level name outside ``allowed``."""
    allowed = allowed | {"prober"}
    blocked = sorted(
        top
        for top, dists in md.packages_distributions().items()
        if top.isidentifier()
        and top not in NEVER_BLOCKED
        and all(canonicalize_name(d) not in allowed for d in dists)
    )
    shadow = tmp / "blocked"
    shadow.mkdir()
    for name in blocked:
        (shadow / f"{name}.py").write_text(
            f"raise ImportError({name!r} + ' is not installed by `pip install prober`')\n", encoding="utf-8"
        )
    return shadow, blocked


def run(
    args: list[str], *, pythonpath: Path, cwd: Path, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PROBER_"))}
    env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def runtime_blockers(tmp: Path) -> tuple[Path, list[str]]:
    return blockers(tmp, closure(PYPROJECT["project"]["dependencies"]))


def test_the_generate_extra_is_part_of_dev() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extras["generate"] == [r for r in extras["dev"] if r.startswith("grafana-foundation-sdk")]


def test_generate_without_the_sdk_names_the_extra_in_one_line(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "grafana_foundation_sdk.py").write_text(
        "raise ImportError('No module named grafana_foundation_sdk')\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    done = run(["-m", "prober.generate", "--out", str(out)], pythonpath=shadow, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "prober: error: prober.dashboards needs grafana-foundation-sdk, which cannot be imported "
        f"(No module named grafana_foundation_sdk): {EXTRA_HINT}\n"
    )
    assert done.stdout == ""
    assert not out.exists()  # nothing half-written

    imported = run(["-c", "import prober.dashboards"], pythonpath=shadow, cwd=tmp_path)
    assert imported.returncode == 1
    assert "MissingExtraError: prober.dashboards needs grafana-foundation-sdk" in imported.stderr
    assert imported.stderr.rstrip().endswith(EXTRA_HINT)

    helped = run(["-m", "prober.generate", "--help"], pythonpath=shadow, cwd=tmp_path)
    assert helped.returncode == 0
    assert "--objective" in helped.stdout


def test_generate_from_an_installed_package_needs_out(tmp_path: Path) -> None:
    """Outside a checkout there are no committed files: without --out it would write into
    site-packages. With --out it writes every file."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "prober", site / "prober", ignore=shutil.ignore_patterns("__pycache__"))
    refused = run(["-m", "prober.generate"], pythonpath=site, cwd=tmp_path)
    assert refused.returncode == 2
    assert "give --out DIR" in refused.stderr
    assert not (site / "deploy").exists()
    assert not (site / "dashboards").exists()

    out = tmp_path / "out"
    written = run(["-m", "prober.generate", "--out", str(out)], pythonpath=site, cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert (out / "deploy/prometheus/prober-rules.yaml").is_file()
    assert sorted(p.name for p in (out / "dashboards").iterdir()) == [
        "prober-matrix.json",
        "prober-overview.json",
        "prober-slo.json",
    ]


def modules_needing_an_extra() -> dict[str, str]:
    """Module -> extra, as docs/architecture.md's module map documents them."""
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    found = re.findall(
        r"^\| `prober/([\w/]+)\.py` \|[^\n]*\*\*needs the `(\w+)` extra\*\*", text, re.MULTILINE
    )
    return {"prober." + path.replace("/", "."): extra for path, extra in found}


IMPORT_ALL = """
import importlib, json, pkgutil, sys
import prober

block_holds = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        block_holds[name] = False
    except ImportError:
        block_holds[name] = True
results = {}
for info in pkgutil.walk_packages(prober.__path__, "prober."):
    if info.name == "prober.__main__":  # importing it runs the command line
        continue
    try:
        importlib.import_module(info.name)
        results[info.name] = None
    except Exception as exc:
        results[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"block_holds": block_holds, "results": results}))
"""


@pytest.mark.slow
def test_every_module_imports_with_only_the_runtime_dependencies(tmp_path: Path) -> None:
    shadow, blocked = runtime_blockers(tmp_path)
    dev_only = ["pytest", "hypothesis", "mypy", "grafana_foundation_sdk", "playwright", "kubernetes_validate"]
    assert set(dev_only) <= set(blocked), "a development package is a runtime dependency now?"
    done = run(["-c", IMPORT_ALL, *dev_only], pythonpath=shadow, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert all(report["block_holds"].values()), report["block_holds"]

    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "prober").rglob("*.py")
    }
    assert set(report["results"]) == modules - {"prober", "prober.__main__"}
    extras = modules_needing_an_extra()
    assert extras == {"prober.dashboards": "generate"}
    assert set(extras.values()) <= set(PYPROJECT["project"]["optional-dependencies"])
    for module, error in report["results"].items():
        if module in extras:
            assert error is not None, f"{module} imported without its extra: is the block complete?"
            assert error.startswith("MissingExtraError: "), error
            assert f"pip install 'prober[{extras[module]}]'" in error
        else:
            assert error is None, f"{module} needs a package `pip install prober` does not bring: {error}"


@pytest.mark.slow
def test_the_command_line_runs_with_only_the_runtime_dependencies(tmp_path: Path) -> None:
    shadow, _ = runtime_blockers(tmp_path)
    for args in (["--help"], ["lab", "run", "--help"], ["diagnose", "--help"], ["sweep", "--help"]):
        done = run(["-m", "prober", *args], pythonpath=shadow, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
    # A whole offline diagnosis: the command's lazy imports all run.
    records = [
        ProbeResult(
            ts=1000.0 + i,
            path="pod-to-pod",
            src_node=src,
            src_kind=SrcKind.POD,
            target=f"pod/{dst}",
            outcome=Outcome.OK,
            proto=Proto.HTTP,
            dst_node=dst,
            dst_kind=SrcKind.POD,
            latency_s=0.001,
        )
        for i in range(20)
        for src, dst in (("node-a", "node-b"), ("node-b", "node-a"))
    ]
    done = run(["-m", "prober", "diagnose", "-", "--json"], pythonpath=shadow, cwd=tmp_path,
               stdin=encode_records(records))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["findings"] == []
