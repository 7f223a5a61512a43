"""Panels for what a lens records beyond whole-layer entropy: sub-layer rows, KL to the final layer,
and the same prompt read through different lenses (a logit-lens and a tuned-lens trace)."""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore

from .compare import PromptComparison, compare_prompt
from .lens_rows import decoder_boundaries, generated_mean, kl_recorded
from .model import ViewerState, visible_token
from .widgets import ComparePlot, HeatmapView, _integer_ticks

__all__ = ["SublayerMarks", "KLPlot", "PromptComparePlot"]

SEPARATOR_PEN = (255, 255, 255, 120)
NOTE_COLOUR = "#b00020"


class RedrawWhenShown:
    """Redraw once per event-loop turn, and only while on screen.

    Selecting a sequence announces a new sequence and a new row: one redraw follows, after
    both. A panel in a hidden tab only notes that it is stale and redraws when shown, so
    browsing costs nothing for panels nobody looks at (pyqtgraph items are slow to update).
    """

    _stale = False
    _scheduled = False

    def request_redraw(self) -> None:
        self._stale = True
        if self.isVisible() and not self._scheduled:
            self._scheduled = True
            QtCore.QTimer.singleShot(0, self, self._redraw_if_stale)

    def _redraw_if_stale(self) -> None:
        self._scheduled = False
        if self._stale and self.isVisible():
            self._stale = False
            self.redraw()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._redraw_if_stale()


class SublayerMarks:
    """On the heatmap of a sub-layer trace: a line between decoder layers, and an axis title saying what rows are."""

    SUBLAYER_LABEL = "k.attn / k.mlp: after attention / MLP"

    def __init__(self, heatmap: HeatmapView):
        self.heatmap = heatmap
        self.plain_label = heatmap.getAxis("left").labelText
        self.lines: list[pg.InfiniteLine] = []
        heatmap.state.sequence_changed.connect(self.redraw)

    def redraw(self) -> None:
        trace = self.heatmap.state.trace
        edges = decoder_boundaries(trace.trace.metadata) if trace else np.zeros(0)
        # Lines are reused, never re-created (as the profile's regions are).
        while len(self.lines) < len(edges):
            line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(SEPARATOR_PEN, width=1))
            self.heatmap.addItem(line)
            self.lines.append(line)
        for i, line in enumerate(self.lines):
            line.setVisible(i < len(edges))
            if i < len(edges):
                line.setPos(edges[i])
        self.heatmap.setLabel("left", self.SUBLAYER_LABEL if len(edges) else self.plain_label)

    @property
    def edges(self) -> list[float]:
        """Where separators are shown (heatmap y)."""
        return [line.value() for line in self.lines if line.isVisible()]


class KLPlot(RedrawWhenShown, pg.PlotWidget):
    """KL(p_final || p_layer) of the selected token and its sequence's mean against layer.

    A trace that did not record it (version-1 files, all NaN) shows a "not recorded" line
    instead of an empty plot.
    """

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        self.setLabel("left", "KL to final layer (nats)")
        self.setLabel("bottom", "layer (0 = embeddings)")
        self.addLegend(offset=(-10, 10))
        self.mean_curve = self.plot([], [], pen=pg.mkPen((120, 120, 120), width=2, style=QtCore.Qt.DashLine),
                                    name="sequence mean (generated tokens)")
        self.token_curve = self.plot([], [], pen=pg.mkPen("k", width=2), symbol="o", symbolSize=5,
                                     name="selected token")
        self.layer_line = pg.InfiniteLine(angle=90, pen=pg.mkPen((120, 120, 120), style=QtCore.Qt.DashLine))
        self.addItem(self.layer_line)
        self.message = ""
        state.sequence_changed.connect(self.request_redraw)
        state.row_changed.connect(self.request_redraw)
        state.layer_changed.connect(self._render_layer)

    def redraw(self) -> None:
        seq, row = self.state.sequence, self.state.row
        self.message = ""
        if seq is None:
            self._clear("")
            return
        if not kl_recorded(seq):
            m, name = self.state.trace.trace.metadata, self.state.trace.path.name
            self._clear(f"KL to the final layer: not recorded in {name} (a schema-{m.schema_version} trace, "
                        "written before KL was recorded)" if m.schema_version < 2 else
                        f"KL to the final layer: not recorded for sequence {seq.index} of {name}")
            return
        x = self.state.depths
        _integer_ticks(self, int(x[-1]) + 1)
        self.mean_curve.setData(x, generated_mean(seq.kl_final, seq), connect="finite")
        if row is None:
            self.token_curve.setData([], [])
            title = "KL(p<sub>final</sub> &#8214; p<sub>layer</sub>): click a token in the heatmap"
        else:
            self.token_curve.setData(x, seq.kl_final[row], connect="finite")
            token = html.escape(repr(visible_token(seq.token_texts[seq.first_target + row])))
            title = f"KL(p<sub>final</sub> &#8214; p<sub>layer</sub>) of token {token}"
        self.setTitle(title, size="10pt")
        self._render_layer()

    def _clear(self, message: str) -> None:
        self.message = message
        self.mean_curve.setData([], [])
        self.token_curve.setData([], [])
        self.setTitle(html.escape(message), size="10pt", color="#555555")

    def _render_layer(self) -> None:
        if self.state.trace is not None:
            self.layer_line.setPos(self.state.depths[self.state.layer])


