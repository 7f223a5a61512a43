"""The recorder inside real model.generate calls, checked against independent computations."""

import math

import numpy as np
import pytest
import torch
from model_zoo import FAMILIES, VOCAB, tiny_model
from transformers import LogitsProcessor

from entropylens_hf import EntropyLens, Trace
from entropylens_hf.errors import EntropyLensError, UnsupportedGenerationError
from entropylens_hf.metrics import entropy, target_rank

FIXED = dict(max_new_tokens=6, eos_token_id=None, pad_token_id=0)


def _independent_profile(model, token_ids):
    """Entropy, target prob and rank per position and layer from a plain full forward."""
    ids = torch.as_tensor(token_ids)[None]
    norm = model.get_decoder().norm if hasattr(model.get_decoder(), "norm") else model.get_decoder().ln_f
    head = model.get_output_embeddings()
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
        logits = [head(h if i == len(hs) - 1 else norm(h))[0, :-1].double() for i, h in enumerate(hs)]
    logits = torch.stack(logits, 1)  # [positions-1, L, V]
    targets = ids[0, 1:, None].expand(-1, logits.shape[1])
    probs = logits.softmax(-1)
    return (
        entropy(logits).numpy(),
        probs.gather(-1, targets[..., None])[..., 0].numpy(),
        target_rank(logits, targets).numpy(),
        probs.topk(3, -1).indices.numpy(),
    )


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_recorded_rows_equal_a_full_forward_over_the_finished_sequence(family, tmp_path):
    model = tiny_model(family)
    lens = EntropyLens(model, None, top_k=3)
    prompt = torch.tensor([[5, 9, 17, 33, 4]])
    out, (rec,) = lens.generate(input_ids=prompt, **FIXED)
    assert rec.token_ids.tolist() == out[0].tolist()
    assert rec.prompt_length == 5 and rec.n_generated == 6 and rec.first_target == 1
    assert rec.is_generated.tolist() == [False] * 4 + [True] * 6
    ent, prob, rank, top = _independent_profile(model, rec.token_ids)
    np.testing.assert_allclose(rec.entropy, ent, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rec.target_prob, prob, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(rec.target_rank, rank)
    np.testing.assert_array_equal(rec.topk_ids[:, :, 0], top[:, :, 0])
    # Greedy: each generated token is the last layer's top-1, so its rank there is 0.
    assert (rec.target_rank[rec.is_generated, -1] == 0).all()
    assert np.isnan(rec.output_entropy[~rec.is_generated]).all()
    np.testing.assert_allclose(rec.output_entropy[rec.is_generated], rec.entropy[rec.is_generated, -1], rtol=1e-4)


def test_logits_processor_form_and_generate_wrapper_record_the_same(llama, tmp_path):
    lens = EntropyLens(llama, None, top_k=4)
    prompt = torch.tensor([[7, 8, 9]])
    with lens.record(tmp_path / "a.h5", labels={"task": "qa"}) as rec:
        out_a = llama.generate(input_ids=prompt, logits_processor=[rec], **FIXED)
    out_b, (b,) = lens.generate(input_ids=prompt, trace=tmp_path / "b.h5", labels={"task": "qa"}, **FIXED)
    assert torch.equal(out_a, out_b)
    with Trace.open(tmp_path / "a.h5") as trace:
        (a,) = list(trace)
    np.testing.assert_array_equal(a.entropy, b.entropy)
    np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
    assert a.labels == {"task": "qa"} == b.labels
    assert "generate" not in llama.__dict__  # the wrapper is gone after the block


@pytest.mark.parametrize("sample", [False, True])
def test_recording_does_not_change_what_generate_produces(llama, sample):
    prompt = torch.tensor([[11, 12, 13, 14]])
    kwargs = dict(do_sample=sample, top_k=20 if sample else None, **FIXED)
    torch.manual_seed(3)
    plain = llama.generate(input_ids=prompt, **kwargs)
    torch.manual_seed(3)
    recorded, _ = EntropyLens(llama, None).generate(input_ids=prompt, **kwargs)
    assert torch.equal(plain, recorded)


def test_seeded_sampling_runs_reproduce_the_trace(llama):
    lens = EntropyLens(llama, None)
    prompt = torch.tensor([[21, 22, 23]])
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(lens.generate(input_ids=prompt, do_sample=True, temperature=1.5, **FIXED)[1][0])
    assert runs[0].token_ids.tolist() == runs[1].token_ids.tolist()
    np.testing.assert_array_equal(runs[0].entropy, runs[1].entropy)
    # Sampling warpers (top-k here) run after logits processors: output_entropy is the model's own
    # distribution, which with no other processor is the last lens layer.
    gen = runs[0].is_generated
    np.testing.assert_allclose(runs[0].output_entropy[gen], runs[0].entropy[gen, -1], rtol=1e-5)


def test_output_entropy_includes_generates_own_processors(llama):
    lens = EntropyLens(llama, None)
    _, (rec,) = lens.generate(input_ids=torch.tensor([[21, 22, 23]]), repetition_penalty=50.0, **FIXED)
    gen = rec.is_generated
    # The penalty pushes down already-seen tokens, so the processed distribution differs from the raw one.
    assert np.abs(rec.output_entropy[gen] - rec.entropy[gen, -1]).max() > 1e-3


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_generation_matches_one_prompt_at_a_time(family):
    model = tiny_model(family)
    lens = EntropyLens(model, None, top_k=5)
    prompts = [[5, 6, 7, 8, 9, 10], [40, 41], [70, 71, 72, 73]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    _, batched = lens.generate(input_ids=ids, attention_mask=mask, labels=[{"i": str(i)} for i in range(3)], **FIXED)
    for i, p in enumerate(prompts):
        _, (single,) = lens.generate(input_ids=torch.tensor([p]), **FIXED)
        b = batched[i]
        assert b.labels == {"i": str(i)}
        assert b.prompt_length == len(p) and 0 not in b.token_ids[: len(p)].tolist()  # no padding recorded
        assert b.token_ids.tolist() == single.token_ids.tolist()
        np.testing.assert_allclose(b.entropy, single.entropy, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.target_prob, single.target_prob, rtol=1e-3, atol=1e-6)


class _ForceEos(LogitsProcessor):
    """Forces token 2 (EOS) for batch row 0 at the given step."""

    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, input_ids, scores):
        if self.calls == self.step:
            scores[0] = -math.inf
            scores[0, 2] = 0.0
        self.calls += 1
        return scores


def test_tokens_after_eos_are_never_recorded(llama):
    lens = EntropyLens(llama, None)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with lens.record() as rec:
        out = llama.generate(input_ids=ids, max_new_tokens=6, eos_token_id=2, pad_token_id=0,
                             logits_processor=[_ForceEos(2), rec])
    first, second = rec.records
    assert first.token_ids.tolist() == out[0, :6].tolist() and first.token_ids[-1] == 2
    assert first.n_generated == 3 and first.entropy.shape[0] == 5
    assert out[0, 6:].tolist() == [0, 0, 0]  # generate padded the finished row; we did not record it
    assert second.n_generated == out.shape[1] - 3
    assert first.output_entropy[-1] == 0.0  # the forced EOS had all the mass


def test_several_generate_calls_append_to_one_file_across_sessions(llama, tmp_path):
    path = tmp_path / "t.h5"
    lens = EntropyLens(llama, None)
    with lens.record(path, labels={"session": "1"}) as rec:
        llama.generate(input_ids=torch.tensor([[5, 6]]), logits_processor=[rec], **FIXED)
        rec.next_call(labels={"call": "second"})
        llama.generate(input_ids=torch.tensor([[7, 8], [9, 10]]), logits_processor=[rec], **FIXED)
    lens.generate(input_ids=torch.tensor([[11, 12]]), trace=path, labels={"session": "2"}, **FIXED)
    with Trace.open(path) as trace:
        assert len(trace) == 4
        assert [s.run for s in trace] == [0, 1, 1, 2]
        assert trace.labels == [{"session": "1"}, {"session": "1", "call": "second"},
                                {"session": "1", "call": "second"}, {"session": "2"}]
        assert len(trace.runs()) == 3 and trace.runs()[1]["batch_size"] == 2


def test_num_return_sequences_records_each_sample_with_its_prompts_labels(llama):
    lens = EntropyLens(llama, None)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    out, records = lens.generate(input_ids=ids, do_sample=True, num_return_sequences=3,
                                 labels=[{"p": "a"}, {"p": "b"}], **FIXED)
    assert len(records) == 6 and [r.labels["p"] for r in records] == list("aaabbb")
    for r, seq in zip(records, out):
        assert r.token_ids.tolist() == seq.tolist()


def test_prompt_rows_can_be_skipped(llama):
    _, (rec,) = EntropyLens(llama, None, record_prompt=False).generate(input_ids=torch.tensor([[5, 6, 7, 8]]), **FIXED)
    assert rec.n_rows == 6 and rec.first_target == 4 and rec.is_generated.all()


def test_renyi_orders_are_recorded_as_separate_profiles(llama):
    lens = EntropyLens(llama, None, renyi_alphas=[0, 2, math.inf])
    _, (rec,) = lens.generate(input_ids=torch.tensor([[5, 6, 7]]), **FIXED)
    assert rec.renyi.shape == (rec.n_rows, 3, rec.entropy.shape[1])
    np.testing.assert_allclose(rec.renyi_profile(0), math.log(VOCAB), rtol=1e-6)
    # Rényi entropy decreases with the order: H0 >= H1 >= H2 >= Hinf.
    assert (rec.renyi_profile(0) >= rec.entropy - 1e-5).all()
    assert (rec.entropy >= rec.renyi_profile(2) - 1e-5).all()
    assert (rec.renyi_profile(2) >= rec.renyi_profile(math.inf) - 1e-5).all()
    with pytest.raises(KeyError, match="renyi_alphas"):
        rec.renyi_profile(3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_beams=2), "beam search"),
        (dict(prompt_lookup_num_tokens=2), "assisted decoding"),
        (dict(penalty_alpha=0.6, top_k=4), "contrastive search"),
    ],
)
def test_unsupported_generation_modes_are_refused_before_generation(llama, tmp_path, kwargs, match):
    path = tmp_path / "t.h5"
    lens = EntropyLens(llama, None)
    lens.generate(input_ids=torch.tensor([[5, 6]]), trace=path, **FIXED)
    calls = []
    llama.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(UnsupportedGenerationError, match=match):
        lens.generate(input_ids=torch.tensor([[5, 6]]), trace=path, **{**FIXED, **kwargs})
    assert calls == []  # refused before any forward pass
    with Trace.open(path) as trace:
        assert len(trace) == 1  # what was recorded before is intact


