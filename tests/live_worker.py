"""Subprocess for live-recording tests: tiny-Llama generate calls, written live.

    python live_worker.py TRACE MAX_NEW_TOKENS [MAX_NEW_TOKENS ...]   (one call per number)

Writes after every step (live_interval=0). Prints "done I" when call I has returned, so a test
knows the sequence is complete; a test that wants a crash kills it mid-call.
"""

import sys

import torch
from model_zoo import tiny_model

from entropylens_hf import EntropyLens

path, lengths = sys.argv[1], [int(n) for n in sys.argv[2:]]
model = tiny_model("llama")
lens = EntropyLens(model, None, top_k=4)
with lens.record(path, live=True, live_interval=0, labels={"worker": "live"}) as rec:
    for i, max_new in enumerate(lengths):
        prompt = torch.tensor([[3 + i, 4, 5, 6]])
        model.generate(input_ids=prompt, max_new_tokens=max_new, eos_token_id=None, pad_token_id=0,
                       logits_processor=[rec])
        print(f"done {i}", flush=True)
