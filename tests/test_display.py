"""The HTML view's data and pages: what the browser decodes equals the trace, sizes stay bounded, bad input is one line.

The browser itself is exercised in test_display_browser.py.
"""

from __future__ import annotations

import base64
import json
import pickle
import re
import time

import numpy as np
import pytest

from entropylens_hf.cli import main
from entropylens_hf.display import CELL_BUDGET, DEFAULT_SEQUENCES, view
from entropylens_hf.display.payload import sequence_payload
from entropylens_hf.trace import SequenceRecord, Trace, TraceMetadata, TraceWriter


@pytest.fixture(scope="module")
def recorded(tiny_model_dir, tmp_path_factory):
    """A real recording of the tiny Llama with sub-layer rows (KL to final recorded)."""
    folder = tmp_path_factory.mktemp("display")
    prompts = folder / "prompts.txt"
    prompts.write_text("the quick brown\nimport os\ndef main():\n")
    out = folder / "t.h5"
    assert main(["record", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "6",
                 "--device", "cpu", "--quiet", "--sublayers", "--top-k", "6"]) == 0
    return out


def _array(block, dtype):
    return np.frombuffer(base64.b64decode(block), dtype=dtype)


def _page_data(html: str) -> dict:
    block = re.search(r'<script type="application/json" class="elens-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(block.replace("<\\/", "</"))


def test_the_view_data_decodes_to_the_trace_values_and_token_texts(recorded):
    with Trace.open(recorded) as trace:
        record = trace[1]
        p = sequence_payload(record, trace.metadata, trace.token_text, top_k=3)
        rows, layers = record.entropy.shape
        assert (p["rows"], p["layers"], p["topK"]) == (rows, layers, 3)
        assert p["layerNames"] == list(trace.metadata.layer_names) and "attn" in p["layerKinds"]
        np.testing.assert_array_equal(_array(p["entropy"], "<f4").reshape(rows, layers), record.entropy)
        np.testing.assert_array_equal(_array(p["targetProb"], "<f4").reshape(rows, layers), record.target_prob)
        np.testing.assert_array_equal(_array(p["targetRank"], "<i4").reshape(rows, layers), record.target_rank)
        np.testing.assert_array_equal(_array(p["kl"], "<f4").reshape(rows, layers), record.kl_final)
        local = _array(p["topkIds"]["data"], "<" + p["topkIds"]["dtype"]).reshape(rows, layers, 3)
        texts = [[[p["table"][i] for i in cell] for cell in row] for row in local]
        assert texts == [[[trace.token_text(int(t)) for t in cell[:3]] for cell in row] for row in record.topk_ids]
        probs = _array(p["topkProbs"], "<u2").reshape(rows, layers, 3) / p["probScale"]
        np.testing.assert_allclose(probs, record.topk_probs[:, :, :3], atol=1 / p["probScale"])
        targets = _array(p["target"]["data"], "<" + p["target"]["dtype"])
        assert [p["table"][i] for i in targets] == [trace.token_text(int(t)) for t in record.target_ids]
        assert p["tokens"] == list(record.token_texts) and p["firstTarget"] == record.first_target


def test_a_trace_displays_in_a_notebook_with_its_sequences_and_a_text_fallback(recorded):
    with Trace.open(recorded) as trace:
        html = trace._repr_html_()
        assert "entropylens trace t.h5" in html.split('class="elens-fallback">')[1].split("</pre>")[0]
        data = _page_data(html)
        assert [s["index"] for s in data["sequences"]] == [0, 1, 2]
        assert data["summary"]["sequences"] == 3 and data["summary"]["sublayers"]
        assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # no CDN
        one = _page_data(trace[2]._repr_html_())  # a sequence alone keeps its trace's names
        assert one["sequences"][0]["layerNames"] == list(trace.metadata.layer_names)
        assert one["sequences"][0]["table"] == _page_data(html)["sequences"][2]["table"]
        assert repr(trace).startswith(f"<Trace {recorded}: 3 sequences")


def test_a_sequence_pickles_without_its_open_trace(recorded):
    with Trace.open(recorded) as trace:
        record = trace[0]
        copy = pickle.loads(pickle.dumps(record))
    assert record.source is not None and copy.source is None
    np.testing.assert_array_equal(copy.entropy, record.entropy)


def test_token_text_cannot_end_the_script_block(recorded):
    with Trace.open(recorded) as trace:
        record = trace[0]
    texts = ("</script><script>alert(1)</script>", *record.token_texts[1:])
    html = view(SequenceRecord(**{**record.__dict__, "token_texts": texts, "source": None}))._repr_html_()
    assert "</script><script>alert(1)" not in html
    assert _page_data(html)["sequences"][0]["tokens"][0] == texts[0]


def _synthetic_trace(path, n_sequences, rows, layers, top_k):
    names = ("embeddings", *(f"layer {i}" for i in range(1, layers)))
    meta = TraceMetadata(model_name="synthetic", num_layers=layers, layer_names=names, vocab_size=150_000, top_k=top_k)
    rng = np.random.default_rng(0)
    with TraceWriter(path, meta, vocabulary=[f"t{i}" for i in range(1000)]) as w:
        w.begin_run({})
        batch = []
        for s in range(n_sequences):
            n = rows
            batch.append(SequenceRecord(
                token_ids=rng.integers(0, 1000, n + 1), token_texts=tuple(f" w{i}" for i in range(n + 1)), prompt_length=1,
                entropy=rng.random((n, layers), dtype=np.float32) * 8, topk_ids=rng.integers(0, 1000, (n, layers, top_k)),  # texts as in the vocabulary
                topk_probs=rng.random((n, layers, top_k), dtype=np.float32) / top_k,
                target_prob=rng.random((n, layers), dtype=np.float32), target_rank=rng.integers(0, 150_000, (n, layers)),
                output_entropy=np.zeros(n, np.float32), renyi=np.zeros((n, 0, layers), np.float32), key=f"s{s}",
            ))
            if len(batch) == 500:
                w.write(batch)
                batch = []
        if batch:
            w.write(batch)


def test_a_trace_of_ten_thousand_sequences_displays_without_reading_them(tmp_path, monkeypatch):
    path = tmp_path / "many.h5"
    _synthetic_trace(path, 10_000, rows=4, layers=6, top_k=2)
    read = []
    original = Trace.__getitem__
    monkeypatch.setattr(Trace, "__getitem__", lambda self, i: read.append(i) or original(self, i))
    with Trace.open(path) as trace:
        data = _page_data(trace._repr_html_())
    assert read == list(range(DEFAULT_SEQUENCES))
    summary = data["summary"]
    assert summary["sequences"] == 10_000 and summary["profileRows"] == 400
    assert summary["profileStarts"][:2] == [0, 25] and len(summary["profileStarts"]) == 400


def test_a_500_token_sequence_of_a_30_layer_model_costs_under_a_megabyte(tmp_path):
    path = tmp_path / "long.h5"
    _synthetic_trace(path, 1, rows=500, layers=31, top_k=10)
    with Trace.open(path) as trace:
        size = len(view(trace).html().encode())  # top-5 on hover, the default
        assert 500_000 < size < 1_000_000, size
        default = view(trace)
    assert len(default.data["sequences"]) == 1 and 500 * 31 < CELL_BUDGET


def test_html_writes_one_page_and_refuses_bad_input_with_one_line(recorded, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["html", str(recorded), "--sequences", "0,2", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    data = _page_data(out.read_text(encoding="utf-8"))
    assert [s["index"] for s in data["sequences"]] == [0, 2] and data["sequences"][0]["topK"] == 5
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    for argv, message in (
        ([str(tmp_path / "missing.h5")], "no such trace file"),
        ([str(recorded), "--sequences", "0,7"], "sequence 7 out of range (3 sequences)"),
        ([str(recorded), "--sequences", "1-x"], "is not an index or a range like 5-9"),
        ([str(recorded), "--out", str(tmp_path / "no" / "p.html")], "does not exist"),
        ([str(recorded), "--top-k", "0"], "at least 1 prediction"),
    ):
        before = out.stat().st_mtime_ns
        assert main(["html", *argv, *(["--out", str(out)] if "--out" not in argv else [])]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert out.stat().st_mtime_ns == before  # the page already written is left alone


def test_a_run_folder_of_shards_displays_as_one_trace(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    _synthetic_trace(folder / "rank0.h5", 3, rows=5, layers=4, top_k=2)
    _synthetic_trace(folder / "rank1.h5", 2, rows=5, layers=4, top_k=2)
    with Trace.open(folder) as run:
        data = _page_data(run._repr_html_())
        assert data["summary"]["sequences"] == 5 and data["summary"]["name"] == "run"
        assert [s["index"] for s in data["sequences"]] == [0, 1, 2, 3, 4]
        assert repr(run).startswith(f"<ShardedTrace {folder}: 5 sequences in 2 shards")
        assert _page_data(run[4]._repr_html_())["sequences"][0]["layerNames"] == list(run.metadata.layer_names)
