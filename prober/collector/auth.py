"""Who is calling the collector: a bearer token in, a :class:`Caller` (or a refusal) out.

Roles (README § Threat model):

- **operator**: presents the token of ``--token-file``. May do everything: post
  results for any node (agents of a static inventory use this token), read any
  pinglist and the raw records, start and read sweeps.
- **agent**: presents a projected ServiceAccount token with the audience
  ``prober``, which the API server's TokenReview vouches for (the collector's one
  write to the API: ``create`` on ``tokenreviews``). Its pod must be an agent of the
  inventory, its service account the agents' one, and its node claim (when the API
  server sets it) the node the inventory has that pod on. It may post results only
  with ``src_node`` equal to that node, and read only its own pinglist.
- **anyone**: only when the collector has no credential at all (no ``--token-file``,
  no Kubernetes): every endpoint is open, as on a laptop or in the lab; the collector
  says so in its log at start.

A review is cached until the token expires (its ``exp`` claim, at most
:data:`MAX_CACHE_S`), a refusal for :data:`REFUSAL_CACHE_S`; both caches are bounded,
and so are the reviews in flight. A review that cannot be made (API server away) is
a 503, which agents retry, never a 401, which they would not.

No HTTP here: :mod:`prober.collector.http` passes the ``Authorization`` header in and
turns an :class:`AuthError` into an answer.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from prober.credentials import AUDIENCE, MAX_TOKEN_BYTES, Review, TokenFile, TokenReviewer, token_expiry
from prober.inventory import Inventory

log = logging.getLogger(__name__)

#: Longest a review is trusted, whatever the token's expiry says.
MAX_CACHE_S: Final = 3600.0
#: How long a refused token stays refused without asking again.
REFUSAL_CACHE_S: Final = 10.0
#: Reviews kept (a few per agent: tokens rotate).
CACHE_ENTRIES: Final = 50_000
#: Reviews in flight at once; more callers wait.
REVIEWS_IN_FLIGHT: Final = 8


class Role(enum.StrEnum):
    OPERATOR = "operator"
    AGENT = "agent"
    ANYONE = "anyone"


@dataclass(frozen=True, slots=True)
class Caller:
    role: Role
    #: For an agent: its pod (its name in the inventory) and the node it is bound to.
    agent: str | None = None
    node: str | None = None


class AuthError(Exception):
    """A request without a good credential: ``status`` 401 (none or a bad one), 403 (good,
    but not for this), 503 (it cannot be checked now: retry)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class _Cached:
    review: Review
    until: float


class Authenticator:
    """Identifies callers by their bearer token; see the module docstring for the roles."""

    def __init__(
        self,
        *,
        token_file: TokenFile | None = None,
        reviewer: TokenReviewer | None = None,
        agent_username: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_file = token_file
        self.reviewer = reviewer
        #: The agents' service account (``system:serviceaccount:NS:NAME``); None: any.
        self.agent_username = agent_username
        self._clock = clock
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self._in_flight = asyncio.Semaphore(REVIEWS_IN_FLIGHT)

    @property
    def open(self) -> bool:
        """No credential configured: every endpoint is open to anyone who reaches it."""
        return self.token_file is None and self.reviewer is None

    async def identify(self, authorization: str | None, inventory: Inventory | None) -> Caller:
        """The caller of a request with this ``Authorization`` header; raises :class:`AuthError`."""
        if self.open:
            return Caller(Role.ANYONE)
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "a credential is required: Authorization: Bearer <token>")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(401, "the bearer token is not valid")
        operator = self._operator_token()
        if operator is not None and hmac.compare_digest(token.encode(), operator.encode()):
            return Caller(Role.OPERATOR)
        if self.reviewer is None:
            raise AuthError(401, "the bearer token is not valid")
        review = await self._review(token)
        if review.error is not None:
            raise AuthError(503, f"the credential cannot be checked now ({review.error}); retry")
        return self._agent(review, inventory)

    def _operator_token(self) -> str | None:
        if self.token_file is None:
            return None
        try:
            return self.token_file.read()
        except (OSError, ValueError) as exc:
            log.warning("cannot read the token file: %s", exc)
            return None

    async def _review(self, token: str) -> Review:
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached.until > now:
            self._cache.move_to_end(key)
            return cached.review
        assert self.reviewer is not None
        async with self._in_flight:
            review = await self.reviewer.review(token)
        if review.error is None:
            if review.authenticated:
                expiry = token_expiry(token)
                until = min(now + MAX_CACHE_S, expiry if expiry is not None else now + MAX_CACHE_S)
            else:
                until = now + REFUSAL_CACHE_S
            self._cache[key] = _Cached(review, until)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return review

    def _agent(self, review: Review, inventory: Inventory | None) -> Caller:
        if not review.authenticated:
            raise AuthError(401, "the bearer token is not valid")
        if AUDIENCE not in review.audiences:
            raise AuthError(401, f"the token is not for the audience {AUDIENCE!r}")
        if self.agent_username is not None and review.username != self.agent_username:
            raise AuthError(403, f"{review.username} is not the agents' service account")
        agent = inventory.agent(review.pod) if inventory is not None and review.pod else None
        if agent is None:
            raise AuthError(403, f"the token's pod {review.pod!r} is not an agent of the inventory (yet)")
        if review.node is not None and review.node != agent.node:
            raise AuthError(403, f"the token's node {review.node!r} is not the node of agent {agent.name!r}")
        return Caller(Role.AGENT, agent=agent.name, node=agent.node)
