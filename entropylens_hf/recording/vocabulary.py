"""The text of every token id, decoded once per tokenizer.

A trace stores its vocabulary's texts (so readers show top-k tokens without the tokenizer),
and a live recording sizes each token's text room from the longest one. Decoding a 262k
vocabulary token by token takes seconds (about 2.4 s for Gemma 3 on one Xeon core), far more
than a short recording, and notebook users make one ``record()`` per experiment, often with a
fresh :class:`~.recorder.EntropyLens` on the same tokenizer. So the texts are cached per
tokenizer object (weakly: the cache never keeps a tokenizer alive) and decoded again only when
its size changes (``add_tokens``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from ..trace.storage import EncodedStrings

__all__ = ["Vocabulary", "decoded_vocabulary", "token_texts"]


@dataclass(frozen=True)
class Vocabulary:
    """Texts of ids ``0 .. size - 1``, encoded as a trace stores them (a new file writes them as they are)."""

    tokenizer_length: int
    size: int
    texts: tuple[str, ...]
    encoded: EncodedStrings

    @property
    def longest_bytes(self) -> int:
        """UTF-8 length of the longest text: the room a live token reserves."""
        return self.encoded.longest


_CACHE: "weakref.WeakKeyDictionary[Any, Vocabulary]" = weakref.WeakKeyDictionary()


def token_texts(tokenizer: Any, ids: list[int]) -> tuple[str, ...]:
    """Each id's own text, special tokens included (``<id>`` without a tokenizer)."""
    if tokenizer is None:
        return tuple(f"<{i}>" for i in ids)
    return tuple(tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False))


def decoded_vocabulary(tokenizer: Any, size: int) -> Vocabulary:
    """The decoded vocabulary of a lens with ``size`` unembedding rows: ids past the tokenizer's
    length (padded embedding matrices) get empty texts. Cached per tokenizer, its length and ``size``."""
    known = len(tokenizer)
    try:
        cached = _CACHE.get(tokenizer)
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        cached = None
    if cached is not None and (cached.tokenizer_length, cached.size) == (known, size):
        return cached
    n = min(known, size)
    texts = token_texts(tokenizer, list(range(n))) + ("",) * (size - n)
    entry = Vocabulary(known, size, texts, EncodedStrings.of(texts))
    try:
        _CACHE[tokenizer] = entry
    except TypeError:
        pass
    return entry
