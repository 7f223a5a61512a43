"""The HDF5 trace format: round trips, bad input, live reading and a killed writer."""

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from entropylens_hf.errors import TraceError
from entropylens_hf.trace import SCHEMA_VERSION, SequenceRecord, Trace, TraceMetadata, TraceWriter, recover_trace

META = TraceMetadata(model_name="tiny", num_layers=3, layer_names=("embeddings", "layer 1", "layer 2"),
                     vocab_size=50, top_k=4, renyi_alphas=(2.0,))
WORKER = Path(__file__).with_name("recording_worker.py")


def make_record(n_tokens: int, prompt_length: int, seed: int, labels=None) -> SequenceRecord:
    rng = np.random.default_rng(seed)
    n = n_tokens - 1
    return SequenceRecord(
        token_ids=rng.integers(0, 50, n_tokens), token_texts=tuple(f" tok{seed}_{i}é" for i in range(n_tokens)),
        prompt_length=prompt_length, entropy=rng.random((n, 3), dtype=np.float32),
        topk_ids=rng.integers(0, 50, (n, 3, 4)), topk_probs=rng.random((n, 3, 4), dtype=np.float32),
        target_prob=rng.random((n, 3), dtype=np.float32), target_rank=rng.integers(0, 50, (n, 3)),
        output_entropy=rng.random(n, dtype=np.float32), renyi=rng.random((n, 1, 3), dtype=np.float32),
        renyi_alphas=(2.0,), labels=labels or {"task": "qa"}, prompt_text=f"prompt {seed}", key=f"k{seed}",
    )


def test_written_sequences_read_back_identically(tmp_path):
    records = [make_record(7, 3, 0), make_record(12, 5, 1, {"task": "code", "format": "json"})]
    with TraceWriter(tmp_path / "t.h5", META) as w:
        w.begin_run({"max_new_tokens": 8})
        assert w.write(records) == [0, 1]
    with Trace.open(tmp_path / "t.h5") as trace:
        assert len(trace) == 2 and trace.metadata.model_name == "tiny" and trace.metadata.renyi_alphas == (2.0,)
        for original, read in zip(records, trace):
            for name in ("token_ids", "entropy", "topk_ids", "topk_probs", "target_prob", "target_rank",
                         "output_entropy", "renyi"):
                np.testing.assert_array_equal(getattr(read, name), np.asarray(getattr(original, name)).astype(getattr(read, name).dtype))
            assert read.token_texts == original.token_texts and read.labels == original.labels
            assert read.prompt_text == original.prompt_text and read.prompt_length == original.prompt_length
        assert trace.labels == [{"task": "qa"}, {"task": "code", "format": "json"}]
        np.testing.assert_allclose(trace.mean_entropies, [r.entropy[r.is_generated].mean() for r in records], rtol=1e-6)
        np.testing.assert_allclose(trace.mean_profiles, [r.entropy[r.is_generated].mean(0) for r in records], rtol=1e-6)
        assert trace.runs()[0]["max_new_tokens"] == 8
        assert trace[-1].index == 1
        with pytest.raises(IndexError):
            trace[2]


def test_a_trace_without_a_stored_vocabulary_reads_none_and_one_with_it_survives_recovery(tmp_path):
    with TraceWriter(tmp_path / "plain.h5", META) as w:
        w.write([make_record(5, 2, 0)])
    with Trace.open(tmp_path / "plain.h5") as trace:
        assert trace.vocabulary == [] and trace.token_text(3) is None
    vocab = [f"w{i} é" for i in range(50)]
    with TraceWriter(tmp_path / "v.h5", META, vocabulary=vocab) as w:
        w.write([make_record(5, 2, 0)])
    recover_trace(tmp_path / "v.h5")
    with Trace.open(tmp_path / "v.h5") as trace:
        assert trace.vocabulary == vocab and trace.token_text(7) == "w7 é" and len(trace) == 1


