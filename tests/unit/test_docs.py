"""The repository explains itself, truly: docs/ against the code, and citations against docs/.

- docs/contracts.md documents every field of every contract type, with its JSON type
  and whether it is required, and every value of the enumerations; its examples decode.
- docs/architecture.md's module map names every module of the package, and no other.
- docs/incidents.md: every incident has a stable anchor and names the lab fault and the
  finding that reproduce it; the README cites each.
- Every path, link and anchor that README.md and docs/ give exists, and every
  ``docs/contracts.md § ...`` and ``docs/incidents.md#...`` cited anywhere resolves.
- Nothing cites a document that is not in the repository.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import click
import msgspec
import msgspec.inspect as mi
import pytest

from prober.cli import cli
from prober.diagnose.catalogue import MODES
from prober.model import (
    PATHS,
    Cell,
    Finding,
    FindingKind,
    Matrix,
    Outcome,
    PathMatrix,
    ProbeResult,
    Proto,
    Report,
    SrcKind,
    Suspect,
    TargetKind,
)
from prober.pinglist import (
    AgentPinglist,
    Mesh,
    MeshDelta,
    PeerGroup,
    Pinglist,
    PlacedGroup,
    ProbeTarget,
    SharedGroup,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONTRACTS = DOCS / "contracts.md"
ARCHITECTURE = DOCS / "architecture.md"
INCIDENTS = DOCS / "incidents.md"
README = ROOT / "README.md"

#: Where each contract type is documented: the ``## `` section that holds its table.
CONTRACT_TYPES: dict[type[msgspec.Struct], str] = {
    ProbeResult: "Probe result",
    Finding: "Finding",
    Suspect: "Finding",
    Pinglist: "Pinglist",
    AgentPinglist: "Pinglist",
    Mesh: "Pinglist",
    MeshDelta: "Pinglist",
    PlacedGroup: "Pinglist",
    ProbeTarget: "Pinglist",
    PeerGroup: "Pinglist",
    SharedGroup: "Pinglist",
    Report: "Command line",
    Matrix: "Command line",
    PathMatrix: "Command line",
    Cell: "Command line",
}

#: Directories never scanned: tools' caches and environments, not the project.
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build"}


def sections(text: str, level: int) -> dict[str, str]:
    """Heading text -> body, for headings of exactly ``level`` (``##`` = 2)."""
    marks = "#" * level
    parts = re.split(rf"^{marks} (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def table_rows(body: str) -> list[list[str]]:
    """The cells of the first Markdown table in ``body``, header and rule excluded."""
    rows: list[list[str]] = []
    started = False
    for line in body.splitlines():
        if line.startswith("|"):
            started = True
            if not re.fullmatch(r"\|[-:| ]+\|", line.strip()):  # not the rule under the header
                rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif started:
            break
    return rows[1:]


def json_type(t: mi.Type) -> str:
    """The type as docs/contracts.md writes it (see the page's introduction)."""
    if isinstance(t, mi.UnionType):
        parts = [json_type(x) for x in t.types if not isinstance(x, mi.NoneType)]
        nullable = any(isinstance(x, mi.NoneType) for x in t.types)
        return " or ".join(parts + (["null"] if nullable else []))
    if isinstance(t, (mi.StrType, mi.EnumType)):
        return "string"
    if isinstance(t, mi.IntType):
        return "integer"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.ListType):
        return f"array of {json_type(t.item_type)}"
    if isinstance(t, mi.TupleType):
        return "[" + ", ".join(json_type(x) for x in t.item_types) + "]"
    if isinstance(t, mi.DictType):
        return f"object of {json_type(t.value_type)}"
    if isinstance(t, mi.StructType):
        return t.cls.__name__
    raise AssertionError(f"no documented JSON type for {t!r}")


def contract_section(name: str) -> str:
    return sections(CONTRACTS.read_text(encoding="utf-8"), 2)[name]


def documented_fields(cls: type[msgspec.Struct]) -> dict[str, tuple[str, str]]:
    body = sections(contract_section(CONTRACT_TYPES[cls]), 3).get(f"`{cls.__name__}`")
    assert body is not None, f"docs/contracts.md has no '### `{cls.__name__}`' table"
    return {row[0].strip("`"): (row[1].replace("`", ""), row[2]) for row in table_rows(body)}


@pytest.mark.parametrize("cls", list(CONTRACT_TYPES), ids=lambda c: c.__name__)
def test_every_field_of_a_contract_is_documented_with_its_type(cls: type[msgspec.Struct]) -> None:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    actual = {f.encode_name: (json_type(f.type), "yes" if f.required else "no") for f in info.fields}
    documented = documented_fields(cls)
    assert sorted(documented) == sorted(actual), (
        f"docs/contracts.md: `{cls.__name__}` documents {sorted(documented)}, the code has {sorted(actual)}"
    )
    for name, (json, required) in actual.items():
        assert documented[name] == (json, required), (
            f"docs/contracts.md: `{cls.__name__}.{name}` is documented as {documented[name]}, "
            f"the code makes it ({json!r}, required {required!r})"
        )


@pytest.mark.parametrize(
    ("section", "values"),
    [
        pytest.param("Probe result", [o.value for o in Outcome], id="outcomes"),
        pytest.param("Probe result", list(PATHS), id="paths"),
        pytest.param("Probe result", [k.value for k in TargetKind], id="target-kinds"),
        pytest.param("Probe result", [k.value for k in SrcKind], id="source-kinds"),
        pytest.param("Probe result", [p.value for p in Proto], id="protocols"),
        pytest.param("Finding", [k.value for k in FindingKind], id="finding-kinds"),
        pytest.param("Pinglist", [k.value for k in TargetKind], id="pinglist-target-kinds"),
    ],
)
def test_every_enumerated_value_is_documented(section: str, values: list[str]) -> None:
    body = contract_section(section)
    missing = [v for v in values if f"`{v}`" not in body]
    assert not missing, f"docs/contracts.md § {section} does not name {missing}"


def test_outcomes_and_finding_kinds_each_have_a_row_of_their_own() -> None:
    outcomes = [
        r[0].strip("`") for r in table_rows(contract_section("Probe result").split("**Outcomes.**")[1])
    ]
    assert outcomes == [o.value for o in Outcome]
    kinds = [r[0].strip("`") for r in table_rows(contract_section("Finding").split("**Kinds.**")[1])]
    assert kinds == [k.value for k in FindingKind]


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        pytest.param("Probe result", ProbeResult, id="probe-result"),
        pytest.param("Finding", Finding, id="finding"),
    ],
)
def test_the_examples_are_valid_documents(section: str, cls: type[msgspec.Struct]) -> None:
    [example] = re.findall(r"```json\n(.*?)```", contract_section(section), flags=re.DOTALL)
    msgspec.json.decode(example.replace("\n", " ").encode(), type=cls)


