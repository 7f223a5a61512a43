"""Widgets that render a :class:`~entropylens_viewer.model.ViewerState`; they hold no state of their own."""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from entropylens_hf.trace import TraceMetadata

from .lens_rows import STEP_NAMES, row_labels, step_kinds
from .model import ViewerState, visible_token

pg.setConfigOptions(antialias=True, background="w", foreground="k", imageAxisOrder="row-major")

EXPANSION_BRUSH = (214, 39, 40, 60)  # entropy rises: more candidates
PRUNING_BRUSH = (31, 119, 180, 60)  # entropy falls: fewer candidates
PROMPT_BRUSH = (128, 128, 128, 40)
KIND_COLOURS = {"attn": (255, 127, 14), "mlp": (44, 160, 44)}  # sub-layer rows and the steps into them
STATUS_MARKS = {0: "●", 2: "◌"}  # in the sequence list: being written, not finished (stopped)
MAX_TICK_LABELS = 60


def _css(rgba: tuple[int, int, int, int]) -> str:
    """An opaque CSS colour for legend text in titles."""
    return "#%02x%02x%02x" % rgba[:3]


def _integer_ticks(plot: pg.PlotWidget | pg.PlotItem, count: int) -> None:
    """Ticks on whole layers, about eight of them whatever the depth."""
    step = max(1, round(count / 8))
    plot.getAxis("bottom").setTickSpacing(major=step, minor=1 if step > 1 else step)


# ---------------------------------------------------------------------- sequence list


class SequenceTableModel(QtCore.QAbstractTableModel):
    """The current trace's visible sequences; reads only the trace's cheap index columns."""

    HEADERS = ["#", "prompt", "tokens", "labels", "mean H (nats)"]

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        self.rows: list[int] = []
        state.sequences_changed.connect(self.reload)
        state.sequences_updated.connect(self.update_counts)

    def reload(self) -> None:
        self.beginResetModel()
        self.rows = self.state.visible_sequences()
        trace = self.state.trace.trace if self.state.trace else None
        self._prompts = trace.prompt_texts if trace else []
        self._labels = trace.labels if trace else []
        self._read_counts()
        self.endResetModel()

    def update_counts(self) -> None:
        """Sequences grew or completed in place: new lengths and markers, the list (and its selection) kept."""
        self._read_counts()
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(self.HEADERS) - 1))

    def _read_counts(self) -> None:
        trace = self.state.trace.trace if self.state.trace else None
        self._lengths = trace.sequence_lengths if trace else []
        self._means = trace.mean_entropies if trace else []
        self._statuses = trace.statuses if trace else []

    def rowCount(self, parent=QtCore.QModelIndex()) -> int:  # noqa: N802 - Qt API
        return len(self.rows)

    def columnCount(self, parent=QtCore.QModelIndex()) -> int:  # noqa: N802
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=QtCore.Qt.DisplayRole):  # noqa: N802
        if role == QtCore.Qt.DisplayRole and orientation == QtCore.Qt.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index, role=QtCore.Qt.DisplayRole):
        if role not in (QtCore.Qt.DisplayRole, QtCore.Qt.ToolTipRole):
            return None
        i = self.rows[index.row()]
        column = index.column()
        if column == 0:
            status = int(self._statuses[i]) if len(self._statuses) > i else 1
            if role == QtCore.Qt.ToolTipRole and status != 1:
                return "still being written" if status == 0 else "not finished (stopped or interrupted)"
            return f"{i} {STATUS_MARKS.get(status, '')}".strip()
        if column == 1:
            text = self._prompts[i].replace("\n", "⏎")
            return text if role == QtCore.Qt.ToolTipRole else text[:80]
        if column == 2:
            return str(int(self._lengths[i]))
        if column == 3:
            return ", ".join(f"{k}={v}" for k, v in self._labels[i].items())
        return f"{float(self._means[i]):.2f}"


# ---------------------------------------------------------------------- heatmap


class TokenAxis(pg.AxisItem):
    """Bottom axis that writes a token under each column (thinned out when there are many)."""

    def __init__(self):
        super().__init__("bottom")
        self.tokens: list[str] = []

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph API
        if not self.tokens:
            return super().tickValues(minVal, maxVal, size)
        lo, hi = max(0, int(np.ceil(minVal - 0.5))), min(len(self.tokens) - 1, int(np.floor(maxVal - 0.5)))
        count = max(1, hi - lo + 1)
        step = max(1, int(np.ceil(count / min(MAX_TICK_LABELS, max(1, size / 28)))))
        return [(step, [i + 0.5 for i in range(lo, hi + 1, step)])]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        out = []
        for v in values:
            i = int(v)
            out.append(self.tokens[i][:10] if 0 <= i < len(self.tokens) else "")
        return out