def test_assistant_model_is_refused(llama):
    with pytest.raises(UnsupportedGenerationError, match="assisted"):
        EntropyLens(llama, None).generate(input_ids=torch.tensor([[5, 6]]), assistant_model=tiny_model("llama"), **FIXED)


def test_right_padding_and_empty_prompts_get_clear_errors(llama):
    lens = EntropyLens(llama, None)
    with pytest.raises(UnsupportedGenerationError, match="padding_side = 'left'"):
        lens.generate(input_ids=torch.tensor([[5, 6, 0]]), attention_mask=torch.tensor([[1, 1, 0]]), **FIXED)
    with pytest.raises(UnsupportedGenerationError, match="empty prompt"):
        lens.generate(input_ids=torch.zeros((1, 0), dtype=torch.long), **FIXED)


def test_a_failing_generate_restores_the_model_and_keeps_earlier_sequences(llama, tmp_path):
    path = tmp_path / "t.h5"
    lens = EntropyLens(llama, None)

    class Boom(LogitsProcessor):
        def __call__(self, input_ids, scores):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with lens.record(path) as rec:
            llama.generate(input_ids=torch.tensor([[5, 6]]), logits_processor=[rec], **FIXED)
            llama.generate(input_ids=torch.tensor([[7, 8]]), logits_processor=[Boom(), rec], **FIXED)
    assert "generate" not in llama.__dict__
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in lens.lens.layers)
    with Trace.open(path) as trace:
        assert len(trace) == 1 and trace[0].token_ids[:2].tolist() == [5, 6]


