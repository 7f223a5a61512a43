"""The HTML view in a real browser (Debian's headless Chromium through Selenium), and in a real notebook kernel.

Skipped, with the reason, where Chromium, ChromeDriver or the Python packages are missing;
`make test` installs them where it can (`apt-get install chromium chromium-driver`).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from entropylens_hf.cli import main
from entropylens_hf.display import view
from entropylens_hf.trace import Trace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="browser tests need selenium: pip install -e '.[dev]'")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="browser tests need Debian's chromium and chromium-driver (apt-get install)")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def recorded(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    prompts = folder / "prompts.txt"
    prompts.write_text("the quick brown\nimport os and\n")
    out = folder / "t.h5"
    assert main(["record", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "8",
                 "--device", "cpu", "--quiet", "--top-k", "5"]) == 0
    return out


def _open(driver, path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "var r = document.querySelector('.elens'); return r && r.dataset.mounted === '1'"))
    return driver.find_element("css selector", ".elens")


def _errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _shown(text):
    return json.dumps(text, ensure_ascii=False)[1:-1]  # how the view prints a token (escapes visible)


def _hover_cell(driver, canvas, row, layer):
    """Move the real mouse pointer over one cell (scrolled into view first) and return the tooltip."""
    from selenium.webdriver.common.action_chains import ActionChains

    cw, ch = int(canvas.get_attribute("data-cell-width")), int(canvas.get_attribute("data-cell-height"))
    layers = int(canvas.get_attribute("data-layers"))
    x, y = row * cw + cw // 2, (layers - 1 - layer) * ch + ch // 2  # embeddings at the bottom
    box = driver.execute_script(
        "var c = arguments[0]; c.parentNode.scrollLeft = Math.max(0, arguments[1] - 300);"
        "c.scrollIntoView({block: 'center'}); var r = c.getBoundingClientRect(); return [r.left, r.top];", canvas, x)
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(box[0] + x), int(box[1] + y))
    actions.perform()
    return driver.find_element("css selector", ".elens-tooltip")


def test_the_page_renders_every_cell_and_a_hover_shows_that_cells_top_prediction(browser, recorded, tmp_path):
    page = tmp_path / "page.html"
    assert main(["html", str(recorded), "--out", str(page)]) == 0
    root = _open(browser, page)
    assert _errors(browser) == []
    with Trace.open(recorded) as trace:
        record = trace[0]
        rows, layers = record.entropy.shape
        canvas = root.find_element("css selector", "canvas.elens-heatmap")
        assert (int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-layers"))) == (rows, layers)
        for row, layer in ((rows - 1, layers - 1), (2, 1), (0, 0)):
            tip = _hover_cell(browser, canvas, row, layer)
            assert tip.is_displayed()
            assert (int(tip.get_attribute("data-row")), int(tip.get_attribute("data-layer"))) == (row, layer)
            first = tip.find_elements("css selector", ".elens-topk tr")[0].find_elements("css selector", "td")
            assert first[1].text == f"“{_shown(trace.token_text(int(record.topk_ids[row, layer, 0])))}”"
            assert f"rank {int(record.target_rank[row, layer]) + 1}," in tip.text
            assert trace.metadata.layer_names[layer] in tip.text
        # The picker opens the second sequence with its own cells.
        browser.execute_script("var p = arguments[0]; p.value = '1'; p.dispatchEvent(new Event('change'));",
                               root.find_element("css selector", "select.elens-picker"))
        assert int(canvas.get_attribute("data-rows")) == trace[1].n_rows
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert _errors(browser) == []


def test_clicking_a_token_draws_its_profile_with_the_largest_expansion_named(browser, recorded, tmp_path):
    with Trace.open(recorded) as trace:
        record = trace[0]
        page = view(trace, sequences=[0]).save(tmp_path / "one.html")
        names = trace.metadata.layer_names
    root = _open(browser, page)
    row = record.n_rows - 3
    root.find_elements("css selector", ".elens-text:not(.elens-replay-text) .elens-token")[
        row - max(0, -record.first_target)].click()
    detail = root.find_element("css selector", ".elens-detail > div")
    assert int(detail.get_attribute("data-row")) == row
    segments = detail.find_elements("css selector", "svg line[stroke='#d62728'], svg line[stroke='#1f77b4']")
    assert len(segments) == record.entropy.shape[1] - 1  # one rise or fall per pair of layers
    rise = np.diff(record.entropy[row].astype(np.float64))
    if rise.max() > 0:
        at = int(rise.argmax()) + 1
        assert f"largest expansion {names[at - 1]} → {names[at]}" in detail.text
    assert _errors(browser) == []


def test_the_slider_replays_the_top_prediction_of_the_chosen_layer(browser, recorded, tmp_path):
    with Trace.open(recorded) as trace:
        record = trace[0]
        page = view(trace, sequences=[0]).save(tmp_path / "one.html")
        layer = 1
        expected = [trace.token_text(int(t)) for t in record.topk_ids[:, layer, 0]]
    root = _open(browser, page)
    slider = root.find_element("css selector", "input.elens-slider")
    browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                           slider, layer)
    spans = root.find_elements("css selector", ".elens-replay-text .elens-token")
    assert [browser.execute_script("return arguments[0].textContent", s) for s in spans] == expected
    hits = int((record.topk_ids[:, layer, 0] == record.target_ids).sum())
    assert f"{hits} of {record.n_rows} tokens already top-1" in root.find_element("css selector", ".elens-slider-label").text


def test_a_2000_token_sequence_of_a_30_layer_model_renders_and_answers_a_hover(browser, tmp_path):
    from test_display import _synthetic_trace

    path = tmp_path / "long.h5"
    _synthetic_trace(path, 1, rows=2000, layers=31, top_k=5)
    page = view(path).save(tmp_path / "long.html")
    root = _open(browser, page)
    canvas = root.find_element("css selector", "canvas.elens-heatmap")
    assert int(canvas.get_attribute("data-rows")) * int(canvas.get_attribute("data-layers")) == 2000 * 31
    tip = _hover_cell(browser, canvas, 1999, 30)
    assert int(tip.get_attribute("data-row")) == 1999
    assert _errors(browser) == []


def test_a_notebook_cell_displays_the_trace_and_its_output_renders_in_the_browser(browser, recorded, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat, nbclient and ipykernel")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbformat, nbclient and ipykernel")
    pytest.importorskip("ipykernel", reason="the notebook test needs nbformat, nbclient and ipykernel")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from entropylens_hf import Trace\n"
                                  f"trace = Trace.open({str(recorded)!r})\ntrace"),
        nbformat.v4.new_code_cell("trace[1]"),
    ])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = [cell.outputs[0]["data"] for cell in notebook.cells]
    assert all("text/html" in o and "text/plain" in o for o in outputs)
    assert outputs[0]["text/plain"].startswith("<Trace ")
    page = tmp_path / "notebook_output.html"
    page.write_text("<!DOCTYPE html><meta charset='utf-8'><body>" + outputs[1]["text/html"] + "</body>", encoding="utf-8")
    root = _open(browser, page)
    with Trace.open(recorded) as trace:
        rows = trace[1].n_rows
    assert int(root.find_element("css selector", "canvas.elens-heatmap").get_attribute("data-rows")) == rows
    assert _errors(browser) == []
