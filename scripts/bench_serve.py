#!/usr/bin/env python
"""Benchmark (not a test): `mnist-kit serve` and the cold start of `mnist-kit predict`, on both runtimes.

For each runtime (onnxruntime, and Paddle Inference as the reference in the same run) a real server process
on 127.0.0.1 (default --threads 4) answers single images, a 280x280 PNG each as the drawing pad sends them:
  - requests/s and p50/p99 latency with 1, 4 and 16 concurrent clients (keep-alive connections, threads of
    this process; each level bounded by --requests and --seconds);
  - the server's resident memory (VmRSS) after 100 requests and after --memory-requests (10,000), and its peak;
  - the wall time of one cold `mnist-kit predict --model M one.png` (median of --runs);
  - the attack on decoding (onnxruntime server): 4 clients at once each POST a batch of 12 PNGs of 5000x5000
    16-bit RGBA (about 200 KB each, under the per-image limit), while a probe asks /healthz every 0.1 s:
    each batch's status and time, the slowest /healthz, and the server's memory before and at its peak;
  - giant images beside drawings (issue 40): drawings posted alone (the reference), then while two clients post
    5000x5000 RGBA PNGs one after another: how many are answered, and how fast; the memory, idle, at the peak
    and after two giants at once (--giants-only: this part alone).
The clients run on the same 2 cores as the server, so the numbers are what one machine does with both.

    .venv/bin/python scripts/bench_serve.py [--model DIR] [--requests 3000] [--seconds 15] [--runs 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_predict import wall  # the median wall time of a command (this folder is on sys.path)
from PIL import Image

from mnist_kit import data
from mnist_kit.deploy import inference, predict

RUNTIMES = ("onnxruntime", "paddle")
CONCURRENCY = (1, 4, 16)


def canvas_pngs(meta: dict, count: int = 32) -> list[bytes]:
    """Test images of the export's data set as the pad sends drawings: 280x280 PNG, white on black."""
    prepared = data.load(meta["dataset"], data.data_root())
    out = []
    for img in prepared.x_test[:count]:
        buffer = io.BytesIO()
        Image.fromarray(img).resize((280, 280), Image.Resampling.BILINEAR).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


