import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from model_zoo import tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture
def gpt2():
    return tiny_model("gpt2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Llama and a byte-level BPE tokenizer trained here: loadable by from_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    text = ["the quick brown fox jumps over the lazy dog", "import os and sys", "def main(): return 0"] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    path = tmp_path_factory.mktemp("tiny-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ChatML-like, written with the tiny tokenizer's own special tokens; it writes BOS itself.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama folder with :data:`TINY_CHAT_TEMPLATE` as its tokenizer's chat template."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-chat")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def endless_chat_model_dir(tiny_chat_model_dir, tmp_path_factory):
    """The tiny chat model with no end-of-sequence token and a context of a million positions.

    A reply from it can only end by Ctrl-C or by ``--max-new-tokens``, so a test that interrupts
    a reply finds it still running however fast the machine is (a random model with an EOS token
    ends a long reply by chance, sooner on a faster machine).
    """
    import json
    import shutil

    folder = tmp_path_factory.mktemp("endless-chat")
    shutil.copytree(tiny_chat_model_dir, folder, dirs_exist_ok=True)
    for name, changes in (("config.json", {"eos_token_id": None, "max_position_embeddings": 1_000_000}),
                          ("generation_config.json", {"eos_token_id": None})):
        settings = json.loads((folder / name).read_text())
        settings.update(changes)
        (folder / name).write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="session")
def tiny_gguf_dir(tiny_model_dir, tmp_path_factory):
    """A folder holding one float32 GGUF of the tiny Llama, with a chat template and add_bos_token set."""
    from gguf_writer import write_llama_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    folder = tmp_path_factory.mktemp("tiny-gguf")
    write_llama_gguf(model, tokenizer, folder / "tiny-llama.F32.gguf", chat_template=TINY_CHAT_TEMPLATE, add_bos=True)
    return folder
