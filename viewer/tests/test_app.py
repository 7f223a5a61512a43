"""The real main window, driven offscreen with pytest-qt."""

import subprocess
import sys

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets

from entropylens_hf.trace import Trace
from entropylens_viewer.app import MainWindow


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.IniFormat)
    w = MainWindow(settings=settings)
    w.live_timer.stop()
    qtbot.addWidget(w)
    w.show()
    return w


def _click_cell(qtbot, w, row, layer):
    view = w.heatmap
    scene = view.getPlotItem().getViewBox().mapViewToScene(QtCore.QPointF(row + 0.5, layer + 0.5))
    qtbot.mouseClick(view.viewport(), QtCore.Qt.LeftButton, pos=view.mapFromScene(scene))


def test_opening_a_recorded_trace_lists_its_sequences(window, recorded_trace):
    assert window.open_path(recorded_trace)
    assert window.table_model.rowCount() == 3
    assert window.table_model.data(window.table_model.index(1, 3)) == "task=code"
    with Trace.open(recorded_trace) as trace:
        assert window.table_model.data(window.table_model.index(2, 4)) == f"{trace.mean_entropies[2]:.2f}"
    # the heatmap holds the first sequence, layers x rows
    image = window.heatmap.image.image
    assert image.shape == (3, 13)


def test_clicking_a_cell_drills_down_into_that_token(qtbot, window, recorded_trace):
    window.open_path(recorded_trace)
    _click_cell(qtbot, window, row=7, layer=1)
    seq = window.state.sequence
    assert window.state.row == 7 and window.state.layer == 1
    x, y = window.profile.curve.getData()
    np.testing.assert_array_equal(y, seq.entropy[7])
    assert len(window.profile.regions) == seq.entropy.shape[1] - 1
    expected = [(str(r + 1), window.state.trace.token_text(t), f"{p:.4f}") for r, (t, p)
                in enumerate(zip(seq.topk_ids[7, 1], seq.topk_probs[7, 1]))]
    assert window.topk.contents() == expected
    _, prob = window.chosen.prob.getData()
    np.testing.assert_array_equal(prob, seq.target_prob[7])
    assert "H = " in window.heatmap.describe(7, 1)


def test_playback_fills_the_heatmap_and_forms_the_prediction_row(qtbot, window, recorded_trace):
    window.open_path(recorded_trace)
    qtbot.keyClick(window, QtCore.Qt.Key_Space)  # play from the embeddings
    assert window.state.playing and window.state.layer == 0
    shown = window.heatmap.image.image
    assert np.isnan(shown[1:]).all() and np.isfinite(shown[0]).all()
    assert window.predictions.plain == " ".join(window.state.top_predictions(0))
    window.state.set_speed(30)
    qtbot.waitUntil(lambda: not window.state.playing, timeout=30000)  # a guard, not a speed bound
    assert window.state.layer == 2 and np.isfinite(window.heatmap.image.image).all()
    assert window.playback.slider.value() == 2
    qtbot.keyClick(window, QtCore.Qt.Key_Left)
    assert window.state.layer == 1 and window.predictions.plain == " ".join(window.state.top_predictions(1))


def test_selecting_another_sequence_and_filtering(qtbot, window, recorded_trace):
    window.open_path(recorded_trace)
    window.text_filter.setText("<9>")
    assert window.table_model.rowCount() == 1
    window.table.selectRow(0)
    assert window.state.sequence_index == 1


def test_a_bad_file_shows_a_message_and_the_window_stays(window, tmp_path, monkeypatch, recorded_trace):
    window.open_path(recorded_trace)
    shown = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", lambda *args: shown.append(args[2]))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x00" * 100)
    assert not window.open_path(bad)
    assert len(shown) == 1 and "not an HDF5 file" in shown[0] and str(bad) in shown[0]
    assert window.isVisible() and window.table_model.rowCount() == 3