def cli_commands(group: click.Group, ctx: click.Context, prefix: str) -> Iterator[str]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from cli_commands(command, click.Context(command, parent=ctx), f"{prefix} {name}")
        else:
            yield f"{prefix} {name}"


def test_every_command_is_in_the_command_table() -> None:
    body = contract_section("Command line")
    listed = {row[0].strip("`") for row in table_rows(body)}
    commands = list(cli_commands(cli, click.Context(cli), "prober"))
    assert "prober lab fault on" in commands
    for command in commands:
        assert any(entry == command or entry.startswith(command + " ") for entry in listed), (
            f"docs/contracts.md § Command line has no row for `{command}`"
        )
    statuses = [row[0] for row in table_rows(body.split("**Exit statuses**")[1])]
    assert statuses == ["0", "1", "2", "3", "130"]


# --- docs/architecture.md: the module map -----------------------------------------


def mapped_modules() -> set[str]:
    """Every module path the map names: top-level rows, and each ``### `prober/x/``` table."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    module_map = sections(text, 2)["Module map"]
    top, *_ = re.split(r"^### ", module_map, flags=re.MULTILINE)
    named = {row[0].strip("`") for row in table_rows(top)}
    for heading, body in sections(module_map, 3).items():
        package = heading.strip("`")
        assert package.endswith("/"), heading
        assert package in named, f"{package} has a table but no row in the module map"
        named |= {package + row[0].strip("`") for row in table_rows(body)}
    return named


def test_the_module_map_names_every_module_and_no_other() -> None:
    actual = {
        p.relative_to(ROOT).as_posix()
        for package in (ROOT / "prober", ROOT / "lab" / "prober_lab")
        for p in package.rglob("*.py")
    }
    packages = {
        Path(m).parent.as_posix() + "/" for m in actual if not m.startswith("prober/") or m.count("/") > 1
    }
    named = mapped_modules()
    missing, stale = sorted(actual - named), sorted(named - actual - packages)
    assert not missing, f"add these to docs/architecture.md's module map: {missing}"
    assert not stale, f"docs/architecture.md's module map names modules that do not exist: {stale}"


# --- docs/incidents.md ----------------------------------------------------------------


#: A stable anchor, the line before each incident's heading.
ANCHOR = re.compile(r'^<a id="([a-z0-9-]+)"></a>$', flags=re.MULTILINE)


def incident_anchors() -> list[str]:
    return ANCHOR.findall(INCIDENTS.read_text(encoding="utf-8"))


def test_every_incident_names_its_lab_fault_and_finding_and_the_readme_cites_it() -> None:
    text = INCIDENTS.read_text(encoding="utf-8")
    anchors = incident_anchors()
    assert len(anchors) == 5
    readme = README.read_text(encoding="utf-8")
    lab_faults = [m.lab_fault.usage.partition("@")[0].partition("[")[0] for m in MODES if m.lab_fault]
    bodies = ANCHOR.split(text)[2::2]  # [before, anchor, body, anchor, body, ...]
    for anchor, body in zip(anchors, bodies, strict=True):
        [in_prober] = re.findall(r"\*\*In prober\.\*\*(.*)", body, flags=re.DOTALL)
        named = in_prober.lower()
        assert any(f"lab fault `{f}" in named for f in lab_faults), f"#{anchor} names no lab fault"
        assert any(f"`{k.value}`" in in_prober for k in FindingKind), f"#{anchor} names no finding"
        assert f"docs/incidents.md#{anchor}" in readme, f"README does not cite docs/incidents.md#{anchor}"


# --- references ---------------------------------------------------------------------


def project_files() -> Iterator[tuple[Path, str]]:
    """Every text file of the project (not tools' caches or environments, nor this checker)."""
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(top) / name
            if path == Path(__file__).resolve():
                continue
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # recordings (.gz), images


def github_slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors_of(doc: Path) -> set[str]:
    text = doc.read_text(encoding="utf-8")
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)
    return ids | {github_slug(h) for h in headings}


