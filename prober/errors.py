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
