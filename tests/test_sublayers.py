"""Sub-layer readouts: the residual after each layer's attention step, found generically, per family."""

import numpy as np
import pytest
import torch
from model_zoo import FAMILIES, VOCAB, tiny_model

from entropylens_hf.capture import ResidualCapture
from entropylens_hf.errors import UnsupportedModelError
from entropylens_hf.lens import resolve_decoder_layers
from entropylens_hf.sublayers import resolve_mid_points

# How each sequential family forms its mid residual, written out by hand from its modeling code:
# (attention module, norm applied to the attention output before the add or None,
#  whether the attention module adds the residual itself, config overrides).
ATTENTION_STEP = {
    "gpt2": ("attn", None, False, {}),
    "gpt_bigcode": ("attn", None, False, {}),
    "gpt_neo": ("attn", None, False, {}),
    "gpt_neox": ("attention", None, False, {"use_parallel_residual": False}),
    "opt": ("self_attn", None, False, {}),
    "opt_project_out": ("self_attn", None, False, {}),
    "bloom": ("self_attention", None, True, {}),
    "llama": ("self_attn", None, False, {}),
    "mistral": ("self_attn", None, False, {}),
    "mixtral": ("self_attn", None, False, {}),
    "qwen2": ("self_attn", None, False, {}),
    "qwen3": ("self_attn", None, False, {}),
    "gemma": ("self_attn", None, False, {}),
    "gemma2": ("self_attn", "post_attention_layernorm", False, {}),  # sandwich norms
    "gemma3": ("self_attn", "post_attention_layernorm", False, {}),
    "olmo2": ("self_attn", "post_attention_layernorm", False, {}),  # post-norms only
    "phi3": ("self_attn", None, False, {}),
    "olmo": ("self_attn", None, False, {}),
    "stablelm": ("self_attn", None, False, {}),
    "starcoder2": ("self_attn", None, False, {}),
    "granite": ("self_attn", None, False, {"residual_multiplier": 0.5}),
}
PARALLEL = ["gptj", "gpt_neox", "falcon", "phi", "cohere", "codegen"]


def test_every_zoo_family_is_either_sequential_or_refused():
    assert set(ATTENTION_STEP) | set(PARALLEL) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(ATTENTION_STEP))
def test_mid_residual_is_layer_input_plus_attention_output(family):
    attention, post_norm, adds_residual, overrides = ATTENTION_STEP[family]
    model = tiny_model(family, **overrides)
    layers = resolve_decoder_layers(model)
    mids = [p.module for p in resolve_mid_points(model, layers)]
    inputs, attention_outputs, handles = {}, {}, []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: inputs.__setitem__(i, (args[0] if args else kwargs["hidden_states"]).clone()),
            with_kwargs=True))
        handles.append(layer.get_submodule(attention).register_forward_hook(
            lambda m, args, out, i=i: attention_outputs.__setitem__(i, out[0].clone())))
    ids = torch.randint(3, VOCAB, (2, 6))
    with ResidualCapture(layers, mids=mids) as capture, torch.no_grad():
        out = model(ids, output_hidden_states=True)
    for h in handles:
        h.remove()
    multiplier = getattr(model.config, "residual_multiplier", 1.0)
    for i, layer in enumerate(layers):
        step = attention_outputs[i]
        if post_norm is not None:
            step = layer.get_submodule(post_norm)(step)
        expected = step if adds_residual else inputs[i] + multiplier * step
        torch.testing.assert_close(capture.residuals[2 * i + 1], expected.reshape(capture.residuals[0].shape))
        # Whole-layer rows are untouched by the extra hooks: they are the model's hidden states.
        if i + 1 < len(layers):
            torch.testing.assert_close(capture.residuals[2 * i + 2], out.hidden_states[i + 1])
    assert capture.num_rows == 2 * len(layers) + 1 and capture.complete()


@pytest.mark.parametrize("family", PARALLEL)
def test_parallel_attention_and_mlp_are_refused_saying_why(family):
    model = tiny_model(family)
    with pytest.raises(UnsupportedModelError, match="in parallel off the same input.*sublayers=False"):
        resolve_mid_points(model, resolve_decoder_layers(model))


def test_probe_leaves_no_hooks_and_restores_training_mode(gpt2):
    gpt2.train()
    resolve_mid_points(gpt2, resolve_decoder_layers(gpt2))
    assert gpt2.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in gpt2.modules())


FIXED = dict(max_new_tokens=4, eos_token_id=None, pad_token_id=0, do_sample=False)


@pytest.mark.parametrize("family", ["gpt2", "gemma2", "olmo2"])
def test_whole_layer_rows_of_a_sublayer_recording_equal_a_plain_recording(family):
    from entropylens_hf import EntropyLens

    model = tiny_model(family)
    prompt = torch.tensor([[0, 5, 9, 17], [4, 8, 15, 16]])
    inputs = dict(input_ids=prompt, attention_mask=(prompt != 0).long())
    sub = EntropyLens(model, None, top_k=3, sublayers=True)
    out_sub, records_sub = sub.generate(**inputs, **FIXED)
    out, records = EntropyLens(model, None, top_k=3).generate(**inputs, **FIXED)
    assert torch.equal(out_sub, out)  # the extra hooks change nothing the model does
    layers = len(resolve_decoder_layers(model))
    assert sub.metadata().layer_names[:4] == ("embeddings", "1.attn", "1.mlp", "2.attn")
    assert sub.metadata().num_layers == 2 * layers + 1
    assert sub.metadata().layer_kinds == ("emb",) + ("attn", "mlp") * layers
    for a, b in zip(records_sub, records):
        assert a.entropy.shape == (b.n_rows, 2 * layers + 1)
        whole = slice(0, None, 2)
        np.testing.assert_allclose(a.entropy[:, whole], b.entropy, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.target_prob[:, whole], b.target_prob, rtol=1e-5, atol=1e-8)
        np.testing.assert_array_equal(a.target_rank[:, whole], b.target_rank)
        np.testing.assert_array_equal(a.topk_ids[:, whole, 0], b.topk_ids[:, :, 0])
        np.testing.assert_allclose(a.kl_final[:, whole], b.kl_final, rtol=1e-4, atol=1e-6)
        assert not np.allclose(a.entropy[:, 1::2], a.entropy[:, 2::2])  # the mid rows are rows of their own


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo2", "bloom"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models_resolve_the_same_mid_points(family, dtype):
    model = tiny_model(family)
    expected = [p.path for p in resolve_mid_points(model, resolve_decoder_layers(model))]
    model = model.to(dtype)
    assert [p.path for p in resolve_mid_points(model, resolve_decoder_layers(model))] == expected
