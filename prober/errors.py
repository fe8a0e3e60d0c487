"""The errors a user can act on. Each carries a message that says what to do."""

from __future__ import annotations


class ProberError(Exception):
    """Base of every error prober reports as one line and exit status 2."""


class UsageError(ProberError):
    """Bad input: a file, a flag value, an inventory."""


class SettingError(UsageError, ValueError):
    """A setting's value outside what :mod:`prober.settings` declares; the message names
    the flag. Also a ``ValueError``: code that builds a settings value directly gets the
    exception it expects of a bad argument."""


class CollectorUnavailableError(ProberError):
    """The collector could not be reached or answered with an error."""


class MissingExtraError(ProberError, ImportError):
    """A module that needs an optional extra, imported without it installed.

    An ``ImportError`` too, so ``import`` machinery and callers that probe for optional
    modules treat it as one; the message names the ``pip install`` that fixes it.
    """

    def __init__(self, module: str, *, extra: str, package: str, reason: str) -> None:
        self.module = module
        self.extra = extra
        self.package = package
        super().__init__(
            f"{module} needs {package}, which cannot be imported ({reason}): pip install 'prober[{extra}]'",
            name=module,
        )