class LayerAxis(pg.AxisItem):
    """Left axis labelling each lens row (``emb``, ``3``, ``3.attn``, ``3.mlp``), centred on its cells.

    When not every row fits, only the embeddings and whole-layer rows are labelled (thinned
    further if need be), so a 61-row sub-layer trace stays readable. A strip along the axis
    marks attention rows and MLP rows in the colours of their steps in the profile.
    """

    STRIP = 5  # pixels

    def __init__(self):
        super().__init__("left")
        self.names: tuple[str, ...] = ()
        self.major: tuple[int, ...] = ()
        self.kinds: tuple[str, ...] = ()

    def set_rows(self, metadata: TraceMetadata) -> None:
        self.names = row_labels(metadata)
        self.major = tuple(int(i) for i in metadata.whole_layer_rows)
        self.kinds = tuple(metadata.layer_kinds)
        self.picture = None
        self.update()

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph API
        if not self.names:
            return super().tickValues(minVal, maxVal, size)
        fits = max(1, int(size / 16))
        rows = list(range(len(self.names))) if len(self.names) <= fits else list(self.major or range(len(self.names)))
        step = max(1, int(np.ceil(len(rows) / fits)))
        return [(step, [i + 0.5 for i in rows[::step]])]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [self.names[int(v)] if 0 <= int(v) < len(self.names) else "" for v in values]

    def drawPicture(self, p, axisSpec, tickSpecs, textSpecs):  # noqa: N802, N803 - pyqtgraph API
        super().drawPicture(p, axisSpec, tickSpecs, textSpecs)
        view = self.linkedView()
        if view is None or not any(kind in KIND_COLOURS for kind in self.kinds):
            return
        right = self.mapRectFromParent(self.geometry()).right()
        for i, kind in enumerate(self.kinds):
            if kind in KIND_COLOURS:
                top = self.mapFromScene(view.mapViewToScene(QtCore.QPointF(0, i + 1))).y()
                bottom = self.mapFromScene(view.mapViewToScene(QtCore.QPointF(0, i))).y()
                p.fillRect(QtCore.QRectF(right - self.STRIP, top, self.STRIP, bottom - top),
                           QtGui.QColor(*KIND_COLOURS[kind]))


