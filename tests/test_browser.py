"""The notebooks as a student sees them: JupyterLab in a real (headless) Chromium.

For each notebook, with its classroom defaults: open it in JupyterLab, *Run All*, wait
(bounded) until every code cell has run, save, check that no cell holds an error, move one
widget of each notebook that has one and check that the widget's figure changes (in notebook 01
also click once on the marker editor's image and press Save: one marker fewer or more is
written), and save a screenshot under ``runs/browser/`` (or ``$CELLNB_BROWSER_OUT``). Then the course site is built
from those executed notebooks (as ``make book`` does from ``make demo``'s), and its landing page
and one notebook page are opened and their figures checked.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium
(test extra); skipped cleanly without them. JupyterLab listens on 127.0.0.1 with a random token
and is stopped in every case (process group terminated, then killed after a bounded wait).
Run with ``make test-browser``.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
OUT = Path(os.environ.get("CELLNB_BROWSER_OUT", ROOT / "runs" / "browser"))
NOTEBOOKS = ["01_markers", "02_synthetic_nuclei", "03_mask", "04_train", "05_integrate",
             "06_evaluate"]
# a widget control to move per notebook: (CSS selector of the control, how to move it)
WIDGETS = {"01_markers": "slider", "03_mask": "slider", "04_train": "slider",
           "05_integrate": "slider", "06_evaluate": "slider"}
RUN_LIMIT_S = 420          # one notebook's Run All (02 and 04 train for about 2.5 min)

selenium = pytest.importorskip("selenium")
if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
    pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of the notebooks beside the bundled data, so runs never touch the checkout."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "data").symlink_to(ROOT / "data")
    return root


@pytest.fixture(scope="module")
def lab(workdir):
    """JupyterLab on 127.0.0.1 with a token; always stopped."""
    port, token = _free_port(), secrets.token_hex(16)
    log = open(workdir / "jupyterlab.log", "w")
    # a clean JupyterLab: no workspace or settings left by an earlier session
    env = dict(os.environ, JUPYTERLAB_WORKSPACES_DIR=str(workdir / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(workdir / "settings"))
    env.pop("MPLBACKEND", None)      # conftest's Agg: kernels here draw inline, as for a student
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={workdir / 'notebooks'}", "--ServerApp.open_browser=False",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate"] + (["--allow-root"] if os.geteuid() == 0 else []),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        import urllib.request
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start: "
                                       + (workdir / "jupyterlab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url, token
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        log.close()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1400,1000"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _wait(fn, limit: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(every)
    raise AssertionError(f"timed out after {limit:.0f} s: {what}")


def _command(drv, menu: str, command: str):
    """Open a top menu by its label and click one of its commands (Lumino menus)."""
    for item in drv.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel"):
        if item.text.strip() == menu:
            item.click()
            break
    else:
        raise AssertionError(f"no menu {menu!r}")
    _wait(lambda: drv.find_elements(By.CSS_SELECTOR, f'li[data-command="{command}"]'), 10,
          command)[0].click()


def _kernel_idle(drv) -> bool:
    status = drv.find_elements(By.CSS_SELECTOR, ".jp-StatusBar-Widget")
    return any("| Idle" in w.text for w in status)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):         # caught while JupyterLab writes it
        return None


def _saved(drv, path: Path) -> dict:
    """Save the notebook (File > Save) and read what JupyterLab wrote, once complete."""
    before = path.stat().st_mtime_ns
    _command(drv, "File", "docmanager:save")
    return _wait(lambda: path.stat().st_mtime_ns != before and _load(path), 30,
                 f"{path.name} to be saved")


def _run_all(drv, path: Path, limit: float) -> dict:
    """Run All, then wait until the kernel is idle and the saved file shows every cell run.

    Cells are checked in the saved notebook, not on screen: JupyterLab does not keep
    off-screen cells in the page.
    """
    _command(drv, "Run", "runmenu:run-all")
    deadline = time.monotonic() + limit
    time.sleep(3)
    while time.monotonic() < deadline:
        if _kernel_idle(drv):
            nb = _saved(drv, path)
            code = [c for c in nb["cells"] if c["cell_type"] == "code"]
            errors = [o for c in code for o in c.get("outputs", [])
                      if o.get("output_type") == "error"]
            if errors or all(c.get("execution_count") for c in code):
                return nb
        time.sleep(1)
    raise AssertionError(f"timed out after {limit:.0f} s: {path.name}: every cell to run")


def _figures(widget) -> list[str]:
    """The images a widget's output area shows (their data URLs): what a student sees."""
    return [i.get_attribute("src")[-400:] for i in widget.find_elements(By.TAG_NAME, "img")]


def _widget(drv, css: str, what: str):
    """The first widget matching `css` in the open notebook, scrolled into view."""
    shown = ".jp-NotebookPanel:not(.lm-mod-hidden)"       # the open tab, not earlier ones

    def find():
        # the widgets sit near the end; JupyterLab only renders the cells in view
        drv.execute_script(f"document.querySelectorAll('{shown} .jp-WindowedPanel-outer')"
                           ".forEach(e => e.scrollTop = e.scrollHeight);")
        return drv.find_elements(By.CSS_SELECTOR, f"{shown} {css}")

    box = _wait(find, 60, what)[0]
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    return box