def test_recorder_used_outside_its_block_says_how_to_use_it(llama):
    lens = EntropyLens(llama, None)
    with lens.record() as rec:
        pass
    with pytest.raises(EntropyLensError, match="lens.record"):
        llama.generate(input_ids=torch.tensor([[5, 6]]), logits_processor=[rec], **FIXED)


def test_bfloat16_model_records_float32_entropies_close_to_float32_model(llama):
    prompt = torch.tensor([[5, 6, 7, 8]])
    _, (full,) = EntropyLens(llama, None).generate(input_ids=prompt, **FIXED)
    half = tiny_model("llama").to(torch.bfloat16)
    _, (low,) = EntropyLens(half, None).generate(input_ids=prompt, **FIXED)
    assert low.entropy.dtype == np.float32 and np.isfinite(low.entropy).all()
    rows = min(full.n_rows, low.n_rows, 4)  # prompt rows: same inputs, so comparable
    np.testing.assert_allclose(low.entropy[:rows], full.entropy[:rows], atol=0.05)


def test_real_tokenizer_texts_are_stored(tmp_path):
    tokenizer = pytest.importorskip("entropylens_hf.models").default_model()[1]
    model = tiny_model("llama")
    model.resize_token_embeddings(len(tokenizer))
    inputs = tokenizer(["import os"], return_tensors="pt")
    _, (rec,) = EntropyLens(model, tokenizer).generate(**inputs, **FIXED)
    assert "".join(rec.token_texts[: rec.prompt_length]).strip().endswith("import os")
    assert rec.prompt_text.strip() == "import os"


