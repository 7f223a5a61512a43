"""Run folders read as one trace (trace/shards.py), merge, and the launcher variables (distributed.py).

Shard files here are written directly with TraceWriter (no model), so these tests are cheap;
the recordings under torchrun are in test_distributed.py.
"""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_trace import META, make_record

from entropylens_hf.cli import main
from entropylens_hf.distributed import Launch, launch, prepare_share, shard_name, shard_of, take_share
from entropylens_hf.errors import EntropyLensError, TraceError
from entropylens_hf.prompts import Prompt
from entropylens_hf.trace import Trace, TraceWriter
from entropylens_hf.trace.shards import ORDER_FILE, ShardedTrace, write_order


APPEND = f"""
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_trace import META, make_record
from entropylens_hf.trace import TraceWriter
with TraceWriter(sys.argv[1], META) as w:
    w.write([make_record(6, 2, int(sys.argv[2]))])
"""


def write_shard(path, seeds, meta=META, runs=1):
    """One shard file: its sequences (keys k<seed>), spread over ``runs`` generate calls."""
    with TraceWriter(path, meta) as w:
        for r in range(runs):
            run = w.begin_run({"part": r, "file": path.name})
            part = seeds[r::runs]
            w.write([dataclasses.replace(make_record(5 + s % 4, 2, s), run=run) for s in part])


@pytest.fixture
def run_folder(tmp_path):
    """Seeds 0..7 in prompt order 0..7, spread over two shards in a mixed order."""
    folder = tmp_path / "run"
    folder.mkdir()
    write_shard(folder / "rank-00000-of-00002.h5", [1, 4, 6], runs=2)
    write_shard(folder / "rank-00001-of-00002.h5", [0, 2, 3, 5, 7])
    write_order(folder, [f"k{s}" for s in range(8)])
    return folder


def test_a_folder_reads_as_one_trace_in_prompt_order(run_folder):
    with Trace.open(run_folder) as trace:
        assert isinstance(trace, ShardedTrace)
        assert trace.keys == [f"k{s}" for s in range(8)]
        assert [s.key for s in trace] == trace.keys and [s.index for s in trace] == list(range(8))
        assert trace.prompt_texts == [f"prompt {s}" for s in range(8)]
        assert len(trace.labels) == 8 and trace.num_rows == sum(make_record(5 + s % 4, 2, s).n_rows for s in range(8))
        for i, s in enumerate(range(8)):
            expected = make_record(5 + s % 4, 2, s)
            assert np.array_equal(trace[i].token_ids, expected.token_ids)
            assert np.array_equal(trace[i].entropy, expected.entropy)
            assert trace.sequence_lengths[i] == 5 + s % 4
            assert np.allclose(trace.mean_profiles[i], expected.entropy[expected.is_generated].mean(0))
        assert trace.mean_entropies.shape == (8,) and trace.prompt_lengths.tolist() == [2] * 8
        assert trace.row_counts.tolist() == [s.n_rows for s in trace] and trace.statuses.tolist() == [1] * 8
        assert not trace.being_written
        # run ids index the runs of every shard; each run names its shard
        runs = trace.runs()
        assert [r["shard"] for r in runs] == ["rank-00000-of-00002.h5"] * 2 + ["rank-00001-of-00002.h5"]
        for seq in trace:
            assert runs[seq.run]["file"] == ("rank-00000-of-00002.h5" if int(seq.key[1:]) in (1, 4, 6)
                                             else "rank-00001-of-00002.h5")
        assert runs[trace[4].run]["part"] == 1  # seed 4 is the second sequence of shard 0: its second run
        frame = trace.to_dataframe()
        assert sorted(set(frame["sequence"])) == list(range(8)) and len(frame) == trace.num_rows


def test_sequences_missing_from_the_order_file_come_after_shard_by_shard(run_folder):
    (run_folder / ORDER_FILE).write_text("k7\nk6\n")
    with Trace.open(run_folder) as trace:
        assert trace.keys == ["k7", "k6", "k1", "k4", "k0", "k2", "k3", "k5"]


def test_refresh_appends_new_sequences_and_new_shards_without_moving_old_indices(run_folder):
    with Trace.open(run_folder) as trace:
        before = trace.keys
        # another process writes (HDF5 lets one process either read or write a file)
        subprocess.run([sys.executable, "-c", APPEND, str(run_folder / "rank-00001-of-00002.h5"), "9"], check=True)
        write_shard(run_folder / "rank-00000-of-00003.h5", [8])
        write_order(run_folder, ["k8", "k9"])
        assert trace.refresh() == 2
        assert trace.keys == before + ["k8", "k9"] and len(trace.shards) == 3
        assert trace[9].key == "k9" and trace.runs()[trace[9].run]["shard"] == "rank-00001-of-00002.h5"
    with Trace.open(run_folder) as reopened:
        assert reopened.keys == [f"k{s}" for s in range(10)]