def test_compare_overlays_traces_of_different_depth(window, recorded_trace, deeper_trace):
    window.open_path(recorded_trace)
    window.open_path(deeper_trace)
    xs = [curve.getData()[0] for curve in window.compare.curves]
    assert [len(x) for x in xs] == [3, 5] and all(x[-1] == 1.0 for x in xs)
    assert window.trace_box.count() == 2


def test_drop_and_recent_files(window, recorded_trace):
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(recorded_trace))])
    event = QtGui_drop(mime)
    window.dropEvent(event)
    assert len(window.state.traces) == 1
    assert [a.text() for a in window.recent_menu.actions()] == [str(recorded_trace.resolve())]


def QtGui_drop(mime):  # noqa: N802 - a QDropEvent carrying the given data
    from PySide6 import QtGui

    return QtGui.QDropEvent(QtCore.QPointF(10, 10), QtCore.Qt.CopyAction, mime, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier)


def test_exports_png_svg_and_csv(window, recorded_trace, tmp_path):
    window.open_path(recorded_trace)
    window.state.select_row(3)
    window.export_plot(window.heatmap, tmp_path / "h.png")
    window.export_plot(window.profile, tmp_path / "p.svg")
    window.export_plot(window.chosen, tmp_path / "c.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "p.svg").read_text()
    rows = window.export_csv(tmp_path / "d.csv")
    with Trace.open(recorded_trace) as trace:
        assert rows == trace.num_rows * trace.metadata.num_layers


def test_the_viewer_never_imports_torch(recorded_trace):
    code = ("import sys; from PySide6 import QtWidgets; app = QtWidgets.QApplication([]);"
            "from entropylens_viewer.app import MainWindow; w = MainWindow(); "
            f"w.open_path({str(recorded_trace)!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12: no count to corrupt")
def test_scrubbing_does_not_corrupt_the_interpreter(window, recorded_trace):
    # PySide6 6.12.0 drops a reference to None on every repaint of some pyqtgraph items; the count
    # reaches zero after a few hundred clicks and Python aborts. A working binding never lowers it.
    window.open_path(recorded_trace)
    state = window.state
    before = sys.getrefcount(None)
    for i in range(60):
        state.select_row(i % 3)
        state.set_layer(i % state.num_layers)
        QtWidgets.QApplication.processEvents()
    assert sys.getrefcount(None) >= before


def test_the_trace_list_names_the_trace_being_shown(window, recorded_trace, tmp_path):
    import shutil

    second = tmp_path / "second.h5"
    shutil.copy(recorded_trace, second)
    window.open_path(recorded_trace)
    window.open_path(second)
    assert window.trace_box.currentText().startswith("second.h5") and window.state.current == 1
    window.close_current()
    assert window.trace_box.count() == 1 and window.trace_box.currentText().startswith(recorded_trace.name)


def test_a_damaged_trace_or_sequence_gets_a_message_and_the_window_keeps_working(window, tmp_path, monkeypatch,
                                                                                  recorded_trace):
    import json
    import shutil

    import h5py

    shown = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", lambda *args: shown.append(args[2]))
    mismatched = tmp_path / "mismatched.h5"
    shutil.copy(recorded_trace, mismatched)
    with h5py.File(mismatched, "a") as f:  # num_layers that disagrees with the data
        f.attrs["num_layers"] = 9
        f.attrs["layer_names"] = json.dumps([f"l{i}" for i in range(9)])
        f.attrs["layer_kinds"] = json.dumps(["emb"] + ["layer"] * 8)
    assert not window.open_path(mismatched)
    assert len(shown) == 1 and "'/rows/entropy' has shape" in shown[0] and str(mismatched) in shown[0]

    damaged = tmp_path / "damaged.h5"
    shutil.copy(recorded_trace, damaged)
    with h5py.File(damaged, "a") as f:  # sequence 0's metadata unreadable
        f["sequences/meta_bytes"][0] = ord("]")
    assert window.open_path(damaged)
    assert len(shown) == 2 and "metadata of sequence 0 cannot be read" in shown[1]
    assert window.isVisible() and window.table_model.rowCount() == 3
    window.state.select_sequence(1)
    assert window.state.sequence is not None and window.state.sequence.index == 1
