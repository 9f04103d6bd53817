"""Open a page in headless Chromium (Debian's package, which .ci/run installs) as a person would."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.prerequisites import require

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium() -> str:
    """The chromium binary; a failure in CI (which must have it), a skip elsewhere."""
    path = shutil.which("chromium")
    require(path is not None, "chromium is not installed: apt-get install chromium (.ci/run installs it)")
    return path


@dataclass
class Visit:
    dom: str  # the page's DOM after loading
    console: list[str]  # every console message the page produced
    screenshot: Path


def visit(page: Path, screenshot: Path, width: int = 1280, height: int = 2400) -> Visit:
    """Load ``page`` (a local file), dump its DOM and take a screenshot; collect console errors."""
    binary = chromium()
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        common = [binary, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    with tempfile.TemporaryDirectory() as profile:
        shot = subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             f"--window-size={width},{height}", f"--screenshot={screenshot}", url],
            capture_output=True, text=True, timeout=120,
        )
    assert dom.returncode == 0 and shot.returncode == 0, (dom.stderr[-2000:], shot.stderr[-2000:])
    # Chromium logs each console message, errors and uncaught exceptions included, as
    # `[...:INFO:CONSOLE:1] "text", source: url (1)`, whatever its level.
    console = [line for line in (dom.stderr + shot.stderr).splitlines() if re.search(r":CONSOLE(:|\()", line)]
    return Visit(dom.stdout, console, screenshot)


def external_resources(dom: str) -> list[str]:
    """Every src/href in the DOM that is not inline (data:) or a link within the page (#...)."""
    return [url for url in re.findall(r'(?:src|href)="([^"]*)"', dom) if not url.startswith(("data:", "#"))]


# Appended to a copy of the page: once every image has loaded, the decoded size of each goes into the DOM.
_SIZES_SCRIPT = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "natural-sizes";
  out.textContent = JSON.stringify([...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight]));
  document.body.appendChild(out);
});
</script>"""


def rendered_images(page: Path, scratch: Path) -> list[tuple[str, int, int]]:
    """``(alt, naturalWidth, naturalHeight)`` of every image of ``page`` as Chromium decoded it (0 x 0: broken)."""
    probe = scratch / f"{page.stem}.probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _SIZES_SCRIPT + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="natural-sizes">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the page never finished loading"
    return [tuple(entry) for entry in json.loads(html.unescape(found.group(1)))]
