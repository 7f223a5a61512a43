"""Tiny, seeded configs of many transformers causal-LM families, for tests (no downloads)."""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
LLAMA_LIKE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _cfg(name: str, **kw):
    return getattr(tf, name)(**{**COMMON, **kw})


FAMILIES = {
    "gpt2": lambda: _cfg("GPT2Config", n_embd=32, n_layer=2, n_head=4),
    "gpt_neox": lambda: _cfg("GPTNeoXConfig", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    "opt": lambda: _cfg("OPTConfig", hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32),
    "opt_project_out": lambda: _cfg("OPTConfig", hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=16),
    "llama": lambda: _cfg("LlamaConfig", **LLAMA_LIKE),
    "mistral": lambda: _cfg("MistralConfig", **LLAMA_LIKE),
    "qwen2": lambda: _cfg("Qwen2Config", **LLAMA_LIKE),
    "qwen3": lambda: _cfg("Qwen3Config", **LLAMA_LIKE, head_dim=8),
    "gemma": lambda: _cfg("GemmaConfig", **LLAMA_LIKE, head_dim=8),
    "gemma2": lambda: _cfg("Gemma2Config", **LLAMA_LIKE, head_dim=8, final_logit_softcapping=5.0),
    "gemma3": lambda: _cfg("Gemma3TextConfig", **LLAMA_LIKE, head_dim=8, final_logit_softcapping=5.0),
    "phi": lambda: _cfg("PhiConfig", **LLAMA_LIKE),
    "phi3": lambda: _cfg("Phi3Config", **LLAMA_LIKE),
    "falcon": lambda: _cfg("FalconConfig", hidden_size=32, num_hidden_layers=2, num_attention_heads=4),
    "gptj": lambda: _cfg("GPTJConfig", n_embd=32, n_layer=2, n_head=4, rotary_dim=4),
    "olmo": lambda: _cfg("OlmoConfig", **LLAMA_LIKE),
    "olmo2": lambda: _cfg("Olmo2Config", **LLAMA_LIKE),
    "stablelm": lambda: _cfg("StableLmConfig", **LLAMA_LIKE),
    "mixtral": lambda: _cfg("MixtralConfig", **LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2),
    "bloom": lambda: _cfg("BloomConfig", hidden_size=32, n_layer=2, n_head=4),
    "cohere": lambda: _cfg("CohereConfig", **LLAMA_LIKE, logit_scale=0.25),
    "granite": lambda: _cfg("GraniteConfig", **LLAMA_LIKE, logits_scaling=4.0),
    "gpt_neo": lambda: _cfg("GPTNeoConfig", hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]]),
    "codegen": lambda: _cfg("CodeGenConfig", n_embd=32, n_layer=2, n_head=4, rotary_dim=4),
    "starcoder2": lambda: _cfg("Starcoder2Config", **LLAMA_LIKE),
    "gpt_bigcode": lambda: _cfg("GPTBigCodeConfig", n_embd=32, n_layer=2, n_head=4),
}


def tiny_model(family: str, seed: int = 0, **config) -> torch.nn.Module:
    """A randomly initialised model of ``family``, in eval mode, weights made non-trivial.

    ``config`` overrides fields of the family's tiny config (e.g. ``use_parallel_residual=False``).
    """
    torch.manual_seed(seed)
    cfg = FAMILIES[family]()
    for name, value in config.items():
        setattr(cfg, name, value)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    # Some families initialise norms/biases to exact identities; perturb so a missing
    # norm or bias in the lens would show.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()
