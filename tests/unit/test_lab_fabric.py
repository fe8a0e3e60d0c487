"""The lab's DNS answers: A for the lab's name, NXDOMAIN for anything else."""

from __future__ import annotations

import dns.message
import dns.rcode

from prober_lab.fabric import dns_answer
from prober_lab.plan import DNS_QUERY, ECHO_SERVICE_IP

NAMES = {DNS_QUERY: ECHO_SERVICE_IP}


def test_known_name_gets_its_address() -> None:
    query = dns.message.make_query(DNS_QUERY, "A")
    reply = dns.message.from_wire(dns_answer(query.to_wire(), names=NAMES) or b"")
    assert reply.id == query.id
    assert reply.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for rrset in reply.answer for r in rrset] == [ECHO_SERVICE_IP]


def test_unknown_name_is_nxdomain() -> None:
    query = dns.message.make_query("nope.example", "A")
    reply = dns.message.from_wire(dns_answer(query.to_wire(), names=NAMES) or b"")
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_garbage_gets_no_answer() -> None:
    assert dns_answer(b"\x00\x01garbage", names=NAMES) is None
