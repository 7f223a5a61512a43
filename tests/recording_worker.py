"""Subprocess for crash and live-reading tests: records one sequence per generate call, forever.

Prints the token ids of each sequence once its generate call has returned (i.e. committed).
"""

import sys

import torch
from model_zoo import tiny_model

from entropylens_hf import EntropyLens

path = sys.argv[1]
model = tiny_model("llama")
lens = EntropyLens(model, None, top_k=4)
with lens.record(path, labels={"worker": "yes"}) as rec:
    for i in range(10_000):
        prompt = torch.tensor([[3 + i % 50, 4 + i % 60, 5]])
        out = model.generate(input_ids=prompt, max_new_tokens=4, eos_token_id=None, pad_token_id=0, logits_processor=[rec])
        print(" ".join(map(str, out[0].tolist())), flush=True)