class HeatmapView(pg.PlotWidget):
    """Entropy heatmap: layers (y) by predicted tokens (x); layers above the replay depth are hidden."""

    def __init__(self, state: ViewerState):
        self.axis = TokenAxis()
        self.layer_axis = LayerAxis()
        super().__init__(axisItems={"bottom": self.axis, "left": self.layer_axis})
        self.state = state
        self.setLabel("left", "layer (emb = embeddings)")
        self.setLabel("bottom", "predicted token (grey: prompt)")
        self.image = pg.ImageItem()
        self.addItem(self.image)
        self.colormap = pg.colormap.get("viridis")
        self.colorbar = pg.ColorBarItem(colorMap=self.colormap, label="entropy (nats)", interactive=False)
        self.colorbar.setImageItem(self.image, insert_in=self.getPlotItem())
        self.prompt_region = pg.LinearRegionItem(movable=False, brush=PROMPT_BRUSH, pen=pg.mkPen(None))
        self.prompt_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("w", width=2, style=QtCore.Qt.DashLine))
        self.layer_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((255, 255, 255, 200), width=1))
        self.cursor = pg.RectROI((0, 0), (1, 1), pen=pg.mkPen("r", width=2), movable=False, resizable=False)
        for handle in self.cursor.getHandles():
            self.cursor.removeHandle(handle)
        self.live_marker = pg.TextItem("● writing…", color=(214, 39, 40), anchor=(1, 0), fill=(255, 255, 255, 210))
        self.live_marker.setVisible(False)
        for item in (self.prompt_region, self.prompt_line, self.layer_line, self.cursor, self.live_marker):
            self.addItem(item)
        self.getPlotItem().getViewBox().setMouseEnabled(x=True, y=False)
        self.hover_text = ""
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        state.sequence_changed.connect(self.render_sequence)
        state.sequence_grew.connect(self.render_growth)
        state.layer_changed.connect(self.render_layer)
        state.row_changed.connect(self.render_row)

    def render_sequence(self) -> None:
        seq = self.state.sequence
        if seq is None:
            self.image.clear()
            self.axis.tokens = []
            self.live_marker.setVisible(False)
            return
        self.layer_axis.set_rows(self.state.trace.trace.metadata)
        n, layers = seq.entropy.shape
        self.colorbar.setLevels((0.0, max(1e-6, float(np.nanmax(seq.entropy)) if n else 1.0)))
        prompt_rows = int((~seq.is_generated).sum())
        self.prompt_region.setRegion((0, prompt_rows))
        self.prompt_region.setVisible(prompt_rows > 0)
        self.prompt_line.setPos(prompt_rows)
        self._render_columns(seq)
        self.setXRange(0, max(n, 1), padding=0)
        self.setYRange(0, layers, padding=0)

    def render_growth(self) -> None:
        """The current sequence grew: extend the image and token axis in place.

        The selected token, replay layer and zoom stay; a view that showed the end of the
        sequence keeps following it, as a terminal follows new output.
        """
        seq = self.state.sequence
        if seq is None:
            return
        (left, right), _ = self.getPlotItem().getViewBox().viewRange()
        old = self.image.width() or 0
        top = float(np.nanmax(seq.entropy)) if seq.n_rows else 0.0
        if top > self.colorbar.levels()[1]:
            self.colorbar.setLevels((0.0, top))
        self._render_columns(seq)
        if right >= old - 0.5 and seq.n_rows > old:  # the end was in view: follow it
            self.setXRange(left + seq.n_rows - old if left > 0.5 else 0, seq.n_rows, padding=0)

    def _render_columns(self, seq) -> None:
        """What depends on the number of rows: the image, the token axis, the still-writing marker."""
        self.axis.tokens = [visible_token(t) for t in seq.token_texts[seq.first_target :]]
        self.render_layer()
        self.live_marker.setVisible(self.state.in_progress)
        self.live_marker.setPos(seq.n_rows, seq.entropy.shape[1])
        self.axis.picture = None
        self.axis.update()

    def render_layer(self) -> None:
        seq = self.state.sequence
        if seq is None:
            return
        data = seq.entropy.T.astype(np.float32)  # [layers, rows]
        shown = data.copy()
        shown[self.state.layer + 1 :] = np.nan
        self.image.setImage(shown, autoLevels=False, levels=self.colorbar.levels())
        self.image.setRect(QtCore.QRectF(0, 0, data.shape[1], data.shape[0]))
        self.layer_line.setPos(self.state.layer + 1)

    def render_row(self) -> None:
        row = self.state.row
        self.cursor.setVisible(row is not None)
        if row is not None:
            self.cursor.setPos((row, 0))
            self.cursor.setSize((1, self.state.num_layers))

    def cell_at(self, scene_pos: QtCore.QPointF) -> tuple[int, int] | None:
        """(row, layer) under a scene position, or None outside the data."""
        seq = self.state.sequence
        if seq is None or not self.getPlotItem().sceneBoundingRect().contains(scene_pos):
            return None
        point = self.getPlotItem().getViewBox().mapSceneToView(scene_pos)
        row, layer = int(np.floor(point.x())), int(np.floor(point.y()))
        if 0 <= row < seq.n_rows and 0 <= layer < seq.entropy.shape[1]:
            return row, layer
        return None

    def describe(self, row: int, layer: int) -> str:
        seq = self.state.sequence
        token = visible_token(seq.token_texts[seq.first_target + row])
        top1 = self.state.trace.token_text(seq.topk_ids[row, layer, 0])
        return (f"token {token!r} (position {seq.first_target + row}), {self.state.trace.trace.metadata.layer_names[layer]}: "
                f"H = {seq.entropy[row, layer]:.3f} nats, top-1 {top1!r} ({seq.topk_probs[row, layer, 0]:.2f})")

    def _on_mouse_moved(self, scene_pos) -> None:
        cell = self.cell_at(scene_pos)
        self.hover_text = self.describe(*cell) if cell else ""
        self.setToolTip(self.hover_text)

    def _on_mouse_clicked(self, event) -> None:
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            self.state.select_row(cell[0])
            self.state.set_layer(max(self.state.layer, cell[1]) if self.state.playing else cell[1])


# ---------------------------------------------------------------------- prediction row


