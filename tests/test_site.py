"""The course site (reprolib/site): it builds offline from the repository, and in a real browser
(headless Chromium) every page's images load, no raw TeX is left after MathJax, MathJax reports no
error, nothing is fetched from the network, and every internal link resolves. Screenshots of the
landing page and of one notebook page are kept under build/screenshots/."""
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("REPRO_REQUIRE_BROWSER") == "1"   # .ci/run sets it: CI may not skip this test


def _need(module):
    try:
        return __import__(module)
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip(f"{module} not installed (pip install -e '.[site]')")


@pytest.fixture(scope="module")
def site():
    _need("sphinx")
    _need("myst_nb")
    from reprolib.site import build
    t = time.perf_counter()
    out = build(ROOT, ROOT / "build" / "site", ROOT / "build" / "site-src")
    print(f"make site: {time.perf_counter() - t:.1f} s")
    return out


@pytest.fixture(scope="module")
def browser():
    _need("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not chrome or not driver_path:
        if REQUIRED:
            pytest.fail("headless Chromium is required: apt-get install chromium chromium-driver")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|(?<![\w$])\$[^$\s][^$\n]{0,200}?\$(?![\w$])")

PAGE_REPORT = """
const done = arguments[arguments.length - 1];
const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) ? MathJax.startup.promise : Promise.resolve();
ready.then(() => {
  const main = document.querySelector('main') || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight, textarea').forEach(e => e.remove());
  done({
    broken: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    n_images: document.images.length,
    text: clone.innerText,
    mathjax_errors: document.querySelectorAll('mjx-merror').length,
    n_math: document.querySelectorAll('mjx-container').length,
    links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
    external: performance.getEntriesByType('resource').map(e => e.name).filter(n => /^https?:/.test(n)),
  });
}).catch(e => done({error: String(e)}));
"""


def pages(site):
    first = [site / "index.html", site / "syllabus.html"]
    rest = sorted(p for p in site.glob("themes/*.html")) + sorted(site.glob("notebooks/*/*.html"))
    return first + rest


def test_site_pages_in_a_browser(site, browser):
    shots = ROOT / "build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    all_pages = pages(site)
    notebooks = [p for p in all_pages if "notebooks" in p.parts]
    assert len(notebooks) == len(list(ROOT.glob("notebooks/*/*.ipynb"))), "a notebook has no page"
    problems, total_math = [], 0
    ran = [p for p in notebooks if (ROOT / "figures" / p.stem / "results.json").exists()]
    shown = (ran or notebooks)[0]   # the screenshot shows a notebook page with a committed run
    for page in all_pages:
        browser.get(page.as_uri())
        rep = browser.execute_async_script(PAGE_REPORT)
        name = page.relative_to(site).as_posix()
        assert "error" not in rep, f"{name}: {rep.get('error')}"
        if rep["broken"]:
            problems.append(f"{name}: images that did not load: {rep['broken'][:3]}")
        raw = TEX.findall(rep["text"])
        if raw:
            problems.append(f"{name}: raw TeX left: {raw[:3]}")
        if rep["mathjax_errors"]:
            problems.append(f"{name}: {rep['mathjax_errors']} MathJax errors")
        if rep["external"]:
            problems.append(f"{name}: fetched from the network: {rep['external'][:3]}")
        total_math += rep["n_math"]
        for href in rep["links"]:
            url = urlparse(href)
            if url.scheme in ("http", "https", "mailto") or href.startswith("#") or url.scheme == "javascript":
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if url.scheme == "file":
                target = Path(unquote(url.path))
            if not target.exists():
                problems.append(f"{name}: broken link {href}")
        if name == "index.html":
            assert rep["n_images"] >= 1, "the landing page shows no figure thumbnails"
            browser.save_screenshot(str(shots / "landing.png"))
        if page == shown:
            browser.save_screenshot(str(shots / "notebook.png"))
    assert not problems, "\n".join(problems[:30])
    assert total_math > 0, "no formula was typeset anywhere: MathJax did not run"


def test_site_is_generated_from_the_results(site):
    index = (site / "index.html").read_text()
    syllabus = (site / "syllabus.html").read_text()
    for nb in ROOT.glob("notebooks/*/*.ipynb"):
        assert f"{nb.stem}.html" in index, f"{nb.stem} missing from the landing page"
        assert f"{nb.stem}.html" in syllabus, f"{nb.stem} missing from the syllabus"
        page = (site / "notebooks" / nb.parent.name / f"{nb.stem}.html").read_text()
        text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
        assert "At a glance" in text and f"make figures NB={nb.stem}" in text, f"{nb.stem}: no at-a-glance box"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists(), "MathJax must be a local copy"
