#!/usr/bin/env python
"""Look at every page of the VisualDL board in a real browser, check what it renders, save screenshots.

Starts `mnist-kit board` on LOGDIR, loads each page in headless Chromium (scripts/browser.py: Debian's
Chromium over its DevTools protocol), waits in real time until the page shows its data, checks what is
rendered against the runs' own files, and saves one screenshot per page in OUT. Exit status 1 if a
check fails. The checks:

    scalar            every run and its validation writer listed; the training-and-validation loss
                      chart draws a line in the colour of each of them; with train.ema, the val/acc
                      (moving average) and val/acc_raw charts both shown
    hyper-parameter   one row per run; every cell of the run's hyper-parameters shows its value
    high-dimensional  "Points: N" (the embeddings logged); coloured by class, the points lie at many
                      distinct places (VisualDL's own cut of wide vectors left about 4)
    dynamic-graph     "Choose a model" lists one model per run, by the run's name
    static-graph      the newest run's program drawn (its conv2d nodes)
    image             every picture loaded, shown so large that its captions are at least 9 px high
    text              each run's config: one text per section
    histogram, pr-curve, roc-curve: their charts drawn

    .venv/bin/python scripts/board_check.py [--logdir checkpoints] [--out docs/board]
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import chromium, missing  # noqa: E402

from mnist_kit.experiments import listing
from mnist_kit.logbook import server as board_server  # noqa: E402
from mnist_kit.logbook import visuals
from mnist_kit.training import trainlog
from mnist_kit.util import readback

WINDOW = {"width": 1400, "height": 1000}
MIN_CAPTION_PX = 9  # captions at least this high on screen, in the thumbnail


@dataclass
class Run:
    name: str
    cfg: dict
    hparams: dict
    embeddings: int


@dataclass
class Result:
    page: str
    ok: bool
    detail: str
    screenshot: Path | None = None


@dataclass
class Board:
    """What the board should show, read from the runs' own files."""
    runs: list[Run] = field(default_factory=list)

    @classmethod
    def of(cls, logdir: Path) -> "Board":
        board = cls()
        for run in listing.find(logdir):
            if not any(run.vdl_dir.glob("vdlrecords*")):
                continue
            cfg = readback.load_yaml(run.config_file)
            board.runs.append(Run(run.name, cfg, trainlog.hparams(cfg, run.sweep_keys()),
                                  cfg["log"]["embeddings"] and min(cfg["log"]["embeddings"], cfg["data"]["val_size"])))
        return board

    @property
    def writers(self) -> list[str]:
        """The names the scalar page lists: each run, and the writer of its validation lines."""
        return [n for r in self.runs for n in (r.name, f"{r.name} · val")]


def until(page, condition, timeout: float = 60, every: float = 0.5, what: str = "the page to render"):
    """Poll ``condition(page)`` in real time until it returns something true; return that, or raise."""
    deadline = time.time() + timeout
    while True:
        try:
            value = condition(page)
        except Exception:  # noqa: BLE001 - the page is still building its DOM
            value = None
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(every)


