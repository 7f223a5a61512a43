"""Lens blocks resolved in a background worker thread while generate runs (recording/background.py)."""

import threading

import numpy as np
import pytest
import torch
from model_zoo import tiny_model
from transformers import LogitsProcessor

from entropylens_hf import EntropyLens, Trace
from entropylens_hf.recording.background import background_threads
from entropylens_hf.recording.recorder import TraceRecorder

FIXED = dict(max_new_tokens=12, eos_token_id=None, pad_token_id=0)
FIELDS = ("entropy", "topk_ids", "topk_probs", "target_prob", "target_rank", "renyi", "kl_final", "output_entropy")
WORKER = "entropylens-lens"


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def resolved_in(monkeypatch):
    """Per resolved block: (the resolving thread's name, its intra-op thread count)."""
    seen = []
    original = TraceRecorder._statistics

    def spy(self, *args, **kwargs):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TraceRecorder, "_statistics", spy)
    return seen


def _batch():
    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 9, 10, 11, 12]])
    return dict(input_ids=ids, attention_mask=(ids != 0).long())


@pytest.mark.parametrize("max_logits", [1 << 22, 4 * 128])  # one block per call; blocks of 4 rows, a backlog
def test_background_resolution_gives_the_bits_of_a_recording_with_the_workers_thread_count(two_threads, resolved_in, max_logits,
                                                                                          monkeypatch):
    model = tiny_model("llama")
    make = lambda background: EntropyLens(model, None, renyi_alphas=(0.5, 2), max_logits=max_logits, background=background)
    _, in_background = make(1).generate(**_batch(), **FIXED)
    names = {name for name, _ in resolved_in}
    assert any(name.startswith(WORKER) for name in names)
    if max_logits < 1 << 20:
        assert len(names) == 2  # the caller resolved some blocks too: over the backlog limit, and at the end
    assert {count for _, count in resolved_in} == {1}  # every block with the worker's count, wherever it ran
    monkeypatch.setattr(TraceRecorder, "_tapered", staticmethod(lambda state: True))  # the same blocks, no worker
    torch.set_num_threads(1)
    _, one_thread = make(False).generate(**_batch(), **FIXED)
    torch.set_num_threads(2)
    _, two_threads = make(False).generate(**_batch(), **FIXED)
    for there, here, other in zip(in_background, one_thread, two_threads):
        assert there.token_ids.tolist() == here.token_ids.tolist() == other.token_ids.tolist()
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(there, name), getattr(here, name), err_msg=name)
            # KL is a difference of sums near log V: its rounding is absolute, about 1e-6 nats
            np.testing.assert_allclose(getattr(there, name), getattr(other, name), rtol=1e-5, atol=5e-6, err_msg=name)


@pytest.fixture
def block_steps(monkeypatch):
    """Per resolved block of generated rows: how many decoding steps it holds."""
    seen = []
    original = TraceRecorder.resolve_queued

    def spy(self, state):
        if state.queued:
            seen.append(len(state.queue))  # one item per step
        return original(self, state)

    monkeypatch.setattr(TraceRecorder, "resolve_queued", spy)
    return seen


def test_with_a_worker_the_last_blocks_shrink_by_halves_so_the_caller_waits_for_one_step(two_threads, block_steps):
    model = tiny_model("llama")
    kwargs = dict(max_new_tokens=12, eos_token_id=None, pad_token_id=0, input_ids=torch.tensor([[3, 4, 5]]))
    _, (tapered,) = EntropyLens(model, None, background=1).generate(**kwargs)
    assert block_steps == [6, 3, 2, 1]  # 12 steps: resolved once the queue holds what may still come
    block_steps.clear()
    _, (whole,) = EntropyLens(model, None, background=False).generate(**kwargs)
    assert block_steps == [12]  # without a worker, one product reads the unembedding once
    np.testing.assert_allclose(tapered.entropy, whole.entropy, rtol=1e-5, atol=5e-6)
    assert tapered.entropy.shape == (2 + 12, 3)