def test_citations_of_docs_resolve_everywhere() -> None:
    incidents = set(incident_anchors())
    contract_sections = list(sections(CONTRACTS.read_text(encoding="utf-8"), 2))
    bad: list[str] = []
    for path, text in project_files():
        rel = path.relative_to(ROOT)
        bad += [
            f"{rel}: docs/incidents.md#{anchor}"
            for anchor in re.findall(r"docs/incidents\.md#([A-Za-z0-9_-]+)", text)
            if anchor not in incidents
        ]
        bad += [
            f"{rel}: docs/contracts.md § {cited}"
            for cited in re.findall(r"docs/contracts\.md\s+§\s+([^\n]+)", text)
            if not any(re.match(re.escape(s) + r"\b", cited) for s in contract_sections)
        ]
    assert not bad, "citations that point nowhere:\n" + "\n".join(bad)


#: Backticked text that names a file or directory of this repository.
REPO_PATH = re.compile(r"^(?:prober|tests|docs|bench|deploy|dashboards|examples|scripts|\.ci)/[\w./*{},-]*$")


def brace_expand(text: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", text)
    if m is None:
        return [text]
    return [
        x for alt in m.group(1).split(",") for x in brace_expand(text[: m.start()] + alt + text[m.end() :])
    ]


@pytest.mark.parametrize(
    "doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in DOCS.glob("*.md"))]
)
def test_every_path_and_link_in_the_docs_exists(doc: str) -> None:
    path = ROOT / doc
    text = path.read_text(encoding="utf-8")
    words = [w.rstrip(".,;:)") for code in re.findall(r"`([^`\n]+)`", text) for w in code.split()]
    missing = [
        word
        for word in words
        if REPO_PATH.match(word) and any(not list(ROOT.glob(c.rstrip("/"))) for c in brace_expand(word))
    ]
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        dangling = bool(anchor) and linked.suffix == ".md" and anchor not in anchors_of(linked)
        if not linked.exists() or dangling:
            missing.append(target)
    assert not missing, f"{doc} names paths or anchors that do not exist: {missing}"


#: Documents that live outside the repository and must never be cited.
OUTSIDE = re.compile(
    r"\b(?:DESIGN|STYLE)\.md\b|\b[Ss]eeds?\s+(?:0\d\d|failure|incident|write-?up)|/work/(?:shared|notes)\b"
)


def test_nothing_cites_a_document_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path, text in project_files()
        for n, line in enumerate(text.splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "cite docs/ instead:\n" + "\n".join(hits)
