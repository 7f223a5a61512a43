"""Traces as HTML: inline in Jupyter (``_repr_html_``) and as one self-contained page.

:mod:`.payload` turns a trace into compact view data, :mod:`.render` wraps it with the
view's JavaScript and CSS (``static/``, shipped in the package, nothing from a CDN), and
:mod:`.view` picks what to show. Needs only the trace API and numpy: no torch, no Jupyter
packages (a notebook front end runs the inline script), no Qt.
"""

from __future__ import annotations

from .view import CELL_BUDGET, DEFAULT_SEQUENCES, TraceView, view

__all__ = ["view", "TraceView", "DEFAULT_SEQUENCES", "CELL_BUDGET"]
