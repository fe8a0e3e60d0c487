"""The static inventory: a YAML or JSON file, for setups without a Kubernetes API.

The format is documented in the README ("Inventory file"). The file is re-read when
its modification time changes, so a running collector follows edits; a broken edit
is logged and the last good inventory stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import yaml

from prober.inventory import Inventory, InventoryError, check_inventory

log = logging.getLogger(__name__)


def parse_inventory(text: str, *, source: str = "<inventory>") -> Inventory:
    """Parse YAML (a superset of JSON) into a checked :class:`Inventory`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InventoryError(f"{source}: not valid YAML/JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InventoryError(f"{source}: expected a mapping with 'nodes', 'agents', ... at the top")
    try:
        inv = msgspec.convert(raw, Inventory)
    except msgspec.ValidationError as exc:
        raise InventoryError(f"{source}: {exc}") from None
    try:
        return check_inventory(inv)
    except InventoryError as exc:
        raise InventoryError(f"{source}: {exc}") from None


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {p}: {exc.strerror or exc}") from None
    return parse_inventory(text, source=str(p))


class StaticInventory:
    """An :class:`~prober.inventory.InventorySource` backed by a file."""

    def __init__(self, path: str | os.PathLike[str], *, poll_s: float = 2.0) -> None:
        self.path = Path(path)
        self.poll_s = poll_s

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except OSError:
            return None

    async def updates(self) -> AsyncIterator[Inventory]:
        last = load_inventory(self.path)  # the first load must succeed: fail fast on startup
        seen = self._mtime()
        yield last
        while True:
            await asyncio.sleep(self.poll_s)
            mtime = self._mtime()
            if mtime == seen:
                continue
            seen = mtime
            try:
                inv = load_inventory(self.path)
            except InventoryError as exc:
                log.warning("inventory change ignored, keeping the last good one: %s", exc)
                continue
            if inv != last:
                last = inv
                yield inv
