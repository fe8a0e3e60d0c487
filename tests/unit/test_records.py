"""The JSONL contract: what readers accept, what they reject, and how they say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prober.model import Outcome, ProbeResult, Proto, SrcKind
from prober.records import RecordError, encode_records, iter_records, parse_batch, read_records

GOOD = {
    "ts": 1763856000.25,
    "path": "pod-to-nlb",
    "src_node": "node-a",
    "src_kind": "pod",
    "src_ip": "10.244.1.11",
    "target": "nlb/prober-echo",
    "target_ip": "172.31.200.10",
    "target_port": 80,
    "proto": "tcp",
    "dst_node": "node-b",
    "dst_kind": "pod",
    "outcome": "ok",
    "latency_s": 0.0021,
    "seen_src_ip": "172.31.0.11",
    "src_port": 40312,
}


def line(**changes: object) -> str:
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not ...})


def test_design_example_round_trips() -> None:
    [r] = list(iter_records([line()]))
    assert r.outcome is Outcome.OK
    assert r.src_kind is SrcKind.POD
    assert r.proto is Proto.TCP
    assert r.dst_node == "node-b"
    [again] = list(iter_records(encode_records([r]).splitlines()))
    assert again == r


def test_unknown_fields_are_ignored() -> None:
    [r] = list(iter_records([line(extra_field="whatever", phase="connect")]))
    assert r.src_node == "node-a"


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        pytest.param(line(outcome=...), "missing required field `outcome`", id="missing-outcome"),
        pytest.param(line(ts=...), "missing required field `ts`", id="missing-ts"),
        pytest.param(line(outcome="lost"), "Invalid enum value 'lost'", id="unknown-outcome"),
        pytest.param(line(path="pod-to-moon"), "unknown path", id="unknown-path"),
        pytest.param(line(src_kind="host"), "does not start with src_kind", id="path-kind-mismatch"),
        pytest.param(line(latency_s=None), "latency_s is required", id="ok-without-latency"),
        pytest.param(line(latency_s=-1.0), "Expected `float` >= 0.0", id="negative-latency"),
        pytest.param(
            line().replace("0.0021", "1e999"), "Number out of range - at `$.latency_s`", id="infinite-latency"
        ),
        pytest.param(
            line().replace("1763856000.25", "1e999"), "Number out of range - at `$.ts`", id="infinite-ts"
        ),
        pytest.param(line(src_port=2**64), "`$.src_port`", id="port-beyond-uint64"),
        pytest.param(line(target_port=65536), "Expected `int` <= 65535", id="port-beyond-65535"),
        pytest.param(line(latency_s=3601.0), "Expected `float` <= 3600.0", id="latency-beyond-an-hour"),
        pytest.param(line(ts=-1.0), "Expected `float` >= 0.0", id="negative-ts"),
        pytest.param(line(src_port=-1), "Expected `int` >= 0", id="negative-port"),
        pytest.param(line(src_node="n" * 254), "length <= 253", id="node-name-too-long"),
        pytest.param(line(target="x"), "length >= 3", id="target-without-kind"),
        pytest.param(line(target="nlb/" + "x" * 600), "length <= 512", id="target-too-long"),
        pytest.param(
            '{"x": ' + "[" * 5000 + "]" * 5000 + ", " + line()[1:], "nested too deeply", id="deep-nesting"
        ),
        pytest.param(line(target_port="80"), "Expected `int | null`, got `str`", id="port-as-string"),
        pytest.param('{"ts": 1,', "not valid JSON", id="truncated"),
        pytest.param("[1, 2]", "Expected `object`", id="not-an-object"),
    ],
)
def test_bad_line_is_rejected_naming_the_line(bad: str, fragment: str) -> None:
    with pytest.raises(RecordError) as info:
        list(iter_records([line(), "", bad], source="x.jsonl"))
    assert info.value.line == 3
    assert str(info.value).startswith("x.jsonl:3: ")
    assert fragment in str(info.value)


def test_read_records_from_file(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text(line() + "\n\n" + line(outcome="timeout", latency_s=None, dst_node=None) + "\n")
    rs = read_records(f)
    assert [r.outcome for r in rs] == [Outcome.OK, Outcome.TIMEOUT]


def test_parse_batch_keeps_good_lines_and_lists_bad_ones() -> None:
    body = "\n".join([line(), "garbage", line(outcome="nope"), line(src_node="node-c")]).encode()
    good, n_bad, rejected = parse_batch(body)
    assert [r.src_node for r in good] == ["node-a", "node-c"]
    assert n_bad == 2
    assert [r.line for r in rejected] == [2, 3]


def test_parse_batch_bounds_the_listed_rejections() -> None:
    good, n_bad, rejected = parse_batch(b"x\n" * 500)
    assert good == []
    assert n_bad == 500
    assert len(rejected) == 20


def test_target_kind_is_derived_from_the_path() -> None:
    r = ProbeResult(
        ts=1.0, path="host-to-service-local", src_node="n", src_kind=SrcKind.HOST,
        target="service-local/x", outcome=Outcome.TIMEOUT, proto=Proto.HTTP,
    )  # fmt: skip
    assert r.target_kind.value == "service-local"
