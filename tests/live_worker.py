"""Subprocess for live-recording tests: tiny-Llama generate calls, written live.

    python live_worker.py TRACE [--paced] MAX_NEW_TOKENS [[--paced] MAX_NEW_TOKENS ...]   (one call per number)

Writes after every step (live_interval=0). Prints "done I" when call I has returned, so a test
knows the sequence is complete; a test that wants a crash kills it mid-call. A call whose
number follows ``--paced`` prints "step N" after writing step N and waits for a line on stdin
before the next one, so a reader decides when the sequence grows, whatever the speed of either
process; closing stdin lets it run to the end.
"""

import sys

import torch
from model_zoo import tiny_model

from entropylens_hf import EntropyLens


class WaitForReader:
    """A logits processor that hands control to the reader after every step (it runs after the recorder)."""

    def __init__(self):
        self.step, self.waiting = 0, True

    def __call__(self, input_ids, scores):
        if self.waiting:
            self.step += 1
            print(f"step {self.step}", flush=True)
            self.waiting = bool(sys.stdin.readline())  # "" once the reader closed the pipe: run to the end
        return scores


path, calls = sys.argv[1], []  # (max_new_tokens, paced)
for previous, arg in zip(["", *sys.argv[2:]], sys.argv[2:]):
    if arg != "--paced":
        calls.append((int(arg), previous == "--paced"))
model = tiny_model("llama")
lens = EntropyLens(model, None, top_k=4)
with lens.record(path, live=True, live_interval=0, labels={"worker": "live"}) as rec:
    for i, (max_new, paced) in enumerate(calls):
        prompt = torch.tensor([[3 + i, 4, 5, 6]])
        pacing = [WaitForReader()] if paced else []
        model.generate(input_ids=prompt, max_new_tokens=max_new, eos_token_id=None, pad_token_id=0,
                       logits_processor=[rec, *pacing])
        print(f"done {i}", flush=True)
