"""The agent's wire formats: the UDP echo's no-amplification rule and the strict HTTP parse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prober.agent.echo import (
    MAX_UDP_REQUEST,
    NONCE_BYTES,
    UDP_MAGIC,
    EchoIdentity,
    UdpDrop,
    parse_udp_reply,
    udp_reply,
    udp_request,
)
from prober.agent.probes import BadResponseError, http_request, parse_http_response
from prober.model import SrcKind

ME = EchoIdentity(node="node-b", kind=SrcKind.HOST, agent="host-node-b")
CLIENT = ("10.244.1.11", 40312)
NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def test_udp_reply_round_trips_through_the_probe_parser() -> None:
    reply = udp_reply(udp_request(NONCE), ME, CLIENT)
    assert isinstance(reply, bytes)
    echo = parse_udp_reply(reply, NONCE)
    assert echo is not None
    assert (echo.node, echo.kind) == ("node-b", SrcKind.HOST)
    assert (echo.client_ip, echo.client_port) == CLIENT
    assert b"host-node-b" not in reply  # the echo never names its agent


def test_reply_to_another_nonce_is_not_ours() -> None:
    reply = udp_reply(udp_request(NONCE), ME, CLIENT)
    assert isinstance(reply, bytes)
    assert parse_udp_reply(reply, b"\x00" * NONCE_BYTES) is None


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        pytest.param(b"", "malformed", id="empty"),
        pytest.param(b"PRB1", "malformed", id="magic-without-nonce"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n" + bytes(600), "malformed", id="not-magic"),
        pytest.param(b"prb1" + NONCE + bytes(600), "malformed", id="magic-wrong-case"),
        pytest.param(UDP_MAGIC + NONCE, "amplification", id="bare-request-would-amplify"),
        pytest.param(udp_request(NONCE, size=40), "amplification", id="short-padding"),
        pytest.param(udp_request(NONCE, size=MAX_UDP_REQUEST + 1), "oversize", id="oversize"),
    ],
)
def test_datagrams_that_get_no_reply(datagram: bytes, reason: str) -> None:
    assert udp_reply(datagram, ME, CLIENT) == UdpDrop(reason)


@given(size=st.integers(min_value=0, max_value=2 * MAX_UDP_REQUEST), node=st.text(min_size=1, max_size=300))
def test_a_reply_is_never_longer_than_its_request(size: int, node: str) -> None:
    me = EchoIdentity(node=node, kind=SrcKind.POD, agent="a")
    request = udp_request(NONCE, size=size)
    reply = udp_reply(request, me, ("fd00::1234:5678:9abc:def0", 65535))
    if isinstance(reply, bytes):
        assert len(reply) <= len(request)


def test_http_request_asks_for_a_fresh_connection() -> None:
    req = http_request("127.0.0.2", 8080, "prober/1")
    assert req.startswith(b"GET / HTTP/1.1\r\nHost: 127.0.0.2:8080\r\n")
    assert b"Connection: close\r\n" in req
    assert req.endswith(b"\r\n\r\n")
    assert b"Host: [fd00::1]:80\r\n" in http_request("fd00::1", 80, "p")


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "eof", "expected"),
    [
        pytest.param(OK_HEAD + b'{"a":1}', False, (200, b'{"a":1}'), id="complete"),
        pytest.param(OK_HEAD + b'{"a"', False, None, id="body-pending"),
        pytest.param(OK_HEAD[:20], False, None, id="head-pending"),
        pytest.param(b"HTTP/1.0 404 Not Found\r\n\r\nnope", True, (404, b"nope"), id="close-delimited"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\nabc", False, None, id="close-delimited-pending"),
    ],
)
def test_http_parse(data: bytes, eof: bool, expected: tuple[int, bytes] | None) -> None:
    assert parse_http_response(data, eof=eof) == expected


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Len", id="head-cut"),
        pytest.param(b"HTTP/1.1 OK\r\n\r\n", id="no-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}", id="body-cut"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}", id="bad-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", id="chunked"
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", id="bad-header"),
    ],
)
def test_http_parse_rejects_what_no_echo_sends(data: bytes) -> None:
    with pytest.raises(BadResponseError):
        parse_http_response(data, eof=True)
