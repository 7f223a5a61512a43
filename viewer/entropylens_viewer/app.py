"""The main window and the ``entropylens-view`` entry point."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Sequence

import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401 - registers the PNG/SVG exporters
from PySide6 import QtCore, QtGui, QtSvg, QtWidgets

from .lens_panels import KLPlot, PromptComparePlot, SublayerMarks
from .lens_rows import lens_title
from .model import TraceError, ViewerState, visible_token
from .widgets import (
    AggregatePlot,
    ChosenTokenPlot,
    ComparePlot,
    HeatmapView,
    PlaybackBar,
    PredictionRow,
    ProfilePlot,
    SequenceTableModel,
    TopKTable,
)

__all__ = ["MainWindow", "main"]

RECENT_KEY = "recent_files"
MAX_RECENT = 8
LIVE_REFRESH_MS = 500  # a row resolved by a live writer shows within about this (+ the writer's own interval)


class MainWindow(QtWidgets.QMainWindow):
    """Sequence list (left), heatmap + prediction row + playback (top right), drill-down tabs (bottom right)."""

    def __init__(self, state: ViewerState | None = None, settings: QtCore.QSettings | None = None):
        super().__init__()
        self.state = state or ViewerState()
        self.settings = settings or QtCore.QSettings("entropylens", "viewer")
        self.setWindowTitle("Entropy-Lens viewer")
        self.setAcceptDrops(True)
        self.resize(1280, 800)

        # left: traces and sequences
        self.trace_box = QtWidgets.QComboBox()
        self.text_filter = QtWidgets.QLineEdit(placeholderText="filter prompts…", clearButtonEnabled=True)
        self.label_filter = QtWidgets.QComboBox()
        self.table_model = SequenceTableModel(self.state)
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.table_model)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setColumnWidth(0, 45)
        self.table.setColumnWidth(1, 190)
        self.table.setColumnWidth(2, 50)
        left = QtWidgets.QWidget()
        left_layout = QtWidgets.QVBoxLayout(left)
        left_layout.setContentsMargins(4, 4, 4, 4)
        self.lens_info = QtWidgets.QLabel(wordWrap=True)  # which lens read the shown trace
        for w in (QtWidgets.QLabel("trace"), self.trace_box, self.lens_info, self.text_filter, self.label_filter,
                  self.table):
            left_layout.addWidget(w)

        # right: heatmap, predictions, playback; tabs below
        self.heatmap = HeatmapView(self.state)
        self.predictions = PredictionRow(self.state)
        self.playback = PlaybackBar(self.state)
        self.profile = ProfilePlot(self.state)
        self.topk = TopKTable(self.state)
        self.chosen = ChosenTokenPlot(self.state)
        self.aggregate = AggregatePlot(self.state)
        self.compare = ComparePlot(self.state)
        self.kl = KLPlot(self.state)
        self.prompt_compare = PromptComparePlot(self.state)
        self.sublayer_marks = SublayerMarks(self.heatmap)
        token_panel = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        token_panel.addWidget(self.profile)
        token_panel.addWidget(self.topk)
        token_panel.addWidget(self.chosen)
        token_panel.setSizes([360, 230, 360])
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(token_panel, "token")
        self.tabs.addTab(self.kl, "KL to final")
        self.tabs.addTab(self.aggregate, "mean profile")
        compare_panel = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        compare_panel.addWidget(self.compare)
        compare_panel.addWidget(self.prompt_compare)
        compare_panel.setSizes([450, 500])
        self.tabs.addTab(compare_panel, "compare traces")
        top = QtWidgets.QWidget()
        top_layout = QtWidgets.QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.heatmap, stretch=1)
        top_layout.addWidget(self.predictions)
        top_layout.addWidget(self.playback)
        right = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        right.addWidget(top)
        right.addWidget(self.tabs)
        right.setSizes([470, 300])
        main = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        main.addWidget(left)
        main.addWidget(right)
        main.setSizes([330, 950])
        self.setCentralWidget(main)
        self.status = self.statusBar()

        self._build_menus()
        self._build_shortcuts()
        self.trace_box.currentIndexChanged.connect(self._on_trace_chosen)
        self.text_filter.textChanged.connect(self.state.set_text_filter)
        self.label_filter.currentIndexChanged.connect(self._on_label_filter)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection)
        self.state.traces_changed.connect(self._render_traces)
        self.state.sequences_changed.connect(self._render_title)
        self.state.sequence_changed.connect(self._render_status)
        self.state.problem.connect(lambda message: QtWidgets.QMessageBox.warning(self, "Damaged trace", message))
        self.state.row_changed.connect(self._render_status)
        self.state.sequence_grew.connect(self._render_status)
        self.live_timer = QtCore.QTimer(self, interval=LIVE_REFRESH_MS)
        self.live_timer.timeout.connect(self.refresh_live)
        self.live_timer.start()

    # ------------------------------------------------------------------ menus and keys
    def _build_menus(self) -> None:
        file = self.menuBar().addMenu("&File")
        file.addAction("&Open trace…", QtGui.QKeySequence.Open, self.open_dialog)
        self.recent_menu = file.addMenu("Open &recent")
        file.addAction("&Close trace", QtGui.QKeySequence.Close, self.close_current)
        file.addSeparator()
        file.addAction("Export heatmap as PNG/SVG…", lambda: self.export_plot_dialog(self.heatmap))
        file.addAction("Export token profile as PNG/SVG…", lambda: self.export_plot_dialog(self.profile))
        file.addAction("Export chosen-token plot as PNG/SVG…", lambda: self.export_plot_dialog(self.chosen))
        file.addAction("Export mean profile as PNG/SVG…", lambda: self.export_plot_dialog(self.aggregate))
        file.addAction("Export KL-to-final plot as PNG/SVG…", lambda: self.export_plot_dialog(self.kl))
        file.addAction("Export comparison as PNG/SVG…", lambda: self.export_plot_dialog(self.compare))
        file.addAction("Export prompt comparison as PNG/SVG…", lambda: self.export_plot_dialog(self.prompt_compare))
        file.addAction("Export visible sequences as CSV…", self.export_csv_dialog)
        file.addSeparator()
        file.addAction("&Quit", QtGui.QKeySequence.Quit, self.close)
        self._render_recent()

    def _build_shortcuts(self) -> None:
        for key, slot in (
            (QtCore.Qt.Key_Space, self.state.toggle_play),
            (QtCore.Qt.Key_Right, lambda: self.state.step(1)),
            (QtCore.Qt.Key_Left, lambda: self.state.step(-1)),
            (QtCore.Qt.Key_Up, lambda: self._move_row(1)),
            (QtCore.Qt.Key_Down, lambda: self._move_row(-1)),
        ):
            shortcut = QtGui.QShortcut(QtGui.QKeySequence(key), self)
            shortcut.setContext(QtCore.Qt.WindowShortcut)
            shortcut.activated.connect(slot)

    def _move_row(self, delta: int) -> None:
        seq = self.state.sequence
        if seq is not None:
            self.state.select_row((self.state.row if self.state.row is not None else -1) + delta)

    # ------------------------------------------------------------------ opening
    def open_path(self, path: str | Path) -> bool:
        """Open a trace; a bad file gets a message box naming the problem, and the app keeps running."""
        try:
            self.state.open(path)
        except TraceError as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot open trace", str(exc))
            return False
        self._remember(Path(path))
        return True

    def open_dialog(self) -> None:
        paths, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Open traces", "", "Traces (*.h5 *.hdf5);;All files (*)")
        for path in paths:
            self.open_path(path)

    def close_current(self) -> None:
        if self.state.current is not None:
            self.state.close_trace(self.state.current)

    def _remember(self, path: Path) -> None:
        recent = [p for p in self._recent() if p != str(path.resolve())]
        self.settings.setValue(RECENT_KEY, [str(path.resolve())] + recent[: MAX_RECENT - 1])
        self._render_recent()

    def _recent(self) -> list[str]:
        value = self.settings.value(RECENT_KEY, [])
        return [value] if isinstance(value, str) else list(value or [])

    def _render_recent(self) -> None:
        self.recent_menu.clear()
        for path in self._recent():
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))
        self.recent_menu.setEnabled(bool(self._recent()))

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:  # noqa: N802
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.open_path(url.toLocalFile())

    def refresh_live(self) -> int:
        """Show what changed in files still being recorded: new sequences, and rows of growing ones."""
        try:
            return self.state.refresh()
        except Exception as exc:  # a file that vanished or broke while followed
            self.status.showMessage(f"cannot refresh: {exc}", 5000)
            return 0

    # ------------------------------------------------------------------ list interaction
    def _render_traces(self) -> None:
        self.trace_box.blockSignals(True)
        self.trace_box.clear()
        self.trace_box.addItems([t.name for t in self.state.traces])
        if self.state.current is not None:
            self.trace_box.setCurrentIndex(self.state.current)
        self.trace_box.blockSignals(False)
        self._render_label_filter()

    def _render_label_filter(self) -> None:
        self.label_filter.blockSignals(True)
        self.label_filter.clear()
        self.label_filter.addItem("all labels", None)
        for key, value in self.state.label_values():
            self.label_filter.addItem(f"{key} = {value}", (key, value))
        self.label_filter.blockSignals(False)

    def _on_trace_chosen(self, index: int) -> None:
        if 0 <= index < len(self.state.traces):
            self.state.set_current_trace(index)
            self._render_label_filter()

    def _on_label_filter(self, index: int) -> None:
        self.state.set_label_filter(self.label_filter.itemData(index))

    def _on_table_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.state.select_sequence(self.table_model.rows[rows[0].row()])

    def _render_title(self) -> None:
        """The window title names the shown trace's file and lens (logit / tuned, sub-layers)."""
        trace = self.state.trace
        title = f" — {lens_title(trace.trace.metadata, trace.path)}" if trace else ""
        self.setWindowTitle("Entropy-Lens viewer" + title)
        self.lens_info.setText(lens_title(trace.trace.metadata) if trace else "")

    def _render_status(self) -> None:
        seq = self.state.sequence
        if seq is None:
            self.status.clearMessage()
            return
        text = f"sequence {seq.index}: {seq.n_rows} tokens predicted ({seq.n_generated} generated)"
        if self.state.in_progress:
            text += ", still being written"
        elif not seq.complete:
            text += ", not finished (stopped or interrupted)"
        if self.state.row is not None:
            text += f"; selected {visible_token(seq.token_texts[seq.first_target + self.state.row])!r}"
        self.status.showMessage(text)

    # ------------------------------------------------------------------ export
    def export_plot(self, plot: pg.GraphicsView, path: str | Path) -> None:
        """Save a plot as PNG or SVG (by extension)."""
        path = Path(path)
        if path.suffix.lower() == ".svg":
            # Qt's own SVG painter: pyqtgraph's SVG exporter fails on PySide6 6.12 path data.
            generator = QtSvg.QSvgGenerator()
            generator.setFileName(str(path))
            generator.setSize(plot.size())
            generator.setViewBox(QtCore.QRect(QtCore.QPoint(0, 0), plot.size()))
            generator.setTitle(self.windowTitle())
            painter = QtGui.QPainter(generator)
            plot.render(painter)
            painter.end()
        else:
            # The whole scene, so a heatmap's colour bar and multi-panel plots come along.
            pg.exporters.ImageExporter(plot.scene()).export(str(path))

    def export_plot_dialog(self, plot: pg.GraphicsView) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export plot", "plot.png", "PNG (*.png);;SVG (*.svg)")
        if path:
            self.export_plot(plot, path)

    def export_csv(self, path: str | Path) -> int:
        """Write the visible sequences, one row per token row and layer; returns the rows written."""
        trace = self.state.trace
        if trace is None:
            return 0
        rows = 0
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["sequence", "position", "token", "is_prompt", "layer", "entropy", "target_prob", "target_rank", "top1",
                             "kl_final"])
            for i in self.state.visible_sequences():
                seq = trace.sequence(i)
                for r in range(seq.n_rows):
                    token = seq.token_texts[seq.first_target + r]
                    for layer in range(seq.entropy.shape[1]):
                        writer.writerow([i, seq.first_target + r, token, not seq.is_generated[r], layer,
                                         f"{seq.entropy[r, layer]:.6g}", f"{seq.target_prob[r, layer]:.6g}",
                                         int(seq.target_rank[r, layer]), trace.token_text(seq.topk_ids[r, layer, 0]),
                                         f"{seq.kl_final[r, layer]:.6g}"])
                        rows += 1
        return rows

    def export_csv_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export CSV", "sequences.csv", "CSV (*.csv)")
        if path:
            self.status.showMessage(f"wrote {self.export_csv(path)} rows to {path}", 5000)


def main(argv: Sequence[str] | None = None) -> int:
    """``entropylens-view [TRACE ...]``: open the viewer; returns the exit code."""
    parser = argparse.ArgumentParser(prog="entropylens-view", description="Replay entropylens traces layer by layer.")
    parser.add_argument("traces", nargs="*",
                        help="trace files (.h5) or run folders (RUN/, one shard file per process) to open")
    parser.add_argument("--follow", action="store_true",
                        help="show each new sequence as soon as it appears (e.g. a chat being recorded)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    window = MainWindow()
    window.state.follow = args.follow
    for path in args.traces:
        window.open_path(path)
    window.show()
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
