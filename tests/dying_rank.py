"""torchrun entry point for the killed-rank test: ``entropylens``, but rank 1 is SIGKILLed by itself
right after its first sequence is committed to its shard.

The kill lands at a known state (one committed sequence, the rest of the share not recorded)
however fast the machine is; a test polling the shard from outside could be outrun.
"""

import os
import signal
import sys

from entropylens_hf.trace.writer import TraceWriter

if os.environ.get("RANK") == "1":
    _write = TraceWriter.write

    def write_then_die(self, records):
        indices = _write(self, records)
        os.kill(os.getpid(), signal.SIGKILL)
        return indices

    TraceWriter.write = write_then_die

from entropylens_hf.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