def test_a_vocabulary_compressed_once_is_stored_byte_for_byte_in_later_files(tmp_path, monkeypatch):
    from entropylens_hf.trace import storage
    from entropylens_hf.trace.storage import EncodedStrings, create_column, write_new_strings

    meta = replace(META, vocab_size=70_000)
    vocab = [f"tok {i} é" * (i % 5) for i in range(70_000)]  # several chunks of each column, the last partial
    strings = EncodedStrings.of(vocab)
    compressed = []  # vocabularies that went through HDF5's filters
    original = storage.append_strings

    def counting_append(group, name, texts):
        if texts is strings:
            compressed.append(texts)
        return original(group, name, texts)

    monkeypatch.setattr(storage, "append_strings", counting_append)
    for name in ("a.h5", "b.h5"):
        with TraceWriter(tmp_path / name, meta, vocabulary=strings) as w:
            w.write([make_record(5, 2, 0)])
    assert len(compressed) == 1 and set(strings.stored_chunks) == {"_bytes", "_end"}  # kept from the first file
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for column in ("text_bytes", "text_end"):
            da, db = a["vocabulary"][column], b["vocabulary"][column]
            assert da.shape == db.shape and da.id.get_num_chunks() == db.id.get_num_chunks() > 1
            for i in range(da.id.get_num_chunks()):
                assert db.id.read_direct_chunk(da.id.get_chunk_info(i).chunk_offset) == \
                    da.id.read_direct_chunk(da.id.get_chunk_info(i).chunk_offset)
    with Trace.open(tmp_path / "b.h5") as trace:
        assert trace.vocabulary == vocab
    # A column of another layout (here: another chunk size) is compressed anew, not given foreign chunks.
    with h5py.File(tmp_path / "other.h5", "w") as f:
        group = f.create_group("vocabulary")
        create_column(group, "text_bytes", np.uint8, (), 1000)
        create_column(group, "text_end", np.int64, (), 1000)
        write_new_strings(group, "text", strings)
    with h5py.File(tmp_path / "other.h5") as f:
        assert bytes(f["vocabulary/text_bytes"][:]) == bytes(strings.data)
        np.testing.assert_array_equal(f["vocabulary/text_end"][:], strings.ends)
    assert strings.stored_chunks["_end"]["layout"][1] == (4096,)  # the trace layout's chunks are kept


def test_dataframe_export_has_one_row_per_token_or_per_token_and_layer(tmp_path):
    pytest.importorskip("pandas")
    kl = np.arange(12, dtype=np.float32).reshape(4, 3)
    records = [replace(make_record(5, 2, 0), kl_final=kl), make_record(4, 1, 1)]  # the second without KL
    with TraceWriter(tmp_path / "t.h5", META) as w:
        w.write(records)
    with Trace.open(tmp_path / "t.h5") as trace:
        wide = trace.to_dataframe()
        long = trace.to_dataframe(layout="long")
    assert len(wide) == 4 + 3 and list(wide.filter(like="entropy_").columns) == ["entropy_0", "entropy_1", "entropy_2"]
    np.testing.assert_array_equal(wide[wide.sequence == 1].filter(like="entropy_").to_numpy(), records[1].entropy)
    np.testing.assert_array_equal(wide[wide.sequence == 0].filter(like="kl_final_").to_numpy(), kl)
    assert list(wide.filter(like="kl_final_").columns) == ["kl_final_0", "kl_final_1", "kl_final_2"]
    assert wide[wide.sequence == 1].filter(like="kl_final_").isna().all().all()
    assert long[(long.sequence == 0) & (long.position == 3) & (long.layer == 2)].kl_final.item() == kl[2, 2]
    assert wide.is_prompt.tolist() == [True, False, False, False, False, False, False]
    assert len(long) == 7 * 3
    row = long[(long.sequence == 0) & (long.position == 2) & (long.layer == 1)].iloc[0]
    assert row.entropy == pytest.approx(records[0].entropy[1, 1]) and row.top1_id == records[0].topk_ids[1, 1, 0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such trace file"),
        (lambda p: p.write_text("hello"), "not an HDF5 file"),
        (lambda p: h5py.File(p, "w").close(), "not an entropylens trace"),
        (lambda p: p.mkdir(), "a folder without trace shards"),  # a folder is read as a run of shards
    ],
)
def test_bad_paths_give_one_clear_line(tmp_path, make, message):
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(TraceError, match=message) as info:
        Trace.open(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_newer_schema_is_refused_with_upgrade_advice(tmp_path):
    path = tmp_path / "t.h5"
    TraceWriter(path, META).close()
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(TraceError, match="pip install -U entropylens-hf"):
        Trace.open(path)


def test_a_damaged_trace_names_the_missing_piece(tmp_path):
    path = tmp_path / "t.h5"
    TraceWriter(path, META).close()
    with h5py.File(path, "a") as f:
        del f["rows"]
    with pytest.raises(TraceError, match="'/rows'"):
        Trace.open(path)


def test_appending_with_other_settings_is_refused_and_keeps_the_file(tmp_path):
    path = tmp_path / "t.h5"
    with TraceWriter(path, META) as w:
        w.write([make_record(5, 2, 0)])
    other = TraceMetadata(**{**META.__dict__, "model_name": "other", "top_k": 8})
    with pytest.raises(TraceError, match="model 'tiny' vs 'other'; top_k 4 vs 8"):
        TraceWriter(path, other)
    with Trace.open(path) as trace:
        assert len(trace) == 1


def test_writing_into_a_missing_folder_says_so(tmp_path):
    with pytest.raises(TraceError, match="does not exist"):
        TraceWriter(tmp_path / "nope" / "t.h5", META)


def _start_worker(path):
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent)}
    return subprocess.Popen([sys.executable, str(WORKER), str(path)], stdout=subprocess.PIPE, text=True, env=env)


