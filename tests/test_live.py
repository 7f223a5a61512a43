"""Live recording: sequences grow in the file while generate runs, and what a reader or a crash sees."""

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor
from test_trace import META, make_record

from entropylens_hf import EntropyLens, Trace, TraceWriter
from entropylens_hf.errors import TraceError

WORKER = Path(__file__).with_name("live_worker.py")
FIELDS = ("token_ids", "entropy", "topk_ids", "topk_probs", "target_prob", "target_rank", "output_entropy", "renyi",
          "kl_final")


def _head(r, rows):
    """The first ``rows`` rows of a record and the tokens they cover."""
    n = r.first_target + rows
    return replace(r, token_ids=r.token_ids[:n], token_texts=r.token_texts[:n], entropy=r.entropy[:rows],
                   topk_ids=r.topk_ids[:rows], topk_probs=r.topk_probs[:rows], target_prob=r.target_prob[:rows],
                   target_rank=r.target_rank[:rows], output_entropy=r.output_entropy[:rows], renyi=r.renyi[:rows])


def _same(a, b):
    """Equal records; floats up to rounding (a live call resolves rows in other blocks, so other product shapes)."""
    for name in FIELDS[:-1]:
        x, y = getattr(a, name), np.asarray(getattr(b, name)).astype(getattr(a, name).dtype)
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(x, y)
    assert a.token_texts == b.token_texts


# ---------------------------------------------------------------------- the file protocol


def test_live_sequences_grow_in_place_behind_complete_ones_and_complete_in_order(tmp_path):
    path = tmp_path / "t.h5"
    done = make_record(6, 2, 9)
    a, b = make_record(20, 4, 1), make_record(15, 3, 2)
    with TraceWriter(path, META) as w:
        w.write([done])
        live = w.begin_live([_head(a, 3), _head(b, 2)], extra=16, token_bytes=16)
        assert live.indices == [1, 2]
        with pytest.raises(TraceError, match="live sequences are being written"):
            w.write([done])  # nothing may land behind in-progress sequences
        with Trace.open(path) as complete_only, Trace.open(path, partial=True) as everything:
            assert len(complete_only) == 1 and len(everything) == 3
            assert [s.complete for s in everything] == [True, False, False]
            _same(everything[1], _head(a, 3))
            _same(everything[2], _head(b, 2))
            live.update([_head(a, 10), _head(b, 2)])
            assert everything.refresh() == 0 and everything.row_counts.tolist() == [5, 10, 2]
            _same(everything[1], _head(a, 10))
            assert list(everything.statuses) == [1, 0, 0]
            live.finish([a, replace(b, complete=False)])
            assert complete_only.refresh() == 1 and len(complete_only) == 2
            _same(complete_only[1], a)  # the earlier complete sequence kept index 0, the new one came after
            everything.refresh()
            assert list(everything.statuses) == [1, 1, 2]
            _same(everything[2], b)
        w.write([done])  # the batch is closed: ordinary appends again, after the gaps left by the regions
    with Trace.open(path) as trace:
        assert len(trace) == 3
        _same(trace[2], done)
        _same(trace[0], done)


def test_a_sequence_cannot_outgrow_its_room_and_closing_the_writer_abandons_it(tmp_path):
    path = tmp_path / "t.h5"
    a = make_record(20, 4, 1)
    with TraceWriter(path, META) as w:
        live = w.begin_live([_head(a, 3)], extra=2, token_bytes=16)
        live.update([_head(a, 5)])
        with pytest.raises(TraceError, match="outgrew the room"):
            live.update([_head(a, 6)])
    with Trace.open(path, partial=True) as trace:
        assert list(trace.statuses) == [2] and not trace[0].complete
        _same(trace[0], _head(a, 5))


# ---------------------------------------------------------------------- the recorder


class _AtStep(LogitsProcessor):
    """Calls ``action`` once, at generation step ``step`` (after the recorder ran)."""

    def __init__(self, step, action):
        self.step, self.action, self.seen = step, action, 0

    def __call__(self, input_ids, scores):
        self.seen += 1
        if self.seen == self.step:
            self.action()
        return scores