class PredictionRow(QtWidgets.QTextBrowser):
    """What the model would predict at the replay depth, for every position: the sentence forming."""

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        self.setMaximumHeight(90)
        self.setOpenLinks(False)
        self.plain = ""
        state.sequence_changed.connect(self.redraw)
        state.sequence_grew.connect(self.redraw)
        state.layer_changed.connect(self.redraw)
        state.row_changed.connect(self.redraw)

    def redraw(self) -> None:
        seq = self.state.sequence
        if seq is None:
            self.setHtml("")
            self.plain = ""
            return
        layer = self.state.layer
        predictions = self.state.top_predictions(layer)
        targets = [visible_token(t) for t in seq.token_texts[seq.first_target :]]
        parts = []
        for i, (pred, target, generated) in enumerate(zip(predictions, targets, seq.is_generated)):
            style = "color:#1a7f37;font-weight:bold" if pred == target else "color:#555"
            if not generated:
                style += ";background:#eeeeee"
            if i == self.state.row:
                style += ";border:1px solid red;background:#ffe0e0"
            parts.append(f'<span style="{style}">{html.escape(pred)}</span>')
        name = self.state.trace.trace.metadata.layer_names[layer]
        self.plain = " ".join(predictions)
        self.setHtml(f"<b>top-1 at {html.escape(name)}</b> (green: equals the token that came next; grey: prompt)<br>"
                     + " ".join(parts))


# ---------------------------------------------------------------------- drill-down


class StepKindCurves:
    """Over a profile, the steps into attention rows and into MLP rows drawn in their colours.

    The step from ``k-1.mlp`` to ``k.attn`` is attention's, from ``k.attn`` to ``k.mlp`` the
    MLP's. Whole-layer traces have neither kind, and nothing is drawn.
    """

    def __init__(self, plot: pg.PlotWidget):
        self.curves = {kind: plot.plot([], [], pen=pg.mkPen(colour, width=3), connect="pairs")
                       for kind, colour in KIND_COLOURS.items()}

    def set_profile(self, x: np.ndarray, y: np.ndarray, kinds: tuple[str, ...]) -> None:
        for kind, curve in self.curves.items():
            steps = np.flatnonzero(np.asarray(kinds) == kind)  # step i goes from row i to row i + 1
            curve.setData(np.column_stack([x[steps], x[steps + 1]]).ravel(),
                          np.column_stack([y[steps], y[steps + 1]]).ravel(), connect="pairs")

    def clear(self) -> None:
        for curve in self.curves.values():
            curve.setData([], [])

    @staticmethod
    def legend(kinds: tuple[str, ...]) -> str:
        """Title HTML naming the step colours present in ``kinds`` ("" for whole-layer traces)."""
        return " ".join(f"<span style='color:{_css((*KIND_COLOURS[kind], 255))}'>&#9473; {STEP_NAMES[kind]}</span>"
                        for kind in KIND_COLOURS if kind in kinds)


class ProfilePlot(pg.PlotWidget):
    """The selected token's entropy against layer, expansion and pruning steps shaded.

    In a sub-layer trace, x is the decoder depth (``k.attn`` at k - 0.5) and attention and
    MLP steps are drawn in their own colours.
    """

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        self.setLabel("left", "entropy (nats)")
        self.setLabel("bottom", "layer (0 = embeddings)")
        self.curve = self.plot([], [], pen=pg.mkPen("k", width=2), symbol="o", symbolSize=5)
        self.steps = StepKindCurves(self)
        self.layer_line = pg.InfiniteLine(angle=90, pen=pg.mkPen((120, 120, 120), style=QtCore.Qt.DashLine))
        self.addItem(self.layer_line)
        self.regions: list[pg.LinearRegionItem] = []
        state.row_changed.connect(self.redraw)
        state.sequence_changed.connect(self.redraw)
        state.layer_changed.connect(self._render_layer)

    def _render_layer(self) -> None:
        if self.state.trace is not None:
            self.layer_line.setPos(self.state.depths[self.state.layer])

    def redraw(self) -> None:
        seq, row = self.state.sequence, self.state.row
        if seq is None or row is None:
            self.curve.setData([], [])
            self.steps.clear()
            for region in self.regions:
                region.hide()
            self.setTitle("click a token in the heatmap")
            return
        profile = seq.entropy[row]
        x = self.state.depths
        kinds = step_kinds(self.state.trace.trace.metadata)
        _integer_ticks(self, int(x[-1]) + 1)
        self.curve.setData(x, profile)
        self.steps.set_profile(x, profile, kinds)
        legend = StepKindCurves.legend(kinds)
        self.curve.setPen(pg.mkPen(None) if legend else pg.mkPen("k", width=2))  # the coloured steps are the line
        # Regions are reused, never re-created: cheaper, and nothing is left for Qt to leak.
        steps = np.diff(profile)
        while len(self.regions) < len(steps):
            region = pg.LinearRegionItem(movable=False, pen=pg.mkPen(None))
            region.setZValue(-10)
            self.addItem(region)
            self.regions.append(region)
        for layer, region in enumerate(self.regions):
            if layer < len(steps):
                region.setRegion((x[layer], x[layer + 1]))
                region.setBrush(EXPANSION_BRUSH if steps[layer] > 0 else PRUNING_BRUSH)
                region.show()
            else:
                region.hide()
        token = html.escape(repr(visible_token(seq.token_texts[seq.first_target + row])))
        self.setTitle(f"token {token} &nbsp; <span style='color:{_css(EXPANSION_BRUSH)}'>&#9632; expansion</span>"
                      f" <span style='color:{_css(PRUNING_BRUSH)}'>&#9632; pruning</span>"
                      + (f"<br>{legend}" if legend else ""), size="10pt")
        self.layer_line.setPos(x[self.state.layer])


