"""What the tests share: small synthetic data sets and image folders, photos of digits, running the CLI in this
process or as a user would, a ``mnist-kit serve`` process, free ports, waiting for an event, and what "nothing
changed" compares. Fixtures are in conftest.py; test modules import from here and never from each other."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnist_kit.cli import cli
from mnist_kit.data.idx import write_idx
from mnist_kit.experiments.rundir import TIMING_KEYS

REPO = Path(__file__).resolve().parents[1]


FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def synthetic_arrays(n_train=600, n_test=200, seed=0):
    """Learnable 28x28 uint8 images: class k is a bright 6x6 block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 3 + (k // 5) * 12 + rng.integers(-1, 2), 2 + (k % 5) * 5 + rng.integers(-1, 2)
            x[i, r:r + 6, max(c, 0):c + 6] = rng.integers(180, 256)
        return x, y.astype(np.uint8)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}


def write_idx_folder(folder: Path, arrays: dict, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role, name in FILES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[role])
    return folder


FOLDER_CLASSES = {"box": 40, "diagonal": 12, "hbar": 24, "vbar": 8}  # unequal on purpose


def folder_image(kind: str, rng, size=(40, 80)):
    """A dark drawing on light paper (like a dynamometer card): class = the shape drawn, with jitter."""
    from PIL import Image, ImageDraw

    h, w = size
    img = Image.fromarray(rng.integers(215, 256, size=(h, w)).astype(np.uint8), "L")
    d = ImageDraw.Draw(img)
    j = lambda s: int(rng.integers(-s, s + 1))  # noqa: E731
    width = 3 + j(1)
    if kind == "box":
        d.rectangle([w // 5 + j(3), h // 5 + j(2), 4 * w // 5 + j(3), 4 * h // 5 + j(2)], outline=20, width=width)
    elif kind == "diagonal":
        d.line([(w // 10 + j(3), h // 10 + j(2)), (9 * w // 10 + j(3), 9 * h // 10 + j(2))], fill=20, width=width)
    elif kind == "hbar":
        y = h // 2 + j(5)
        d.line([(w // 10 + j(3), y), (9 * w // 10 + j(3), y)], fill=20, width=width + 2)
    else:  # vbar
        for x in (w // 3 + j(3), 2 * w // 3 + j(3)):
            d.line([(x, h // 8 + j(2)), (x, 7 * h // 8 + j(2))], fill=20, width=width)
    return img


def write_image_folder(folder: Path, counts=None, seed=0, corrupt=True) -> Path:
    """``folder/<class>/...``: several classes with unequal counts, mixed formats and sizes (grayscale PNG,
    RGB JPEG, BMP, RGBA PNG, a sub-folder), a text file that is not an image, and (``corrupt``) one damaged
    PNG. The classes are learnable at 16x32."""
    rng = np.random.default_rng(seed)
    for k, (kind, n) in enumerate((counts or FOLDER_CLASSES).items()):
        d = folder / kind
        (d / "more").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = folder_image(kind, rng, size=(40, 80) if i % 2 else (50, 100))
            fmt = i % 4
            if fmt == 0:
                img.save(d / f"{kind}_{i}.png")
            elif fmt == 1:
                img.convert("RGB").save(d / f"{kind}_{i}.jpg", quality=95)
            elif fmt == 2:
                img.save(d / "more" / f"{kind}_{i}.bmp")
            else:
                rgba = img.convert("RGBA")
                rgba.putalpha(255)
                rgba.save(d / f"{kind}_{i}.PNG")
    (folder / "notes.txt").write_text("not a class folder, and not an image\n")
    (folder / "hbar" / "readme.txt").write_text("not an image\n")
    if corrupt:
        (folder / "box" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return folder


# Small and fast: the synthetic set has 600 training images.
FAST = ["-o", "data.val_size=100", "-o", "train.epochs=2", "-o", "train.batch_size=50", "-o", "train.log_every=5",
        "-o", "train.eval_batch_size=64", "-o", "log.graph=false"]  # the graph has tests of its own


class _Result:
    """click 8.1's result with 8.2's meaning: ``stdout`` the standard output alone, ``output`` all of it."""

    def __init__(self, result):
        self._result = result
        self.output = result.stdout + result.stderr

    def __getattr__(self, name):
        return getattr(self._result, name)


def run_cli(*args):
    """``mnist-kit ARGS`` in this process: ``.output`` holds what the user sees, ``.stdout`` standard output."""
    args = [str(a) for a in args]
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2 (the newest for Python 3.9) mixes them otherwise
    except TypeError:  # click >= 8.2: stdout alone, and output interleaves both
        return CliRunner().invoke(cli, args, catch_exceptions=False)
    return _Result(runner.invoke(cli, args, catch_exceptions=False))


def run_subprocess(*args, timeout=600, env=None):
    """Run ``python -m mnist_kit ARGS`` as a user would; returns CompletedProcess with text output."""
    return subprocess.run([sys.executable, "-m", "mnist_kit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# Pillow recognises EPS by content, whatever the file's name, and runs `gs` (no timeout) to decode it
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n{ } loop\n"


def checkpoints_of(run: Path) -> list:
    """The epoch and step checkpoints a run's manifest lists (none while it cannot be read): what a test waits
    for before it stops a run that it resumes afterwards (the first metrics row is written before them)."""
    from mnist_kit import UserError
    from mnist_kit.experiments import checkpoint

    try:
        return checkpoint.periodic(Path(run) / "ckpt")
    except (UserError, OSError):
        return []


def wait_for(condition, timeout: float = 120, what="") -> None:
    """Poll ``condition`` until it holds (the event a test needs, never a fixed sleep); fail after ``timeout``
    seconds naming ``what`` (a text, or a function giving one)."""

    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(0.1)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its SHA-256: what 'nothing changed' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_user_error(result, *phrases):
    """One ``Error:`` message naming the problem (its first line, with any list below it), a non-zero exit,
    no traceback."""
    out = result.output if hasattr(result, "output") else result.stdout + result.stderr
    assert result.exit_code if hasattr(result, "exit_code") else result.returncode, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    message = out[out.index(errors[0]):]
    for phrase in phrases:
        assert phrase in message, out


SPECIAL_FILES = ("/dev/zero", "a FIFO", "a link loop", "a folder", "a dangling link", "huge (sparse, 5 GB)")


def make_special(path: Path, kind: str) -> None:
    """Put at ``path`` (replacing a file there) one of ``SPECIAL_FILES``: what a user, a crash or a link can leave
    where mnist-kit expects a file it wrote."""
    if os.path.lexists(path) and not (path.is_dir() and not path.is_symlink()):
        path.unlink()  # a file, a FIFO or a link (a folder is the caller's to remove)
    if kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a link loop":
        path.symlink_to(path.name)
    elif kind == "a folder":
        path.mkdir()
    elif kind == "a dangling link":
        path.symlink_to(path.parent / "nowhere")
    elif kind == "huge (sparse, 5 GB)":
        with open(path, "wb") as f:
            f.truncate(5 << 30)
    else:
        raise ValueError(f"no special file called {kind!r}")


def free_port() -> int:
    """A port on 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_digit(d: int, size: int = 120, angle: float = 0.0, dx: int = 0, dy: int = 0) -> np.ndarray:
    """A white digit on black (float, any size), from Pillow's scalable default font."""
    font = ImageFont.load_default(size=size)
    img = Image.new("L", (int(size * 1.6), int(size * 1.6)), 0)
    ImageDraw.Draw(img).text((size * 0.4 + dx, size * 0.15 + dy), str(d), fill=255, font=font)
    return np.asarray(img.rotate(angle, resample=Image.Resampling.BILINEAR), dtype=np.float64)


def photo(digit_white: np.ndarray, paper=(235, 228, 210), ink=(35, 35, 60), canvas=(640, 480), at=(0.7, 0.3),
          noise=8.0, blur=1.2, seed=0) -> Image.Image:
    """Dark ink on (tinted) paper, off-centre in a larger picture, with blur, noise and uneven light."""
    rng = np.random.default_rng(seed)
    h, w = digit_white.shape
    W, H = canvas
    a = np.zeros((H, W))
    y0, x0 = int(at[1] * (H - h)), int(at[0] * (W - w))
    a[y0:y0 + h, x0:x0 + w] = digit_white / 255.0
    a = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur)),
                   dtype=np.float64) / 255.0
    light = 1.0 - 0.15 * np.linspace(0, 1, W)[None, :]  # a shadow across the page
    rgb = np.empty((H, W, 3))
    for c in range(3):
        rgb[..., c] = (paper[c] * (1 - a) + ink[c] * a) * light + rng.normal(0, noise, (H, W))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


VARIANTS = {
    "jpeg dark ink on tinted paper": lambda d, p: _save(photo(render_digit(d)), p / "a.jpg", quality=85),
    "png light ink on dark": lambda d, p: _save(Image.fromarray(255 - np.asarray(photo(render_digit(d)))), p / "b.png"),
    "small and blurred": lambda d, p: _save(photo(render_digit(d, 40), canvas=(90, 80), blur=1.5), p / "c.png"),
    "large, far off-centre, noisy": lambda d, p: _save(photo(render_digit(d, 300), canvas=(1600, 1200), at=(0.05, 0.9),
                                                            noise=20), p / "d.jpg", quality=70),
    "rgba ink only in alpha": lambda d, p: _save(Image.fromarray(np.dstack(
        [np.zeros((192, 192, 3), np.uint8), render_digit(d).astype(np.uint8)]), "RGBA"), p / "e.png"),
    "palette": lambda d, p: _save(photo(render_digit(d)).convert("P", palette=Image.Palette.ADAPTIVE), p / "f.png"),
    "16-bit grayscale": lambda d, p: _save(Image.fromarray((np.asarray(photo(render_digit(d)).convert("L"),
                                                                       np.uint16) * 257)), p / "g.png"),
    "cmyk jpeg": lambda d, p: _save(photo(render_digit(d)).convert("CMYK"), p / "h.jpg"),
}


def as_in_a_terminal() -> None:
    """A ``preexec_fn``: the default dispositions of the signals a terminal sends. A test run under nohup or
    in a shell's background job inherits SIGINT (and SIGHUP) ignored, mnist-kit rightly leaves ignored
    signals ignored, and a child sent Ctrl-C by a test would then never stop."""
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


class Server:
    """``mnist-kit serve ARGS --port 0`` as a process; ``url`` once it listens."""

    def __init__(self, *args, env=None, command=(sys.executable, "-m", "mnist_kit"), cwd=None):
        self.proc = subprocess.Popen([*map(str, command), "serve", "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, cwd=cwd, preexec_fn=as_in_a_terminal)
        self.lines, self.url = [], None
        started = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                if " at http://" in line and self.url is None:
                    self.url = line.split(" at ", 1)[1].split(";")[0].strip()
                    started.set()
            started.set()

        threading.Thread(target=read, daemon=True).start()
        started.wait(120)  # the event, not a sleep: a loaded machine may take long to import and listen
        assert self.url, f"serve did not start: {self.lines}"
        self.host, port = self.url[len("http://"):].rstrip("/").rsplit(":", 1)
        self.port = int(port)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, parsed JSON or text) of one request on a new connection."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        kind = r.getheader("Content-Type", "")
        return r.status, dict(r.getheaders()), json.loads(data) if kind.startswith("application/json") else data

    def post_image(self, data: bytes, content_type: str = "image/png", query: str = ""):
        return self.request("POST", "/api/predict" + query, data, {"Content-Type": content_type})

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, dict]:
    """A multipart/form-data body of (field, file name, bytes) files, and its Content-Type header."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for field, name, data in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def visualdl_get(port, path, **params) -> bytes:
    url = f"http://127.0.0.1:{port}/app/api/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def visualdl_api(port, path, **params):
    """The data of a VisualDL server's API answer (status 0 asserted)."""
    raw = visualdl_get(port, path, **params)
    try:
        body = json.loads(raw)
    except ValueError:
        raise AssertionError(f"{path}: not JSON: {raw[:60]!r}") from None
    assert body["status"] == 0, body
    return body["data"]


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


needs_debian = pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                                  reason="Debian's dataset-fashion-mnist is not installed "
                                         "(scripts/setup.sh installs it)")


def peak_rss_mib(proc_args, **kw) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python -m mnist_kit ARGS`` and return it with its peak resident memory (MiB): VmHWM, which
    starts afresh at exec (ru_maxrss would carry over the forking test process's own peak)."""
    code = ("import runpy, sys; sys.argv = ['mnist-kit'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('mnist_kit', run_name='__main__')\n"
            "finally:\n    print('PEAK', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
            " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *map(str, proc_args)], capture_output=True, text=True, **kw)
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK")]
    assert peak, done.stderr
    return done, int(peak[0].split()[1]) / 1024


def dark_bar_image(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    img = np.full((60, 60), 230, np.uint8)
    img[15:45, 27:33] = 20
    Image.fromarray(img).save(path)
    return path




def metrics_rows(run: Path) -> list[dict]:
    """A run's metrics rows without the timings (what two equal runs share)."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def child_pids(pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def script(name: str):
    """The module ``scripts/NAME.py``, imported by its path (the browser checks that a test shares with a
    command a user runs); the tests do not put scripts/ on sys.path."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before it runs: a script may import its siblings by name
        spec.loader.exec_module(module)
    return sys.modules[name]