def picture(page, locator) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def _texts(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


# ---------------------------------------------------------------- the pages

def check_scalar(page, board: Board) -> str:
    wanted = board.writers
    until(page, lambda p: set(wanted) <= set(p.locator("body").inner_text().splitlines()),
          what=f"the run list to show {wanted}")
    page.get_by_placeholder("Search tags in RegExp").fill("train_and_val/loss")
    chart = until(page, lambda p: [c for c in p.locator("canvas").all() if c.is_visible()],
                  what="the train_and_val/loss chart")[0].locator("xpath=..")
    colours = page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('.run-item'))
        .map(item => [item.innerText.trim(), getComputedStyle(item.querySelector('i')).backgroundColor]))""")
    # one run at a time (the lines of runs with equal values hide each other): each must draw its own
    page.get_by_text("Select All", exact=True).click()  # all off
    counts = {}
    for name in wanted:
        rgb = np.array([int(v) for v in colours[name].split("(")[1].split(")")[0].split(",")[:3]])
        page.locator(f'label[title="{name}"]').click()
        try:
            counts[name] = until(page, lambda p: _line_pixels(picture(p, chart), rgb), timeout=10)
        except TimeoutError:
            counts[name] = 0
        page.locator(f'label[title="{name}"]').click()
    page.get_by_text("Select All", exact=True).click()  # all on again, for the screenshot
    time.sleep(1.5)  # the chart's own animation
    missing_lines = [n for n, c in counts.items() if not c]
    assert not missing_lines, f"no line drawn for {missing_lines} (pixels of each run's colour: {counts})"
    done = f"{len(wanted)} lines in train_and_val/loss ({min(counts.values())}+ pixels each)"
    if any(r.cfg["train"].get("ema") for r in board.runs):  # validation of the average and of the raw weights
        page.get_by_placeholder("Search tags in RegExp").fill("^val/(acc|acc_raw)$")
        # the charts' titles are drawn inside their canvases: the expression matches these two tags alone
        charts = until(page, lambda p: (lambda c: c if len(c) == 2 else None)(
            [c for c in p.locator("canvas").all() if c.is_visible()]), what="the val/acc and val/acc_raw charts")
        run = next(r for r in board.runs if r.cfg["train"].get("ema"))
        rgb = np.array([int(v) for v in colours[run.name].split("(")[1].split(")")[0].split(",")[:3]])
        for chart in charts:
            until(page, lambda p: _line_pixels(picture(p, chart.locator("xpath=..")), rgb), timeout=20,
                  what=f"{run.name}'s line in the val/acc and val/acc_raw charts")
        done += "; val/acc and val/acc_raw (the moving average's and the raw weights') charted"
    return done


def _line_pixels(pixels: np.ndarray, rgb: np.ndarray) -> int:
    """Pixels of colour ``rgb`` in a chart, when there are enough to be a line (else 0)."""
    n = int((np.abs(pixels - rgb).max(axis=-1) <= 10).sum())
    return n if n >= 8 else 0


def check_hparams(page, board: Board) -> str:
    def table(p):
        rows = p.evaluate("""() => Array.from(document.querySelectorAll('[role=table] [role=row]'))
            .map(r => Array.from(r.children).map(c => c.innerText.trim()))""")
        return rows if len(rows) > len(board.runs) else None

    rows = until(page, table, what=f"a table of {len(board.runs)} runs")
    head, body = rows[0], rows[1:]
    problems = []
    for run in board.runs:
        row = next((r for r in body if r[0].split("/")[-2:-1] == [run.name] or r[0] == run.name), None)
        if row is None:
            problems.append(f"no row for {run.name}")
            continue
        for key, value in run.hparams.items():
            shown = row[head.index(key)] if key in head else None
            if shown is None or not shown or not _same(shown, value):
                problems.append(f"{run.name} {key}: shows {shown!r}, the run has {value!r}")
        for metric in trainlog.HPARAM_METRICS:
            if metric not in head or not row[head.index(metric)]:
                problems.append(f"{run.name} {metric}: empty")
    assert not problems, "; ".join(problems[:6])
    return f"{len(body)} rows; columns {', '.join(head[1:])}"


def _same(shown: str, value) -> bool:
    try:
        return float(shown) == float(value)
    except (TypeError, ValueError):
        return shown == str(value)


def check_embeddings(page, board: Board) -> str:
    n = max(r.embeddings for r in board.runs)
    until(page, lambda p: f"Points: {n}" in p.locator("body").inner_text(), timeout=90,
          what=f"'Points: {n}'")
    canvas = until(page, lambda p: [c for c in p.locator("canvas").all() if c.is_visible()], what="the scatter plot")[0]
    # the points' places (grey until coloured), once the worker's PCA has placed them (all at once)
    try:
        until(page, lambda p: _places(picture(p, canvas)) > 100, timeout=45)
        time.sleep(1)
    except TimeoutError:
        pass
    places = _places(picture(page, canvas))
    assert places > 100, f"the {n} points lie at only {places} distinct 8-px places (more than 100 expected)"
    page.get_by_text("No color map", exact=True).first.click()  # colour the points by their class
    option = page.get_by_text("class", exact=True)
    assert option.count(), "no 'class' column to colour the points by"
    option.last.click()
    until(page, lambda p: _colours(picture(p, canvas)) >= 5, timeout=30, what="the points coloured by class")
    return f"Points: {n}, at {places} distinct 8-px places; coloured by class"


def _ink(pixels: np.ndarray) -> np.ndarray:
    return np.abs(pixels - pixels[2, 2]).max(axis=-1) > 40  # differs from the background


def _places(pixels: np.ndarray, cell: int = 8) -> int:
    """How many ``cell``-pixel squares hold grey points (the coloured axes are not counted)."""
    ink = _ink(pixels) & ((pixels.max(axis=-1) - pixels.min(axis=-1)) < 40)
    h, w = (ink.shape[0] // cell) * cell, (ink.shape[1] // cell) * cell
    return int((ink[:h, :w].reshape(h // cell, cell, w // cell, cell).sum(axis=(1, 3)) >= 4).sum())


def _colours(pixels: np.ndarray) -> int:
    """How many strongly coloured hues the picture holds (grey points: none)."""
    px = pixels[_ink(pixels)]
    saturated = px[(px.max(axis=1) - px.min(axis=1)) > 80]
    return len({tuple(v) for v in (saturated // 48).tolist()}) if len(saturated) else 0


def check_dynamic_graph(page, board: Board) -> str:
    wanted = sorted(r.name for r in board.runs)
    listed = until(page, lambda p: sorted(_texts(p, ".run-item")) or None, what="the list of models")
    assert listed == wanted, f"'Choose a model' lists {listed}, the runs are {wanted}"
    drawn = until(page, lambda p: _viewer_text(p).split()[:12], what="the model drawn")
    return f"models: {', '.join(listed)}; drawn: {' '.join(drawn)}"


def check_static_graph(page, board: Board) -> str:
    ops = until(page, lambda p: [op for op in ("conv2d", "matmul", "relu", "pool2d") if op in _viewer_text(p)],
                what="the program's operators drawn")
    return f"program drawn: {', '.join(ops)}"


def _viewer_text(page) -> str:
    """The text of the graph viewer (Netron, in a same-origin iframe)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('iframe'))
        .map(i => i.contentDocument && i.contentDocument.body ? i.contentDocument.body.innerText : '').join(' ')""")


def check_images(page, board: Board) -> str:
    def loaded(p):
        imgs = p.evaluate("""() => Array.from(document.querySelectorAll('img'))
            .filter(i => i.naturalWidth > 64)
            .map(i => [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width,
                       i.getBoundingClientRect().height])""")
        return imgs if len(imgs) >= len(board.runs) else None

    imgs = until(page, loaded, what="the pictures")
    scales = [min(w / nw, h / nh) for nw, nh, w, h in imgs]
    small = [s for s in scales if s * visuals.FONT_PX < MIN_CAPTION_PX]
    assert not small, (f"{len(small)} pictures show captions below {MIN_CAPTION_PX} px "
                       f"({visuals.FONT_PX} px at x{min(scales):.2f})")
    return f"{len(imgs)} pictures; captions shown {min(scales) * visuals.FONT_PX:.1f} px high or more"


def check_text(page, board: Board) -> str:
    """The first run's card is open: its config, one text per section."""
    first = until(page, lambda p: p.locator(".run").first.inner_text().strip(), what="the text cards")
    run = next(r for r in board.runs if r.name == first)
    wanted = trainlog.config_lines(run.cfg)
    shown = until(page, lambda p: [t for t in _texts(p, ".text") if t] or None, what="the config texts")
    assert shown[:len(wanted)] == wanted, f"{first}'s config shows as {shown[:3]}..., not one text per section"
    return f"{first}'s config shown as {len(wanted)} texts, one per section"


