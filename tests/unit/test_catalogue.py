"""The failure-mode catalogue is complete and every list derived from it says what it said before."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prober.diagnose import RULES, SLOW_KINDS, recency
from prober.diagnose.catalogue import BY_KIND, MODES
from prober.diagnose.mode import NODE, FailureMode, placeholders
from prober.model import FindingKind
from prober.slo import NODE_LABEL, alert_text, rule_groups
from prober_lab.faults import FAULTS
from prober_lab.plan import Cni
from tests.synth import KINDS

MODE_IDS = [m.kind.value for m in MODES]


def test_every_kind_has_exactly_one_mode() -> None:
    kinds = [m.kind for m in MODES]
    assert sorted(kinds) == sorted(FindingKind)
    assert len(set(kinds)) == len(kinds)
    assert set(BY_KIND) == set(FindingKind)


def test_the_rules_run_in_the_catalogue_order_and_the_localizer_last() -> None:
    assert [m.detect for m in MODES] == list(RULES)
    assert [m.kind for m in MODES] == [
        FindingKind.ZONE_PARTITION,
        FindingKind.NODE_ISOLATED,
        FindingKind.NODE_UNREACHABLE,
        FindingKind.POD_NETWORK_ISOLATED,
        FindingKind.PAIR_BLOCKED,
        FindingKind.NLB_HAIRPIN,
        FindingKind.NLB_5TUPLE_COLLISION,
        FindingKind.BRIDGE_NETFILTER,
        FindingKind.SNAT_ASYMMETRIC,
        FindingKind.ZONE_DEGRADED,
        FindingKind.PACKET_LOSS,
        FindingKind.DNS_TIMEOUTS,
        FindingKind.UNEXPLAINED,
    ]


def test_window_merging_reads_the_flags() -> None:
    assert {
        FindingKind.NLB_HAIRPIN,
        FindingKind.NLB_5TUPLE_COLLISION,
        FindingKind.ZONE_DEGRADED,
        FindingKind.PACKET_LOSS,
        FindingKind.DNS_TIMEOUTS,
    } == SLOW_KINDS
    assert {
        FindingKind.NODE_ISOLATED,
        FindingKind.NODE_UNREACHABLE,
        FindingKind.POD_NETWORK_ISOLATED,
        FindingKind.PAIR_BLOCKED,
        FindingKind.PACKET_LOSS,
        FindingKind.UNEXPLAINED,
    } == recency.REPLACEABLE


def test_alert_names_are_unique_and_severities_known() -> None:
    names = [m.alert.name for m in MODES]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"Prober[A-Z][A-Za-z0-9]+", n) for n in names)
    assert all(
        m.alert.severity in {"critical", "warning"} and m.severity in {"critical", "warning"} for m in MODES
    )


def test_each_mode_has_one_alert_rule_carrying_its_texts() -> None:
    [group] = [g for g in rule_groups() if g["name"] == "prober-finding-alerts"]
    rules = {r["alert"]: r for r in group["rules"]}
    assert set(rules) == {m.alert.name for m in MODES}
    for m in MODES:
        rule = rules[m.alert.name]
        assert f'kind="{m.kind.value}"' in rule["expr"]
        assert rule["labels"] == {"severity": m.alert.severity}
        assert rule["annotations"]["summary"] == alert_text(m, m.summary)
        assert rule["annotations"]["remediation"] == alert_text(m, m.remediation)


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_remediation_placeholders_fill(mode: FailureMode) -> None:
    assert mode.remediation
    assert mode.summary
    fields = placeholders(mode.remediation)
    # Every placeholder is the node or has words for the alert; no fill goes unused.
    assert fields - {NODE} == set(mode.alert_fills)
    assert NODE not in mode.alert_fills
    assert placeholders(mode.summary) <= {NODE}
    fills = {k: f"<{k}>" for k in mode.alert_fills}
    text = mode.fill(["node-x"], fills)
    assert "{" not in text
    assert "}" not in text
    assert all(f"<{k}>" in text for k in fills)
    assert ("node-x" in text) == (NODE in fields)
    # The alert's rendering leaves nothing but its node label to Prometheus.
    for template in (mode.summary, mode.remediation):
        rendered = alert_text(mode, template)
        assert "{" not in rendered.replace(NODE_LABEL, "")
        assert "}" not in rendered.replace(NODE_LABEL, "")


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_a_finding_must_fill_exactly_the_placeholders(mode: FailureMode) -> None:
    fills = dict.fromkeys(mode.alert_fills, "x")
    with pytest.raises(ValueError, match="the remediation takes"):
        mode.fill(["node-x"], {**fills, "typo": "x"})
    if NODE in placeholders(mode.remediation):
        with pytest.raises(ValueError, match="names one node"):
            mode.fill(["node-x", "node-y"], fills)


def test_the_lab_reproduces_the_modes_that_declare_a_fault() -> None:
    assert set(FAULTS) == {m.kind for m in MODES if m.lab_fault is not None}
    for m in MODES:
        if m.lab_fault is None:
            continue
        assert m.lab_fault.usage.startswith(m.kind.value)
        assert m.lab_fault.cni is None or m.lab_fault.cni in set(Cni)
        assert FAULTS[m.kind].kind is m.kind
        assert FAULTS[m.kind].lab is m.lab_fault


def test_the_synthetic_cluster_simulates_every_named_mode() -> None:
    assert set(KINDS) == {m.kind.value for m in MODES} - {FindingKind.UNEXPLAINED.value}


README = Path(__file__).resolve().parents[2] / "README.md"


def _tables_in(section: str) -> list[list[str]]:
    """The cells of the body rows of every Markdown table in a README section."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(section)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rows: list[list[str]] = []
    in_table = 0
    for line in lines[start + 1 : end]:
        in_table = in_table + 1 if line.startswith("|") else 0
        if in_table > 2:  # past the header and its rule
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_the_readme_tables_name_every_mode() -> None:
    modes = _tables_in("## Failure modes prober names")
    assert sorted(r[0] for r in modes) == sorted(f"`{k.value}`" for k in FindingKind)
    faults = _tables_in("## `prober lab`: a real cluster in network namespaces")
    assert {r[0].strip("`").split("@")[0].split("[")[0] for r in faults} == {k.value for k in FAULTS}
    [alerts] = [r for r in _tables_in("## SLOs and alerts") if "`ProberNlbHairpin`" in r[0]]
    assert set(re.findall(r"`(Prober\w+)`", alerts[0])) == {m.alert.name for m in MODES}
    critical = {k for k in FindingKind if re.search(rf"\b{k.value}\b", alerts[2].split("warning")[0])}
    assert critical == {m.kind for m in MODES if m.alert.severity == "critical"}