class _ThreadsSeen(LogitsProcessor):
    def __init__(self, fail_at: int | None = None):
        self.counts, self.fail_at = [], fail_at

    def __call__(self, input_ids, scores):
        self.counts.append(torch.get_num_threads())
        if self.fail_at is not None and len(self.counts) == self.fail_at:
            raise RuntimeError("the model failed at step 3")
        return scores


def test_the_model_runs_on_the_threads_the_worker_leaves_and_gets_them_back(two_threads, resolved_in):
    model = tiny_model("llama")
    lens = EntropyLens(model, None, max_logits=4 * 128)
    seen = _ThreadsSeen()
    lens.generate(**_batch(), logits_processor=[seen], **FIXED)
    assert set(seen.counts) == {1}  # generate kept one of the two threads
    assert {count for name, count in resolved_in if name.startswith(WORKER)} == {1}  # the worker the other
    assert torch.get_num_threads() == 2
    failing = _ThreadsSeen(fail_at=3)
    with pytest.raises(RuntimeError, match="step 3"):
        lens.generate(**_batch(), logits_processor=[failing], **FIXED)
    assert torch.get_num_threads() == 2  # given back after a failed call too
    _, records = lens.generate(**_batch(), **FIXED)  # and the next call records normally
    assert [len(r.entropy) for r in records] == [n - 1 + 12 for n in (3, 5, 4)]  # prompt rows and generated ones


def test_an_error_in_a_background_block_reaches_the_caller_and_earlier_calls_stay_in_the_file(two_threads, monkeypatch, tmp_path):
    model = tiny_model("llama")
    lens = EntropyLens(model, None, max_logits=4 * 128)
    path = tmp_path / "run.h5"
    original = TraceRecorder._statistics

    def fail_in_worker(self, *args, **kwargs):
        if threading.current_thread().name.startswith(WORKER) and self._fail:
            raise MemoryError("lens block failed in the worker")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TraceRecorder, "_statistics", fail_in_worker)
    with lens.record(path) as rec:
        rec._fail = False
        model.generate(**_batch(), **FIXED)
        rec._fail = True
        with pytest.raises(MemoryError, match="in the worker"):
            model.generate(**_batch(), **FIXED)
    assert torch.get_num_threads() == 2
    with Trace.open(path) as trace:
        assert len(trace) == 3  # the first call's sequences, nothing of the failed one
        assert trace.runs()[0]["lens_worker_threads"] == 1  # stored with the run's settings


def test_live_recording_resolves_in_the_callers_thread(two_threads, resolved_in, tmp_path):
    model = tiny_model("llama")
    lens = EntropyLens(model, None, max_logits=4 * 128)
    with lens.record(tmp_path / "live.h5", live=True) as rec:
        model.generate(**_batch(), **FIXED, logits_processor=[rec])
    assert resolved_in and all(not name.startswith(WORKER) for name, _ in resolved_in)
    with Trace.open(tmp_path / "live.h5") as trace:
        assert trace.runs()[0]["lens_worker_threads"] == 0


def test_background_is_off_where_it_cannot_pay_and_bad_settings_are_refused():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert background_threads("auto", cpu, 8) == 4
    assert background_threads(True, cpu, 3) == 1
    assert background_threads(5, cpu, 4) == 3  # the caller keeps a thread
    assert background_threads(1, cpu, 8) == 1 and background_threads(0, cpu, 8) == 0  # a count, not a bool
    assert background_threads("auto", cuda, 8) == 0  # kernels already run asynchronously there
    assert background_threads("auto", cpu, 1) == 0
    assert background_threads(False, cpu, 8) == 0
    with pytest.raises(ValueError, match="'auto', True, False or a thread count"):
        EntropyLens(tiny_model("llama"), None, background="always")
