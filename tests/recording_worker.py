"""Subprocess for crash and live-reading tests: records one sequence per generate call, forever.

Prints the token ids of each sequence once its generate call has returned (i.e. committed).

SIGINT raises KeyboardInterrupt as usual. CPython swallows an exception raised while a
weakref callback runs ("Exception ignored in ... WeakValueDictionary ... remove": h5py drops
its type objects there, seen once in five interrupts), so the handler also leaves a flag and
a logits processor raises the interrupt at the next decoding step: either way it leaves
through the recorder's code from inside ``generate``, as a user's Ctrl-C does.
"""

import signal
import sys

import torch
from model_zoo import tiny_model
from transformers import LogitsProcessor

from entropylens_hf import EntropyLens

interrupted = []


def on_sigint(signum, frame):
    interrupted.append(signum)
    raise KeyboardInterrupt


class RaiseIfInterrupted(LogitsProcessor):
    def __call__(self, input_ids, scores):
        if interrupted:
            raise KeyboardInterrupt
        return scores


signal.signal(signal.SIGINT, on_sigint)
path = sys.argv[1]
model = tiny_model("llama")
lens = EntropyLens(model, None, top_k=4)
with lens.record(path, labels={"worker": "yes"}) as rec:
    for i in range(10_000):
        prompt = torch.tensor([[3 + i % 50, 4 + i % 60, 5]])
        out = model.generate(input_ids=prompt, max_new_tokens=4, eos_token_id=None, pad_token_id=0,
                             logits_processor=[rec, RaiseIfInterrupted()])
        print(" ".join(map(str, out[0].tolist())), flush=True)
