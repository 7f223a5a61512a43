"""``python -m entropylens_hf.cli``: the ``entropylens`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
