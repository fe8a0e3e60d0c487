"""Taking a lab down is idempotent: a namespace that vanished meanwhile is not an error."""

from __future__ import annotations

import os

import pytest

from prober_lab import cluster, netns

pytestmark = pytest.mark.lab

#: Its own prefix under the checkout's base (see conftest.py).
PREFIX = f"{os.environ.get('PROBER_LAB_TEST_PREFIX', 'plabt')}x"


def test_a_namespace_gone_between_listing_and_delete_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing names a namespace whose file is already gone (ip fails the delete of it);
    the one that really exists is deleted, and teardown succeeds."""
    real = f"{PREFIX}-real"
    netns.run(["ip", "netns", "add", real])
    try:
        listings = iter([[f"{PREFIX}-gone", real]])
        monkeypatch.setattr(netns, "namespaces_with_prefix", lambda p: next(listings, None) or netns_now(p))
        count, _ = cluster.teardown(PREFIX)
        assert count == 2
        assert real not in netns_now(PREFIX)
    finally:
        if real in netns_now(PREFIX):
            netns.run(["ip", "netns", "del", real])


def netns_now(prefix: str) -> list[str]:
    out = netns.run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{prefix}-")]
