"""``prober sweep``: ask the collector to probe everything now; print the matrix and findings."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from prober import settings as declared
from prober.errors import CollectorUnavailableError, ProberError
from prober.options import setting_options

if TYPE_CHECKING:
    import aiohttp

    from prober.collector.sweep import SweepStatus

POLL_S = 0.3
#: Time the collector gets, beyond the agents' deadline, to diagnose and answer.
GRACE_S = 60.0


def _unreachable(url: str, reason: str) -> CollectorUnavailableError:
    return CollectorUnavailableError(
        f"cannot reach the collector at {url} ({reason}); is `prober collector` running there? "
        "Set --collector or PROBER_COLLECTOR_URL"
    )


def connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """``connection refused``, ``no route to host``, ...: the errno's words, not the socket's repr."""
    import os

    err = exc.os_error
    if err is not None and err.errno:
        return os.strerror(err.errno).lower()
    return str(err or exc).lower()


async def _answer(resp: aiohttp.ClientResponse, url: str) -> bytes:
    import msgspec

    body = await resp.read()
    if resp.status < 400:
        return body
    try:
        message = str(msgspec.json.decode(body)["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace").strip() or resp.reason or ""
    raise CollectorUnavailableError(f"the collector at {url} answered {resp.status}: {message}")


def _say_wait(seconds: int, *, lowered_to: float | None = None) -> None:
    if lowered_to is not None:
        sys.stderr.write(f"prober: the collector lowered the sweep's deadline to {lowered_to:g} s\n")
    else:
        sys.stderr.write(f"prober: the last sweep ended moments ago; starting this one in {seconds} s\n")


async def run_sweep(
    url: str,
    *,
    deadline_s: float,
    on_progress: Callable[[SweepStatus], None],
    token_file: str | None = None,
    on_wait: Callable[..., None] = _say_wait,
) -> SweepStatus:
    """Start a sweep and poll it to the end; every failure is a :class:`ProberError`.

    ``token_file``: the collector's operator token, sent as a bearer credential.
    Within the collector's minimum gap between sweeps (429 with Retry-After) it waits
    once and asks again; ``on_wait`` says so (and when the collector lowered the deadline).
    """
    import aiohttp
    import msgspec

    from prober.collector.sweep import SweepStatus
    from prober.credentials import CredentialError, TokenFile

    base = url.rstrip("/")
    headers: dict[str, str] = {}
    if token_file is not None:
        try:
            headers = TokenFile(token_file).header()
        except (OSError, CredentialError) as exc:
            raise ProberError(f"--token-file {token_file}: {exc}") from None
        if not headers:
            raise ProberError(f"--token-file {token_file}: no such file, or it is empty")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), headers=headers) as session:
            for attempt in range(2):
                async with session.post(f"{base}/api/v1/sweeps", json={"deadline_s": deadline_s}) as resp:
                    retry_after = resp.headers.get("Retry-After", "")
                    if resp.status == 429 and attempt == 0 and retry_after.isdigit():
                        # The collector keeps a minimum gap between sweeps: wait it out once.
                        on_wait(int(retry_after))
                        await asyncio.sleep(int(retry_after))
                        continue
                    started = msgspec.json.decode(await _answer(resp, base))
                    break
            sweep_id = started["id"]
            effective = float(started.get("deadline_s", deadline_s))
            if effective < deadline_s:
                on_wait(0, lowered_to=effective)
            deadline_s = effective  # the collector's (a joined sweep keeps its own)
            async with asyncio.timeout(deadline_s + GRACE_S):
                while True:
                    async with session.get(f"{base}/api/v1/sweeps/{sweep_id}") as resp:
                        status = msgspec.json.decode(await _answer(resp, base), type=SweepStatus)
                    on_progress(status)
                    if status.state != "running":
                        return status
                    await asyncio.sleep(POLL_S)
    except aiohttp.ClientConnectorError as exc:
        raise _unreachable(base, connect_reason(exc)) from None
    except aiohttp.InvalidURL:
        raise ProberError(f"--collector {url!r} is not a URL (e.g. http://collector:9090)") from None
    except (aiohttp.ClientError, msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
        raise CollectorUnavailableError(
            f"the collector at {base} gave no usable answer: {type(exc).__name__}: {exc}"
        ) from None
    except TimeoutError:
        raise CollectorUnavailableError(
            f"the sweep did not finish within {deadline_s + GRACE_S:g} s; see the collector's log"
        ) from None


@click.command()
@setting_options(declared.SWEEP)
@click.pass_context
def sweep(ctx: click.Context, url: str, token_file: str | None, as_json: bool, deadline_s: float) -> None:
    """Probe now: every ready agent probes its same-node targets, a slice of its peers and the shared targets.

    The collector starts a sweep (or joins the one running); agents learn of it at
    their next pinglist fetch, probe within their budget and deliver their results.
    The collector builds the matrix from exactly those results and diagnoses it.
    In small clusters a sweep covers every pair; in large ones each node is probed
    by the same number of peers (README, "prober sweep"). Progress goes to stderr;
    agents that did not deliver are listed there with the reason.

    \b
    Exit status: 0 no findings, 1 findings, 2 error (collector unreachable, no results).
    \b
    Examples:
      prober sweep
      prober sweep --collector http://prober-collector.prober:9090 --json | jq .findings
      prober sweep --token-file ./operator-token   # a collector started with --token-file
    """
    import msgspec
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from prober.render import render_report

    err = Console(stderr=True)
    progress = Progress(
        TextColumn("sweeping"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("agents  {task.fields[probes]:,} probes  {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task("sweep", total=None, probes=0, failed=0)

    def on_progress(status: SweepStatus) -> None:
        progress.update(
            task,
            total=status.agents_total,
            completed=status.agents_done,
            probes=status.probes,
            failed=len(status.agents_failed),
        )

    with progress:
        status = asyncio.run(
            run_sweep(url, deadline_s=deadline_s, on_progress=on_progress, token_file=token_file)
        )

    for failure in status.agents_failed:
        err.print(
            f"prober: warning: agent {failure.agent} on {failure.node} did not sweep: {failure.error}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if status.state == "failed" or status.report is None:
        raise ProberError(f"the sweep failed in the collector: {status.error or 'no report'}")
    if status.probes == 0:
        raise ProberError(
            f"the sweep got no results: {len(status.agents_failed)} of {status.agents_total} agents failed"
        )
    if as_json:
        sys.stdout.buffer.write(msgspec.json.encode(status.report) + b"\n")
        sys.stdout.flush()
    else:
        elapsed = (status.finished_at or status.started_at) - status.started_at
        title = (
            f"prober sweep {status.id}: {status.agents_total - len(status.agents_failed)} of "
            f"{status.agents_total} agents, {status.probes:,} probes in {elapsed:.1f} s"
        )
        render_report(status.report, Console(), title=title)
    ctx.exit(1 if status.report.findings else 0)
