"""Record the entropy lens of a few generations with the bundled model, then read the trace back.

    python examples/quickstart.py [--out quickstart.h5]
"""

import argparse

from entropylens_hf import EntropyLens, Trace, default_model

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="quickstart.h5")
args = parser.parse_args()

model, tokenizer = default_model()
lens = EntropyLens(model, tokenizer, top_k=5)

# An ordinary generate call, with the recorder as a logits processor.
inputs = tokenizer(["Return the absolute value of a", "The following example shows how to"], return_tensors="pt", padding=True)
with lens.record(args.out, labels={"source": "quickstart"}) as rec:
    model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id, logits_processor=[rec])

with Trace.open(args.out) as trace:
    for seq in trace:
        profile = seq.entropy[seq.is_generated].mean(0)  # mean entropy per layer over the generated tokens
        print(repr(seq.prompt_text), "->", repr(seq.generated_text))
        print("  entropy per layer (nats):", " ".join(f"{h:.2f}" for h in profile))
        first = seq.is_generated.argmax()  # the row that predicted the first generated token
        top = [seq.token_texts[seq.first_target + first]] + [f"{p:.2f}" for p in seq.topk_probs[first, -1, :3]]
        print("  first generated token and the last layer's top-3 probabilities:", top)