class Server:
    def __init__(self, model: Path, runtime: str, threads: int):
        self.proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", "serve", "--model", str(model), "--port", "0",
                                      "--runtime", runtime, "--threads", str(threads)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if " at http://" in line:
                self.port = int(line.split(" at http://", 1)[1].split("/")[0].rsplit(":", 1)[1])
                break
        else:
            raise SystemExit(f"serve did not start ({runtime})")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def memory(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def load(port: int, images: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` keep-alive clients post single images until ``requests`` answers or ``seconds`` pass."""
    latencies, lock, failures = [], threading.Lock(), []
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while time.perf_counter() < deadline:
            with lock:
                if len(latencies) >= requests:
                    break
            t0 = time.perf_counter()
            conn.request("POST", "/api/predict", images[i % len(images)], {"Content-Type": "image/png"})
            r = conn.getresponse()
            r.read()
            took = time.perf_counter() - t0
            if r.status != 200:
                failures.append(r.status)
            with lock:
                latencies.append(took)
            i += clients
        conn.close()

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50": 1000 * statistics.median(lat),
            "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "failures": len(failures)}


def huge_png(side: int = 5000) -> bytes:
    """A side x side 16-bit RGBA PNG that is nearly all one colour: a few hundred KB that decode to side^2
    pixels (Pillow cannot write 16-bit RGBA, so the chunks are written here)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    pack, row = zlib.compressobj(9), b"\0" + b"\xff\xff" * 4 * side
    idat = b"".join(pack.compress(row) for _ in range(side)) + pack.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def attack(server: Server, clients: int = 4, images: int = 12) -> dict:
    """``clients`` batch requests of ``images`` huge PNGs at once, and /healthz probed all the while."""
    png, boundary = huge_png(), "attack-boundary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"; filename="big{i}.png"\r\n'
                    f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n" for i in range(images))
    body += f"--{boundary}--\r\n".encode()
    before = server.memory()[0]
    done, health = threading.Event(), []

    def post(_) -> tuple[int, float, str]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        t0 = time.perf_counter()
        conn.request("POST", "/api/predict/batch", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
        conn.close()
        return r.status, time.perf_counter() - t0, text[:120]

    def probe() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            health.append(time.perf_counter() - t0)
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(post, range(clients)))
    done.set()
    prober.join()
    return {"body_kb": len(body) / 1024, "answers": answers, "healthz_max": max(health), "healthz_n": len(health),
            "rss_before": before, "peak": server.memory()[1]}


def giant_rgba_png(side: int = 5000) -> bytes:
    """A white 8-bit RGBA PNG of side x side with a dark stroke (about 120 KB; 100 MB decoded)."""
    from PIL import ImageDraw

    img = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    ImageDraw.Draw(img).line([(side // 3, side // 4), (side // 2, 3 * side // 4)], fill=(0, 0, 0, 255),
                             width=side // 20)
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def _post(port: int, body: bytes) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/api/predict", body, {"Content-Type": "image/png"})
    status = conn.getresponse()
    status.read()
    conn.close()
    return status.status, time.perf_counter() - t0


def giants_and_drawings(server: Server, drawing: bytes, drawings: int = 40) -> dict:
    """Issue 40's starvation and memory: ``drawings`` drawings posted one after another, first alone (the
    reference, in the same run), then while two clients post 5000x5000 RGBA PNGs one after another; then two
    giants at once. The server's memory: idle, the peak, and after the giants."""
    giant = giant_rgba_png()
    alone = [_post(server.port, drawing) for _ in range(drawings)]
    idle = server.memory()[0]
    done, giants = threading.Event(), []

    def giant_client() -> None:
        while not done.is_set():
            giants.append(_post(server.port, giant))

    clients = [threading.Thread(target=giant_client) for _ in range(2)]
    for c in clients:
        c.start()
    while not giants:  # both clients are under way once one giant is answered
        time.sleep(0.05)
    during = [_post(server.port, drawing) for _ in range(drawings)]
    done.set()
    for c in clients:
        c.join()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pair = list(pool.map(lambda _: _post(server.port, giant), range(2)))
    rss, peak = server.memory()
    return {"alone": alone, "during": during, "giants": giants + pair, "idle": idle, "peak": peak, "after": rss,
            "giant_kb": len(giant) / 1024}


def report_giants(g: dict, threads: int) -> None:
    print(f"\ngiant images beside drawings: 2 clients post 5000x5000 RGBA PNGs ({g['giant_kb']:.0f} KB, 100 MB "
          f"decoded) one after another while a third posts {len(g['during'])} drawings; then 2 giants at once; "
          f"--threads {threads}")
    print(f"{'drawings':<24} {'answered 200':>12} {'503':>5} {'p50 ms':>8} {'max ms':>8}")
    for name, rows in (("alone (reference)", g["alone"]), ("beside the giants", g["during"])):
        times = sorted(1000 * t for _, t in rows)
        print(f"{name:<24} {sum(s == 200 for s, _ in rows):>12} {sum(s == 503 for s, _ in rows):>5} "
              f"{statistics.median(times):>8.1f} {times[-1]:>8.1f}")
    statuses = [s for s, _ in g["giants"]]
    print(f"giants: {statuses.count(200)} answered 200, {statuses.count(503)} 503, median "
          f"{statistics.median(t for _, t in g['giants']):.2f} s; server memory: idle {g['idle']:.0f} MiB, "
          f"peak {g['peak']:.0f} MiB, after {g['after']:.0f} MiB")


def cold_predict(model: Path, runtime: str, image: Path, runs: int) -> float:
    argv = [str(Path(sys.executable).with_name("mnist-kit")), "predict", "--model", str(model), "--runtime", runtime,
            str(image)]
    if not Path(argv[0]).exists():
        argv = [sys.executable, "-m", "mnist_kit", *argv[1:]]
    return wall(argv, runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--root", type=Path, default=Path("checkpoints"))
    ap.add_argument("--requests", type=int, default=3000, help="at most this many requests per concurrency level")
    ap.add_argument("--seconds", type=float, default=15, help="at most this long per concurrency level")
    ap.add_argument("--memory-requests", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=4, help="the server's --threads")
    ap.add_argument("--runs", type=int, default=5, help="cold predicts to time")
    ap.add_argument("--giants-only", action="store_true", help="only the giant images beside drawings")
    args = ap.parse_args()
    model = args.model or predict.newest_export(args.root)
    meta = inference.read_meta(model)
    if not (model / inference.ONNX).is_file():
        raise SystemExit(f"{model} holds no model.onnx; export it again (mnist-kit export writes it by default)")
    images = canvas_pngs(meta)
    server = Server(model, "onnxruntime", args.threads)
    try:
        giants = giants_and_drawings(server, images[0])
    finally:
        server.stop()
    if args.giants_only:
        report_giants(giants, args.threads)
        return 0
    rows, memory, cold = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.png"
        one.write_bytes(images[0])
        for runtime in RUNTIMES:
            cold[runtime] = cold_predict(model, runtime, one, args.runs)
            print(f"{runtime}: cold predict {cold[runtime]:.2f} s", flush=True)
    for runtime in RUNTIMES:
        server = Server(model, runtime, args.threads)
        try:
            load(server.port, images, 1, 100, 60)  # the first 100 requests, then the memory
            after_100 = server.memory()[0]
            for clients in CONCURRENCY:
                rows[runtime, clients] = r = load(server.port, images, clients, args.requests, args.seconds)
                print(f"{runtime}, {clients} clients: {r['requests']} requests, {r['rps']:.0f}/s, "
                      f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms", flush=True)
            done = 100 + sum(rows[runtime, c]["requests"] for c in CONCURRENCY)
            if done < args.memory_requests:
                load(server.port, images, 4, args.memory_requests - done, 600)
            memory[runtime] = (after_100, *server.memory())
        finally:
            server.stop()

    print(f"\nmnist-kit serve on {model} ({meta['dataset']}), --threads {args.threads}, {os.cpu_count()} CPU cores; "
          "280x280 PNG per request, clients on the same machine")
    print(f"{'runtime':<12} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for (runtime, clients), r in rows.items():
        print(f"{runtime:<12} {clients:>7} {r['requests']:>8} {r['rps']:>7.0f} {r['p50']:>7.1f} {r['p99']:>7.1f} "
              f"{r['failures']:>6}")
    print(f"\n{'runtime':<12} {'RSS after 100':>14} {f'after {args.memory_requests:,}':>14} {'peak':>8} "
          f"{'cold predict':>13}")
    for runtime in RUNTIMES:
        a, b, peak = memory[runtime]
        print(f"{runtime:<12} {a:>10.0f} MiB {b:>10.0f} MiB {peak:>4.0f} MiB {cold[runtime]:>11.2f} s")
    print("\ntargets: cold predict <= 0.6 s, serve resident memory <= 150 MiB (onnxruntime)")
    server = Server(model, "onnxruntime", args.threads)
    try:
        a = attack(server)
    finally:
        server.stop()
    print(f"\nattack on decoding: 4 clients at once, each a batch of 12 PNGs of 5000x5000 16-bit RGBA "
          f"({a['body_kb']:.0f} KB a request), --threads {args.threads}")
    for status, seconds, text in a["answers"]:
        print(f"  {status} after {seconds:.1f} s: {text}")
    print(f"  slowest of {a['healthz_n']} /healthz meanwhile: {1000 * a['healthz_max']:.0f} ms; server memory "
          f"{a['rss_before']:.0f} MiB before, peak {a['peak']:.0f} MiB")
    report_giants(giants, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
