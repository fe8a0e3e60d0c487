"""Open questions from a window's counts: which pairs and outside targets get focused probes."""

from __future__ import annotations

import pytest

from prober.diagnose.suspects import SuspectPolicy, suspects
from prober.model import Finding, FindingKind, Outcome, ProbeResult, Proto, SrcKind
from prober.pinglist import Question
from prober.stats import PairTable

NODES = ["a", "b", "c", "d"]


def rec(
    src: str, dst: str | None, outcome: str = "ok", *, path: str = "pod-to-pod", target: str = ""
) -> ProbeResult:
    kind = SrcKind(path.split("-to-", maxsplit=1)[0])
    return ProbeResult(
        ts=0.0, path=path, src_node=src, src_kind=kind, target=target or f"pod/{dst}", proto=Proto.HTTP,
        outcome=Outcome(outcome), latency_s=0.001 if outcome == "ok" else None, dst_node=dst,
    )  # fmt: skip


def ext(src: str, outcome: str = "ok", *, side: str = "pod") -> ProbeResult:
    return rec(src, None, outcome, path=f"{side}-to-external", target="external/example")


def table(records: list[ProbeResult]) -> PairTable:
    return PairTable.from_records(records, nodes=NODES)


def keys(found: list[Question]) -> list[tuple[str, str, str]]:
    return [s.key for s in found]


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        pytest.param([rec("a", "b", "timeout")], [("pair", "a", "b")], id="one-failure-no-success"),
        pytest.param([rec("b", "a", "timeout"), rec("b", "a")], [("pair", "a", "b")], id="either-direction"),
        pytest.param(
            [rec("a", "b", "timeout")] + [rec("a", "b")] * 7, [], id="one-failure-among-enough-is-background"
        ),
        pytest.param(
            [rec("a", "b", "timeout")] * 3 + [rec("a", "b")] * 5, [("pair", "a", "b")], id="undecided-share"
        ),
        pytest.param([rec("a", "b", "timeout")] * 8, [], id="dead-with-enough-samples-is-decided"),
        pytest.param([rec("a", "a", "timeout")], [], id="same-node-is-no-pair"),
        pytest.param([rec("a", "b")] * 3, [], id="no-failure"),
        pytest.param([ext("c", "timeout")], [("target", "c", "external/example")], id="outside-one-timeout"),
        pytest.param(
            [ext("c", "timeout")] * 3 + [ext("c", side="host")] * 3, [], id="outside-both-sides-sampled"
        ),
        pytest.param(
            [ext("c", "timeout")] * 3,
            [("target", "c", "external/example")],
            id="outside-other-side-unsampled",
        ),
        # A fresh fault's first failed probe after the side's two older successes: one of
        # three failed, an undecided share; one of nine is the background's.
        pytest.param(
            [ext("c"), ext("c"), ext("c", "timeout")] + [ext("c", side="host")] * 3,
            [("target", "c", "external/example")],
            id="outside-first-failure-after-successes",
        ),
        pytest.param(
            [*[ext("c")] * 8, ext("c", "timeout")] + [ext("c", side="host")] * 3,
            [],
            id="outside-one-failure-among-enough-is-background",
        ),
    ],
)
def test_open_questions(records: list[ProbeResult], expected: list[tuple[str, str, str]]) -> None:
    assert keys(suspects(table(records))) == expected


def test_strongest_evidence_first_and_bounded() -> None:
    records = [rec("a", "b", "timeout")] * 4 + [rec("c", "d", "timeout")] + [ext("b", "timeout")] * 2
    found = suspects(table(records), policy=SuspectPolicy(max_suspects=2))
    assert keys(found) == [("pair", "a", "b"), ("target", "b", "external/example")]
    assert [(s.failed, s.sent) for s in found] == [(4, 4), (2, 2)]


