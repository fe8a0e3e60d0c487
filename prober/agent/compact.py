"""Decoding the shared mesh into as little memory as an agent can hold it in.

At 5,000 nodes the mesh is ~25,000 probe targets (~5 MB of JSON). Decoded as it comes,
every target carries its own copy of each string (the peer's node name three times, its
addresses, the NodePort's name) and of each port number: ~10 MB held for as long as the
mesh is in force, on top of the body. Here the ring is decoded one peer group at a time
from a view of the body (``msgspec.Raw``, no copy), and equal strings and numbers are
shared between targets, so the mesh costs about half of that and the peak is the body
plus the compact mesh, not the body plus the full one.

The result is the same :class:`~prober.pinglist.Mesh` value (equal field by field to a
plain decode): nothing downstream knows. Pure; no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

from prober.pinglist import Mesh, PeerGroup, ProbeTarget


def _frame_type() -> type[msgspec.Struct]:
    """:class:`Mesh` with its ring left encoded: one raw view per peer group (built from
    Mesh's own fields, so a field added there is decoded here too)."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(Mesh):
        if f.name == "ring":
            fields.append((f.name, list[msgspec.Raw]))
        elif f.default is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type))
    return msgspec.defstruct("MeshFrame", fields, frozen=True, kw_only=True)


_frame_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_frame_type())
_group_decoder = msgspec.json.Decoder(PeerGroup)


class _Shared:
    """One instance of each equal string or number (by type: a ``StrEnum`` member and its
    value are not interchangeable)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[type, object], object] = {}

    def target(self, t: ProbeTarget) -> ProbeTarget:
        seen = self._seen
        values: dict[str, Any] = {}
        for name in t.__struct_fields__:
            v = getattr(t, name)
            kind = type(v)
            if kind is str or kind is int:
                v = seen.setdefault((kind, v), v)
            values[name] = v
        return msgspec.structs.replace(t, **values)

    def group(self, g: PeerGroup) -> PeerGroup:
        node = self._seen.setdefault((str, g.node), g.node)
        return msgspec.structs.replace(g, node=node, targets=[self.target(t) for t in g.targets])


def decode_mesh(body: bytes | bytearray) -> Mesh:
    """The mesh in ``body`` (the JSON of ``GET /api/v1/mesh``), held compactly.

    Raises ``msgspec.ValidationError`` / ``msgspec.DecodeError`` as a plain decode would.
    """
    frame = _frame_decoder.decode(body)
    shared = _Shared()
    ring = [shared.group(_group_decoder.decode(raw)) for raw in frame.ring]
    values = {name: getattr(frame, name) for name in frame.__struct_fields__}
    values["ring"] = ring
    return Mesh(**values)
