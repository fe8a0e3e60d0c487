"""The ``prober`` command line: a thin dispatcher over lazily imported subcommands.

Each subcommand lives in :mod:`prober.commands` and imports its machinery only when
it runs, so ``prober agent`` never loads numpy or the Kubernetes client and
``prober --help`` starts fast. Errors the user can act on are
:class:`~prober.errors.ProberError`: printed as one line, exit status 2. Anything
else is a bug: one line plus how to get the traceback (``PROBER_DEBUG=1``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from prober import __version__
from prober.errors import ProberError

#: name -> (module, attribute, one-line help shown by ``prober --help``). ``lab`` is
#: the ``prober-lab`` distribution's (``lab/`` in the repository), installed beside
#: prober where it is wanted and absent from the container image.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("prober.commands.agent", "agent", "Run a probe agent (one per node per network)."),
    "echo": ("prober.commands.echo", "echo", "Serve the HTTP/UDP echo only: the echo Services' backend."),
    "collector": (
        "prober.commands.collector",
        "collector",
        "Run the collector: pinglists, matrix, findings.",
    ),
    "sweep": ("prober.commands.sweep", "sweep", "Probe everything now; print the matrix and findings."),
    "diagnose": ("prober.commands.diagnose", "diagnose", "Diagnose recorded probe results (JSONL)."),
    "lab": ("prober_lab.command", "lab", "A real cluster in network namespaces, with faults to switch on."),
}
#: The distributions that bring a subcommand's module, when it is not prober itself.
DISTRIBUTIONS: dict[str, str] = {"prober_lab": "prober-lab"}


class MissingCommandError(ProberError):
    """A subcommand whose distribution is not installed (``prober lab`` without prober-lab)."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attr, _ = entry
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            top = module.partition(".")[0]
            if exc.name != top or top not in DISTRIBUTIONS:
                raise
            raise MissingCommandError(
                f"`prober {cmd_name}` is not installed here: it comes with the "
                f"{DISTRIBUTIONS[top]} package (from a checkout: pip install ./lab, or scripts/install)"
            ) from None
        command = getattr(loaded, attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the table, so `prober --help` imports no subcommand.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in SUBCOMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    envvar="PROBER_LOG_LEVEL",
    show_default=True,
    help="Log verbosity (logs go to stderr).",
)
@click.version_option(version=__version__, prog_name="prober")
def cli(log_level: str) -> None:
    """prober: an active connectivity prober mesh for Kubernetes.

    Agents on every node (pod network and host network) probe each other, the
    Services, the NodePort, the NLB, DNS and external endpoints; the collector
    turns the results into a (source node x target node) matrix per path and names
    the failure modes it sees.

    \b
    Start here:
      prober lab demo              a guided tour in network namespaces (root)
      prober diagnose FILE.jsonl   diagnose recorded results
      prober sweep --collector URL is the network healthy right now?
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point. A subcommand sets a non-zero exit status with ``ctx.exit(code)``."""
    try:
        rv = cli.main(args=argv, prog_name="prober", standalone_mode=False)
        if isinstance(rv, int):
            sys.exit(rv)
    except click.exceptions.Abort:
        click.echo("prober: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except ProberError as exc:
        click.echo(f"prober: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("prober: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("PROBER_DEBUG"):
            raise
        click.echo(f"prober: internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("prober: this is a bug; run again with PROBER_DEBUG=1 for the traceback", err=True)
        sys.exit(3)