def test_named_pairs_stay_asked_while_the_finding_stands() -> None:
    finding = Finding(
        kind=FindingKind.PAIR_BLOCKED,
        severity="critical",
        nodes=["a", "b"],
        pairs=[("a", "b")],
        paths=[],
        confidence=0.99,
        evidence="",
        remediation="",
    )
    decided = [rec("a", "b", "timeout")] * 8
    [s] = suspects(table(decided), [finding])
    assert (s.key, s.named) == (("pair", "a", "b"), True)
    [s] = suspects(table([rec("c", "d")]), [finding])  # no probe of it in the window
    assert (s.key, s.named, s.sent) == (("pair", "a", "b"), True, 0)


def test_an_open_question_is_given_up_after_its_rounds() -> None:
    t = table([rec("a", "b", "timeout")])
    asked: list[Question] = []
    counts = []
    for _ in range(4):
        asked = suspects(t, previous=asked, policy=SuspectPolicy(max_rounds=3))
        counts.append([s.asked for s in asked])
    assert counts == [[1], [2], [3], []]


def test_none_when_switched_off() -> None:
    assert suspects(table([rec("a", "b", "timeout")]), policy=SuspectPolicy(max_suspects=0)) == []


def test_node_order_of_the_table_does_not_matter() -> None:
    records = [rec("b", "a", "timeout"), rec("d", "c", "timeout")] * 2
    backwards = PairTable.from_records(records, nodes=list(reversed(NODES)))
    assert (
        keys(suspects(backwards))
        == keys(suspects(table(records)))
        == [("pair", "a", "b"), ("pair", "c", "d")]
    )


def finding(kind: FindingKind, nodes: list[str], paths: list[str]) -> Finding:
    return Finding(kind=kind, severity="critical", nodes=nodes, pairs=[], paths=paths, confidence=0.99,
                   evidence="", remediation="")  # fmt: skip


def test_what_a_finding_already_explains_is_not_asked() -> None:
    """A node's isolated pod network fails half of each peer's probes: every one of its
    pairs would be an undecided question, ranked above a single outside failure
    elsewhere. The finding explains them; the outside target is what is left to ask."""
    records = [rec("a", x, "timeout") for x in "bcd"] * 3 + [
        rec("a", x, path="host-to-host") for x in "bcd"
    ] * 3
    records += [rec(x, "a", "timeout") for x in "bcd"] * 2 + [ext("c", "timeout"), ext("a", "timeout")]
    isolated = finding(FindingKind.POD_NETWORK_ISOLATED, ["a"], ["pod-to-pod", "pod-to-external"])
    before = suspects(table(records), policy=SuspectPolicy(max_suspects=3))
    assert keys(before) == [("pair", "a", "b"), ("pair", "a", "c"), ("pair", "a", "d")]
    assert keys(suspects(table(records), [isolated], policy=SuspectPolicy(max_suspects=3))) == [
        ("target", "c", "external/example")
    ]
    # A finding of outside paths alone leaves the pairs asked; one that names no node
    # (a cluster-wide one) and an unexplained one explain nothing.
    dns = finding(FindingKind.DNS_TIMEOUTS, [], ["pod-to-dns"])
    outside = finding(FindingKind.NODE_ISOLATED, ["a"], ["pod-to-external"])
    unexplained = finding(FindingKind.UNEXPLAINED, ["a"], ["pod-to-pod", "pod-to-external"])
    assert keys(suspects(table(records), [outside], policy=SuspectPolicy(max_suspects=3))) == keys(before)
    assert keys(suspects(table(records), [dns, unexplained])) == keys(suspects(table(records)))
    lookup = rec("d", None, "timeout", path="pod-to-dns", target="dns/kube-dns")
    assert ("target", "d", "dns/kube-dns") in keys(suspects(table([*records, lookup])))
    assert ("target", "d", "dns/kube-dns") not in keys(suspects(table([*records, lookup]), [dns]))
    assert ("target", "a", "external/example") not in keys(suspects(table(records), [outside]))