def test_a_shard_with_other_settings_is_refused_naming_it(run_folder):
    write_shard(run_folder / "rank-00000-of-00003.h5", [8], meta=dataclasses.replace(META, model_name="other"))
    with pytest.raises(TraceError, match=r"run: shard rank-00000-of-00003\.h5 recorded with other settings than "
                                         r"rank-00000-of-00002\.h5 \(model 'tiny' vs 'other'\)"):
        Trace.open(run_folder)


def test_a_folder_without_shards_and_a_foreign_file_in_one_are_one_line(tmp_path):
    with pytest.raises(TraceError, match="a folder without trace shards"):
        Trace.open(tmp_path)
    (tmp_path / "notes.h5").write_text("not hdf5")
    with pytest.raises(TraceError, match="notes.h5: not an HDF5 file"):
        Trace.open(tmp_path)


def test_merge_writes_one_file_equal_to_the_folder(run_folder, tmp_path, capsys):
    out = tmp_path / "merged.h5"
    assert main(["merge", str(run_folder), "--out", str(out)]) == 0
    assert "merged 8 sequence(s)" in capsys.readouterr().out
    with Trace.open(run_folder) as folder, Trace.open(out) as merged:
        assert not isinstance(merged, ShardedTrace) and merged.keys == folder.keys
        assert merged.runs() == folder.runs()  # every run, naming its shard
        for a, b in zip(folder, merged):
            assert np.array_equal(a.entropy, b.entropy) and np.array_equal(a.topk_ids, b.topk_ids)
            assert a.token_texts == b.token_texts and a.run == b.run and a.labels == b.labels
        assert np.array_equal(folder.mean_profiles, merged.mean_profiles)


@pytest.mark.parametrize("make_out, message", [
    (lambda folder, tmp: folder / "merged.h5", "inside the run folder"),
    (lambda folder, tmp: tmp / "x.h5", "exists already"),
    (lambda folder, tmp: tmp / "nowhere" / "x.h5", "does not exist"),
])
def test_merge_refuses_bad_outputs_with_one_line(run_folder, tmp_path, capsys, make_out, message):
    (tmp_path / "x.h5").write_bytes(b"keep me")
    assert main(["merge", str(run_folder), "--out", str(make_out(run_folder, tmp_path))]) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "x.h5").read_bytes() == b"keep me" and not (run_folder / "merged.h5").exists()


def test_info_and_export_accept_a_folder(run_folder, tmp_path, capsys):
    assert main(["info", str(run_folder)]) == 0
    text = capsys.readouterr().out
    assert "shards     2: rank-00000-of-00002.h5, rank-00001-of-00002.h5" in text and "sequences  8 in 3" in text
    assert main(["export", str(run_folder), "--out", str(tmp_path / "run.csv")]) == 0
    import pandas as pd

    frame = pd.read_csv(tmp_path / "run.csv")
    assert sorted(set(frame["sequence"])) == list(range(8))


def test_the_viewer_opens_a_folder_and_follows_it(run_folder, qtbot, tmp_path):
    app = pytest.importorskip("entropylens_viewer.app")
    from PySide6 import QtCore

    window = app.MainWindow(settings=QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.IniFormat))
    window.live_timer.stop()
    qtbot.addWidget(window)
    assert window.open_path(run_folder)
    assert window.table_model.rowCount() == 8 and window.state.visible_sequences() == list(range(8))
    subprocess.run([sys.executable, "-c", APPEND, str(run_folder / "rank-00000-of-00002.h5"), "9"], check=True)
    assert window.state.refresh() == 1 and window.table_model.rowCount() == 9


# ---------------------------------------------------------------------- distributed.py


@pytest.mark.parametrize("env, expected", [
    ({}, Launch()),
    ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"},
     Launch(1, 4, 1, "torch", True)),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}, Launch(5, 8, 1, "slurm", False)),
    # torchrun inside an sbatch job: its own variables win
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"},
     Launch(3, 4, 3, "torch", False)),
])
def test_rank_variables_of_torchrun_accelerate_and_slurm_are_read(env, expected):
    assert launch(env) == expected


