import numpy as np
import pytest
import torch

from model_zoo import tiny_model

from entropylens_hf.analysis import format_skip_experiment, skip_experiment, skip_layers
from entropylens_hf.analysis.evaluation import MultipleChoiceItem, multiple_choice_accuracy
from entropylens_hf.capture import ResidualCapture
from entropylens_hf.lens import resolve_decoder_layers

IDS = torch.tensor([[5, 17, 42, 9, 77, 3], [8, 8, 100, 64, 2, 31]])


def _embedding_logits(model, family):
    """Final norm + head applied straight to the embeddings, written out per family (not via the lens)."""
    with torch.no_grad():
        if family == "llama":
            return model.lm_head(model.model.norm(model.model.embed_tokens(IDS)))
        t = model.transformer
        return model.lm_head(t.ln_f(t.wte(IDS) + t.wpe(torch.arange(IDS.shape[1]))))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_skipping_every_layer_gives_the_lens_of_the_embeddings(family):
    model = tiny_model(family)
    with torch.no_grad(), skip_layers(model, range(2)):
        logits = model(IDS).logits
    torch.testing.assert_close(logits, _embedding_logits(model, family))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_skipping_no_layer_leaves_the_logits_unchanged(family):
    model = tiny_model(family)
    with torch.no_grad():
        original = model(IDS).logits
        with skip_layers(model, []):
            same = model(IDS).logits
    torch.testing.assert_close(same, original, rtol=0, atol=0)
    assert not torch.allclose(original, _embedding_logits(model, family))  # the layers do change something


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_skipped_layer_passes_its_input_residual_through(family):
    model = tiny_model(family)
    layers = resolve_decoder_layers(model)
    with torch.no_grad(), ResidualCapture(layers) as capture, skip_layers(model, [1]):
        model(IDS)
        torch.testing.assert_close(capture.residuals[2], capture.residuals[1], rtol=0, atol=0)
        assert not torch.equal(capture.residuals[1], capture.residuals[0])


def test_the_model_is_restored_after_an_exception():
    model = tiny_model("llama")
    with torch.no_grad():
        original = model(IDS).logits
        with pytest.raises(RuntimeError, match="boom"):
            with skip_layers(model, [0, 1]):
                raise RuntimeError("boom")
        after = model(IDS).logits
    torch.testing.assert_close(after, original, rtol=0, atol=0)
    assert all(not layer._forward_hooks for layer in resolve_decoder_layers(model))


def test_skipping_works_during_generate_with_a_kv_cache():
    model = tiny_model("llama")
    with torch.no_grad(), skip_layers(model, [0, 1]):
        out = model.generate(IDS, attention_mask=torch.ones_like(IDS), max_new_tokens=4, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    # with every layer skipped, each position predicts from its own embedding only
    expected = _embedding_logits(model, "llama")[:, -1].argmax(-1)
    torch.testing.assert_close(out[:, IDS.shape[1]], expected)


def test_out_of_range_indices_are_refused_and_nothing_is_left_hooked():
    model = tiny_model("gpt2")
    with pytest.raises(IndexError, match="2 decoder layers"):
        with skip_layers(model, [0, 2]):
            pass
    assert all(not layer._forward_hooks for layer in resolve_decoder_layers(model))


def _items():
    return [MultipleChoiceItem(q, ("over the lazy dog", "import os", "return 0"), a) for q, a in
            [("the quick brown fox jumps", 0), ("def main():", 2), ("the lazy", 0), ("import", 1)]]


def test_skip_experiment_compares_none_expansion_pruning_and_random_layers(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    profile = np.array([5.0, 6.0, 2.0])  # layers[0] expands, layers[1] prunes
    exp = skip_experiment(model, tokenizer, n_layers=1, items=_items(), profile=profile, seeds=3, profile_source="planted")
    names = [c.name for c in exp.conditions]
    assert names == ["none", "max expansion (1)", "max pruning (1)", "random (1) x3"]
    assert exp.conditions[1].layers == ((0,),) and exp.conditions[2].layers == ((1,),)
    assert len(exp.conditions[3].layers) == 3
    assert exp.score("none", "accuracy") == multiple_choice_accuracy(model, tokenizer, _items()).accuracy
    with skip_layers(model, [0]):
        assert exp.score("max expansion (1)", "accuracy") == multiple_choice_accuracy(model, tokenizer, _items()).accuracy
    np.testing.assert_allclose(exp.mean_steps, [1.0, -4.0])
    table = format_skip_experiment(exp)
    assert "planted" in table and "max pruning (1)" in table and " ± " in table


def test_excluded_layers_are_never_ranked_nor_drawn(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    profile = np.array([5.0, 6.0, 2.0])  # layers[0] expands most and layers[1] prunes; keep layers[0]
    exp = skip_experiment(model, tokenizer, n_layers=1, items=_items(), profile=profile, seeds=4, exclude=[0])
    assert exp.conditions[1].layers == ((1,),) and exp.conditions[2].layers == ((1,),)
    assert all(draw == (1,) for draw in exp.conditions[3].layers)
    assert "never skipped: 0" in format_skip_experiment(exp)
    with pytest.raises(ValueError, match="decoder layers 0..1"):
        skip_experiment(model, tokenizer, items=_items(), profile=profile, exclude=[2])
    with pytest.raises(ValueError, match="1 decoder layers that may be skipped"):
        skip_experiment(model, tokenizer, n_layers=2, items=_items(), profile=profile, exclude=[0])


def test_skip_experiment_on_text_ranks_layers_by_the_models_own_profile(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    exp = skip_experiment(model, tokenizer, n_layers=1, texts=["the quick brown fox jumps over the lazy dog"] * 4, seeds=2)
    assert exp.metrics == ("next-token accuracy", "NLL (nats/token)")
    assert exp.mean_steps.shape == (2,) and "evaluation texts" in exp.profile_source
    expansion, pruning = exp.conditions[1].layers[0][0], exp.conditions[2].layers[0][0]
    assert exp.mean_steps[expansion] >= exp.mean_steps[pruning]
