"""Recording inside ``generate``: the recorder (:mod:`.recorder`, a ``LogitsProcessor`` plus
forward hooks), live recording (:mod:`.live`), prompt sets (:mod:`.prompts`), data-parallel
launches (:mod:`.distributed`) and the recording chat (:mod:`.chat`)."""

from .recorder import EntropyLens, TraceRecorder

__all__ = ["EntropyLens", "TraceRecorder"]
