"""``python -m entropylens_hf``: the ``entropylens`` command, for launchers that start a module
(``torchrun -m entropylens_hf record ...``, ``accelerate launch -m entropylens_hf ...``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