class TopKTable(QtWidgets.QTableWidget):
    """Top-k predictions and probabilities of the selected token at the replay depth."""

    def __init__(self, state: ViewerState):
        super().__init__(0, 3)
        self.state = state
        self.setHorizontalHeaderLabels(["rank", "token", "probability"])
        self.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QtWidgets.QHeaderView.Stretch)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        for sig in (state.row_changed, state.layer_changed, state.sequence_changed):
            sig.connect(self.redraw)

    def redraw(self) -> None:
        seq, row = self.state.sequence, self.state.row
        entries = [] if seq is None or row is None else self.state.topk_at(row, self.state.layer)
        self.setRowCount(len(entries))
        for r, (token, prob) in enumerate(entries):
            for c, value in enumerate((str(r + 1), token, f"{prob:.4f}")):
                self.setItem(r, c, QtWidgets.QTableWidgetItem(value))

    def contents(self) -> list[tuple[str, str, str]]:
        return [tuple(self.item(r, c).text() for c in range(3)) for r in range(self.rowCount())]


class ChosenTokenPlot(pg.GraphicsLayoutWidget):
    """Probability (top) and rank (bottom, log scale) of the finally chosen token across layers."""

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        self.setBackground("w")
        self.title = self.addLabel("", row=0, col=0, size="10pt", color="k")
        self.prob_plot = self.addPlot(row=1, col=0)
        self.prob_plot.setLabel("left", "probability")
        self.prob_plot.setYRange(0, 1)
        self.prob = self.prob_plot.plot([], [], pen=pg.mkPen((31, 119, 180), width=2), symbol="o", symbolSize=5,
                                        symbolBrush=(31, 119, 180))
        self.rank_plot = self.addPlot(row=2, col=0)
        self.rank_plot.setLabel("left", "rank + 1")
        self.rank_plot.setLabel("bottom", "layer (0 = embeddings)")
        self.rank_plot.setLogMode(y=True)
        self.rank_plot.setXLink(self.prob_plot)
        self.rank = self.rank_plot.plot([], [], pen=pg.mkPen((214, 39, 40), width=2), symbol="o", symbolSize=5,
                                        symbolBrush=(214, 39, 40))
        state.row_changed.connect(self.redraw)
        state.sequence_changed.connect(self.redraw)

    def redraw(self) -> None:
        seq, row = self.state.sequence, self.state.row
        if seq is None or row is None:
            self.prob.setData([], [])
            self.rank.setData([], [])
            self.title.setText("chosen token")
            return
        layers = self.state.depths
        _integer_ticks(self.rank_plot, int(layers[-1]) + 1)
        self.prob.setData(layers, seq.target_prob[row])
        ranks = seq.target_rank[row] + 1.0
        self.rank.setData(layers, ranks)
        # Whole decades only: pyqtgraph labels minor log ticks, which pile up over a short range.
        top = max(1, int(np.ceil(np.log10(ranks.max()))))
        every = max(1, int(np.ceil(top / 5)))
        self.rank_plot.getAxis("left").setTicks([[(d, f"{10 ** d:,}") for d in range(0, top + 1, every)], []])
        self.rank_plot.setYRange(0, top, padding=0.05)
        token = html.escape(repr(visible_token(seq.token_texts[seq.first_target + row])))
        self.title.setText(f"chosen token {token}: final rank {int(seq.target_rank[row, -1])}", size="10pt", color="k")


