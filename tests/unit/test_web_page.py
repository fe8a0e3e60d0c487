"""The collector's web page: self-contained, and a CSP that admits only its own inline blocks."""

from __future__ import annotations

import base64
import hashlib
import re

from prober.collector.web import build_page, web_page


def test_page_loads_nothing_from_elsewhere() -> None:
    html = web_page().body.decode("utf-8")
    # every src/href is inline data; no stylesheet, script, font or image URL
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert refs == ["data:,"]
    assert "@import" not in html
    assert "url(" not in html
    assert not re.search(r"https?://", html)


def test_csp_admits_exactly_the_inline_blocks_by_hash() -> None:
    page = web_page()
    html = page.body.decode("utf-8")
    directives = dict(d.split(" ", 1) for d in page.csp.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    for tag in ("script", "style"):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert directives[f"{tag}-src"] == f"'sha256-{digest}'"
    assert "unsafe-inline" not in page.csp
    assert "unsafe-eval" not in page.csp


def test_a_page_without_scripts_allows_none() -> None:
    page = build_page("<html><body>hi</body></html>")
    assert "script-src 'none'" in page.csp
    assert "style-src 'none'" in page.csp
