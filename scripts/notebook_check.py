#!/usr/bin/env python
"""Look at a tutorial as a reader does: run it in a Jupyter kernel (on the prepared data of $MNIST_KIT_DATA),
keep the kernel (and so its board) alive, turn the notebook into HTML, open it in headless Chromium and
screenshot it, the board's iframe included. Not a test: for looking at the pictures by eye.

    MNIST_KIT_DATA=... .venv/bin/python scripts/notebook_check.py OUT [--notebook docs/tutorial_cn.ipynb]

Writes OUT/tutorial.html, OUT/page-N.png (the page, a window at a time) and OUT/board.png (the board's frame).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import chromium  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--notebook", type=Path, default=REPO / "docs" / "tutorial.ipynb")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(args.out)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and cell.source.strip() != "board.stop()":  # the board stays up to be seen
                client.execute_cell(cell, index)
        html, _ = HTMLExporter().from_notebook_node(nb)
        page_file = args.out / "tutorial.html"
        page_file.write_text(html)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1300, "height": 1100})
            # the page's CDN scripts and fonts cannot load on a closed network: refuse them at once instead of
            # letting them hang (the notebook's own outputs are in the file; the board answers on 127.0.0.1)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
                ("file:", "data:", "blob:", "http://127.0.0.1")) else route.abort())
            page.goto(page_file.as_uri(), wait_until="domcontentloaded")  # its CDN scripts never load offline
            frame = page.wait_for_selector("iframe")
            frame.scroll_into_view_if_needed()
            deadline = time.time() + 60  # the board draws its charts after loading its data: wait for them
            inner = frame.content_frame()
            while time.time() < deadline and not inner.query_selector("canvas, svg"):
                time.sleep(0.5)
            time.sleep(2)  # the charts' animation
            frame.screenshot(path=str(args.out / "board.png"))
            height = page.evaluate("document.body.scrollHeight")
            for n, top in enumerate(range(0, height, 1100)):
                page.evaluate(f"window.scrollTo(0, {top})")
                page.screenshot(path=str(args.out / f"page-{n}.png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
