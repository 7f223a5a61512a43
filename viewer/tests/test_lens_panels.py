"""Sub-layer rows, KL to the final layer, lens kinds and prompt comparison, on traces of known values."""

import csv

import numpy as np
import pytest
from synthetic_traces import SUBLAYER_ENTROPY, V1_TRACE, write_synthetic_trace
from PySide6 import QtCore, QtWidgets

from entropylens_hf.trace import Trace, TraceMetadata
from entropylens_viewer.app import MainWindow
from entropylens_viewer.compare import compare_prompt
from entropylens_viewer.lens_rows import decoder_boundaries, lens_title, row_labels, step_kinds
from entropylens_viewer.model import ViewerState
from entropylens_viewer.widgets import LayerAxis

PROMPTS = [("The cat sat", [5, 6, 7, 8, 9, 10], 3), ("def add(a, b):", [11, 12, 13, 14, 15], 2)]
TUNED = {"kind": "tuned", "name": "/somewhere/lens.safetensors", "sha256": "1a2b3c4d5e6f"}


@pytest.fixture
def sublayer_trace(tmp_path):
    return write_synthetic_trace(tmp_path / "logit_sub.h5", PROMPTS)


@pytest.fixture
def window(qtbot, tmp_path):
    w = MainWindow(settings=QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.IniFormat))
    w.live_timer.stop()
    qtbot.addWidget(w)
    w.show()
    return w


def test_sublayer_rows_are_labelled_and_stepped_by_kind(sublayer_trace):
    with Trace.open(sublayer_trace) as trace:
        m = trace.metadata
    assert row_labels(m) == ("emb", "1.attn", "1.mlp", "2.attn", "2.mlp", "3.attn", "3.mlp")
    assert step_kinds(m) == ("attn", "mlp", "attn", "mlp", "attn", "mlp")
    assert decoder_boundaries(m).tolist() == [1.0, 3.0, 5.0]  # below each k.attn: layers framed in pairs
    plain = TraceMetadata(model_name="m", num_layers=4, layer_names=("a", "b", "c", "d"), vocab_size=8, top_k=1)
    assert row_labels(plain) == ("emb", "1", "2", "3") and step_kinds(plain) == ("layer",) * 3
    assert decoder_boundaries(plain).size == 0


def test_lens_title_names_the_lens_file_hash_and_sublayers(tmp_path, sublayer_trace):
    tuned = write_synthetic_trace(tmp_path / "tuned.h5", PROMPTS, lens=TUNED, layer_kinds=("emb",) + ("layer",) * 3)
    with Trace.open(tuned) as trace:
        assert lens_title(trace.metadata, tuned) == "tuned.h5: tuned lens (lens.safetensors, sha256 1a2b3c4d)"
    with Trace.open(sublayer_trace) as trace:
        assert lens_title(trace.metadata) == "logit lens · sub-layers"


def test_a_crowded_layer_axis_labels_only_whole_layers(qapp):
    kinds = ("emb",) + ("attn", "mlp") * 30  # 61 rows, as SmolLM2 with sub-layers
    m = TraceMetadata(model_name="m", num_layers=61, layer_names=tuple(map(str, range(61))), vocab_size=8, top_k=1,
                      layer_kinds=kinds)
    axis = LayerAxis()
    axis.set_rows(m)
    [(_, values)] = axis.tickValues(0, 61, size=300)
    labels = axis.tickStrings(values, 1, 1)
    assert len(labels) <= 300 // 16 and labels[0] == "emb" and all(not s.endswith(".attn") for s in labels)
    assert labels[1:3] == ["2.mlp", "4.mlp"]
    [(_, values)] = axis.tickValues(0, 61, size=61 * 16)  # room for every row: all labelled
    assert axis.tickStrings(values, 1, 1)[:3] == ["emb", "1.attn", "1.mlp"]


def test_the_window_shows_sublayer_rows_separators_and_coloured_steps(window, sublayer_trace):
    assert window.open_path(sublayer_trace)
    assert window.windowTitle() == "Entropy-Lens viewer — logit_sub.h5: logit lens · sub-layers"
    assert window.heatmap.image.image.shape == (7, 5)
    assert window.sublayer_marks.edges == [1.0, 3.0, 5.0]
    assert window.heatmap.layer_axis.kinds[1:3] == ("attn", "mlp")
    window.state.select_row(2)
    x, y = window.profile.curve.getData()
    np.testing.assert_allclose(x, [0, 0.5, 1, 1.5, 2, 2.5, 3])  # decoder depth: k.attn at k - 0.5
    np.testing.assert_allclose(y, SUBLAYER_ENTROPY + 0.02, rtol=1e-6)
    ax, ay = window.profile.steps.curves["attn"].getData()  # segments (from, to) of every attention step
    np.testing.assert_allclose(ax, [0, 0.5, 1, 1.5, 2, 2.5])
    np.testing.assert_allclose(ay, np.array([3.0, 3.5, 2.5, 3.0, 2.0, 2.2]) + 0.02, rtol=1e-6)
    mx, my = window.profile.steps.curves["mlp"].getData()
    np.testing.assert_allclose(mx, [0.5, 1, 1.5, 2, 2.5, 3])
    np.testing.assert_allclose(my, np.array([3.5, 2.5, 3.0, 2.0, 2.2, 1.0]) + 0.02, rtol=1e-6)
    title = window.profile.plotItem.titleLabel.text
    assert "attention step" in title and "MLP step" in title
    assert window.profile.regions[0].getRegion() == (0.0, 0.5)


