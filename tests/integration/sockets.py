"""Connections opened while the server's event loop cannot accept them."""

from __future__ import annotations

import errno
import select
import socket
import time


def connected_while_blocked(host: str, port: int, n: int, *, blocked_s: float = 0.5) -> int:
    """Open ``n`` connections to ``host:port`` without waiting, block this thread (a server
    on its event loop cannot accept meanwhile) and count those the kernel completed: the
    listen queue holds them. The rest wait on SYN retransmits (1 s, then 3 s)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.setblocking(False)  # noqa: FBT003
            assert s.connect_ex((host, port)) in (0, errno.EINPROGRESS)
        time.sleep(blocked_s)
        _, writable, _ = select.select([], socks, [], 0)
        return sum(1 for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    finally:
        for s in socks:
            s.close()
