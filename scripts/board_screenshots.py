#!/usr/bin/env python
"""Screenshots of the VisualDL board's main pages, rendered by headless Chromium (Debian's package).

Starts `mnist-kit board` on LOGDIR (default: checkpoints) and saves one PNG per page into OUT
(default: docs/board). Install the browser first: apt-get install chromium.

    .venv/bin/python scripts/board_screenshots.py [--logdir checkpoints] [--out docs/board]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from mnist_kit import logbook

PAGES = {
    "scalar": "/app/scalar",
    "image": "/app/sample/image",
    "histogram": "/app/histogram",
    "pr-curve": "/app/pr-curve",
    "roc-curve": "/app/roc-curve",
    "hyper-parameter": "/app/hyper-parameter",
    "embeddings": "/app/high-dimensional",
    "text": "/app/sample/text",
    "static-graph": "/app/graph/static_graph",
    "dynamic-graph": "/app/graph/dynamic_graph",
}


def shoot(browser: str, url: str, out: Path) -> bool:
    profile = tempfile.mkdtemp(prefix="chromium-")
    argv = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1400,1000",
            "--virtual-time-budget=15000", f"--screenshot={out}", url]
    try:
        for _ in range(2):  # about one screenshot in 20 hangs: retry once
            try:
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90)
                if out.is_file():
                    return True
            except subprocess.TimeoutExpired:
                pass
        return False
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logdir", type=Path, default=Path("checkpoints"))
    ap.add_argument("--out", type=Path, default=Path("docs/board"))
    args = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise SystemExit("Chromium is not installed: apt-get install chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = logbook.serve(args.logdir, port=port, wait=False)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for name, path in PAGES.items():
            target = args.out / f"{name}.png"
            ok = shoot(browser, f"http://127.0.0.1:{port}{path}", target)
            print(f"{name:16} {'saved ' + str(target) if ok else 'FAILED'}")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
