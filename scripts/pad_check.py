#!/usr/bin/env python
"""Draw digits on the drawing pad of ``mnist-kit serve`` in headless Chromium, as a person would with a mouse
(press, move, release), and read what the page answers. Waits in real time (DevTools protocol).

    .venv/bin/python scripts/pad_check.py URL [--digits 0,1,2,3,4,7] [--screenshot docs/serve/pad.png]

Used by tests/test_serve_browser.py; the screenshot in the README is made with it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from browser import chromium  # noqa: E402

# Each digit as a person draws it: strokes of points in the pad's unit square (x right, y down).
STROKES = {
    0: [[(0.5 + 0.2 * math.sin(t / 24 * 2 * math.pi), 0.5 - 0.3 * math.cos(t / 24 * 2 * math.pi)) for t in range(25)]],
    1: [[(0.52, 0.18), (0.5, 0.82)]],
    2: [[(0.3, 0.32), (0.36, 0.22), (0.5, 0.17), (0.64, 0.22), (0.68, 0.34), (0.62, 0.47), (0.3, 0.8), (0.72, 0.8)]],
    3: [[(0.3, 0.24), (0.45, 0.17), (0.62, 0.2), (0.67, 0.32), (0.6, 0.44), (0.46, 0.48), (0.62, 0.53), (0.69, 0.66),
         (0.62, 0.79), (0.45, 0.83), (0.3, 0.77)]],
    4: [[(0.6, 0.82), (0.6, 0.18), (0.26, 0.62), (0.76, 0.62)]],
    7: [[(0.28, 0.2), (0.72, 0.2), (0.44, 0.82)]],
}
VIEWPORT = {"width": 1200, "height": 600}


def on_pad(page, inset: float = 0.1):
    """The function from the pad's unit square to page pixels (x, y), leaving ``inset`` of margin on each
    side, as a person does."""
    box = page.locator("#canvas").bounding_box()
    return lambda x, y: (box["x"] + box["width"] * (inset + (1 - 2 * inset) * x),
                         box["y"] + box["height"] * (inset + (1 - 2 * inset) * y))


def draw(page, digit: int) -> None:
    """Draw ``digit`` on the pad with mouse events (press, moves, release per stroke)."""
    at = on_pad(page)
    for stroke in STROKES[digit]:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(*at(x, y), steps=6)
        page.mouse.up()


def draw_touch(page, digit: int) -> None:
    """Draw ``digit`` with a finger: touch events through the DevTools protocol (the page must come from a
    context with ``has_touch``)."""
    at = on_pad(page)
    cdp = page.context.new_cdp_session(page)

    def touch(kind: str, *points) -> None:
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
            dict(zip("xy", at(x, y))) for x, y in points]})

    for stroke in STROKES[digit]:
        touch("touchStart", stroke[0])
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            for k in range(1, 7):
                touch("touchMove", (x0 + (x1 - x0) * k / 6, y0 + (y1 - y0) * k / 6))
        touch("touchEnd")
    cdp.detach()


def drop(page, path: Path) -> None:
    """Drop the file ``path`` on the pad, as a file dragged from the desktop arrives (a DataTransfer
    holding it, in dragenter, dragover and drop events)."""
    page.evaluate("""([name, bytes]) => {
        const data = new DataTransfer();
        const type = name.endsWith('.png') ? 'image/png' : 'image/jpeg';
        data.items.add(new File([new Uint8Array(bytes)], name, {type}));
        const target = document.getElementById('drop');
        for (const type of ['dragenter', 'dragover', 'drop'])
            target.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
    }""", [path.name, list(path.read_bytes())])


def live(page, pause: float = 0.6) -> dict:
    """Press, draw half a 7, and hold still (button down) for ``pause`` s: the page must already have sent
    the drawing and shown an answer (the debounced live prediction); then release."""
    at = on_pad(page, inset=0)
    page.click("#clear")
    before = sent(page)
    page.mouse.move(*at(0.25, 0.25))
    page.mouse.down()
    page.mouse.move(*at(0.75, 0.25), steps=8)
    time.sleep(pause)
    during = page.evaluate("() => ({sent: +(document.body.dataset.sent || 0), answered: document.body.dataset.answered,"
                           " label: document.getElementById('label').textContent})")
    page.mouse.move(*at(0.45, 0.85), steps=8)
    page.mouse.up()
    return {"sent_before": before, **during}


def sent(page) -> int:
    return page.evaluate("() => +(document.body.dataset.sent || 0)")


def answer(page, after: int, timeout: float = 20) -> dict:
    """The page's answer to the drawing or photo sent last, which must be a request after the ``after``-th:
    waits (in real time) until it is shown."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = page.evaluate("""() => ({sent: document.body.dataset.sent, answered: document.body.dataset.answered,
            label: document.getElementById('label').textContent, cls: document.getElementById('label').dataset.class,
            probability: document.getElementById('probability').textContent,
            bars: [...document.querySelectorAll('#bars li')].map(li => [li.querySelector('.name').textContent,
                    li.querySelector('.value').textContent]),
            input: document.getElementById('input').naturalWidth,
            status: document.getElementById('status').textContent})""")
        if (state["sent"] and int(state["sent"]) > after and state["sent"] == state["answered"]
                and state["status"].startswith("Read ")):
            return state
        time.sleep(0.1)
    raise AssertionError(f"the page showed no answer within {timeout} s: {state}")


def check_pad(url: str, digits=(0, 1, 2, 3, 4, 7), screenshot: Path | None = None, dark_digits=(),
              photos=(), touch_digits=()) -> list[dict]:
    """Draw each digit on a cleared pad and read the answer; then each of ``dark_digits`` in black ink on
    white; then send each photo (path, digit), through the page's file input or dropped on it in turn; then draw each of
    ``touch_digits`` with a finger on a phone-sized page. One dict per digit or photo
    (drawn, read, bars, ...), after one of the live check (``live``), and last the URLs the page requested
    that are not this server's."""
    results = []
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        requested = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']", timeout=20_000)
        results.append({"live": live(page)})
        for d in digits:
            page.click("#clear")
            before = sent(page)
            draw(page, d)
            got = answer(page, before)
            results.append({"drawn": d, "read": got["label"], "class": got["cls"], "probability": got["probability"],
                            "bars": got["bars"], "input_width": got["input"]})
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
        page.select_option("#ink", "dark")
        for d in dark_digits:
            page.click("#clear")
            before = sent(page)
            draw(page, d)
            got = answer(page, before)
            corner = page.evaluate("() => Array.from(document.getElementById('canvas').getContext('2d')"
                                   ".getImageData(2, 2, 1, 1).data)")
            results.append({"drawn": d, "ink": "dark", "read": got["label"], "probability": got["probability"],
                            "bars": got["bars"], "input_width": got["input"], "corner": corner})
        for k, (path, d) in enumerate(photos):
            before = sent(page)
            if k % 2 == 0:  # chosen with the file input ...
                page.set_input_files("#file", str(path))
            else:  # ... or dropped on the page, as a file dragged from the desktop
                drop(page, Path(path))
            got = answer(page, before)
            results.append({"drawn": d, "photo": Path(path).name, "read": got["label"], "bars": got["bars"],
                            "probability": got["probability"], "input_width": got["input"],
                            "shown": page.is_visible("#photo")})
        if touch_digits:
            phone = browser.new_context(viewport={"width": 400, "height": 900}, has_touch=True, is_mobile=True)
            page = phone.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=20_000)
            for d in touch_digits:
                page.click("#clear")
                before = sent(page)
                draw_touch(page, d)
                got = answer(page, before)
                results.append({"drawn": d, "touch": True, "read": got["label"], "bars": got["bars"],
                                "probability": got["probability"], "input_width": got["input"]})
        foreign = [u for u in requested if not (u.startswith(url.rstrip("/")) or u.startswith(("data:", "blob:")))]
        results.append({"foreign_requests": foreign, "requests": len(requested)})
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--digits", default="0,1,2,3,4,7")
    ap.add_argument("--screenshot", type=Path)
    args = ap.parse_args()
    results = check_pad(args.url, [int(d) for d in args.digits.split(",")], args.screenshot)
    print("while drawing:", results[0]["live"])
    for r in results[1:-1]:
        print(f"drew {r['drawn']}: read {r['read']} ({r['probability']}); bars {r['bars'][:3]}")
    print(results[-1])
    return 0 if all(str(r["drawn"]) == r["read"] for r in results[1:-1]) and not results[-1]["foreign_requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
