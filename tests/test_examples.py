"""The README's example scripts run as written."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_and_prints_profiles(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "--out", str(tmp_path / "q.h5")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("entropy per layer (nats):") == 2 and (tmp_path / "q.h5").exists()
