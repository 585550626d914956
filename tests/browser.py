"""Headless Chromium on report pages: screenshots checked for size and non-blank content, and
the width a page lays out to."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_TIMEOUT_S = 120
WIDTH, HEIGHT = 1200, 2000
MIN_COLOURS = 50
MAX_ONE_COLOUR = 0.97


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert Path(CHROMIUM).exists(), (
        "chromium is missing: .ci/run installs it (apt-get install chromium)"
    )
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}", *args,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def laid_out_width(page: Path, profile: Path) -> int:
    """The width in pixels ``page`` lays out to in a window :data:`WIDTH` wide (the
    document's ``scrollWidth``: more than the window means a horizontal scrollbar)."""
    probe = page.with_name(f"{page.stem}.width-probe.html")
    script = (
        "<script>addEventListener('load', () => document.body.setAttribute("
        "'data-width', document.documentElement.scrollWidth));</script>"
    )
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"))
    try:
        dom = _chromium(profile, "--dump-dom", probe.resolve().as_uri()).stdout
    finally:
        probe.unlink()
    found = re.search(r'data-width="(\d+)"', dom)
    assert found, "the page did not report its width"
    return int(found.group(1))


def screenshot(page: Path, shot: Path, profile: Path) -> Path:
    """Open ``page`` in headless Chromium (no network) and save a screenshot to ``shot``.

    Asserts that the screenshot has the window's size and is not (nearly) blank: more than
    ``MIN_COLOURS`` colours, and no colour filling more than ``MAX_ONE_COLOUR`` of it.
    """
    _chromium(profile, f"--screenshot={shot}", page.resolve().as_uri())
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (WIDTH, HEIGHT)
        colours = rgb.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > MIN_COLOURS, "the screenshot is (nearly) blank"
    most = max(count for count, _ in colours)
    assert most < MAX_ONE_COLOUR * WIDTH * HEIGHT, "one colour fills the page"
    return shot
