"""What the trace format promises under failure (docs/reliability.md): two writers, a full disk,
damaged files, readers that open before the writer. Real subprocesses, real files, a real small
file system where this machine lets us mount one."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_trace import META, WORKER, make_record

from entropylens_hf.cli import main
from entropylens_hf.errors import TraceError
from entropylens_hf.trace import Trace, TraceWriter, recover_trace

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(WORKER.parent)])}


@contextlib.contextmanager
def _worker(path, wait_for=3):
    """A real recording subprocess on ``path``; yields it and the sequences it committed so far."""
    proc = subprocess.Popen([sys.executable, str(WORKER), str(path)], stdout=subprocess.PIPE, text=True, env=_env())
    finished = []
    try:
        for line in proc.stdout:
            finished.append([int(t) for t in line.split()])
            if len(finished) == wait_for:
                break
        yield proc, finished
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()


def _cli(*args, timeout=120, preexec_fn=None, raw=False):
    """Run ``entropylens`` in a subprocess; stderr without transformers' weight-loading progress bar unless raw."""
    result = subprocess.run([sys.executable, "-m", "entropylens_hf.cli", *map(str, args)], capture_output=True,
                            text=True, env=_env(), timeout=timeout, preexec_fn=preexec_fn)
    if not raw:
            result.stderr = "".join(line for line in result.stderr.splitlines(keepends=True) if "Loading weights" not in line)
    return result


def _written(path, n=3, first_seed=0):
    records = [make_record(9, 3, first_seed + i) for i in range(n)]
    with TraceWriter(path, META) as w:
        w.begin_run({"max_new_tokens": 6})
        w.write(records)
    return records


# ---------------------------------------------------------------------- two writers


def test_a_second_writer_is_refused_while_the_first_records_and_nothing_is_lost(tmp_path, tiny_model_dir):
    path = tmp_path / "t.h5"
    prompts = tmp_path / "p.txt"
    prompts.write_text("the quick brown\n")
    with _worker(path) as (proc, finished):
        with pytest.raises(TraceError, match=f"being recorded by process {proc.pid} on "):
            TraceWriter(path, META)
        result = _cli("record", tiny_model_dir, "--prompts", prompts, "--out", path, "--device", "cpu", "--quiet",
                      raw=True)
        # One line, and before the model loaded (no weight-loading progress bar).
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert str(path) in result.stderr and f"process {proc.pid}" in result.stderr
        for line in proc.stdout:  # the first writer goes on, in the same file
            finished.append([int(t) for t in line.split()])
            if len(finished) == 8:
                break
        inode = path.stat().st_ino
    with Trace.open(path) as trace:
        assert path.stat().st_ino == inode
        assert [s.token_ids.tolist() for s in list(trace)[:8]] == finished


def test_a_lock_left_by_a_killed_writer_does_not_block_and_recovery_keeps_its_sequences(tmp_path):
    path = tmp_path / "t.h5"
    with _worker(path, wait_for=4) as (proc, finished):
        pass  # killed with SIGKILL on exit: its lock file stays behind
    assert path.with_name("t.h5.lock").read_text().split()[0] == str(proc.pid)
    with Trace.open(path) as trace:
        meta = trace.metadata
    extra = make_record(5, 2, 9)
    extra = type(extra)(**{**extra.__dict__, "topk_ids": extra.topk_ids[:, :, :4], "renyi": np.zeros((4, 0, 3))})
    with TraceWriter(path, meta) as w:
        kept = w.num_sequences
        w.write([extra])
    assert not path.with_name("t.h5.lock").exists()
    with Trace.open(path) as trace:
        assert [s.token_ids.tolist() for s in list(trace)[:4]] == finished and len(trace) == kept + 1


