"""Data-parallel recording under torchrun on CPU (gloo): real processes, the bundled model.

Kept cheap: few prompts, 4 new tokens, one thread per process. The single-process reference
recording is shared by the tests of this module.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entropylens_hf.cli import main
from entropylens_hf.trace import Trace

PROMPTS = ["def main():", "import os", "class Foo:", "The return value is", "for i in range(", "Python is",
           "Raises a ValueError if the", "This module provides", "return self.", "with open(",
           "If the argument is omitted,", "The following example shows", "while True:", "print(",
           "A list is", "try:", "The default is", "lambda x:", "See also", "Note that the"]
RECORD = ["record", "default", "--max-new-tokens", "4", "--batch-size", "1", "--quiet"]


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(prompt_file, tmp_path_factory):
    """The prompt set recorded by one process into one file."""
    out = tmp_path_factory.mktemp("single") / "single.h5"
    assert main([*RECORD, "--prompts", str(prompt_file), "--out", str(out)]) == 0
    return out


DYING_RANK = Path(__file__).with_name("dying_rank.py")


def torchrun(n: int, prompt_file: Path, out: str, entry: tuple[str, ...] = ("-m", "entropylens_hf"),
             **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                             *entry, *RECORD, "--prompts", str(prompt_file), "--out", out],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def assert_same_sequences(folder: Path, reference: Path) -> None:
    with Trace.open(folder) as got, Trace.open(reference) as want:
        assert got.keys == want.keys  # every prompt once, in prompt order
        for a, b in zip(got, want):
            assert np.array_equal(a.token_ids, b.token_ids) and a.token_texts == b.token_texts
            assert a.prompt_text == b.prompt_text and a.labels == b.labels
            for name in ("entropy", "target_prob", "topk_probs", "output_entropy", "kl_final"):
                np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-4, err_msg=name)
            assert np.array_equal(a.target_rank, b.target_rank) and np.array_equal(a.topk_ids[..., 0], b.topk_ids[..., 0])


def test_two_processes_record_a_folder_that_reads_as_the_single_process_trace(prompt_file, reference, tmp_path):
    proc = torchrun(2, prompt_file, f"{tmp_path / 'run'}/")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    # rank 0 prints one summary for the run, after the barrier
    summaries = [line for line in out.splitlines() if "recorded" in line]
    assert len(summaries) == 1 and f"recorded {len(PROMPTS)} prompt(s) into {tmp_path / 'run'}/ (" in summaries[0], out
    shards = sorted(p.name for p in (tmp_path / "run").glob("*.h5"))
    assert shards == ["rank-00000-of-00002.h5", "rank-00001-of-00002.h5"]
    assert all(len(Trace.open(tmp_path / "run" / s)) > 0 for s in shards)
    assert_same_sequences(tmp_path / "run", reference)


def test_a_rank_killed_mid_run_is_completed_by_a_rerun_with_three_processes(prompt_file, reference, tmp_path):
    folder = tmp_path / "run"
    shard = folder / "rank-00001-of-00002.h5"
    proc = torchrun(2, prompt_file, f"{folder}/", entry=(str(DYING_RANK),))  # rank 1 dies after one sequence
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out  # torchrun saw its worker die
    with Trace.open(shard) as killed:
        assert len(killed) == 1  # the SIGKILLed writer's committed sequence survived
    with Trace.open(folder) as partial_run:
        recorded = len(partial_run)
    assert 1 <= recorded < len(PROMPTS)  # the killed run really left prompts out

    proc = torchrun(3, prompt_file, f"{folder}/")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"recorded {len(PROMPTS) - recorded} prompt(s)" in out and f"skipped {recorded} already in the folder" in out
    assert sorted(p.name for p in folder.glob("rank-*-of-00003.h5"))  # new shards, new names
    assert_same_sequences(folder, reference)  # no prompt missing, none twice
