import json

import numpy as np
import pytest
import torch

from entropylens_hf import EntropyLens
from entropylens_hf.analysis import AnalysisError, read_multiple_choice, text_profiles
from entropylens_hf.analysis.evaluation import (MultipleChoiceItem, choice_log_likelihoods, multiple_choice_accuracy,
                                                next_token_accuracy)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


ITEMS = [
    MultipleChoiceItem("the quick brown fox", ("jumps over the lazy dog", "def main", "os"), 0),
    MultipleChoiceItem("def main():", ("return 0", "the fox jumps over the quick lazy brown dog"), 0),
    MultipleChoiceItem("import", (" os and sys", "quick"), 1),
]


def _unbatched_log_likelihood(model, tokenizer, question, choice):
    """log p(choice | question) from one unpadded forward pass, summed over the choice's tokens."""
    sep = "" if question[-1].isspace() or choice[0].isspace() else " "
    context = tokenizer(question)["input_ids"]
    full = context + tokenizer(sep + choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        log_p = torch.log_softmax(model(torch.tensor([full])).logits[0].double(), -1)
    return sum(float(log_p[t - 1, full[t]]) for t in range(len(context), len(full))), len(full) - len(context)


def test_choice_scores_match_one_unpadded_forward_pass_per_choice(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    scored = choice_log_likelihoods(model, tokenizer, ITEMS, batch_size=4)  # batches mix items: padding matters
    for item, (totals, counts) in zip(ITEMS, scored):
        for choice, total, count in zip(item.choices, totals, counts):
            ref, n = _unbatched_log_likelihood(model, tokenizer, item.question, choice)
            assert count == n
            assert total == pytest.approx(ref, abs=1e-4)
    score = multiple_choice_accuracy(model, tokenizer, ITEMS)
    expected = np.mean([np.argmax(t) == it.answer for (t, _), it in zip(scored, ITEMS)])
    expected_norm = np.mean([np.argmax(t / c) == it.answer for (t, c), it in zip(scored, ITEMS)])
    assert (score.accuracy, score.accuracy_norm, score.n_items) == (expected, expected_norm, 3)


def test_next_token_accuracy_matches_a_direct_computation(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = ["the quick brown fox jumps over the lazy dog", "import os and sys", "def main(): return 0"]
    score = next_token_accuracy(model, tokenizer, texts, batch_size=2)
    hits, nll, n = 0, 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            log_p = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        targets = ids[0, 1:]
        hits += int((log_p.argmax(-1) == targets).sum())
        nll -= float(log_p.gather(-1, targets[:, None]).sum())
        n += len(targets)
    assert score.n_tokens == n
    assert score.accuracy == pytest.approx(hits / n)
    assert score.nll == pytest.approx(nll / n, abs=1e-5)


def test_text_profiles_equal_the_recorders_prompt_rows(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    text = "the quick brown fox jumps over the lazy dog"
    profiles = text_profiles(model, tokenizer, [text, "import os"], batch_size=2)
    ids = tokenizer(text, return_tensors="pt")
    _, (record,) = EntropyLens(model, tokenizer).generate(**ids, max_new_tokens=1, do_sample=False)
    n = ids["input_ids"].shape[1]
    np.testing.assert_allclose(profiles[:n], record.entropy[:n], atol=1e-4)
    assert profiles.shape == (n + len(tokenizer("import os")["input_ids"]), 3)


def test_text_profiles_per_text_split_the_rows_by_text_also_across_pieces(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = ["the quick brown fox jumps over the lazy dog", "import os", "x"]
    whole = text_profiles(model, tokenizer, texts, max_length=4, batch_size=3)
    parts = text_profiles(model, tokenizer, texts, max_length=4, batch_size=3, per_text=True)
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    kept = [sum(min(4, n - s) for s in range(0, n, 4) if n - s >= 2) for n in lengths]  # 1-token pieces dropped
    assert [len(p) for p in parts] == kept and lengths[0] > 4 and kept[2] == 0
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # each 4-token piece is read on its own: the first piece of text 0 equals reading it alone
    alone = text_profiles(model, tokenizer, [tokenizer.decode(tokenizer(texts[0])["input_ids"][:4])])
    np.testing.assert_allclose(parts[0][:4], alone[:4], atol=1e-5)


def test_read_multiple_choice_reads_the_documented_format_and_names_bad_lines(tmp_path):
    good = tmp_path / "mc.jsonl"
    good.write_text(json.dumps({"question": "2 + 2 =", "choices": ["4", "5"], "answer": 0}) + "\n\n")
    assert read_multiple_choice(good) == [MultipleChoiceItem("2 + 2 =", ("4", "5"), 0)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n"
                   + json.dumps({"question": "q", "choices": ["a", "b"], "answer": 2}) + "\n")
    with pytest.raises(AnalysisError, match="bad.jsonl line 2: 'answer' must be the index"):
        read_multiple_choice(bad)
    with pytest.raises(AnalysisError, match="no such multiple-choice file"):
        read_multiple_choice(tmp_path / "missing.jsonl")
