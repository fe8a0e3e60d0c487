"""Delivering results to the collector, and keeping them while it is away.

Results go out in JSONL batches (``POST {collector}/api/v1/results``) every few
seconds or every N records, whichever comes first. A failed delivery is retried with
exponential backoff and full jitter, so a restarted collector is not met by every
agent at once. While the collector is away the results wait in a bounded buffer; when
it is full the *oldest* are dropped (recent results matter more for a live matrix)
and every drop is counted in ``prober_report_dropped_records_total``. Nothing is
dropped silently.

A batch the collector refuses as a whole (a 4xx other than 408/429) is not retried:
sending it again cannot succeed. Individual bad lines are the collector's to reject;
the good lines of a batch are never lost to them.

Optionally every result is also appended to a local JSONL file (``--results-file``),
for standalone agents and ``prober diagnose``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

from prober.agent.metrics import AgentMetrics
from prober.credentials import TokenFile
from prober.model import ProbeResult
from prober.pinglist import PINGLIST_HEADER, Pinglist
from prober.records import encode_records

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReporterPolicy:
    batch_records: int = 1000  # send as soon as this many results wait
    flush_interval_s: float = 2.0  # ... or after this long
    max_buffer: int = 50_000  # results kept while the collector is away (~15 MB)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    request_timeout_s: float = 10.0


def backoff_delay(attempt: int, policy: ReporterPolicy, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, initial * 2**attempt)]."""
    cap = min(policy.backoff_max_s, policy.backoff_initial_s * (2 ** min(attempt, 30)))
    return rng.uniform(0.0, cap)


class ResultBuffer:
    """A bounded FIFO of results that drops the oldest when full, and counts it."""

    def __init__(self, capacity: int, metrics: AgentMetrics) -> None:
        self.capacity = capacity
        self.metrics = metrics
        self._items: collections.deque[ProbeResult] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def _trim(self) -> None:
        excess = len(self._items) - self.capacity
        if excess > 0:
            for _ in range(excess):
                self._items.popleft()
            self.metrics.dropped_records.inc(excess)
        self.metrics.buffer_records.set(len(self._items))

    def extend(self, results: Sequence[ProbeResult]) -> None:
        self._items.extend(results)
        self._trim()

    def take(self, n: int) -> list[ProbeResult]:
        """Remove and return up to ``n`` of the oldest results."""
        items = self._items
        batch = [items.popleft() for _ in range(min(n, len(items)))]
        self.metrics.buffer_records.set(len(items))
        return batch

    def put_back(self, batch: Sequence[ProbeResult]) -> None:
        """Return an undelivered batch to the front; if the buffer filled meanwhile, the oldest go."""
        self._items.extendleft(reversed(batch))
        self._trim()


class Reporter:
    """Buffers results and delivers them; run :meth:`run` in the agent's task group."""

    def __init__(
        self,
        *,
        collector_url: str | None,
        session: aiohttp.ClientSession | None,
        metrics: AgentMetrics,
        policy: ReporterPolicy | None = None,
        results_file: Path | None = None,
        rng: random.Random | None = None,
        credential: TokenFile | None = None,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self.url = collector_url.rstrip("/") + "/api/v1/results" if collector_url else None
        self.session = session
        self.metrics = metrics
        self.policy = policy or ReporterPolicy()
        self.rng = rng or random.Random()
        self.credential = credential
        #: Given the :data:`~prober.pinglist.PINGLIST_HEADER` of each answer that has one.
        self.on_answer = on_answer
        self.buffer = ResultBuffer(self.policy.max_buffer, metrics)
        self._wake = asyncio.Event()
        self._file: IO[bytes] | None = results_file.open("ab") if results_file else None
        self.delivered = 0
        self.attempt = 0  # consecutive failed deliveries
        #: How often results are posted: the policy's, then the pinglist's
        #: (``report_interval_s``: a large mesh posts less often), see :meth:`follow`.
        self.flush_interval_s = self.policy.flush_interval_s

    def follow(self, pl: Pinglist) -> None:
        """Post as often as the pinglist says (``report_interval_s``), from the next post on."""
        self.flush_interval_s = pl.report_interval_s

    def add(self, results: Sequence[ProbeResult]) -> None:
        """Queue results for delivery (and append them to the results file)."""
        if not results:
            return
        if self._file is not None:
            self._file.write(encode_records(results))
        if self.url is not None:
            self.buffer.extend(results)
            if len(self.buffer) >= self.policy.batch_records:
                self._wake.set()

    async def _send(self, batch: Sequence[ProbeResult]) -> bool:
        """One delivery attempt. True: done with this batch (delivered or refused for good)."""
        assert self.url is not None
        assert self.session is not None
        try:
            async with self.session.post(
                self.url,
                data=encode_records(batch),
                headers={
                    "Content-Type": "application/x-ndjson",
                    **(self.credential.header() if self.credential is not None else {}),
                },
                timeout=aiohttp.ClientTimeout(total=self.policy.request_timeout_s),
            ) as resp:
                body = await resp.read()
                if resp.status == 200:
                    self.metrics.batches.labels("ok").inc()
                    self.delivered += len(batch)
                    if self.on_answer is not None and (news := resp.headers.get(PINGLIST_HEADER)):
                        self.on_answer(news)
                    return True
                if 400 <= resp.status < 500 and resp.status not in (408, 429):
                    self.metrics.batches.labels("rejected").inc()
                    self.metrics.dropped_records.inc(len(batch))
                    log.error(
                        "collector refused a batch of %d results (HTTP %d): %s",
                        len(batch),
                        resp.status,
                        body[:200].decode("utf-8", "replace"),
                    )
                    return True
                reason = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        self.metrics.batches.labels("failed").inc()
        if self.attempt == 0:
            log.warning("collector unreachable (%s); buffering results and retrying", reason)
        return False

    async def flush_once(self) -> bool:
        """Deliver everything buffered, one batch at a time; False at the first failure."""
        while len(self.buffer):
            batch = self.buffer.take(self.policy.batch_records)
            if not await self._send(batch):
                self.buffer.put_back(batch)
                return False
            if self.attempt:
                log.info("collector reachable again; delivering buffered results")
            self.attempt = 0
        return True

    async def run(self) -> None:
        """Deliver batches until cancelled."""
        if self._file is not None and self.url is None:
            while True:  # file only: just keep the file current
                await asyncio.sleep(self.flush_interval_s)
                self._file.flush()
        while True:
            try:
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._file is not None:
                self._file.flush()
            if self.url is None:
                continue
            while not await self.flush_once():
                await asyncio.sleep(backoff_delay(self.attempt, self.policy, self.rng))
                self.attempt += 1

    async def close(self, *, deadline_s: float) -> None:
        """Last delivery attempts for up to ``deadline_s``, then close the file. Never raises."""
        try:
            if self.url is not None and len(self.buffer):
                async with asyncio.timeout(deadline_s):
                    while not await self.flush_once():
                        await asyncio.sleep(backoff_delay(self.attempt, self.policy, self.rng))
                        self.attempt += 1
        except TimeoutError:
            log.warning("shutdown: %d results could not be delivered", len(self.buffer))
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