def test_trace_stores_the_vocabulary_so_top_k_ids_read_as_text(tmp_path):
    tokenizer = pytest.importorskip("entropylens_hf.models").default_model()[1]
    model = tiny_model("llama")
    model.resize_token_embeddings(len(tokenizer))
    inputs = tokenizer(["import os"], return_tensors="pt")
    EntropyLens(model, tokenizer, top_k=3).generate(**inputs, **FIXED, trace=tmp_path / "v.h5")
    with Trace.open(tmp_path / "v.h5") as trace:
        seq = trace[0]
        assert len(trace.vocabulary) == model.config.vocab_size
        for token_id in seq.topk_ids[-1, :, 0]:
            assert trace.token_text(int(token_id)) == tokenizer.decode([int(token_id)])
        assert trace.token_text(-1) is None


def test_a_second_trace_file_decodes_no_vocabulary_and_stores_the_same_one(tmp_path, monkeypatch):
    from entropylens_hf.models import default_model

    model, tokenizer = default_model()
    calls = []
    original = type(tokenizer).batch_decode

    def counting(self, sequences, **kwargs):
        calls.append(len(sequences))
        return original(self, sequences, **kwargs)

    monkeypatch.setattr(type(tokenizer), "batch_decode", counting)
    from entropylens_hf.trace.storage import EncodedStrings

    encodes = []
    original_of = EncodedStrings.of.__func__
    monkeypatch.setattr(EncodedStrings, "of", classmethod(lambda cls, texts: encodes.append(len(texts)) or original_of(cls, texts)))
    inputs = tokenizer(["import os"], return_tensors="pt")
    for name in ("a.h5", "b.h5"):  # a fresh lens each time, as a notebook cell makes one
        EntropyLens(model, tokenizer).generate(**inputs, **FIXED, trace=tmp_path / name)
    vocabulary_decodes = [n for n in calls if n >= len(tokenizer)]
    assert vocabulary_decodes == [len(tokenizer)]  # decoded for the first file only
    assert [n for n in encodes if n >= len(tokenizer)] == [len(tokenizer)]  # and encoded for it only
    with Trace.open(tmp_path / "a.h5") as a, Trace.open(tmp_path / "b.h5") as b:
        assert a.vocabulary == b.vocabulary
        assert [a.token_text(i) for i in (0, 5, len(tokenizer) - 1)] == [
            tokenizer.decode([i]) for i in (0, 5, len(tokenizer) - 1)]
    tokenizer.add_tokens(["<entropylens-new-token>"])  # a changed tokenizer is decoded again
    model.resize_token_embeddings(len(tokenizer))
    EntropyLens(model, tokenizer).generate(**inputs, **FIXED, trace=tmp_path / "c.h5")
    with Trace.open(tmp_path / "c.h5") as c:
        assert c.vocabulary[len(tokenizer) - 1] == "<entropylens-new-token>"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bfloat16_recording_matches_cpu_within_bf16_tolerance():
    model = tiny_model("llama")
    prompt = torch.tensor([[5, 6, 7, 8]])
    _, (cpu,) = EntropyLens(model, None).generate(input_ids=prompt, **FIXED)
    gpu_model = tiny_model("llama").to("cuda", torch.bfloat16)
    _, (gpu,) = EntropyLens(gpu_model, None).generate(input_ids=prompt.cuda(), **FIXED)
    np.testing.assert_allclose(gpu.entropy[:3], cpu.entropy[:3], atol=0.05)