def _move_widget(drv, kind: str):
    """Move the first control of the first interactive widget; return (before, after) figures."""
    box = _widget(drv, ".widget-interact", "an interactive widget")
    try:
        before = _wait(lambda: _figures(box), 60, "the widget's first figure")
    except AssertionError:
        print(box.get_attribute("innerHTML")[:3000])
        raise
    sel = box.find_elements(By.CSS_SELECTOR, "select")
    handle = box.find_elements(By.CSS_SELECTOR, ".noUi-handle")
    if handle:
        handle[0].click()
        for _ in range(4):
            handle[0].send_keys(Keys.ARROW_RIGHT)
    elif sel:
        s = Select(sel[0])
        s.select_by_index((s.options.index(s.first_selected_option) + 1) % len(s.options))
    else:
        raise AssertionError("the widget has no slider or drop-down")
    after = _wait(lambda: (f := _figures(box)) and f != before and f, 120,
                  "the widget's figure to change")
    return before, after


def _edit_markers(drv, saved: Path) -> tuple[int, int]:
    """Click once on notebook 01's marker editor, press Save; return (markers before, saved)."""
    import re
    from selenium.webdriver.common.action_chains import ActionChains
    box = _widget(drv, ".cellnb-marker-editor", "the marker editor")
    status = _wait(lambda: re.search(r"(\d+) markers", box.text), 60, "the editor's status")
    before = int(status.group(1))
    img = box.find_element(By.TAG_NAME, "img")
    ActionChains(drv).move_to_element_with_offset(img, 7, -9).click().perform()
    _wait(lambda: "(1 click)" in box.text, 60, "the click to delete or add a marker")
    next(b for b in box.find_elements(By.TAG_NAME, "button") if b.text == "Save").click()
    _wait(lambda: "saved" in box.text and saved.exists(), 60, "the corrected markers saved")
    return before, len(saved.read_text().strip().splitlines()) - 1      # less the header


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(lab, browser, workdir, name):
    url, token = lab
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # ?reset: a fresh workspace, only this notebook open (Run All acts on the current one)
    browser.get(f"{url}/lab/tree/{name}.ipynb?reset&token={token}")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell"), 90,
          "the notebook to open")
    _wait(lambda: _kernel_idle(browser), 90, "the kernel to start")
    browser.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) "
                                           ".jp-Cell")[0].click()     # focus this notebook
    try:
        nb = _run_all(browser, workdir / "notebooks" / f"{name}.ipynb", RUN_LIMIT_S)
    finally:
        browser.save_screenshot(str(OUT / f"{name}.png"))
    errors = [o for c in nb["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, [f"{e['ename']}: {e['evalue']}" for e in errors]
    if name in WIDGETS:
        before, after = _move_widget(browser, WIDGETS[name])
        assert before != after
        _wait(lambda: _kernel_idle(browser), 120, "the kernel to settle")   # last redraw shown
        time.sleep(1)
        browser.save_screenshot(str(OUT / f"{name}_widget_moved.png"))
    if name == "01_markers":        # the marker editor: one click, then Save
        saved = workdir / "runs" / "interactive" / "markers" / "set1__corrected.csv"
        before, after = _edit_markers(browser, saved)
        assert abs(after - before) == 1, (before, after)
        browser.save_screenshot(str(OUT / f"{name}_marker_edited.png"))
    print(f"{name}: {time.monotonic() - t0:.0f} s in JupyterLab")


def test_course_site_pages_show_their_figures(browser, workdir):
    """The site `make book` builds, here from the notebooks just run in JupyterLab."""
    from cellnb.book import build_book
    nbs = workdir / "notebooks"
    ran = [n for n in NOTEBOOKS
           if any(c.get("execution_count") for c in (_load(nbs / f"{n}.ipynb") or {})
                  .get("cells", []))]
    if ran != NOTEBOOKS:
        pytest.skip(f"the site needs every notebook run in JupyterLab first (ran: {ran})")
    site = workdir / "site"
    build_book(nbs, site)
    OUT.mkdir(parents=True, exist_ok=True)
    browser.get((site / "index.html").as_uri())
    links = browser.find_elements(By.CSS_SELECTOR, "a[href$='.html']")
    assert len(links) >= 6, "the landing page links every notebook"
    browser.save_screenshot(str(OUT / "site_index.png"))
    page = links[3].get_attribute("href")          # 04_train
    browser.get(page)
    imgs = _wait(lambda: browser.find_elements(By.TAG_NAME, "img"), 30, "figures")
    loaded = browser.execute_script(
        "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0)"
        ".length")
    assert loaded == len(imgs) and loaded >= 2, (loaded, len(imgs))
    browser.save_screenshot(str(OUT / "site_page.png"))
