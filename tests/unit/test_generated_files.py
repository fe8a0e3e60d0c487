"""The committed rules, dashboards and settings reference are exactly what prober.generate writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prober.dashboards import CLUSTER, MATRIX_UID, dashboards, panel_queries
from prober.generate import SETTINGS_FILE, main, render, settings_doc
from prober.settings import COMMANDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rel", sorted(str(p) for p in render()))
def test_committed_file_matches_generator(rel: str) -> None:
    committed = ROOT / rel
    assert committed.exists(), f"{rel} is missing: run `python -m prober.generate`"
    expected = render()[Path(rel)]
    assert committed.read_text(encoding="utf-8") == expected, (
        f"{rel} differs from what prober.generate writes: edit prober/slo.py, prober/dashboards.py or "
        "prober/settings.py, then run `python -m prober.generate`"
    )


def test_generator_writes_every_file(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--objective", "pod-to-nlb=99.9%"]) == 0
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(render())
    rules = (tmp_path / "deploy/prometheus/prober-rules.yaml").read_text(encoding="utf-8")
    assert "vector(0.999)\n    labels:\n      path: pod-to-nlb" in rules


def test_generator_rejects_a_bad_objective(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--out", "/nonexistent", "--objective", "pod-to-nlb=2"])
    assert exc.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_dashboards_have_unique_ids_and_queries() -> None:
    docs = dashboards()
    uids = [d["uid"] for d in docs.values()]
    assert len(set(uids)) == len(uids)
    for name, doc in docs.items():
        ids = [p["id"] for p in doc["panels"]]
        assert len(set(ids)) == len(ids), name
        assert panel_queries(doc), name
        for panel in doc["panels"]:
            for target in panel.get("targets") or []:
                assert target["refId"], f"{name}: {panel['title']}: query without refId"
                assert target["datasource"]["uid"] == "${datasource}"


def test_every_dashboard_query_selects_the_cluster() -> None:
    """A Prometheus holding many clusters' series: a query without the ``cluster``
    selector shows every cluster's series under one cluster's name. The SLO objectives
    alone carry no cluster (the same for every cluster)."""
    for name, doc in dashboards().items():
        for panel in doc["panels"]:
            for target in panel.get("targets") or []:
                expr = target["expr"]
                assert CLUSTER in expr or expr.startswith("prober:slo_objective:ratio{"), (
                    f"{name}: {panel['title']}: {expr}"
                )


def test_matrix_drills_down_from_zones_to_nodes() -> None:
    doc = dashboards()["prober-matrix.json"]
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"kind", "path", "src_zone", "dst_zone", "window"} <= variables
    zone = next(p for p in doc["panels"] if "zone \N{MULTIPLICATION SIGN} zone" in p.get("title", ""))
    links = zone["fieldConfig"]["defaults"]["links"]
    assert any(f"/d/{MATRIX_UID}/" in link["url"] and "var-src_zone=" in link["url"] for link in links)


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to dashes."""
    return "".join(c for c in heading.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def test_settings_reference_has_every_flag_and_the_readme_links_resolve() -> None:
    doc = settings_doc()
    for section in COMMANDS:
        assert f"\n## {section.title}\n" in doc
        for s in section.settings:
            assert f"| `{s.flag}" in doc, s.flag
    anchors = {_slug(line[3:]) for line in doc.splitlines() if line.startswith("## ")}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(rf"\]\({re.escape(str(SETTINGS_FILE))}(?:#([^)]*))?\)", readme)
    linked = {"prober-agent", "prober-echo", "prober-collector", "prober-collector-kubernetes-discovery"}
    assert linked <= set(links)
    assert set(links) - {""} <= anchors
