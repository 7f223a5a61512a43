"""Following a trace while a live writer grows a sequence in it: in place, selection and zoom kept, quiet when idle."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6 import QtCore

from entropylens_viewer.app import MainWindow

WORKER = Path(__file__).resolve().parents[2] / "tests" / "live_worker.py"


@pytest.fixture
def window(qtbot, tmp_path):
    w = MainWindow(settings=QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.IniFormat))
    w.live_timer.stop()  # the test drives refresh_live itself
    qtbot.addWidget(w)
    w.show()
    return w


def test_a_growing_sequence_extends_in_place_keeping_selection_layer_and_zoom_and_follow_shows_new_ones(
        window, tmp_path):
    path = tmp_path / "live.h5"
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(path), "3", "--paced", "40", "2"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)  # call 1 waits for "go" after each step

    def step():
        line = proc.stdout.readline().strip()
        assert line.startswith("step "), f"the live worker said {line!r}"
        return int(line.split()[1])

    def go():
        proc.stdin.write("go\n")
        proc.stdin.flush()

    try:
        assert proc.stdout.readline().strip() == "done 0"
        while step() < 5:  # sequence 1 has its prompt rows and 5 generated tokens; the writer waits
            go()
        state, heatmap = window.state, window.heatmap
        assert window.open_path(path)
        state.select_sequence(1)
        state.select_row(2)
        state.set_layer(1)
        heatmap.setXRange(0, 4, padding=0)
        assert heatmap.live_marker.isVisible() and window.table_model.data(window.table_model.index(1, 0)) == "1 ●"
        before = state.sequence.n_rows
        resets = []
        state.sequence_changed.connect(lambda: resets.append(1))
        for _ in range(3):  # three more steps, then the writer waits again
            go()
            step()
        window.refresh_live()
        seq = state.sequence
        assert seq.n_rows >= before + 3 and not resets
        assert state.row == 2 and state.layer == 1
        assert heatmap.getPlotItem().getViewBox().viewRange()[0] == pytest.approx([0, 4], abs=1e-6)
        assert heatmap.image.image.shape == (seq.entropy.shape[1], seq.n_rows)
        assert len(heatmap.axis.tokens) == seq.n_rows and window.predictions.plain.count(" ") == seq.n_rows - 1
        heatmap.setXRange(0, seq.n_rows, padding=0)  # the whole sequence in view: the view follows its end
        proc.stdin.close()  # the worker stops waiting and finishes the call
        assert proc.stdout.readline().strip() == "done 1"
        window.refresh_live()
        seq = state.sequence
        assert seq.complete and seq.n_rows == 3 + 40 and not resets
        assert heatmap.getPlotItem().getViewBox().viewRange()[0][1] == pytest.approx(seq.n_rows, abs=1e-6)
        assert not heatmap.live_marker.isVisible() and window.table_model.data(window.table_model.index(1, 0)) == "1"
        state.follow = True  # as `entropylens chat --view` opens it: each new reply is shown as it starts
        assert proc.stdout.readline().strip() == "done 2"
        assert window.refresh_live() == 1 and state.sequence_index == 2
    finally:
        proc.kill()
        proc.wait()
    # idle: nothing changed, nothing is redrawn
    emitted = []
    for signal in (state.sequences_changed, state.sequences_updated, state.sequence_grew, state.sequence_changed):
        signal.connect(lambda *a: emitted.append(1))
    assert [window.refresh_live() for _ in range(3)] == [0, 0, 0] and not emitted