def test_an_interrupted_writer_closes_the_file_and_releases_the_lock(tmp_path):
    path = tmp_path / "t.h5"
    with _worker(path, wait_for=3) as (proc, finished):
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert not path.with_name("t.h5.lock").exists()
    inode = path.stat().st_ino
    with Trace.open(path) as trace:
        assert [s.token_ids.tolist() for s in list(trace)[:3]] == finished
        meta = trace.metadata
    TraceWriter(path, meta).close()  # closed cleanly: appending needs no recovery
    assert path.stat().st_ino == inode


def test_recover_trace_refuses_a_file_a_live_writer_holds(tmp_path):
    path = tmp_path / "t.h5"
    with _worker(path) as (proc, _):
        with pytest.raises(TraceError, match=f"process {proc.pid}"):
            recover_trace(path)


def test_a_second_writer_on_the_same_file_in_one_process_names_this_process(tmp_path):
    path = tmp_path / "t.h5"
    with TraceWriter(path, META):
        with pytest.raises(TraceError, match="being recorded by this process .* close the other TraceWriter"):
            TraceWriter(path, META)
    TraceWriter(path, META).close()  # released on close


# ---------------------------------------------------------------------- full disk


@pytest.fixture
def small_fs(tmp_path):
    """A real 2 MiB tmpfs (needs the right to mount: root in CI containers); skipped elsewhere."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder, leave):
    """Use up a file system's free space but ``leave`` bytes."""
    vfs = os.statvfs(folder)
    free = vfs.f_bavail * vfs.f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def _prompt_file(folder, n, word):
    path = folder / f"{word}.txt"
    path.write_text("".join(f"the {word} number {i} is\n" for i in range(n)))
    return path


def test_a_full_disk_fails_the_batch_with_one_line_and_keeps_every_committed_sequence(small_fs, tmp_path, tiny_model_dir):
    out = small_fs / "t.h5"
    first = _prompt_file(tmp_path, 3, "first")
    args = ("--out", out, "--device", "cpu", "--quiet", "--max-new-tokens", "4", "--batch-size", "1")
    assert main(["record", str(tiny_model_dir), "--prompts", str(first), *map(str, args)]) == 0
    with Trace.open(out) as trace:
        before = [s.token_ids.tolist() for s in trace]
    _fill(small_fs, leave=64 << 10)
    more = _prompt_file(tmp_path, 6, "more")
    result = _cli("record", tiny_model_dir, "--prompts", more, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"entropylens record: error: no space left on device writing {out}; the sequences committed before "
        "are kept, make room and run again to resume"
    ]
    assert main(["info", str(out)]) == 0 and main(["export", str(out), "--out", str(tmp_path / "t.csv")]) == 0
    with Trace.open(out) as trace:
        assert [s.token_ids.tolist() for s in trace] == before
    (small_fs / "filler").unlink()
    assert main(["record", str(tiny_model_dir), "--prompts", str(more), *map(str, args)]) == 0  # resumes
    with Trace.open(out) as trace:
        assert len(trace) == 9 and [s.token_ids.tolist() for s in list(trace)[:3]] == before


def test_a_disk_too_full_for_a_new_trace_leaves_no_file_behind(small_fs, tmp_path, tiny_model_dir):
    out = small_fs / "t.h5"
    _fill(small_fs, leave=16 << 10)
    result = _cli("record", tiny_model_dir, "--prompts", _prompt_file(tmp_path, 2, "few"), "--out", out,
                  "--device", "cpu", "--quiet")
    assert result.returncode == 2 and result.stderr.strip().startswith(
        f"entropylens record: error: no space left on device writing {out}"), result.stderr
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