# ---------------------------------------------------------------------- aggregate and compare


class AggregatePlot(pg.PlotWidget):
    """Mean generated-token profile (± one standard deviation) over the visible sequences."""

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        self.setLabel("left", "entropy (nats)")
        self.setLabel("bottom", "layer (0 = embeddings)")
        self.mean = self.plot([], [], pen=pg.mkPen("k", width=2))
        self.upper = self.plot([], [], pen=pg.mkPen(None))
        self.lower = self.plot([], [], pen=pg.mkPen(None))
        self.addItem(pg.FillBetweenItem(self.upper, self.lower, brush=(31, 119, 180, 60)))
        state.sequences_changed.connect(self.redraw)
        state.sequences_updated.connect(self.redraw)

    def redraw(self) -> None:
        if self.state.trace is None:
            return
        mean, std, count = self.state.mean_profile()
        x = self.state.depths[: len(mean)]
        _integer_ticks(self, int(x[-1]) + 1 if len(x) else 0)
        self.mean.setData(x, mean)
        self.upper.setData(x, mean + std)
        self.lower.setData(x, mean - std)
        self.setTitle(f"mean profile ± 1 sd over {count} sequence(s)")


class ComparePlot(pg.PlotWidget):
    """Mean profiles of every open trace on normalised depth [0, 1], so models of any depth compare."""

    COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        self.setLabel("left", "entropy (nats)")
        self.setLabel("bottom", "normalised depth (0 = embeddings, 1 = last layer)")
        self.legend = self.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.curves: list[pg.PlotDataItem] = []
        state.traces_changed.connect(self.redraw)
        state.sequences_changed.connect(self.redraw)
        state.sequences_updated.connect(self.redraw)

    def redraw(self) -> None:
        for curve in self.curves:
            self.removeItem(curve)
        self.legend.clear()
        self.curves = []
        for i, (name, depth, profile) in enumerate(self.state.depth_profiles()):
            color = self.COLORS[i % len(self.COLORS)]
            self.curves.append(self.plot(depth, profile, pen=pg.mkPen(color, width=2), symbol="o", symbolSize=4,
                                         symbolBrush=color, name=name))


# ---------------------------------------------------------------------- playback controls


class PlaybackBar(QtWidgets.QWidget):
    """Play / pause, step, layer slider and speed; drives playback with a QTimer."""

    def __init__(self, state: ViewerState):
        super().__init__()
        self.state = state
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        style = self.style()
        self.back = QtWidgets.QToolButton(icon=style.standardIcon(QtWidgets.QStyle.SP_MediaSeekBackward), toolTip="previous layer (←)")
        self.play = QtWidgets.QToolButton(icon=style.standardIcon(QtWidgets.QStyle.SP_MediaPlay), toolTip="play / pause (space)")
        self.forward = QtWidgets.QToolButton(icon=style.standardIcon(QtWidgets.QStyle.SP_MediaSeekForward), toolTip="next layer (→)")
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.label = QtWidgets.QLabel()
        self.label.setMinimumWidth(120)
        self.speed = QtWidgets.QDoubleSpinBox(minimum=0.25, maximum=30.0, singleStep=0.5, value=state.speed, suffix=" layers/s")
        for w in (self.back, self.play, self.forward, self.slider, self.label, QtWidgets.QLabel("speed"), self.speed):
            layout.addWidget(w)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(state.tick)
        self.back.clicked.connect(lambda: state.step(-1))
        self.forward.clicked.connect(lambda: state.step(1))
        self.play.clicked.connect(state.toggle_play)
        self.slider.valueChanged.connect(state.set_layer)
        self.speed.valueChanged.connect(state.set_speed)
        state.layer_changed.connect(self.redraw)
        state.sequence_changed.connect(self.redraw)
        state.playback_changed.connect(self.render_playback)

    def redraw(self) -> None:
        n = self.state.num_layers
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        self.slider.setValue(self.state.layer)
        self.slider.blockSignals(False)
        names = self.state.trace.trace.metadata.layer_names if self.state.trace else ()
        self.label.setText(names[self.state.layer] if self.state.layer < len(names) else "")

    def render_playback(self) -> None:
        icon = QtWidgets.QStyle.SP_MediaPause if self.state.playing else QtWidgets.QStyle.SP_MediaPlay
        self.play.setIcon(self.style().standardIcon(icon))
        self.timer.setInterval(int(1000 / self.state.speed))
        if self.state.playing:
            self.timer.start()
        else:
            self.timer.stop()
