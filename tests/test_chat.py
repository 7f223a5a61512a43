"""Chat prompts: rendered through the tokenizer's chat template, tokenized once, keyed by their messages.

The tiny GGUF model's tokenizer adds BOS to plain text and its template writes BOS itself:
tokenizing the rendered text naively would start every prompt with two BOS tokens.
"""

import json

import pytest

from entropylens_hf import EntropyLens, EntropyLensError, Trace
from entropylens_hf.cli import main
from entropylens_hf.loading import load_model
from entropylens_hf.prompts import Prompt, read_prompts, record_prompts, tokenize_prompts

SYSTEM = {"role": "system", "content": "be brief"}


@pytest.fixture(scope="module")
def chat_model(tiny_gguf_dir):
    return load_model(str(tiny_gguf_dir), device="cpu", dtype="float32")


def _template_ids(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]


def test_chat_recording_stores_the_templates_own_token_ids_and_rendered_text(chat_model, tmp_path):
    model, tokenizer = chat_model
    prompts = [Prompt("the quick brown"), Prompt("import os", {"kind": "code"}, (SYSTEM, {"role": "user", "content": "import os"}))]
    out = tmp_path / "t.h5"
    record_prompts(EntropyLens(model, tokenizer), prompts, out, chat=True, progress=False, max_new_tokens=3,
                   do_sample=False)
    expected = [[{"role": "user", "content": "the quick brown"}], [SYSTEM, {"role": "user", "content": "import os"}]]
    with Trace.open(out) as trace:
        for seq, messages in zip(trace, expected):
            ids = _template_ids(tokenizer, messages)
            rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            assert seq.token_ids[: seq.prompt_length].tolist() == ids
            assert tokenizer(rendered).input_ids != ids  # the naive way doubles BOS: the check above means something
            assert seq.prompt_text == rendered and rendered.endswith("<s>assistant\n")
            assert seq.prompt_length == len(ids) and int((~seq.is_generated).sum()) == len(ids) - 1
        assert trace[1].labels == {"kind": "code"}


def test_tokenize_prompts_left_pads_a_chat_batch(chat_model):
    _, tokenizer = chat_model
    inputs, texts = tokenize_prompts(tokenizer, ["hi", "the quick brown fox jumps"], chat=True)
    short = _template_ids(tokenizer, [{"role": "user", "content": "hi"}])
    row = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].tolist()
    assert row == short and inputs["attention_mask"][0, 0] == 0 and texts[0].startswith("<s>user\nhi</s>")


def test_messages_lines_imply_chat_and_resume_by_their_messages(tiny_gguf_dir, tmp_path, capsys):
    lines = [{"messages": [SYSTEM, {"role": "user", "content": "import os"}], "labels": {"kind": "code"}},
             {"prompt": "the quick brown"}]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "t.h5"
    argv = ["record", str(tiny_gguf_dir), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "2",
            "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    with Trace.open(out) as trace:
        assert [s.prompt_text.split("\n")[0] for s in trace] == ["<s>system", "<s>user"]
    assert main(argv) == 0 and "skipped 2 already in the file" in capsys.readouterr().out
    lines[0]["messages"][0] = {"role": "system", "content": "be verbose"}  # same question, new system message
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert main(argv) == 0 and "recorded 1 prompt(s)" in capsys.readouterr().out


def test_the_same_text_with_and_without_chat_has_different_keys():
    plain = Prompt("hello", {"a": "1"})
    assert plain.as_chat().key != plain.key
    assert plain.as_chat().key == Prompt("hello", {"a": "1"}, ({"role": "user", "content": "hello"},)).key


def test_chat_on_a_model_without_a_template_is_one_line_before_anything_is_written(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("hello\n")
    out = tmp_path / "t.h5"
    argv = ["record", str(tiny_model_dir), "--chat", "--prompts", str(tmp_path / "p.txt"), "--out", str(out)]
    assert main(argv) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the model's loading bar
    assert last.startswith("entropylens record: error: ") and "the tokenizer has no chat template" in last
    assert not out.exists()


@pytest.mark.parametrize(
    "line, message",
    [
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": "hi"}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "user"}]}, "messages[0] must be"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0] must be"),
        ({"messages": [{"role": "user", "content": "hi", "name": "x"}]}, "messages[0] must be"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, "either 'prompt' or 'messages'"),
    ],
)
def test_malformed_messages_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n' + json.dumps(line) + "\n")
    with pytest.raises(EntropyLensError, match=rf"p.jsonl line 2: .*{message[:12]}".replace("[", r"\[")):
        read_prompts(path)
