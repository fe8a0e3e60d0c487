"""The collector's TokenReview client: asks the API server who an agent's token belongs to.

Agents present a projected ServiceAccount token with the audience ``prober``
(:data:`prober.credentials.AUDIENCE`). The collector cannot verify it alone; it
creates a ``TokenReview`` (``authentication.k8s.io/v1``) with that audience, and the
API server answers whether the token is good, whose it is (``system:serviceaccount:
NS:NAME``) and, in ``user.extra``, its pod and node. This is the collector's one
write to the API (RBAC: ``create`` on ``tokenreviews``).

A review the API server could not make (unreachable, timed out, the collector's own
RBAC missing) is a :class:`~prober.credentials.Review` with ``error`` set: the token
is neither good nor bad, and the caller is asked to retry. Caching is the caller's
(:mod:`prober.collector.auth`).

Beside :mod:`prober.inventory.kube`, the other module that imports ``kubernetes``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from prober.credentials import AUDIENCE, Review, review_from_status


class KubeTokenReviewer:
    """:class:`~prober.credentials.TokenReviewer` over the Kubernetes API."""

    def __init__(self, configuration: Any, *, audience: str = AUDIENCE, timeout_s: float = 5.0) -> None:
        self.audience = audience
        self.timeout_s = timeout_s
        self._client = kubernetes.client.ApiClient(configuration)
        self._api = kubernetes.client.AuthenticationV1Api(self._client)

    async def review(self, token: str) -> Review:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        try:
            resp: Any = await asyncio.to_thread(
                self._api.create_token_review,
                body,  # type: ignore[arg-type]  # the client takes a plain dict as well as a model
                _preload_content=False,
                _request_timeout=self.timeout_s,
            )
            doc = json.loads(resp.data)
        except ApiException as exc:
            return Review(authenticated=False, error=f"TokenReview answered HTTP {exc.status} {exc.reason}")
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            return Review(authenticated=False, error=f"TokenReview failed: {type(exc).__name__}")
        status = doc.get("status") if isinstance(doc, dict) else None
        if not isinstance(status, dict):
            return Review(authenticated=False, error="TokenReview answered without a status")
        return review_from_status(status)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
