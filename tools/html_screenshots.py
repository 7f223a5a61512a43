#!/usr/bin/env python3
"""Screenshots of the HTML view for the README: a real JupyterLab cell, and the static page.

Needs what the tests do not: ``pip install jupyterlab selenium`` and Debian's chromium and
chromium-driver. Starts JupyterLab on a free port in a temporary folder holding a copy of the
trace, runs one cell (``trace``) with the keyboard like a user, hovers a heatmap cell, and saves
``notebook.png``; then writes ``entropylens html`` of the same trace and saves ``html_page.png``.

Usage: ``python tools/html_screenshots.py TRACE.h5 --out docs/images [--cell ROW,LAYER]``
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def mounted(driver) -> bool:
    return driver.execute_script("var r = document.querySelector('.elens'); return !!r && r.dataset.mounted === '1'")


def hover(driver, row: int, layer: int) -> None:
    canvas = driver.find_element("css selector", "canvas.elens-heatmap")
    cw, ch = int(canvas.get_attribute("data-cell-width")), int(canvas.get_attribute("data-cell-height"))
    layers = int(canvas.get_attribute("data-layers"))
    left, top = driver.execute_script("var b = arguments[0].getBoundingClientRect(); return [b.left, b.top]", canvas)
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(left + row * cw + cw // 2),
                                                        int(top + (layers - 1 - layer) * ch + ch // 2))
    actions.perform()
    time.sleep(0.3)


def severe(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def notebook_shot(trace: Path, out: Path, cell: tuple[int, int]) -> None:
    import nbformat

    folder = Path(tempfile.mkdtemp())
    shutil.copy(trace, folder / trace.name)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f'from entropylens_hf import Trace\ntrace = Trace.open("{trace.name}")\ntrace')])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "look.ipynb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--allow-root",
                            "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={folder}",
                            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = browser(1300, 1100)
    try:
        for _ in range(60):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        driver.get(f"http://127.0.0.1:{port}/lab/tree/look.ipynb")
        WebDriverWait(driver, 90).until(lambda d: d.find_elements("css selector", ".jp-Cell .cm-content"))
        WebDriverWait(driver, 90).until(lambda d: "Idle" in d.find_element("css selector", ".jp-StatusBar-Widget").text
                                        or "Idle" in d.find_element("tag name", "body").text)
        driver.find_element("css selector", ".jp-Cell .cm-content").click()
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
        WebDriverWait(driver, 120).until(mounted)
        driver.execute_script("document.querySelectorAll('.Toastify').forEach(e => e.remove());"
                              "document.querySelector('.elens-head').scrollIntoView({block: 'start'})")
        hover(driver, *cell)
        problems = severe(driver)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
        lab.terminate()
        lab.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {out}" + (f"; browser errors: {problems}" if problems else ""))


def page_shot(trace: Path, out: Path, cell: tuple[int, int]) -> None:
    page = out.with_suffix(".html")
    subprocess.run([sys.executable, "-m", "entropylens_hf", "html", str(trace), "--out", str(page)], check=True)
    driver = browser(1100, 1250)
    try:
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 30).until(mounted)
        hover(driver, *cell)
        problems = severe(driver)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
        page.unlink()
    print(f"wrote {out}" + (f"; browser errors: {problems}" if problems else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--page-trace", type=Path, default=None, help="another trace for the static page")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--cell", default="8,24", help="ROW,LAYER of the heatmap cell to hover")
    args = parser.parse_args()
    cell = tuple(int(x) for x in args.cell.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    notebook_shot(args.trace, args.out / "notebook.png", cell)
    page_shot(args.page_trace or args.trace, args.out / "html_page.png", cell)


if __name__ == "__main__":
    main()
