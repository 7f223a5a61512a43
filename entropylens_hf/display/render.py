"""HTML for a trace: one fragment for a notebook cell, one self-contained page for a file.

Both carry the view's JavaScript and CSS inline (shipped in ``static/``, no CDN, nothing loaded
from the network), the data as a JSON block, and a plain-text summary shown until the script
runs, so an output whose scripts are not run (an untrusted notebook, a text-only front end)
still says what it is.
"""

from __future__ import annotations

import html
import json
import uuid
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["fragment", "page", "asset"]


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """A file of ``entropylens_hf/display/static`` as text."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _json_block(data: dict[str, Any]) -> str:
    # "</" would end the <script> element early; "<!--" could open an HTML comment in it.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def fragment(data: dict[str, Any], fallback: str) -> str:
    """A ``<div>`` that draws itself where it lands: a notebook output or the body of a page."""
    uid = f"elens-{uuid.uuid4().hex[:12]}"
    return (
        f'<div class="elens" id="{uid}">'
        f"<style>{asset('lens_view.css')}</style>"
        f'<pre class="elens-fallback">{html.escape(fallback)}</pre>'
        f'<script type="application/json" class="elens-data">{_json_block(data)}</script>'
        f"<script>{asset('lens_view.js')}\n;window.EntropyLensView.mount("
        f"(document.currentScript && document.currentScript.parentNode) || document.getElementById({json.dumps(uid)}));</script>"
        "</div>"
    )


def page(data: dict[str, Any], fallback: str, title: str) -> str:
    """A whole HTML document around :func:`fragment`: opens by double-click, offline."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="generator" content="entropylens-hf">'
        "<style>body{margin:16px;background:#fff;}</style>"
        f"</head><body>{fragment(data, fallback)}</body></html>\n"
    )
