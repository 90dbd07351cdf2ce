"""Headless Chromium driven over its DevTools protocol, for checks of what a user sees in a browser.

Debian's Chromium (``apt-get install chromium``; ``scripts/setup.sh --test`` installs it where apt-get is
usable) is started with ``--remote-debugging-port`` and a fresh profile, and Playwright's Python client
(the ``test`` extra; no browser download: it attaches to this one over CDP) drives it. Everything waits in
real time: ``--virtual-time-budget`` does not wait for Web Workers (the board's high-dimensional page runs
in one), so it is never used.

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto("http://127.0.0.1:8040/app/scalar")
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from mnist_kit.util.interrupts import stop_child

# As the machine's probe found: without the background-networking flags Chromium keeps trying to reach
# Google's hosts, which a closed network refuses.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--mute-audio", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0"]


def executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str | None:
    """Why a browser check cannot run here (None: it can)."""
    if executable() is None:
        return "Chromium is not installed (apt-get install chromium; scripts/setup.sh --test does it as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python client is not installed (pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def chromium(timeout: float = 30):
    """A Playwright ``Browser`` attached over CDP to a new headless Chromium; Chromium and its profile are
    removed afterwards, however the block ends."""
    from playwright.sync_api import sync_playwright

    reason = missing()
    if reason:
        raise RuntimeError(reason)
    profile = Path(tempfile.mkdtemp(prefix="mnist-kit-chromium-"))
    proc = subprocess.Popen([executable(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.time() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"Chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}", timeout=timeout * 1000)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        stop_child(proc)
        shutil.rmtree(profile, ignore_errors=True)