@pytest.mark.parametrize("max_logits", [50, 7 * VOCAB])  # resolve every row at once / every few steps
def test_a_small_logits_budget_records_the_same_as_the_default(llama, max_logits):
    prompt = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    _, default = EntropyLens(llama, None, top_k=5).generate(input_ids=prompt, **FIXED)
    _, bounded = EntropyLens(llama, None, top_k=5, max_logits=max_logits).generate(input_ids=prompt, **FIXED)
    for a, b in zip(default, bounded):
        np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
        np.testing.assert_array_equal(a.target_rank, b.target_rank)


def test_device_map_with_offloaded_layers_records_the_same_as_a_plain_load(tiny_model_dir, tmp_path):
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    # accelerate's dispatch hooks move the offloaded layer's weights in for each forward.
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    spread = AutoModelForCausalLM.from_pretrained(tiny_model_dir, device_map=device_map,
                                                  offload_folder=str(tmp_path / "offload")).eval()
    assert getattr(spread, "hf_device_map", None) == device_map
    prompt = torch.tensor([[5, 6, 7, 8]])
    _, (a,) = EntropyLens(plain, None).generate(input_ids=prompt, **FIXED)
    _, (b,) = EntropyLens(spread, None).generate(input_ids=prompt, **FIXED)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- last layer, prompt rows, dtype, syncs


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("lens_dtype", [None, torch.bfloat16])
def test_last_layer_of_generated_rows_is_the_models_own_logits(family, lens_dtype):
    model = tiny_model(family)
    with torch.no_grad():  # larger logits, so that a bfloat16 product would visibly differ
        model.get_output_embeddings().weight.mul_(20)
    prompt = torch.tensor([[5, 9, 17, 33]])
    # The repetition penalty changes the scores generate samples from, never the model's logits.
    kwargs = dict(repetition_penalty=1.5, **FIXED)
    plain = model.generate(input_ids=prompt, output_logits=True, return_dict_in_generate=True, **kwargs)
    raw = torch.cat(plain.logits).double()  # [new tokens, V]: the model's logits, transforms applied
    _, (rec,) = EntropyLens(model, None, top_k=4, lens_dtype=lens_dtype).generate(input_ids=prompt, **kwargs)
    assert rec.token_ids.tolist() == plain.sequences[0].tolist()
    gen = rec.is_generated
    targets = torch.as_tensor(rec.target_ids[gen])
    probs = raw.softmax(-1)
    np.testing.assert_allclose(rec.entropy[gen, -1], entropy(raw).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.target_prob[gen, -1], probs.gather(-1, targets[:, None])[:, 0].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(rec.target_rank[gen, -1], target_rank(raw, targets).numpy())
    np.testing.assert_array_equal(rec.topk_ids[gen, -1], raw.topk(4, -1).indices.numpy())


def test_a_head_called_on_something_else_falls_back_to_the_lens_product(llama):
    prompt = torch.tensor([[5, 6, 7]])
    _, (clean,) = EntropyLens(llama, None, top_k=3).generate(input_ids=prompt, **FIXED)
    # Now the head's output is not the last layer's logits (greedy tokens do not change).
    handle = llama.get_output_embeddings().register_forward_hook(lambda module, args, output: output * 0.5)
    _, (rec,) = EntropyLens(llama, None, top_k=3).generate(input_ids=prompt, **FIXED)
    handle.remove()
    assert rec.token_ids.tolist() == clean.token_ids.tolist()
    # Taking the halved logits would raise the last layer's entropy by far more than this.
    np.testing.assert_allclose(rec.entropy, clean.entropy, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_last_n_prompt_rows_are_the_tail_of_all_prompt_rows(family):
    model = tiny_model(family)
    prompts = [[5, 6, 7, 8, 9, 10], [40, 41], [70, 71, 72, 73]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    _, full = EntropyLens(model, None, top_k=3).generate(input_ids=ids, attention_mask=mask, **FIXED)
    _, tail = EntropyLens(model, None, top_k=3, record_prompt="last:3").generate(input_ids=ids, attention_mask=mask,
                                                                                   **FIXED)
    for a, b, p in zip(full, tail, prompts):
        kept = min(3, len(p) - 1)  # the short prompt has one prompt row only
        assert b.first_target == len(p) - kept and b.n_rows == kept + FIXED["max_new_tokens"]
        assert b.token_ids.tolist() == a.token_ids.tolist()
        assert np.isnan(b.output_entropy[:kept]).all() and not np.isnan(b.output_entropy[kept:]).any()
        np.testing.assert_allclose(b.entropy, a.entropy[-b.n_rows:], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(b.target_rank, a.target_rank[-b.n_rows:])
        np.testing.assert_array_equal(b.topk_ids, a.topk_ids[-b.n_rows:])


@pytest.mark.parametrize("value", ["last:0", "last:-2", "first:3", "some", 3])
def test_record_prompt_rejects_anything_but_all_none_and_last_n(llama, value):
    with pytest.raises(ValueError, match="'last:N' with N >= 1"):
        EntropyLens(llama, None, record_prompt=value)


def test_lens_dtype_rejects_unknown_dtypes_and_names(llama):
    for value in ("float64", torch.int8, "bf16"):
        with pytest.raises(ValueError, match="lens_dtype must be one of float32, bfloat16, float16 or auto"):
            EntropyLens(llama, None, lens_dtype=value)


def test_lens_dtype_and_prompt_rows_are_stored_with_each_run(llama, tmp_path):
    path = tmp_path / "t.h5"
    EntropyLens(llama, None).generate(input_ids=torch.tensor([[5, 6, 7]]), trace=path, **FIXED)
    EntropyLens(llama, None, lens_dtype="bfloat16", record_prompt="last:2").generate(
        input_ids=torch.tensor([[5, 6, 7]]), trace=path, **FIXED)
    with Trace.open(path) as trace:
        runs = trace.runs()
    assert (runs[0]["lens_dtype"], runs[0]["record_prompt"]) == ("float32", "all")
    assert (runs[1]["lens_dtype"], runs[1]["record_prompt"]) == ("bfloat16", "last:2")


def test_float32_lens_dtype_spelled_any_way_records_what_the_default_records(llama):
    prompt = torch.tensor([[5, 6, 7, 8]])
    _, (default,) = EntropyLens(llama, None).generate(input_ids=prompt, **FIXED)
    for spelling in (torch.float32, "float32"):  # "auto" picks per CPU: tests/test_products.py
        _, (rec,) = EntropyLens(llama, None, lens_dtype=spelling).generate(input_ids=prompt, **FIXED)
        np.testing.assert_array_equal(rec.entropy, default.entropy)
        np.testing.assert_array_equal(rec.topk_ids, default.topk_ids)


_HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")


@pytest.mark.parametrize("max_logits", [1 << 22, 9 * VOCAB])  # no block resolved per step / one every few steps
def test_generation_steps_never_read_a_tensor_back_to_the_host(llama, monkeypatch, max_logits):
    """On a GPU each of these calls would stall generation once per token; no step may make one."""
    from entropylens_hf.recorder import TraceRecorder

    in_step, calls = [False], []
    for name in _HOST_SYNCS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            if in_step[0]:
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    step = TraceRecorder.__call__

    def watched(self, input_ids, scores):
        in_step[0] = self._state.step > 0  # the prefill step may wait once per call
        try:
            return step(self, input_ids, scores)
        finally:
            in_step[0] = False

    monkeypatch.setattr(TraceRecorder, "__call__", watched)
    # As on a GPU, where there is no worker: with one (CPU only) the last blocks are resolved in steps
    lens = EntropyLens(llama, None, max_logits=max_logits, background=False)
    _, records = lens.generate(input_ids=torch.tensor([[5, 6, 7], [8, 9, 10]]), **{**FIXED, "max_new_tokens": 12})
    monkeypatch.undo()
    _, expected = EntropyLens(llama, None).generate(input_ids=torch.tensor([[5, 6, 7], [8, 9, 10]]),
                                                    **{**FIXED, "max_new_tokens": 12})
    if max_logits == 1 << 22:
        assert calls == []
    else:  # blocks resolved within steps: only the CPU-only check for finished rows to drop
        assert calls and set(calls) == {"__bool__"}
    for a, b in zip(records, expected):
        np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("max_logits", [1 << 22, 9 * VOCAB])
def test_cuda_generation_steps_never_synchronise_with_the_host(monkeypatch, max_logits):
    from entropylens_hf.recorder import TraceRecorder

    model = tiny_model("llama").cuda()
    step = TraceRecorder.__call__

    def strict(self, input_ids, scores):
        if self._state.step == 0:
            return step(self, input_ids, scores)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(self, input_ids, scores)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(TraceRecorder, "__call__", strict)
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]], device="cuda")
    _, records = EntropyLens(model, None, max_logits=max_logits).generate(input_ids=prompt, **FIXED)
    monkeypatch.undo()
    _, expected = EntropyLens(tiny_model("llama"), None).generate(input_ids=prompt.cpu(), **FIXED)
    for a, b in zip(records, expected):
        assert a.token_ids.tolist() == b.token_ids.tolist()
        np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bfloat16_lens_uses_a_float32_output_product_and_stays_close_to_float32():
    from entropylens_hf.lens.logit import _float32_output, _product_for

    assert _product_for(torch.device("cuda"), torch.bfloat16) is _float32_output
    model = tiny_model("llama").cuda()
    prompt = torch.tensor([[5, 6, 7, 8]], device="cuda")
    _, (full,) = EntropyLens(model, None).generate(input_ids=prompt, **FIXED)
    _, (low,) = EntropyLens(model, None, lens_dtype=torch.bfloat16).generate(input_ids=prompt, **FIXED)
    np.testing.assert_allclose(low.entropy, full.entropy, atol=1e-3)


def test_a_later_recording_reuses_the_workspaces_a_finished_one_released():
    model = tiny_model("llama")
    prompt = torch.tensor([[5, 6, 7, 8]])
    with EntropyLens(model, None).record() as first_rec:
        model.generate(input_ids=prompt, **FIXED)
        released = {w.data_ptr() for w in first_rec._workspaces.values()}
    assert released  # one per thread that resolved blocks (the caller's, a background worker's)
    lens = EntropyLens(model, None)  # a fresh lens, as the next notebook cell makes one
    with lens.record() as rec:
        model.generate(input_ids=prompt, **FIXED)
        taken = {w.data_ptr() for w in rec._workspaces.values()}
        assert taken & released  # the finished recording's buffers, not new ones
        other = lens.lens.new_workspace(lens.max_logits)  # what a concurrent recording would take
        assert other.data_ptr() not in taken
    (first,), (second,) = first_rec.records, rec.records
    np.testing.assert_array_equal(second.entropy, first.entropy)  # a reused buffer changes no number