class PromptComparePlot(RedrawWhenShown, pg.GraphicsLayoutWidget):
    """The shown prompt (or selected token) in every open trace: entropy (top) and KL to final (bottom).

    Curves are named by file and lens (``logit lens``, ``tuned lens (lens.safetensors, …)``);
    a trace without this prompt, or whose tokens differ before the selected one, is named in a
    note below instead of being drawn.
    """

    COLORS = ComparePlot.COLORS

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        self.setBackground("w")
        self.title = self.addLabel("", row=0, col=0, colspan=2, size="10pt", color="k")
        self.entropy_plot = self.addPlot(row=1, col=0)
        self.entropy_plot.setLabel("left", "entropy (nats)")
        self.kl_plot = self.addPlot(row=1, col=1)
        self.kl_plot.setLabel("left", "KL to final (nats)")
        self.kl_plot.setXLink(self.entropy_plot)
        # One legend for both plots, in a row of its own: trace names with lens details are long.
        self.legend = pg.LegendItem(labelTextSize="8pt", verSpacing=-6)
        self.addItem(self.legend, row=2, col=0, colspan=2)
        self.note_label = self.addLabel("", row=3, col=0, colspan=2, size="9pt", color=NOTE_COLOUR)
        self._entropy_pool: list[pg.PlotDataItem] = []
        self._kl_pool: list[pg.PlotDataItem] = []
        self.curves: list[pg.PlotDataItem] = []  # the shown ones, in legend order
        self.kl_curves: list[pg.PlotDataItem] = []
        self.notes: list[str] = []
        self.comparison: PromptComparison | None = None
        for signal in (state.traces_changed, state.sequence_changed, state.row_changed):
            signal.connect(self.request_redraw)

    def _curve(self, plot: pg.PlotItem, pool: list[pg.PlotDataItem], i: int) -> pg.PlotDataItem:
        """The ``i``-th curve of ``plot``, created once and reused: creating pyqtgraph items is slow."""
        while len(pool) <= i:
            pool.append(plot.plot([], [], symbol="o", symbolSize=4))
        return pool[i]

    def redraw(self) -> None:
        shown_names = [curve.name() for curve in self.curves]
        self.curves, self.kl_curves, self.notes = [], [], []
        self.comparison = comparison = compare_prompt(self.state)
        if comparison is None:
            self._hide_unused()
            self.legend.clear()
            self.title.setText("")
            self.note_label.setText("")
            return
        same_depth = comparison.same_depth
        for i, p in enumerate(comparison.profiles):
            if p.note:
                self.notes.append(f"{p.name}: {p.note}")
            if p.entropy is None:
                continue
            x = p.depths if same_depth else p.depths / max(1.0, float(p.depths[-1]))
            color = self.COLORS[i % len(self.COLORS)]
            style = QtCore.Qt.DashLine if p.lens_kind == "tuned" else QtCore.Qt.SolidLine
            look = dict(pen=pg.mkPen(color, width=2, style=style), symbolBrush=color, symbolPen=color)
            curve = self._curve(self.entropy_plot, self._entropy_pool, len(self.curves))
            curve.setData(x, p.entropy, name=p.name, **look)
            self.curves.append(curve)
            if np.isfinite(p.kl_final).any():
                curve = self._curve(self.kl_plot, self._kl_pool, len(self.kl_curves))
                curve.setData(x, p.kl_final, connect="finite", **look)
                self.kl_curves.append(curve)
        self._hide_unused()
        if [curve.name() for curve in self.curves] != shown_names:  # rebuilt only when it changes: slow
            self.legend.clear()
            for curve in self.curves:
                self.legend.addItem(curve, curve.name())
        for plot in (self.entropy_plot, self.kl_plot):
            if same_depth:
                depth = max((int(p.depths[-1]) for p in comparison.profiles if p.entropy is not None), default=0)
                _integer_ticks(plot, depth + 1)
            plot.setLabel("bottom", "layer (0 = embeddings)" if same_depth else "normalised depth")
        self.kl_plot.setTitle(None if self.kl_curves else "KL to final: not recorded in these traces", size="9pt")
        prompt = comparison.prompt.replace("\n", "⏎")
        prompt = html.escape(prompt if len(prompt) <= 32 else prompt[:31] + "…")
        self.title.setText(f"“{prompt}”, {html.escape(comparison.what)}: {len(self.curves)} trace(s)",
                           size="10pt", color="k")
        self.note_label.setText("<br>".join(html.escape(n) for n in self.notes))

    def _hide_unused(self) -> None:
        for shown, pool in ((self.curves, self._entropy_pool), (self.kl_curves, self._kl_pool)):
            for curve in pool[len(shown):]:
                curve.setData([], [])
