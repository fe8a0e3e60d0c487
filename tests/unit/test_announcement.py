"""The ``Prober-Pinglist`` header of the answer to results (docs/contracts.md § Pinglist)."""

from __future__ import annotations

from prober.pinglist import ANNOUNCEMENT_MAX_BYTES, Announced, decode_announcement, encode_announcement


def test_each_agent_its_version_and_the_sweep_that_wants_it_round_trip() -> None:
    entries = {
        "prober-agent-pod-x": Announced("0123abcd.89ef4567"),
        "prober-agent-host-x": Announced("feed.beef", sweep="s-42"),
    }
    raw = encode_announcement(entries)
    assert raw == 'prober-agent-host-x="feed.beef";sweep="s-42", prober-agent-pod-x="0123abcd.89ef4567"'
    assert decode_announcement(raw) == entries


def test_an_announcement_stops_at_its_byte_bound_with_whole_entries() -> None:
    entries = {
        f"prober-agent-pod-ip-10-0-{i // 256}-{i % 256}": Announced(f"{i:016x}.{i:016x}") for i in range(200)
    }
    raw = encode_announcement(entries)
    assert len(raw) <= ANNOUNCEMENT_MAX_BYTES
    got = decode_announcement(raw)
    assert 40 < len(got) < 200
    assert all(entries[name] == a for name, a in got.items())  # whole entries only, in name order
    assert list(got) == sorted(entries)[: len(got)]


def test_a_malformed_entry_costs_only_itself() -> None:
    raw = 'good="v1.m1", =nameless, novalue, empty="", odd="v2.m2";sweep=, other="v3.m3";color="red"'
    assert decode_announcement(raw) == {
        "good": Announced("v1.m1"),
        "odd": Announced("v2.m2"),
        "other": Announced("v3.m3"),
    }
    assert decode_announcement("") == {}