def check_chart(page, board: Board) -> str:
    canvases = until(page, lambda p: [c for c in p.locator("canvas").all() if c.is_visible()], what="a chart")
    time.sleep(2)
    drawn = int(_ink(picture(page, canvases[0])).sum())
    assert drawn > 200, f"the first chart is blank ({drawn} pixels drawn)"
    return f"{len(canvases)} charts"


PAGES = {  # name: (path, check)
    "scalar": ("/app/scalar", check_scalar),
    "hyper-parameter": ("/app/hyper-parameter", check_hparams),
    "high-dimensional": ("/app/high-dimensional", check_embeddings),
    "dynamic-graph": ("/app/graph/dynamic_graph", check_dynamic_graph),
    "static-graph": ("/app/graph/static_graph", check_static_graph),
    "image": ("/app/sample/image", check_images),
    "text": ("/app/sample/text", check_text),
    "histogram": ("/app/histogram", check_chart),
    "pr-curve": ("/app/pr-curve", check_chart),
    "roc-curve": ("/app/roc-curve", check_chart),
}


def check_board(logdir: Path, out: Path | None = None, pages=None, say=print) -> list[Result]:
    """Start the board on ``logdir``, check each page (all of ``PAGES`` by default); screenshots in ``out``."""
    board = Board.of(logdir)
    if not board.runs:
        raise SystemExit(f"no runs with VisualDL logs under {logdir}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = board_server.serve(logdir, port=port, wait=False, say=lambda _: None)
    results = []
    try:
        with chromium() as browser:
            for name in pages or PAGES:
                shot = out / f"{name}.png" if out else None
                ok, detail = _check_page(browser, f"http://127.0.0.1:{port}", name, board, shot)
                if not ok:  # once more on a fresh page: a page load that stalls now and then is not a finding
                    ok, again = _check_page(browser, f"http://127.0.0.1:{port}", name, board, shot)
                    detail = f"{again} (on a second load; the first: {detail})" if ok else again
                results.append(Result(name, ok, detail, shot))
                say(f"{name:17} {'ok  ' if ok else 'FAIL'} {detail}")
    finally:
        server.terminate()
        server.wait(timeout=20)
    return results


def _check_page(browser, url: str, name: str, board: Board, shot: Path | None) -> tuple[bool, str]:
    from playwright.sync_api import Error as PlaywrightError

    path, check = PAGES[name]
    page = browser.new_page(viewport=WINDOW)
    try:
        page.goto(url + path, wait_until="load", timeout=60_000)
        ok, detail = True, check(page, board)
    except (AssertionError, TimeoutError, PlaywrightError) as e:
        ok, detail = False, str(e).splitlines()[0]
    if shot:
        shot.parent.mkdir(parents=True, exist_ok=True)
        _save(page.screenshot(), shot)
    page.close()
    return ok, detail


def _save(png: bytes, target: Path) -> None:
    """A screenshot for the docs: 256 colours (a third of the bytes), as a user sees it otherwise."""
    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(target, optimize=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logdir", type=Path, default=Path("checkpoints"))
    ap.add_argument("--out", type=Path, default=Path("docs/board"))
    ap.add_argument("--page", action="append", choices=list(PAGES), help="only this page (repeatable)")
    args = ap.parse_args()
    if reason := missing():
        raise SystemExit(reason)
    results = check_board(args.logdir, args.out, args.page)
    sys.exit(0 if all(r.ok for r in results) else 1)


if __name__ == "__main__":
    main()
