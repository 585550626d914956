"""Headless Chromium screenshots of report pages, checked for size and non-blank content."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_TIMEOUT_S = 120
WIDTH, HEIGHT = 1200, 2000
MIN_COLOURS = 50
MAX_ONE_COLOUR = 0.97


def screenshot(page: Path, shot: Path, profile: Path) -> Path:
    """Open ``page`` in headless Chromium (no network) and save a screenshot to ``shot``.

    Asserts that the screenshot has the window's size and is not (nearly) blank: more than
    ``MIN_COLOURS`` colours, and no colour filling more than ``MAX_ONE_COLOUR`` of it.
    """
    assert Path(CHROMIUM).exists(), (
        "chromium is missing: .ci/run installs it (apt-get install chromium)"
    )
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", page.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (WIDTH, HEIGHT)
        colours = rgb.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > MIN_COLOURS, "the screenshot is (nearly) blank"
    most = max(count for count, _ in colours)
    assert most < MAX_ONE_COLOUR * WIDTH * HEIGHT, "one colour fills the page"
    return shot
