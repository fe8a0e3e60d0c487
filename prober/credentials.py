"""Credentials: the bearer token a client sends, and what a TokenReview says about one.

Two credentials reach the collector (README § Threat model):

- a **token file** (``--token-file``): a secret shared by the collector and whoever may
  operate it (``prober sweep``, agents of a static inventory). :class:`TokenFile`
  reads it, and reads it again when the file changes (a rotated Secret, a kubelet-
  refreshed projected token);
- an agent's **projected ServiceAccount token** with the audience :data:`AUDIENCE`:
  the collector asks the API server's TokenReview who it is (:class:`Review`, from
  :func:`review_from_status`); the token names the agent's pod and node.

Pure apart from reading the token file: no sockets, no Kubernetes client (that is
:mod:`prober.inventory.tokenreview`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

#: The audience of an agent's projected token: the API server refuses such a token
#: (its audience is not the API server's), and the collector refuses any other.
AUDIENCE: Final = "prober"
#: The TokenReview ``user.extra`` keys that name a service-account token's pod and node.
POD_NAME_CLAIM: Final = "authentication.kubernetes.io/pod-name"
NODE_NAME_CLAIM: Final = "authentication.kubernetes.io/node-name"
#: The longest token read or accepted (a projected token is about 1 kB).
MAX_TOKEN_BYTES: Final = 16 * 1024


class CredentialError(Exception):
    """A token file that cannot be used, with a message that says which and why."""


class TokenFile:
    """A bearer token kept in a file, re-read whenever the file changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None

    def read(self) -> str | None:
        """The token, or ``None`` while the file is missing or empty. Raises
        :class:`CredentialError` for a file that is larger than a token can be."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp = self._token = None
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            if st.st_size > MAX_TOKEN_BYTES:
                raise CredentialError(f"{self.path}: {st.st_size} bytes is not a token")
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
            self._token = text or None
            self._stamp = stamp
        return self._token

    def header(self) -> dict[str, str]:
        """``{"Authorization": "Bearer ..."}``, or nothing while there is no token."""
        token = self.read()
        return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Review:
    """What the API server said about a token.

    ``error`` is set when the review itself failed (the API server unreachable): the
    token is neither good nor bad, and the caller should retry.
    """

    authenticated: bool
    username: str = ""
    audiences: tuple[str, ...] = ()
    pod: str | None = None
    node: str | None = None
    error: str | None = None


class TokenReviewer(Protocol):
    """Asks the API server who a token belongs to (``authentication.k8s.io/v1`` TokenReview)."""

    async def review(self, token: str) -> Review: ...


def review_from_status(status: dict[str, Any]) -> Review:
    """A :class:`Review` from a TokenReview's ``status`` (as the API server answers it)."""
    if not status.get("authenticated"):
        return Review(authenticated=False, error=None)
    user = status.get("user") or {}
    extra = user.get("extra") or {}

    def claim(key: str) -> str | None:
        values = extra.get(key) or []
        return str(values[0]) if values else None

    return Review(
        authenticated=True,
        username=str(user.get("username", "")),
        audiences=tuple(str(a) for a in status.get("audiences") or ()),
        pod=claim(POD_NAME_CLAIM),
        node=claim(NODE_NAME_CLAIM),
    )


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, unverified: trust it only after a review authenticated it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
