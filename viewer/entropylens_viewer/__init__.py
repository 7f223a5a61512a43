"""Desktop viewer for entropylens-hf traces (PySide6 + pyqtgraph)."""

__version__ = "0.1.0"
