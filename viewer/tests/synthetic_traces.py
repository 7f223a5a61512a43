"""Synthetic sub-layer traces with known values, written through TraceWriter (no model needed).

A module of its own, not conftest.py: test files import from it, and several conftest
modules exist in one pytest session (tests/, tests/analysis/, viewer/tests/).
"""

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SUBLAYER_KINDS = ("emb", "attn", "mlp", "attn", "mlp", "attn", "mlp")
# Known profile of a sub-layer trace: every attention step expands (+), every MLP step prunes (-).
SUBLAYER_ENTROPY = np.array([3.0, 3.5, 2.5, 3.0, 2.0, 2.2, 1.0])
V1_TRACE = ROOT / "tests" / "data" / "trace_v1.h5"


def write_synthetic_trace(path, prompts, lens=None, layer_kinds=SUBLAYER_KINDS, kl=True, shift=0.0):
    """A trace written with TraceWriter from SequenceRecords of known values, no model needed.

    Each prompt is ``(text, token_ids, prompt_length)``; row r of every sequence has entropy
    ``SUBLAYER_ENTROPY + 0.01 r + shift`` and KL to final ``0.5 (L - 1 - i) + 0.01 r`` at row i
    (None when ``kl`` is False: written as NaN, "not recorded").
    """
    from entropylens_hf.prompts import Prompt
    from entropylens_hf.trace import SequenceRecord, TraceMetadata, TraceWriter

    L, k = len(layer_kinds), 2
    metadata = TraceMetadata(model_name="synthetic", num_layers=L, layer_names=tuple(f"row {i}" for i in range(L)),
                             vocab_size=64, top_k=k, lens=lens or {"kind": "logit"}, layer_kinds=tuple(layer_kinds))
    records = []
    for text, ids, prompt_length in prompts:
        ids = np.asarray(ids, dtype=np.int32)
        n = len(ids) - 1
        rows = np.arange(n)[:, None]
        entropy = np.resize(SUBLAYER_ENTROPY, L)[None, :] + 0.01 * rows + shift
        kl_final = 0.5 * (L - 1 - np.arange(L))[None, :] + 0.01 * rows
        records.append(SequenceRecord(
            token_ids=ids, token_texts=tuple(f"<{t}>" for t in ids), prompt_length=prompt_length,
            entropy=entropy, topk_ids=np.broadcast_to(ids[1:, None, None], (n, L, k)) % 64,
            topk_probs=np.full((n, L, k), 0.25), target_prob=np.full((n, L), 0.5), target_rank=np.zeros((n, L)),
            output_entropy=entropy[:, -1], renyi=np.zeros((n, 0, L)), prompt_text=text, key=Prompt(text).key,
            kl_final=kl_final if kl else None))
    with TraceWriter(path, metadata) as writer:
        writer.write(records)
    return path