def test_a_writer_killed_mid_run_leaves_every_finished_sequence(tmp_path):
    path = tmp_path / "t.h5"
    proc = _start_worker(path)
    finished = []
    try:
        for line in proc.stdout:
            finished.append([int(t) for t in line.split()])
            if len(finished) == 5:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Trace.open(path) as trace:
        assert len(trace) >= 5  # it may have finished more between our read and the kill
        for expected, seq in zip(finished, trace):
            assert seq.token_ids.tolist() == expected
            assert seq.entropy.shape == (len(expected) - 1, 3) and np.isfinite(seq.entropy).all()
            assert seq.labels == {"worker": "yes"}
        kept = len(trace)
    # A new writer recovers the file (dropping any partial rows) and appends after the kept sequences.
    with Trace.open(path) as trace:
        meta = trace.metadata
    extra = make_record(5, 2, 9)
    extra = SequenceRecord(**{**extra.__dict__, "topk_ids": extra.topk_ids[:, :, :4], "renyi": np.zeros((4, 0, 3))})
    with TraceWriter(path, meta) as w:
        assert w.write([extra]) == [kept]
        assert w.num_sequences == kept + 1
    with Trace.open(path) as trace:
        assert len(trace) == kept + 1
        assert [trace[i].token_ids.tolist() for i in range(5)] == finished
        assert trace[kept].token_ids.tolist() == extra.token_ids.tolist()


def test_a_reader_follows_a_trace_while_it_is_recorded(tmp_path):
    path = tmp_path / "t.h5"
    proc = _start_worker(path)
    seen_counts = []
    try:
        first = proc.stdout.readline()
        with Trace.open(path) as trace:
            assert len(trace) >= 1 and trace[0].token_ids.tolist() == [int(t) for t in first.split()]
            printed = 1
            for line in proc.stdout:
                printed += 1
                trace.refresh()
                seen_counts.append(len(trace))
                assert len(trace) >= printed  # every committed sequence is visible
                newest = trace[len(trace) - 1]
                assert newest.entropy.shape[0] == len(newest.token_ids) - 1  # never a partial sequence
                if printed == 6:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert seen_counts == sorted(seen_counts) and seen_counts[-1] >= 6


# -- schema version 2

V1_TRACE = Path(__file__).parent / "data" / "trace_v1.h5"  # recorded by schema-v1 code (commit d7a7284)


def test_a_version_1_trace_reads_as_it_was_recorded():
    expected = np.load(V1_TRACE.with_name("trace_v1_expected.npz"))
    with Trace.open(V1_TRACE) as trace:
        m = trace.metadata
        assert m.schema_version == 1 and m.lens_kind == "logit" and not m.sublayers
        assert m.layer_kinds == ("emb",) + ("layer",) * 6 and m.decoder_layers == 6
        np.testing.assert_array_equal(m.depths, np.arange(7))
        assert len(trace) == 2 and trace.labels == [{"task": "story"}, {"task": "code"}]
        for i, seq in enumerate(trace):
            for name in ("token_ids", "entropy", "topk_ids", "topk_probs", "target_prob", "target_rank",
                         "output_entropy", "renyi"):
                np.testing.assert_array_equal(getattr(seq, name), expected[f"{i}/{name}"])
            assert seq.complete and seq.kl_final.shape == seq.entropy.shape and np.isnan(seq.kl_final).all()