def test_the_kl_panel_shows_the_recorded_values(window, sublayer_trace, tmp_path):
    window.open_path(sublayer_trace)
    window.tabs.setCurrentWidget(window.kl)
    window.state.select_row(3)
    QtWidgets.QApplication.processEvents()  # shown panels redraw once per event-loop turn
    seq = window.state.sequence
    _, token = window.kl.token_curve.getData()
    np.testing.assert_allclose(token, 0.5 * np.arange(6, -1, -1) + 0.03, rtol=1e-6)
    _, mean = window.kl.mean_curve.getData()
    rows = np.flatnonzero(seq.is_generated)  # rows 2, 3, 4 predict the generated tokens
    np.testing.assert_allclose(mean, 0.5 * np.arange(6, -1, -1) + 0.01 * rows.mean(), rtol=1e-6)
    assert window.kl.message == ""
    window.export_csv(tmp_path / "rows.csv")  # the CSV export carries the same values
    with open(tmp_path / "rows.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == (5 + 4) * 7 and float(rows[0]["kl_final"]) == pytest.approx(3.0)


def test_a_version_1_trace_opens_and_says_kl_was_not_recorded(window):
    assert window.open_path(V1_TRACE)
    assert window.windowTitle() == "Entropy-Lens viewer — trace_v1.h5: logit lens"
    window.state.select_row(1)
    assert window.kl.message == ""  # not drawn while its tab is hidden
    window.tabs.setCurrentWidget(window.kl)  # a hidden panel redraws when shown
    assert "not recorded" in window.kl.message and "schema-1" in window.kl.message
    assert window.kl.token_curve.getData()[1] is None or len(window.kl.token_curve.getData()[1]) == 0
    assert window.sublayer_marks.edges == []
    assert window.heatmap.layer_axis.tickStrings([0.5, 6.5], 1, 1) == ["emb", "6"]


def test_compare_overlays_a_logit_and_a_tuned_lens_trace_of_the_same_prompts(window, tmp_path, sublayer_trace):
    # The tuned trace holds the first prompt and, instead of the second, another text.
    tuned = write_synthetic_trace(tmp_path / "tuned.h5", [PROMPTS[0], ("other prompt", [1, 2, 3], 1)], lens=TUNED,
                                  shift=-0.5)
    window.open_path(sublayer_trace)
    window.open_path(tuned)
    window.state.set_current_trace(0)
    window.state.select_row(2)
    panel = window.prompt_compare
    window.tabs.setCurrentWidget(panel.parentWidget())
    names = [curve.name() for curve in panel.curves]
    tuned_name = "tuned.h5 · tuned lens (lens.safetensors, sha256 1a2b3c4d) · sub-layers"
    assert names == ["logit_sub.h5 · logit lens · sub-layers", tuned_name]
    np.testing.assert_allclose(panel.curves[1].getData()[1], panel.curves[0].getData()[1] - 0.5, rtol=1e-6)
    assert len(panel.kl_curves) == 2 and panel.notes == []
    window.state.select_sequence(1)  # only in the logit-lens trace
    QtWidgets.QApplication.processEvents()
    assert len(panel.curves) == 1 and panel.notes == [f"{tuned_name}: does not hold this prompt: not overlaid"]


def test_compare_does_not_overlay_a_token_whose_sequence_differs_before_it(tmp_path, sublayer_trace):
    other = write_synthetic_trace(tmp_path / "other.h5", [("The cat sat", [5, 6, 7, 8, 30, 31], 3)])
    state = ViewerState()
    state.open(other)
    state.open(sublayer_trace)
    state.select_row(2)  # predicts position 3: same tokens so far
    assert [p.entropy is not None for p in compare_prompt(state).profiles] == [True, True]
    state.select_row(3)  # predicts position 4, where the other trace generated another token
    profiles = compare_prompt(state).profiles
    assert profiles[0].entropy is None and profiles[0].note == "its tokens differ from position 4: token not overlaid"
    state.select_row(None)  # the sequence means still compare
    assert all(p.entropy is not None for p in compare_prompt(state).profiles)


def test_stepping_after_the_last_trace_is_closed_draws_nothing(window, sublayer_trace):
    window.open_path(sublayer_trace)
    window.close_current()
    window.state.step(-1)  # the profile's depth line has no trace to read: no error
    assert window.windowTitle() == "Entropy-Lens viewer" and window.lens_info.text() == ""
