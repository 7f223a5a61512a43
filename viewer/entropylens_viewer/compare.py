"""The shown prompt in every open trace, side by side: e.g. a logit-lens and a tuned-lens recording.

Plain Python, no Qt. A sequence of another trace is the same prompt when it has the same key
(prompt text and labels), else the same prompt text. With a token selected, that token's
profile is overlaid only where the other sequence holds the same tokens up to it; otherwise the
profiles are the mean over generated rows. Every trace that cannot be overlaid gets a note
saying why, so a mismatch is never shown as a curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entropylens_hf.trace import SequenceRecord

from .lens_rows import generated_mean, lens_title
from .model import OpenTrace, TraceError, ViewerState, visible_token

__all__ = ["PromptProfile", "PromptComparison", "compare_prompt"]


@dataclass(frozen=True)
class PromptProfile:
    """One open trace's reading of the shown prompt; ``entropy`` is None when it cannot be overlaid."""

    name: str  # legend text: file, model and lens
    lens_kind: str
    depths: np.ndarray  # decoder depth of each lens row (k.attn at k - 0.5)
    decoder_layers: int
    entropy: np.ndarray | None
    kl_final: np.ndarray | None  # None when not overlaid; NaN where not recorded
    note: str = ""  # why it is not overlaid, or how it was matched


@dataclass(frozen=True)
class PromptComparison:
    what: str  # "token 'x' (position p)" or "mean over generated tokens"
    prompt: str
    profiles: tuple[PromptProfile, ...]

    @property
    def same_depth(self) -> bool:
        """True when every overlaid trace has as many decoder layers: plot on layers, not normalised depth."""
        return len({p.decoder_layers for p in self.profiles if p.entropy is not None}) <= 1


def _find(trace: OpenTrace, seq: SequenceRecord) -> tuple[int | None, str]:
    """Index of the same prompt in ``trace`` and how it was matched ("" by key)."""
    keys, prompts = trace.trace.keys, trace.trace.prompt_texts
    if seq.key and seq.key in keys:
        return keys.index(seq.key), ""
    if seq.prompt_text in prompts:
        return prompts.index(seq.prompt_text), "matched by prompt text (labels differ)"
    return None, "does not hold this prompt: not overlaid"


def _first_difference(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def compare_prompt(state: ViewerState) -> PromptComparison | None:
    """The current sequence (and selected token) read from every open trace; None with nothing shown."""
    seq = state.sequence
    if seq is None:
        return None
    row = state.row
    if row is None:
        what = "mean over generated tokens"
    else:
        what = f"token {visible_token(seq.token_texts[seq.first_target + row])!r} (position {seq.first_target + row})"
    profiles = []
    for i, trace in enumerate(state.traces):
        m = trace.trace.metadata
        name = f"{trace.path.name} · {lens_title(m)}"
        common = dict(name=name, lens_kind=m.lens_kind, depths=np.asarray(m.depths, dtype=float),
                      decoder_layers=m.decoder_layers)
        index, note = (state.sequence_index, "") if i == state.current else _find(trace, seq)
        if index is None:
            profiles.append(PromptProfile(entropy=None, kl_final=None, note=note, **common))
            continue
        try:
            other = trace.sequence(index)
        except TraceError as exc:  # a damaged sequence in the other trace: say so, draw the rest
            profiles.append(PromptProfile(entropy=None, kl_final=None, note=str(exc), **common))
            continue
        if row is None:
            profiles.append(PromptProfile(entropy=generated_mean(other.entropy, other),
                                          kl_final=generated_mean(other.kl_final, other), note=note, **common))
            continue
        position = seq.first_target + row
        differ = _first_difference(seq.token_ids, other.token_ids)
        other_row = position - other.first_target
        if differ <= position or not 0 <= other_row < other.n_rows:
            why = f"its tokens differ from position {differ}" if differ <= position else "it has no row for this token"
            profiles.append(PromptProfile(entropy=None, kl_final=None, note=f"{why}: token not overlaid", **common))
            continue
        profiles.append(PromptProfile(entropy=other.entropy[other_row], kl_final=other.kl_final[other_row],
                                      note=note, **common))
    return PromptComparison(what=what, prompt=seq.prompt_text, profiles=tuple(profiles))