def test_a_file_size_limit_fails_the_batch_with_one_line_and_keeps_every_committed_sequence(tmp_path, tiny_model_dir):
    """RLIMIT_FSIZE (EFBIG) runs everywhere, where mounting a small file system is not allowed."""
    import resource

    out = tmp_path / "t.h5"
    first = _prompt_file(tmp_path, 3, "first")
    args = ("--out", out, "--device", "cpu", "--quiet", "--max-new-tokens", "4", "--batch-size", "1")
    assert main(["record", str(tiny_model_dir), "--prompts", str(first), *map(str, args)]) == 0
    with Trace.open(out) as trace:
        before = [s.token_ids.tolist() for s in trace]
    limit = out.stat().st_size + (32 << 10)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = _cli("record", tiny_model_dir, "--prompts", _prompt_file(tmp_path, 6, "more"), *args,
                  preexec_fn=limit_file_size)
    assert result.returncode == 2 and "file size limit exceeded writing" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with Trace.open(out) as trace:
        assert [s.token_ids.tolist() for s in trace] == before


# ---------------------------------------------------------------------- damaged files


def _flip(path, offset, out):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def test_a_flipped_metadata_byte_gives_a_damaged_trace_line_within_seconds(tmp_path):
    good = tmp_path / "good.h5"
    _written(good)
    bad = _flip(good, 60, tmp_path / "bad.h5")
    for command in (("info", bad), ("export", bad, "--out", tmp_path / "x.csv")):
        result = _cli(*command, timeout=180)  # a subprocess: before the fix this hung for good
        assert result.returncode == 2 and "damaged trace" in result.stderr and str(bad) in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_no_single_flipped_byte_hangs_a_reader_or_escapes_as_a_traceback(tmp_path):
    good = tmp_path / "good.h5"
    _written(good)
    size = good.stat().st_size
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from entropylens_hf.trace import Trace, TraceError
        data = Path({str(good)!r}).read_bytes()
        bad = Path({str(tmp_path / 'flipped.h5')!r})
        for offset in range(0, {size}, 53):
            flipped = bytearray(data)
            flipped[offset] ^= 0xFF
            bad.write_bytes(bytes(flipped))
            try:
                with Trace.open(bad) as t:
                    t.mean_profiles, t.runs(), t.vocabulary, t.labels
                    for i in range(len(t)):
                        try:
                            t[i]
                        except TraceError:
                            pass
            except TraceError:
                pass
        print("done")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-2000:]


def _records_over_two_chunks():
    # 256 rows per chunk: sequences 0-1 in chunk 0, 2 straddles, 3-4 in chunk 1.
    return [make_record(101, 1, i) for i in range(5)]


