"""The one DNS message the agent sends (an A query over UDP) and the checks on its answer.

Written out from RFC 1035 § 4.1 rather than through a DNS library: the probe needs one
query and three facts about an answer (is it a response to that query, and its
RCODE), and a full DNS library costs every agent ~2 MB of memory and most of a DNS
probe's CPU. The checks are those of a resolver's stub: same ID, the QR bit, the same
opcode, the same question (names compared without regard to ASCII case); an error
answer (FORMERR, SERVFAIL, NOTIMP, REFUSED) may leave the question out. The answer's
records are not read: a NOERROR response to the question says the resolver works,
which is all the probe asks.

Pure; no I/O, no sockets.
"""

from __future__ import annotations

import struct
from typing import Final

#: Header flags: QR (a response), RD (recursion desired); the opcode and RCODE fields.
_QR: Final = 0x8000
_RD: Final = 0x0100
_OPCODE_MASK: Final = 0x7800
_RCODE_MASK: Final = 0x000F
_HEADER = struct.Struct("!HHHHHH")
#: QTYPE A, QCLASS IN.
_A_IN: Final = struct.pack("!HH", 1, 1)

NOERROR: Final = 0
#: RCODEs whose answers may omit the question section (RFC 1035 gives no rule; resolvers
#: accept them, and so does this check).
_ERRORS_WITHOUT_QUESTION: Final = frozenset({1, 2, 4, 5})  # FORMERR, SERVFAIL, NOTIMP, REFUSED

#: The most bytes of a name on the wire (RFC 1035 § 2.3.4), and of one label.
_MAX_NAME: Final = 255
_MAX_LABEL: Final = 63


class BadNameError(ValueError):
    """A name that cannot be put in a query (an empty or over-long label, a name over 255 bytes)."""


def encode_name(name: str) -> bytes:
    """``name`` in wire form: length-prefixed labels, then the root's zero byte.

    The trailing dot is optional; ``"."`` and ``""`` are the root. Non-ASCII labels
    are IDNA-encoded, as resolvers' stubs do.
    """
    text = name.rstrip(".") if name not in (".", "") else ""
    out = bytearray()
    if text:
        for label in text.split("."):
            try:
                raw = label.encode("ascii") if label.isascii() else label.encode("idna")
            except UnicodeError as exc:
                raise BadNameError(f"DNS name {name!r}: {exc}") from None
            if not 0 < len(raw) <= _MAX_LABEL:
                raise BadNameError(f"DNS name {name!r}: a label must be 1 to {_MAX_LABEL} bytes")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > _MAX_NAME:
        raise BadNameError(f"DNS name {name!r} is longer than {_MAX_NAME} bytes")
    return bytes(out)


def a_query(name: str, ident: int) -> bytes:
    """A standard query (opcode 0, RD set) for the A records of ``name``, with ID ``ident``."""
    return _HEADER.pack(ident & 0xFFFF, _RD, 1, 0, 0, 0) + encode_name(name) + _A_IN


def response_rcode(answer: bytes, query: bytes) -> int | None:
    """The RCODE of ``answer`` if it is a response to ``query``; ``None`` if it is not one."""
    if len(answer) < _HEADER.size:
        return None
    ident, flags, qdcount, _, _, _ = _HEADER.unpack_from(answer)
    q_ident, q_flags, _, _, _, _ = _HEADER.unpack_from(query)
    if ident != q_ident or not flags & _QR or (flags & _OPCODE_MASK) != (q_flags & _OPCODE_MASK):
        return None
    rcode: int = flags & _RCODE_MASK
    if qdcount == 0:
        return rcode if rcode in _ERRORS_WITHOUT_QUESTION else None
    question = query[_HEADER.size :]
    if qdcount != 1 or answer[_HEADER.size : _HEADER.size + len(question)].lower() != question.lower():
        return None
    return rcode
