"""The collector's own web page: the live matrix and the findings, without Grafana.

``GET /`` serves one self-contained HTML document (``web_matrix.html`` beside this
module: inline CSS and JavaScript, no external asset) that polls the collector's
``api/v1/matrix`` and ``api/v1/findings`` with relative URLs, so it also works behind
``kubectl port-forward`` or a path-prefix proxy.

The Content-Security-Policy allows exactly the page's own inline ``<style>`` and
``<script>`` (by hash) and fetches to the collector itself: nothing else loads,
whatever a node name or an evidence string contains (the script only ever sets
text, never HTML).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

_RESOURCE = "web_matrix.html"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


@dataclass(frozen=True, slots=True)
class WebPage:
    body: bytes
    csp: str


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def build_page(html: str) -> WebPage:
    """The page and a CSP that admits its inline blocks by hash and nothing from elsewhere."""
    scripts = [_sha256(body) for tag, body in _INLINE.findall(html) if tag == "script"]
    styles = [_sha256(body) for tag, body in _INLINE.findall(html) if tag == "style"]
    csp = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(scripts or ["'none'"]),
            "style-src " + " ".join(styles or ["'none'"]),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return WebPage(body=html.encode("utf-8"), csp=csp)


@functools.cache
def web_page() -> WebPage:
    html = resources.files("prober.collector").joinpath(_RESOURCE).read_text(encoding="utf-8")
    return build_page(html)


async def handle_index(_request: web.Request) -> web.Response:
    page = web_page()
    return web.Response(
        body=page.body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": page.csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


def add_routes(app: web.Application) -> None:
    """Serve the web matrix at ``GET /`` of ``app``."""
    app.router.add_get("/", handle_index)
