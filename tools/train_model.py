"""Train a small causal LM on the Python documentation, reproducibly, on a CPU.

Why this corpus: Debian's ``python3-doc`` package is reachable wherever the package registries
are (no model hub needed), is English prose mixed with code, and is under the PSF licence,
which allows redistribution of derived works. The Sphinx reST sources it ships
(``html/_sources/**/*.rst.txt``) are cleaned of markup into plain text.

    apt-get install python3-doc
    python tools/train_model.py --out entropylens_hf/assets/default_model --steps 800 \\
        --untie-embeddings --save-dtype float16                                       # the bundled model
    python tools/train_model.py --arch gpt2 --layers 3 --d-model 192 --heads 6 --steps 400 --save-dtype float16 \\
        --tokenizer entropylens_hf/assets/default_model --out examples/models/gpt2-3l  # the example models

Every run is seeded (data order, initialisation, dropout-free training) and writes
``training_info.json`` with the exact command, sizes, losses and held-out perplexity.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from pathlib import Path

import torch

DEFAULT_CORPUS = Path("/usr/share/doc/python3/html/_sources")
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

_ROLE = re.compile(r":[a-zA-Z]+(?::[a-zA-Z]+)?:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. ([\w:-]+)::\s*(.*)$")
_UNDERLINE = re.compile(r"^\s*([=\-~^*#+\"'`])\1{3,}\s*$")


def clean_rst(text: str) -> str:
    """reST markup to plain text: roles to their text, directives to their argument, no tables."""
    out = []
    for line in text.splitlines():
        if _UNDERLINE.match(line) or line.lstrip().startswith(("+-", "+=", "| |")):
            continue
        m = _DIRECTIVE.match(line)
        if m:
            indent, name, arg = m.groups()
            if name in ("note", "warning", "seealso", "versionadded", "versionchanged", "deprecated", "impl-detail"):
                line = f"{indent}{name.capitalize()}: {arg}".rstrip()
            elif arg and name not in ("index", "highlight", "toctree", "module", "moduleauthor", "sectionauthor", "image", "literalinclude", "include", "tabularcolumns", "productionlist"):
                line = indent + arg
            else:
                continue
        elif line.lstrip().startswith(".. "):
            continue  # comments, substitutions, targets
        elif re.match(r"^\s+:[\w-]+:(\s|$)", line):
            continue  # directive options
        line = _ROLE.sub(r"\1", line).replace("``", "")
        out.append(line.rstrip())
    cleaned = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", cleaned).strip()


def load_corpus(root: Path) -> tuple[list[str], list[str]]:
    """Cleaned documents split deterministically: every 20th file (sorted by path) is held out."""
    if not root.is_dir():
        sys.exit(f"corpus not found at {root}: install it with `apt-get install python3-doc` (or pass --corpus)")
    files = sorted(root.rglob("*.rst.txt"))
    if not files:
        sys.exit(f"no *.rst.txt files under {root}")
    train, held_out = [], []
    for i, path in enumerate(files):
        doc = clean_rst(path.read_text(encoding="utf-8", errors="replace"))
        if len(doc) > 200:
            (held_out if i % 20 == 0 else train).append(doc)
    return train, held_out


def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=1024)


def pack(docs: list[str], tokenizer, seq_len: int) -> torch.Tensor:
    """Documents joined with EOS and cut into ``[n, seq_len]`` training sequences."""
    ids: list[int] = []
    for encoded in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded + [tokenizer.eos_token_id])
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def build_model(args: argparse.Namespace, vocab_size: int, tokenizer):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if args.arch == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=args.d_model, intermediate_size=int(args.d_model * 8 / 3) // 16 * 16,
                             num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                             max_position_embeddings=args.seq_len * 2, tie_word_embeddings=not args.untie_embeddings, **special)
    else:
        config = GPT2Config(vocab_size=vocab_size, n_embd=args.d_model, n_layer=args.layers, n_head=args.heads,
                            n_positions=args.seq_len * 2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            tie_word_embeddings=not args.untie_embeddings, **special)
    return AutoModelForCausalLM.from_config(config)


@torch.no_grad()
def perplexity(model, data: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        loss = model(batch, labels=batch).loss
        total += loss.item() * batch.numel()
        count += batch.numel()
    model.train()
    return math.exp(total / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--tokenizer", type=Path, default=None, help="reuse a saved tokenizer instead of training one")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--untie-embeddings", action="store_true",
                        help="separate input and output embeddings (with tied ones, early logit-lens layers mostly "
                             "predict the input token back, which hides the entropy dynamics)")
    parser.add_argument("--save-dtype", choices=["float32", "float16"], default="float32",
                        help="dtype of the saved weights (float16 halves the file; load with dtype=torch.float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-sequences", type=int, default=256, help="held-out sequences for perplexity")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.time()

    train_docs, held_docs = load_corpus(args.corpus)
    if args.tokenizer is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = train_tokenizer(train_docs, args.vocab_size)
    train = pack(train_docs, tokenizer, args.seq_len)
    held = pack(held_docs, tokenizer, args.seq_len)[: args.eval_sequences]
    print(f"corpus: {len(train_docs)} train docs ({train.numel()} tokens), {len(held_docs)} held-out docs "
          f"({held.numel()} tokens evaluated), vocab {len(tokenizer)}", flush=True)

    model = build_model(args, len(tokenizer), tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.arch}, {args.layers} layers, d={args.d_model}, {params / 1e6:.2f} M parameters", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))) * 0.9 + 0.1,
    )
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train), generator=generator)
    model.train()
    losses = []
    tick = time.time()
    for step in range(args.steps):
        index = order[(torch.arange(args.batch_size) + step * args.batch_size) % len(train)]
        batch = train[index]
        loss = model(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0 or step == args.steps - 1:
            rate = (step + 1) * batch.numel() / (time.time() - tick)
            print(f"step {step:5d}  loss {loss.item():.3f}  lr {schedule.get_last_lr()[0]:.2e}  {rate:,.0f} tok/s", flush=True)

    ppl = perplexity(model, held, args.batch_size)
    print(f"held-out perplexity {ppl:.2f}", flush=True)
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.save_dtype == "float16":
        model = model.half()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    from transformers import GenerationConfig

    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=32).save_pretrained(args.out)
    info = {
        "corpus": "Python 3 documentation, Debian package python3-doc (reST sources, markup removed)",
        "corpus_licence": "PSF License Agreement (Python Software Foundation)",
        "arch": args.arch,
        "layers": args.layers,
        "d_model": args.d_model,
        "heads": args.heads,
        "tied_embeddings": not args.untie_embeddings,
        "saved_dtype": args.save_dtype,
        "vocab_size": len(tokenizer),
        "parameters": params,
        "train_tokens_seen": args.steps * args.batch_size * args.seq_len,
        "train_tokens_available": int(train.numel()),
        "steps": args.steps,
        "seed": args.seed,
        "final_train_loss_mean_last_20": sum(losses[-20:]) / len(losses[-20:]),
        "held_out_tokens": int(held.numel()),
        "held_out_perplexity": ppl,
        "wall_time_s": round(time.time() - started, 1),
        "torch": torch.__version__,
        "command": "python tools/train_model.py " + " ".join(sys.argv[1:]),
    }
    (args.out / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
