"""Decoding the shared mesh into as little memory as an agent can hold it in.

At 5,000 nodes the mesh is ~25,000 probe targets (~5 MB of JSON). Decoded as it comes,
every target carries its own copy of each string (the peer's node name three times, its
addresses, the NodePort's name) and of each port number: ~10 MB held for as long as the
mesh is in force, on top of the body. Here the ring is decoded one peer group at a time
from a view of the body (``msgspec.Raw``, no copy), and equal strings and numbers are
shared between targets, so the mesh costs about half of that (4.8 MB at 5,000 nodes)
and the peak is the body plus the compact mesh (plus 0.3 MB), not the body plus the
full one. A changed mesh comes as a delta that shares the unchanged groups
(:func:`prober.pinglist.apply_delta`): no second mesh is decoded beside the first.

The result is the same :class:`~prober.pinglist.Mesh` value (equal field by field to a
plain decode): nothing downstream knows. Pure; no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

from prober.pinglist import Mesh, PeerGroup


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
    """One instance of each equal string or number.

    A peer's strings (its node name, addresses, target names) repeat within its group
    only, so they are shared through a dict of the group alone, dropped with it: a
    dict of every string of the mesh would cost, while decoding, half as much again as
    the mesh. Port numbers and the names of targets of no one node (a NodePort) repeat
    across groups and are shared through dicts of the whole mesh (a few entries).
    Exact ``str`` and ``int`` only: a ``StrEnum`` member and its value are not
    interchangeable, and enum members are single already.
    """

    __slots__ = ("_ints", "_names")

    def __init__(self) -> None:
        self._ints: dict[int, int] = {}
        self._names: dict[str, str] = {}

    def group(self, g: PeerGroup) -> PeerGroup:
        ints, local = self._ints, {g.node: g.node}
        targets = []
        for t in g.targets:
            values: dict[str, Any] = {}
            for name in t.__struct_fields__:
                v = getattr(t, name)
                kind = type(v)
                if kind is int:
                    v = ints.setdefault(v, v)
                elif kind is str:
                    v = (self._names if name == "target" and t.dst_node is None else local).setdefault(v, v)
                values[name] = v
            targets.append(msgspec.structs.replace(t, **values))
        return msgspec.structs.replace(g, node=local[g.node], targets=targets)


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


class MeshLines:
    """A mesh decoded as it arrives, a line at a time, never held whole.

    The collector serves the mesh one peer group a line
    (:func:`prober.pinglist.encode_mesh`): each complete line is decoded and compacted
    as it comes, so the peak is the compact mesh plus one chunk, not plus the ~5 MB
    document. A document of another layout (one line: a hand-written file, an older
    collector) is kept and decoded whole at the end, as :func:`decode_mesh` does.
    Errors are those of a plain decode, raised by :meth:`feed` or :meth:`finish`.
    """

    __slots__ = ("_groups", "_head", "_pending", "_shared", "_tail", "_whole")

    def __init__(self) -> None:
        self._pending = bytearray()  # the line not yet complete
        self._head: bytes | None = None  # the first line, up to the ring's "["
        self._groups: list[PeerGroup] = []
        self._tail: bytearray | None = None  # from the ring's "]" on
        self._whole: bytearray | None = None  # another layout: the whole document
        self._shared = _Shared()

    def feed(self, chunk: bytes | bytearray) -> None:
        """The next piece of the document, cut anywhere."""
        if self._whole is not None:
            self._whole += chunk
            return
        if self._tail is not None:
            self._tail += chunk
            return
        pending = self._pending
        pending += chunk
        start = 0
        while self._whole is None and self._tail is None and (end := pending.find(b"\n", start)) >= 0:
            self._line(bytes(pending[start:end]))
            start = end + 1
        del pending[:start]
        self._spill()

    def _spill(self) -> None:
        """Past the ring (or not the layout): what is pending goes to the rest."""
        for rest in (self._whole, self._tail):
            if rest is not None:
                rest.extend(self._pending)
                self._pending.clear()

    def _line(self, line: bytes) -> None:
        if self._head is None:
            if line.endswith(b'"ring":['):
                self._head = line
            else:
                self._whole = bytearray(line + b"\n")
        elif line.startswith(b"]"):
            self._tail = bytearray(line + b"\n")
        else:
            group = _group_decoder.decode(line.removesuffix(b","))
            self._groups.append(self._shared.group(group))

    def finish(self) -> Mesh:
        """The mesh, once the whole document was fed."""
        if self._whole is not None or self._head is None:
            return decode_mesh((self._whole or bytearray()) + self._pending)
        tail = (self._tail or bytearray()) + self._pending
        frame = _frame_decoder.decode(self._head + bytes(tail))
        if frame.ring:  # a group after the ring's "]"?: not the layout this reads
            raise msgspec.DecodeError("mesh: peer groups after the end of the ring")
        values = {name: getattr(frame, name) for name in frame.__struct_fields__}
        values["ring"] = self._groups
        return Mesh(**values)
