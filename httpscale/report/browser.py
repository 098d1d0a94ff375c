"""PNG from a report's HTML: a headless Chromium screenshot of the page as a browser shows it.

No image library is needed, and the PNG is exactly what a person opening the HTML sees. The
browser is found as `$HTTPSCALE_CHROMIUM`, else `chromium`, `chromium-browser`,
`google-chrome` on PATH; it runs with a throwaway profile, no network activity of its own
(sync, updates, background requests off), and a time limit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["BrowserError", "find_browser", "screenshot"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(Exception):
    """No browser, or it did not produce the screenshot."""


def find_browser() -> str | None:
    explicit = os.environ.get("HTTPSCALE_CHROMIUM")
    if explicit:
        return explicit
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 2000,
               timeout: float = 60.0) -> None:
    """Render `html` (a file) into `png`, `width` x `height` CSS pixels."""
    browser = find_browser()
    if browser is None:
        raise BrowserError(
            "no Chromium found for the PNG (install chromium, or set HTTPSCALE_CHROMIUM); "
            "the HTML output needs none"
        )
    png = png.resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="httpscale-chromium-") as profile:
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
            f"--user-data-dir={profile}", f"--screenshot={png}",
            f"--window-size={width},{height}", html.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"{browser} did not finish within {timeout:g}s") from exc
        except OSError as exc:
            raise BrowserError(f"cannot run {browser}: {exc}") from exc
    if done.returncode != 0 or not png.is_file():
        tail = done.stderr.decode("utf-8", "replace")[-1500:]
        raise BrowserError(f"{browser} exited {done.returncode} without {png}: {tail}")
