"""The viewer's data model, without any widget."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entropylens_hf.trace import Trace
from entropylens_viewer.model import TraceError, ViewerState, visible_token

WORKER = Path(__file__).resolve().parents[2] / "tests" / "recording_worker.py"


def test_visible_token_shows_whitespace():
    assert visible_token(" a\tb\n") == "·a→b⏎" and visible_token("") == "∅"


def test_opening_selects_the_first_sequence_at_the_last_layer(recorded_trace):
    state = ViewerState()
    events = []
    state.sequence_changed.connect(lambda: events.append("sequence"))
    state.open(recorded_trace)
    assert state.sequence_index == 0 and state.layer == state.num_layers - 1 == 2 and "sequence" in events
    with Trace.open(recorded_trace) as trace:
        np.testing.assert_array_equal(state.sequence.entropy, trace[0].entropy)


def test_filters_by_label_and_text(recorded_trace):
    state = ViewerState()
    state.open(recorded_trace)
    assert state.label_values() == [("task", "code"), ("task", "qa")]
    state.set_label_filter(("task", "qa"))
    assert state.visible_sequences() == [0, 2]
    state.set_text_filter("<9>")
    assert state.visible_sequences() == []
    state.set_label_filter(None)
    assert state.visible_sequences() == [1]


def test_playback_steps_through_layers_and_stops_at_the_last(recorded_trace):
    state = ViewerState()
    state.open(recorded_trace)
    seen = []
    state.layer_changed.connect(lambda: seen.append(state.layer))
    state.play()  # at the last layer, play restarts from the embeddings
    assert state.playing and state.layer == 0
    for _ in range(5):
        state.tick()
    assert seen == [0, 1, 2] and not state.playing
    state.step(-5)
    assert state.layer == 0


def test_predictions_and_topk_come_from_the_record(recorded_trace):
    state = ViewerState()
    state.open(recorded_trace)
    seq = state.sequence
    # every id in a top-1 row is shown as text when the trace has that token, else as #id
    texts = state.top_predictions(1)
    for text, token_id in zip(texts, seq.topk_ids[:, 1, 0]):
        assert text == (visible_token(f"<{token_id}>") if text.startswith("<") else f"#{token_id}")
    top = state.topk_at(3, 2)
    assert [p for _, p in top] == pytest.approx(seq.topk_probs[3, 2].tolist())


def test_mean_profile_and_depth_profiles_match_numpy(recorded_trace, deeper_trace):
    state = ViewerState()
    state.open(recorded_trace)
    mean, std, count = state.mean_profile()
    with Trace.open(recorded_trace) as trace:
        per_sequence = np.stack([s.entropy[s.is_generated].mean(0) for s in trace])
    assert count == 3
    np.testing.assert_allclose(mean, per_sequence.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, per_sequence.std(0), rtol=1e-5)
    state.open(deeper_trace)
    profiles = state.depth_profiles()
    assert [len(depth) for _, depth, _ in profiles] == [3, 5]
    assert all(depth[0] == 0.0 and depth[-1] == 1.0 for _, depth, _ in profiles)


def test_bad_files_raise_trace_error_and_keep_the_state(tmp_path, recorded_trace):
    state = ViewerState()
    state.open(recorded_trace)
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(TraceError, match="not an HDF5 file"):
        state.open(bad)
    assert len(state.traces) == 1 and state.sequence is not None


def test_refresh_follows_a_trace_being_recorded(tmp_path):
    path = tmp_path / "live.h5"
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent)}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        proc.stdout.readline()  # one line per sequence, printed after it is written
        state = ViewerState()
        changes = []
        state.sequences_changed.connect(lambda: changes.append(len(state.visible_sequences())))
        state.open(path)
        before = len(state.visible_sequences())
        for _ in range(3 + before):  # the worker may have written more before open: wait past those too
            proc.stdout.readline()
        written = 4 + before  # lines read so far: at least this many sequences are in the file
        new = state.refresh()
        assert len(state.visible_sequences()) >= written and new == len(state.visible_sequences()) - before >= 3
        assert changes[-1] == len(state.visible_sequences())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
