"""``report.html`` rendered in a real browser (headless Chromium): every image decodes, nothing is
wider than the window, and a screenshot of it is a real picture.

No Python browser driver: a small script injected into a copy of the report measures the rendered
page on ``load`` and writes its findings as JSON into the DOM, which ``--dump-dom`` prints. Without
Chromium the tests skip, unless ``CHAOSFM_REQUIRE_BROWSER=1`` (CI), where they fail.
"""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

WIDTH, HEIGHT = 1280, 2000

CHECK = """<script>
// The load event waits for every image: by then each has loaded or failed.
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const images = [...document.images].map((img) => ({
    alt: img.alt, ok: img.complete && img.naturalWidth > 0 && img.naturalHeight > 0,
    width: img.naturalWidth, height: img.naturalHeight}));
  const wide = [...document.querySelectorAll("section, table, img")]
    .map((el) => ({tag: el.tagName.toLowerCase(), name: el.id || el.alt || el.textContent.slice(0, 40),
                   right: el.getBoundingClientRect().right}))
    .filter((box) => box.right > width);
  // A table too wide for the page scrolls inside itself (CSS): count that as too wide as well.
  const scrolled = [...document.querySelectorAll("table")]
    .filter((table) => table.scrollWidth > table.clientWidth)
    .map((table) => table.textContent.slice(0, 40));
  const found = {clientWidth: width, scrollWidth: document.documentElement.scrollWidth, images, wide, scrolled,
                 sections: document.querySelectorAll("section").length,
                 tables: document.querySelectorAll("table").length};
  const out = document.createElement("pre");
  out.id = "chaosfm-check";
  out.hidden = true;
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""

FOUND = re.compile(r'<pre id="chaosfm-check" hidden="">(.*?)</pre>', re.DOTALL)


@pytest.fixture
def browser() -> str:
    """The Chromium executable; skips (or fails with ``CHAOSFM_REQUIRE_BROWSER=1``) without one,
    before the report is built."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CHAOSFM_REQUIRE_BROWSER") == "1":
        pytest.fail("CHAOSFM_REQUIRE_BROWSER=1 and no chromium on PATH: install it (apt-get install -y chromium)")
    pytest.skip("no chromium on PATH, so the report is not rendered (apt-get install -y chromium; "
                "CHAOSFM_REQUIRE_BROWSER=1 makes this a failure)")


def _headless(browser: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", f"--window-size={WIDTH},{HEIGHT}",
               *extra, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


def render(browser: str, report: Path, folder: Path, inject: str = "") -> dict:
    """What the injected script measured on a copy of ``report`` (with ``inject`` before ``</body>``)."""
    page = folder / "page.html"
    page.write_text(report.read_text().replace("</body>", f"{inject}{CHECK}</body>", 1))
    dom = _headless(browser, page, folder / "profile", "--dump-dom").stdout
    match = FOUND.search(dom)
    assert match, f"the check script wrote nothing; the page's DOM begins: {dom[:300]!r}"
    return json.loads(html.unescape(match.group(1)))


def problems(found: dict) -> list[str]:
    """Each image that did not decode and each element wider than the window, as sentences."""
    out = [f"image {image['alt']!r} did not load" for image in found["images"] if not image["ok"]]
    out += [f"{box['tag']} {box['name']!r} ends at x={box['right']:.0f}, past the window's {found['clientWidth']}"
            for box in found["wide"]]
    out += [f"table {name!r} scrolls sideways inside itself" for name in found["scrolled"]]
    if found["scrollWidth"] > found["clientWidth"]:
        out.append(f"the page scrolls sideways: {found['scrollWidth']} > {found['clientWidth']}")
    return out


def test_the_report_renders_every_image_within_the_window(browser, evaluated, tmp_path):
    report = evaluated[0] / "report.html"
    found = render(browser, report, tmp_path)
    assert problems(found) == []
    document = report.read_text()
    assert len(found["images"]) == document.count("<img ") >= 5  # data, two fan charts, calibration, over time
    assert all(image["width"] > 200 and image["height"] > 100 for image in found["images"])
    assert found["sections"] == document.count("<section ") and found["tables"] == document.count("<table>")


def test_the_check_reports_a_broken_image_and_overwide_tables(browser, evaluated, tmp_path):
    broken = ('<img alt="broken" src="data:image/png;base64,AAAA">'
              '<table style="display:table;width:3000px;max-width:none"><tr><td>wide</td></tr></table>'
              '<table><tr><td style="min-width:3000px">scrolled</td></tr></table>')
    found = render(browser, evaluated[0] / "report.html", tmp_path, inject=broken)
    reported = problems(found)
    assert "image 'broken' did not load" in reported
    assert any(line.startswith("table 'wide' ends at") for line in reported), reported
    assert "table 'scrolled' scrolls sideways inside itself" in reported
    assert any(line.startswith("the page scrolls sideways") for line in reported), reported


def test_a_screenshot_of_the_report_is_a_real_picture(browser, evaluated, tmp_path):
    from PIL import Image  # matplotlib's own dependency

    shot = tmp_path / "report.png"
    _headless(browser, evaluated[0] / "report.html", tmp_path / "profile", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 5  # text and plots, not a blank page
