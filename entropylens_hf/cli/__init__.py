"""The ``entropylens`` command: :func:`main` parses the arguments and runs one command."""

from .app import main

__all__ = ["main"]