def test_live_recording_stores_exactly_what_normal_recording_stores(llama, tmp_path):
    prompts = torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    lens = EntropyLens(llama, None, top_k=4, renyi_alphas=[2.0])
    first, _ = lens.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=12, eos_token_id=None,
                             pad_token_id=0)
    eos = int(first[0, 4 + 3])  # row 0 ends early: rows of finished sequences must not leak into the file
    kwargs = dict(input_ids=prompts, attention_mask=mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    with lens.record(tmp_path / "normal.h5") as rec:
        llama.generate(**kwargs, logits_processor=[rec])
    for interval in (0, 1e9):  # after every step; only when the call ends
        with lens.record(tmp_path / f"live{interval}.h5", live=True, live_interval=interval) as rec:
            llama.generate(**kwargs, logits_processor=[rec])
        with Trace.open(tmp_path / "normal.h5") as normal, Trace.open(tmp_path / f"live{interval}.h5") as live:
            assert len(live) == 2 and live[0].n_generated < live[1].n_generated
            for x, y in zip(normal, live):
                assert y.complete
                _same(y, x)
                np.testing.assert_allclose(y.kl_final, x.kl_final, rtol=1e-4, atol=1e-6)
        # compacted on close: no larger than the same data written at once, though written step by step
        assert (tmp_path / f"live{interval}.h5").stat().st_size < 1.25 * (tmp_path / "normal.h5").stat().st_size


def test_stop_ends_the_call_and_keeps_its_rows_as_abandoned(llama, tmp_path):
    lens = EntropyLens(llama, None, top_k=4)
    path = tmp_path / "t.h5"
    with lens.record(path, live=True, live_interval=0) as rec:
        out = llama.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=50, eos_token_id=None,
                             pad_token_id=0, logits_processor=[rec, _AtStep(5, rec.stop)])
        assert out.shape[1] == 3 + 5 and not rec.stopping and not rec.last_records[0].complete
        llama.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=4, eos_token_id=None, pad_token_id=0,
                       logits_processor=[rec])  # the next call runs to its end
    with Trace.open(path, partial=True) as trace:
        assert list(trace.statuses) == [2, 1]
        assert trace[0].token_ids.tolist() == out[0].tolist() and trace[0].n_rows == 7
    with Trace.open(path) as trace:
        assert len(trace) == 1 and trace[0].n_generated == 4


def test_an_exception_inside_generate_keeps_the_rows_written_so_far(llama, tmp_path):
    lens = EntropyLens(llama, None, top_k=4)
    path = tmp_path / "t.h5"

    def interrupt():
        raise KeyboardInterrupt

    with lens.record(path, live=True, live_interval=0) as rec:
        with pytest.raises(KeyboardInterrupt):
            llama.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=50, eos_token_id=None,
                           pad_token_id=0, logits_processor=[rec, _AtStep(6, interrupt)])
    whole, _ = lens.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=8, eos_token_id=None, pad_token_id=0)
    with Trace.open(path, partial=True) as trace:
        assert list(trace.statuses) == [2]
        seq = trace[0]
        # written at step 6 before the interrupt: the 2 prompt rows and the rows of the first 5 new tokens
        assert seq.n_rows == 2 + 5 and seq.token_ids.tolist() == whole[0, :8].tolist()
        assert np.isfinite(seq.entropy).all() and (seq.topk_probs[:, :, 0] > 0).all()


def test_live_needs_a_file_and_a_sane_interval(llama):
    lens = EntropyLens(llama, None)
    with pytest.raises(ValueError, match="live=True writes into a trace file"):
        with lens.record(live=True):
            pass
    with pytest.raises(ValueError, match="live_interval"):
        with lens.record("x.h5", live=True, live_interval=-1):
            pass
    assert not Path("x.h5").exists()


# ---------------------------------------------------------------------- a reader and a crash, across processes


def _worker(path, *args):
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(WORKER), str(path), *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def _expect_line(proc, expected):
    line = proc.stdout.readline().strip()
    assert line == expected, f"the live worker said {line!r}, expected {expected!r} (exit code {proc.poll()})"


def test_a_reader_sees_live_rows_whole_and_a_killed_writer_leaves_them_for_recovery(tmp_path):
    path = tmp_path / "t.h5"
    proc = _worker(path, 3, "--paced", 1500)  # the second call waits for the reader after every step
    snapshots = []
    try:
        _expect_line(proc, "done 0")
        with Trace.open(path, partial=True) as trace:
            for step in range(1, 200):
                _expect_line(proc, f"step {step}")  # step `step` is in the file; the writer waits
                proc.stdin.write("go\n")
                proc.stdin.flush()  # the writer now writes step + 1 while this reads
                trace.refresh()
                seq = trace[1]
                # every visible row is whole: texts match ids, top-1 probabilities were written
                assert seq.token_texts == tuple(f"<{t}>" for t in seq.token_ids) and not seq.complete
                assert seq.entropy.shape[0] == len(seq.token_ids) - seq.first_target
                assert (seq.topk_probs[:, :, 0] > 0).all() and np.isfinite(seq.entropy).all()
                snapshots.append(seq)
                if seq.n_rows >= 40:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    seen = [s.n_rows for s in snapshots]
    assert seen == sorted(seen) and len(set(seen)) >= 3 and seen[-1] >= 40
    with Trace.open(path, partial=True) as trace:
        assert list(trace.statuses) == [1, 0] and not trace.being_written
        killed = trace[1]
    with Trace.open(path) as trace:
        assert len(trace) == 1  # analyses and export see the complete sequence only
        first, meta = trace[0], trace.metadata
    for partial in snapshots:  # what was shown while growing is what the file keeps
        _same(partial, _head(killed, partial.n_rows))
    with TraceWriter(path, meta) as w:  # the next writer recovers the file
        assert w.num_sequences == 2
    with Trace.open(path, partial=True) as trace:
        assert list(trace.statuses) == [1, 2]
        _same(trace[0], first)
        _same(trace[1], killed)