@pytest.mark.parametrize("dataset, survivor", [("rows/entropy", 4), ("rows/topk_prob", 4), ("tokens/id", None)])
def test_a_damaged_data_chunk_names_the_part_and_the_other_sequences_stay_readable(tmp_path, dataset, survivor, capsys):
    path = tmp_path / "t.h5"
    records = _records_over_two_chunks()
    with TraceWriter(path, META) as w:
        w.write(records)
    with h5py.File(path, "r") as f:
        chunk = f[dataset].id.get_chunk_info(0)
    _flip(path, chunk.byte_offset + chunk.size // 2, path)
    with Trace.open(path) as trace:
        with pytest.raises(TraceError, match=f"damaged trace: sequence 0 \\('/{dataset}'\\) cannot be read"):
            trace[0]
        if survivor is not None:  # in another chunk
            np.testing.assert_array_equal(trace[survivor].entropy, records[survivor].entropy)
    assert main(["export", str(path), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert f"'/{dataset}'" in err and len(err.splitlines()) == 1


def test_a_damaged_mean_profile_chunk_gives_info_one_line(tmp_path, capsys):
    path = tmp_path / "t.h5"
    _written(path, n=5)
    with h5py.File(path, "r") as f:
        chunk = f["sequences/mean_profile"].id.get_chunk_info(0)
    _flip(path, chunk.byte_offset + chunk.size // 2, path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'/sequences/mean_profile'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.attrs.__setitem__("renyi_alphas", "[null]"), "the 'renyi_alphas' attribute is malformed"),
        (lambda f: f.attrs.__setitem__("schema_version", np.array([1, 2])), "no valid schema_version|'schema_version' attribute is malformed"),
        (lambda f: (f.attrs.__setitem__("num_layers", 5), f.attrs.__setitem__("layer_names", '["a","b","c","d","e"]'),
                    f.attrs.__setitem__("layer_kinds", '["emb","layer","layer","layer","layer"]')), "'/rows/entropy' has shape \\(8, 3\\), but the file's attributes \\(num_layers=5"),
        (lambda f: (f.__delitem__("sequences"), f.create_dataset("sequences", data=[1])), "'/sequences' should be a group, not a dataset"),
        (lambda f: f.attrs.__setitem__("top_k", "ten"), "the 'top_k' attribute is malformed"),
        (lambda f: f.attrs.__setitem__("layer_kinds", '["emb","layer"]'), "2 layer_kinds for num_layers=3"),
        (lambda f: f.attrs.__setitem__("lens", '{"name": "x"}'), "the 'lens' attribute is malformed"),
    ],
)
def test_malformed_attributes_and_misplaced_objects_give_one_trace_error(tmp_path, damage, message):
    path = tmp_path / "t.h5"
    _written(path, n=1)
    with h5py.File(path, "a") as f:
        damage(f)
    with pytest.raises(TraceError, match=message) as info:
        Trace.open(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_sequence_with_unreadable_metadata_is_reported_and_the_others_stay_readable(tmp_path):
    path = tmp_path / "t.h5"
    records = _written(path, n=3)
    with h5py.File(path, "a") as f:
        ends = f["sequences/meta_end"][:]
        f["sequences/meta_bytes"][ends[0]] = ord("}")  # first byte of sequence 1's JSON
    with Trace.open(path) as trace:
        assert len(trace) == 3 and trace.damaged == [1]
        with pytest.raises(TraceError, match="metadata of sequence 1"):
            trace[1]
        np.testing.assert_array_equal(trace[2].entropy, records[2].entropy)
    with h5py.File(path, "a") as f:  # damage in the last entry only: a batch that never finished
        f["sequences/meta_bytes"][ends[0]] = ord("{")
        f["sequences/meta_bytes"][ends[1]] = 0
    with Trace.open(path) as trace:
        assert len(trace) == 2 and trace.damaged == []


def test_a_symlink_loop_is_named_as_such(tmp_path):
    loop = tmp_path / "loop.h5"
    os.symlink(loop, loop)
    with pytest.raises(TraceError, match="symbolic link loop"):
        Trace.open(loop)


# ---------------------------------------------------------------------- readers and writers


def test_a_reader_opened_before_the_writer_sees_its_appends(tmp_path):
    path = tmp_path / "t.h5"
    with _worker(path, wait_for=1):  # a trace with the worker's settings, left by a killed writer
        pass
    recover_trace(path)
    # A plain h5py reader in another process too (HDF5's default file locking), as a user might leave open.
    plain = subprocess.Popen([sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1], 'r'); "
                              "print('open', flush=True); sys.stdin.read()", str(path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert plain.stdout.readline().strip() == "open"
        with Trace.open(path) as trace:
            start = len(trace)
            inode = path.stat().st_ino
            with _worker(path, wait_for=4) as (_, finished):
                assert trace.refresh() >= 4
                assert [s.token_ids.tolist() for s in list(trace)[start : start + 4]] == finished
            assert path.stat().st_ino == inode  # appended in place, not rewritten
    finally:
        plain.communicate("")


def test_refresh_reopens_a_file_that_was_replaced(tmp_path):
    path, other = tmp_path / "t.h5", tmp_path / f"{uuid.uuid4().hex}.h5"
    _written(path, n=2)
    _written(other, n=5, first_seed=10)
    with Trace.open(path) as trace:
        assert len(trace) == 2
        os.replace(other, path)
        assert trace.refresh() == 3
        assert trace.prompt_texts[-1] == "prompt 14" and len(trace[4].token_ids) == 9