@pytest.mark.parametrize("env, message", [
    ({"RANK": "1"}, "RANK is set but WORLD_SIZE is not"),
    ({"SLURM_NTASKS": "2"}, "SLURM_NTASKS is set but SLURM_PROCID is not"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "the rank must lie in 0..world size - 1"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
])
def test_inconsistent_rank_variables_are_one_line(env, message):
    with pytest.raises(EntropyLensError, match=message):
        launch(env)


def test_hash_shares_record_every_missing_prompt_exactly_once_for_any_process_count():
    prompts = [Prompt(f"prompt {i}") for i in range(200)]
    done = {p.key for p in prompts[::3]}
    missing = [p.key for p in prompts if p.key not in done]
    for world in (1, 2, 3, 5, 8):
        shares = [take_share(prompts, done, rank, world) for rank in range(world)]
        taken = [p.key for share in shares for p in share]
        assert sorted(taken) == sorted(missing)
        assert all(len(share) > len(missing) / world / 2 for share in shares)  # spread, not lumped
    assert shard_of("abc", 7) == shard_of("abc", 7) == int.from_bytes(__import__("hashlib").sha256(b"abc").digest()[:8], "big") % 7


def test_prepare_share_reads_every_shard_and_writes_the_prompt_order(run_folder):
    prompts = [Prompt(f"p{i}") for i in range(4)]
    # make the folder's keys those of prompts 0 and 1
    folder = run_folder.parent / "fresh"
    folder.mkdir()
    with TraceWriter(folder / "rank-00001-of-00002.h5", META) as w:
        w.write([dataclasses.replace(make_record(5, 2, i), key=prompts[i].key) for i in (0, 1)])
    shares = [prepare_share(folder, prompts, Launch(r, 3)) for r in range(3)]
    assert sorted(p.key for s in shares for p in s.prompts) == sorted(p.key for p in prompts[2:])
    assert all(s.skipped == 2 and s.metadata.top_k == META.top_k for s in shares)
    assert [s.shard.name for s in shares] == [shard_name(Launch(r, 3)) for r in range(3)]
    assert (folder / ORDER_FILE).read_text().split() == [p.key for p in prompts]


def test_record_into_a_folder_of_other_settings_is_refused_before_the_model_loads(run_folder, tmp_path, capsys,
                                                                                   monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    import entropylens_hf.loading

    monkeypatch.setattr(entropylens_hf.loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["record", "default", "--prompts", str(prompts), "--out", f"{run_folder}/", "--top-k", "5"]) == 2
    err = capsys.readouterr().err
    assert "the run was recorded with other settings (model 'tiny' vs 'default'; top_k 4 vs 5; Rényi orders" in err
    assert sorted(p.name for p in run_folder.iterdir()) == [ORDER_FILE, "rank-00000-of-00002.h5", "rank-00001-of-00002.h5"]
    assert (run_folder / ORDER_FILE).read_text().split() == [f"k{s}" for s in range(8)]  # untouched


def test_record_under_a_launcher_needs_a_folder(tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["record", "default", "--prompts", str(prompts), "--out", str(tmp_path / "run.h5")]) == 2
    assert "2 processes need a run folder, one shard file each; give a folder, e.g. --out" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [prompts]


DIE = f"""
import os, signal, sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_trace import META, make_record
from entropylens_hf.trace import TraceWriter
w = TraceWriter(sys.argv[1], META)
w.write([make_record(6, 2, int(sys.argv[2]))])
os.kill(os.getpid(), signal.SIGKILL)  # dies holding the file open and the lock
"""


def test_a_shard_left_open_by_a_dead_process_is_read_and_its_stale_lock_blocks_no_rerun(run_folder):
    shard = run_folder / "rank-00001-of-00002.h5"
    died = subprocess.run([sys.executable, "-c", DIE, str(shard), "8"])
    assert died.returncode == -9 and (run_folder / "rank-00001-of-00002.h5.lock").exists()
    with Trace.open(run_folder) as trace:  # read as it is, its committed sequences included
        assert sorted(trace.keys) == [f"k{s}" for s in range(9)]
    prompts = [Prompt(f"p{i}") for i in range(6)]
    for where in (Launch(1, 2), Launch(0, 3)):  # the same process count, or another
        share = prepare_share(run_folder, prompts, where)
        assert share.skipped == 0 and share.shard.name == shard_name(where)
    with TraceWriter(shard, META) as w:  # the same count appends to it: recovered first
        w.write([make_record(6, 2, 9)])
    with Trace.open(run_folder) as trace:
        assert sorted(trace.keys) == [f"k{s}" for s in range(10)]
