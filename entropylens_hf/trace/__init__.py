"""The HDF5 trace format: schema, :class:`TraceWriter` and :class:`Trace` (the reader).

One module per part: :mod:`.schema` (layout, version, records, file attributes),
:mod:`.storage` (opening files, extendable columns), :mod:`.writer`, :mod:`.reader` and
:mod:`.recovery` (a file left open by a killed writer), :mod:`.shards` (a run folder of
shard files, one per process, read as one trace). Nothing here knows about models
or imports torch, so the viewer can use it.
"""

from __future__ import annotations

from ..errors import TraceError
from .reader import Trace
from .recovery import recover_trace, rewrite_locked
from .schema import FORMAT_NAME, SCHEMA_VERSION, SequenceRecord, TraceMetadata
from .shards import ShardedTrace, merge_shards
from .writer import TraceWriter

# Wiring, in the one place that sees every part: the writer rewrites files with recovery
# (which reads them with the reader), and the reader opens folders as shards; neither may
# import those higher parts itself.
TraceWriter.rewrite_locked = staticmethod(rewrite_locked)
Trace.open_folder = ShardedTrace.open

__all__ = ["SCHEMA_VERSION", "FORMAT_NAME", "TraceMetadata", "SequenceRecord", "TraceWriter", "Trace", "TraceError",
           "recover_trace", "ShardedTrace", "merge_shards"]
