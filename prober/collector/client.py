"""The collector's HTTP client: how a sweep reaches agents, and what a failed connection means.

:class:`HttpAgents` is the real :class:`~prober.collector.sweep.AgentTransport`: it
calls an agent's ``POST /sweep`` and reads the JSONL results it streams, with no
connection reuse (``force_close``) and at most ``concurrency`` connections at once.
Every failure is an :class:`~prober.collector.sweep.AgentAnswer` with a reason
(refused, timed out, cut short, an HTTP error, garbage), never an exception.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import aiohttp
import msgspec

from prober.collector.batch import decode_batch
from prober.collector.sweep import AgentAnswer
from prober.inventory import Agent

#: The largest answer read from one agent (its whole pinglist's results).
MAX_AGENT_ANSWER_BYTES: Final = 256 * 2**20


class HttpAgents:
    """Agents' ``POST /sweep`` over one aiohttp session (see :func:`http_agents`)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def sweep(self, agent: Agent, *, probe_timeout_s: float, deadline_s: float) -> AgentAnswer:
        return await ask_agent(self._session, agent, probe_timeout_s=probe_timeout_s, deadline_s=deadline_s)


@asynccontextmanager
async def http_agents(*, concurrency: int) -> AsyncIterator[HttpAgents]:
    """A transport to agents for as long as the context lasts: a new connection per call,
    at most ``concurrency`` at once."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        yield HttpAgents(session)


def agent_url(agent: Agent, path: str) -> str:
    host = agent.address
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a DNS name
    return f"http://{host}:{agent.http_port}{path}"


def connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """``connection refused``, ``no route to host``, ...: the errno's words, not the socket's repr."""
    err = exc.os_error
    if err is not None and err.errno:
        return os.strerror(err.errno).lower()
    return str(err or exc).lower()


def _http_error(status: int, body: bytes) -> str:
    """``HTTP 503: no pinglist yet``: the JSON error's message if there is one, else the body's start."""
    try:
        message = str(msgspec.json.decode(body)["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def _results(agent: Agent, body: bytes, *, error: str | None = None) -> AgentAnswer:
    records, rejected, _ = decode_batch(body)
    if rejected and not records and error is None:
        error = f"no valid result among {rejected} lines"
    return AgentAnswer(agent=agent, records=records, rejected=rejected, error=error)


async def ask_agent(
    session: aiohttp.ClientSession, agent: Agent, *, probe_timeout_s: float, deadline_s: float
) -> AgentAnswer:
    """One agent's sweep results; every failure comes back as ``AgentAnswer.error``.

    Agents stream their results as the probes finish; an agent still answering at
    the deadline is a failure, but the complete lines it sent are kept.
    """
    url = agent_url(agent, "/sweep")
    chunks: list[bytes] = []
    size = 0
    try:
        async with (
            asyncio.timeout(deadline_s),
            session.post(url, json={"timeout_s": probe_timeout_s}) as resp,
        ):
            if resp.status != 200:
                return AgentAnswer(agent=agent, error=_http_error(resp.status, await resp.content.read(4096)))
            async for chunk in resp.content.iter_any():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_AGENT_ANSWER_BYTES:
                    limit = MAX_AGENT_ANSWER_BYTES // 2**20
                    return AgentAnswer(agent=agent, error=f"answer larger than {limit} MiB")
    except TimeoutError:
        partial = b"".join(chunks)
        complete = partial[: partial.rfind(b"\n") + 1]
        if not complete:
            return AgentAnswer(agent=agent, error=f"no answer within {deadline_s:g} s")
        answer = _results(agent, complete)
        kept = len(answer.records)
        return AgentAnswer(
            agent=agent,
            records=answer.records,
            rejected=answer.rejected,
            error=f"still answering after {deadline_s:g} s ({kept} results kept)",
        )
    except aiohttp.ClientConnectorError as exc:
        return AgentAnswer(agent=agent, error=f"cannot connect: {connect_reason(exc)}")
    except aiohttp.ClientPayloadError as exc:
        return _results(agent, b"".join(chunks).rpartition(b"\n")[0], error=f"answer cut short: {exc}")
    except (aiohttp.ClientError, OSError) as exc:
        return AgentAnswer(agent=agent, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    return _results(agent, b"".join(chunks))
