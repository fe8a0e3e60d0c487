"""The agent's DNS query and answer checks, against dnspython's reading of the same bytes."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prober.agent.dnswire import NOERROR, BadNameError, a_query, encode_name, response_rcode

NAME = "kubernetes.default.svc.cluster.local."


def library_query(name: str, ident: int) -> dns.message.Message:
    q = dns.message.make_query(name, dns.rdatatype.A)
    q.id = ident
    return q


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(NAME, id="fqdn"),
        pytest.param("example.com", id="no-trailing-dot"),
        pytest.param(".", id="root"),
        pytest.param("bücher.example.", id="idna"),
    ],
)
def test_query_is_the_bytes_dnspython_sends(name: str) -> None:
    assert a_query(name, 0x1234) == library_query(name, 0x1234).to_wire()


def answer(query: dns.message.Message, rcode: int = 0) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    if rcode == NOERROR:
        response.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A", "10.0.0.1"))
    return response


def flags_or(bits: int, mask: int = 0xFF) -> object:
    return lambda w: w[:2] + bytes([(w[2] & mask) | bits]) + w[3:]


def upper_question(wire: bytes) -> bytes:
    return wire[:12] + wire[12:].upper()


def without_question(wire: bytes) -> bytes:
    return wire[:4] + b"\x00\x00" + wire[6:12]


@pytest.mark.parametrize(
    ("mangle", "rcode", "expected"),
    [
        pytest.param(lambda w: w, dns.rcode.NOERROR, NOERROR, id="noerror"),
        pytest.param(lambda w: w, dns.rcode.NXDOMAIN, 3, id="nxdomain"),
        pytest.param(lambda w: w, dns.rcode.SERVFAIL, 2, id="servfail"),
        pytest.param(upper_question, dns.rcode.NOERROR, NOERROR, id="question-in-other-case"),
        pytest.param(lambda w: b"\x99\x99" + w[2:], dns.rcode.NOERROR, None, id="other-id"),
        pytest.param(flags_or(0, 0x7F), dns.rcode.NOERROR, None, id="not-a-response"),
        pytest.param(flags_or(0x08), dns.rcode.NOERROR, None, id="other-opcode"),
        pytest.param(
            lambda w: w.replace(b"default", b"other!!"), dns.rcode.NOERROR, None, id="other-question"
        ),
        pytest.param(without_question, dns.rcode.SERVFAIL, 2, id="servfail-without-question"),
        pytest.param(without_question, dns.rcode.NOERROR, None, id="noerror-without-question"),
        pytest.param(lambda w: w[:11], dns.rcode.NOERROR, None, id="short"),
        pytest.param(lambda w: b"\x00\x01garbage", dns.rcode.NOERROR, None, id="garbage"),
    ],
)
def test_response_rcode(mangle: object, rcode: int, expected: int | None) -> None:
    query = library_query(NAME, 0x4242)
    wire = mangle(answer(query, rcode).to_wire())  # type: ignore[operator]
    assert response_rcode(wire, a_query(NAME, 0x4242)) == expected


@given(ident=st.integers(0, 0xFFFF), rcode=st.sampled_from([0, 1, 2, 3, 4, 5]))
def test_agrees_with_dnspython_on_every_id_and_rcode(ident: int, rcode: int) -> None:
    query = library_query(NAME, ident)
    response = answer(query, rcode)
    assert query.is_response(response)
    assert response_rcode(response.to_wire(), a_query(NAME, ident)) == response.rcode()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a..b.", id="empty-label"),
        pytest.param("x" * 64 + ".example.", id="label-over-63"),
        pytest.param(".".join(["x" * 60] * 5), id="name-over-255"),
    ],
)
def test_names_that_cannot_be_queried(name: str) -> None:
    with pytest.raises(BadNameError):
        encode_name(name)
    with pytest.raises(Exception, match=r"."):
        dns.message.make_query(name, dns.rdatatype.A)
