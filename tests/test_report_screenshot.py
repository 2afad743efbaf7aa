"""The HTML report renders in headless Chromium: a real screenshot of the right size that is not blank."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from forethought.report.html import BLUE, write_report
from test_report import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y --no-install-recommends chromium)"
)


def screenshot(html, png, tmp_path, size=(1200, 2000)) -> Image.Image:
    """Render `html` with headless Chromium, no network, and return the screenshot."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={png}",
           f"--window-size={size[0]},{size[1]}", html.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    return Image.open(png).convert("RGB")


def test_report_screenshot_is_rendered(tmp_path):
    html = write_report(make_run(tmp_path / "run"))
    img = screenshot(html, tmp_path / "report.png", tmp_path)
    assert img.size == (1200, 2000)
    pixels = np.asarray(img).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels, axis=0)) > 200, "screenshot looks blank: too few distinct colours"
    assert (pixels.min(axis=1) < 235).mean() > 0.05, "screenshot looks blank: almost every pixel is white"
    blue = np.array([int(BLUE[i:i + 2], 16) for i in (1, 3, 5)])
    near_blue = (np.abs(pixels - blue).max(axis=1) <= 12).sum()
    assert near_blue > 5000, "the embedded plots did not render (too few pixels of the plot colour)"
