"""Run one probe and print its result as JSONL: the helper the lab tests start inside a netns.

``python -m tests.lab.agent_probe_main PROTO IP PORT TIMEOUT [--listen]``; with
``--listen`` a TCP listener on IP:PORT is opened first (inside the same namespace).
"""

from __future__ import annotations

import asyncio
import socket
import sys

from prober.agent.probes import ProbeContext, run_probe
from prober.model import Proto, SrcKind, TargetKind
from prober.pinglist import ProbeTarget
from prober.records import encode_record


async def main(argv: list[str]) -> None:
    proto, ip, port, timeout = Proto(argv[0]), argv[1], int(argv[2]), float(argv[3])
    listener = socket.create_server((ip, port)) if "--listen" in argv else None
    target = ProbeTarget(
        target="host/node-b", kind=TargetKind.HOST, ip=ip, port=port, proto=proto, query="a."
    )
    ctx = ProbeContext(src_node="node-a", src_kind=SrcKind.HOST, timeout_s=timeout)
    result = await run_probe(target, ctx, ts=1.0)
    sys.stdout.buffer.write(encode_record(result) + b"\n")
    if listener is not None:
        listener.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