def test_appending_to_a_version_1_trace_upgrades_it_and_keeps_its_sequences(tmp_path):
    path = tmp_path / "old.h5"
    path.write_bytes(V1_TRACE.read_bytes())
    with Trace.open(path) as old:
        meta, before = old.metadata, [old[i] for i in range(len(old))]
    new_meta = TraceMetadata(**{**meta.__dict__, "schema_version": SCHEMA_VERSION, "layer_kinds": ()})
    rng = np.random.default_rng(0)
    added = SequenceRecord(
        token_ids=np.arange(5), token_texts=tuple("abcde"), prompt_length=2, entropy=rng.random((4, 7)),
        topk_ids=rng.integers(0, 100, (4, 7, 3)), topk_probs=rng.random((4, 7, 3)), target_prob=rng.random((4, 7)),
        target_rank=rng.integers(0, 9, (4, 7)), output_entropy=rng.random(4), renyi=rng.random((4, 1, 7)),
        renyi_alphas=(2.0,), kl_final=rng.random((4, 7)).astype(np.float32), key="new",
    )
    with TraceWriter(path, new_meta) as w:
        w.write([added])
    with Trace.open(path) as trace:
        assert trace.metadata.schema_version == SCHEMA_VERSION == 2 and len(trace) == 3
        for old_seq, seq in zip(before, trace):
            np.testing.assert_array_equal(seq.entropy, old_seq.entropy)
            assert np.isnan(seq.kl_final).all() and seq.complete
        np.testing.assert_array_equal(trace[2].kl_final, added.kl_final)
        np.testing.assert_allclose(trace[2].cross_entropy, -np.log(added.target_prob.astype(np.float32)), rtol=1e-6)


def test_sub_layer_metadata_gives_depths_and_the_whole_layer_rows():
    m = TraceMetadata(model_name="m", num_layers=5, layer_names=("embeddings", "1.attn", "1.mlp", "2.attn", "2.mlp"),
                      vocab_size=10, top_k=2, layer_kinds=("emb", "attn", "mlp", "attn", "mlp"))
    assert m.sublayers and m.decoder_layers == 2
    np.testing.assert_array_equal(m.depths, [0, 0.5, 1, 1.5, 2])
    np.testing.assert_array_equal(m.whole_layer_rows, [0, 2, 4])


def test_appending_a_different_lens_or_row_layout_is_refused(tmp_path):
    with TraceWriter(tmp_path / "t.h5", META) as w:
        w.write([make_record(5, 2, 0)])
    tuned = TraceMetadata(**{**META.__dict__, "lens": {"kind": "tuned", "name": "lens.safetensors", "sha256": "ab" * 32}})
    with pytest.raises(TraceError, match=r"lens logit vs tuned \(lens.safetensors\)"):
        TraceWriter(tmp_path / "t.h5", tuned)
    sub = TraceMetadata(**{**META.__dict__, "layer_kinds": ("emb", "attn", "mlp")})
    with pytest.raises(TraceError, match="whole-layer rows vs sub-layer rows"):
        TraceWriter(tmp_path / "t.h5", sub)


def test_sequences_not_complete_are_shown_only_on_request(tmp_path):
    with TraceWriter(tmp_path / "t.h5", META) as w:
        w.write([make_record(5, 2, 0), make_record(6, 2, 1)])
    with h5py.File(tmp_path / "t.h5", "a", locking=False) as f:  # as a live writer leaves a sequence it abandoned
        f["sequences/status"][0] = 2
    with Trace.open(tmp_path / "t.h5") as trace:
        assert len(trace) == 1 and trace[0].key == "k1" and trace.keys == ["k1"] and trace[0].complete
        assert trace.mean_profiles.shape == (1, 3) and trace.num_rows == 5
    with Trace.open(tmp_path / "t.h5", partial=True) as trace:
        assert len(trace) == 2 and trace.keys == ["k0", "k1"] and not trace[0].complete and trace[1].complete
