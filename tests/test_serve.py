"""mnist-kit serve: a real server process on 127.0.0.1, real HTTP requests; and predict and serve without paddle."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from helpers import EPS, FAST, VARIANTS, Server, multipart, photo, render_digit, run_cli, run_subprocess, wait_for

pytestmark = pytest.mark.slow  # starts real servers


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kw)
    return buffer.getvalue()


def formats(tmp_path: Path) -> dict[str, bytes]:
    """One digit photo per image format and mode predict reads."""
    out = {}
    for i, (name, make) in enumerate(VARIANTS.items()):  # JPEG, PNG, RGBA, palette, 16-bit, CMYK
        (tmp_path / f"v{i}").mkdir()
        out[name] = make(i % 10, tmp_path / f"v{i}").read_bytes()
    shot = photo(render_digit(3))
    out.update({"bmp": encoded(shot, "BMP"), "gif": encoded(shot.convert("P"), "GIF"), "tiff": encoded(shot, "TIFF"),
                "webp": encoded(shot, "WEBP", quality=90), "grayscale png": encoded(shot.convert("L"), "PNG")})
    return out


@pytest.fixture(scope="module")
def server(digit_export):
    s = Server("--model", digit_export, "--threads", "4")
    yield s
    code = s.stop()
    assert code == 0 and s.lines[-1] == "stopped", s.lines


def test_answers_equal_predict_for_images_of_every_format(server, digit_export, tmp_path):
    images = formats(tmp_path)
    files = []
    for i, (name, data) in enumerate(images.items()):
        files.append(tmp_path / f"{i:02d}.img")
        files[-1].write_bytes(data)
    result = run_subprocess("predict", "--model", digit_export, "--json", "--topk", "5", *files)
    assert result.returncode == 0, result.stderr
    expected = [json.loads(line) for line in result.stdout.splitlines()]
    for path, want in zip(files, expected):
        data = path.read_bytes()
        status, _, raw = server.post_image(data, "application/octet-stream", "?topk=5")
        assert status == 200, raw
        body, headers = multipart([("image", "photo.bin", data)])
        status, _, form = server.request("POST", "/api/predict?topk=5", body, headers)
        assert status == 200, form
        want.pop("file")
        assert raw == want and form == want, (path, raw, want)
    # and they mean something: most photos (of Pillow's font, which the model never saw) are read right
    assert sum(r["label"] == str(i % 10) for i, r in enumerate(expected[:len(VARIANTS)])) >= len(VARIANTS) // 2


def test_a_batch_answers_each_file_and_names_the_bad_ones(server, tmp_path):
    good = formats(tmp_path)
    body, headers = multipart([("images", "a.png", good["grayscale png"]), ("images", "b: c.txt", b"not a picture"),
                               ("other", "c.jpg", good["jpeg dark ink on tinted paper"])])
    status, _, answer = server.request("POST", "/api/predict/batch?topk=2&input=1", body, headers)
    assert status == 200, answer
    a, b, c = answer["results"]
    assert (a["file"], b["file"], c["file"]) == ("a.png", "b: c.txt", "c.jpg")
    assert b["error"].startswith("not an image in a format mnist-kit reads") and "class" not in b
    for r in (a, c):
        assert len(r["top"]) == 2 and r["input"].startswith("data:image/png;base64,")
        seen = Image.open(io.BytesIO(__import__("base64").b64decode(r["input"].split(",", 1)[1])))
        assert seen.size == (28, 28)
    _, _, one = server.post_image(good["grayscale png"], "image/png", "?topk=2")
    assert {k: a[k] for k in one} == one  # the same answer as alone


PNG = encoded(photo(render_digit(5)).convert("L"), "PNG")
HUGE = encoded(Image.new("1", (6000, 5000)), "PNG")  # 30 million pixels in a few kilobytes
BAD = [  # (what, method, path, body, headers, status, words in the error)
    ("empty body", "POST", "/api/predict", b"", {"Content-Type": "image/png"}, 400, "empty"),
    ("not an image", "POST", "/api/predict", b"hello, server", {"Content-Type": "image/png"}, 400, "not an image"),
    ("truncated png", "POST", "/api/predict", PNG[: len(PNG) // 2], {"Content-Type": "image/png"}, 400, "truncated"),
    ("too many pixels", "POST", "/api/predict", HUGE, {"Content-Type": "image/png"}, 413, "too large"),
    ("body just over 10 MB", "POST", "/api/predict", b"\0" * (10 * 1024 * 1024 + 1000), {"Content-Type": "image/png"},
     413, "larger than 10 MB"),
    ("text content type", "POST", "/api/predict", PNG, {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("no content type", "POST", "/api/predict", PNG, {}, 415, "without Content-Type"),
    ("a path instead of an image", "POST", "/api/predict", json.dumps({"path": "/etc/passwd"}).encode(),
     {"Content-Type": "application/json"}, 415, "application/json"),
    ("a path as the body", "POST", "/api/predict", b"/etc/passwd", {"Content-Type": "image/png"}, 400, "not an image"),
    ("bad topk", "POST", "/api/predict?topk=many", PNG, {"Content-Type": "image/png"}, 400, "topk"),
    ("topk 0", "POST", "/api/predict?topk=0", PNG, {"Content-Type": "image/png"}, 400, "topk"),
    ("batch as raw body", "POST", "/api/predict/batch", PNG, {"Content-Type": "image/png"}, 415, "multipart"),
    ("GET on predict", "GET", "/api/predict", None, {}, 405, "GET is not allowed on /api/predict; use POST"),
    ("OPTIONS without --cors", "OPTIONS", "/api/predict", None, {}, 405, "use POST"),
    ("no such page", "GET", "/etc/passwd", None, {}, 404, "nothing at"),
    ("static outside its folder", "GET", "/static/..%2f..%2fserve.py", None, {}, 404, ""),
    ("double slash", "GET", "/api//model", None, {}, 404, "nothing at /api//model"),  # was a 308 with HTML
    ("double slashes up", "GET", "//static//..//serve.py", None, {}, 404, "nothing at"),
    ("EPS named png", "POST", "/api/predict", EPS, {"Content-Type": "image/png"}, 400, "not an image in a format"),
    ("a form of 1,001 parts", "POST", "/api/predict/batch", *multipart([("f", f"{i}.png", b"x") for i in range(1001)]),
     413, "more than 1,000 parts"),
    ("a 2 MB part header", "POST", "/api/predict/batch",
     b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.png\"\r\nX-Long: " + b"a" * 2_000_000
     + b"\r\n\r\nx\r\n--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}, 413, "over 500,000 bytes"),
    ("unsupported transfer coding", "POST", "/api/predict", None,
     {"Transfer-Encoding": "gzip, chunked", "Content-Type": "image/png"}, 501, "not supported"),
    ("bad Content-Length", "POST", "/api/predict", None, {"Content-Length": "x", "Content-Type": "image/png"}, 400,
     "Content-Length"),
    ("a Content-Length of 4,301 digits", "POST", "/api/predict", None,  # over Python's int() limit
     {"Content-Length": "9" * 4301, "Content-Type": "image/png"}, 400, "Content-Length"),
]


@pytest.mark.parametrize("what,method,path,body,headers,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_json_error_and_the_server_lives_on(server, what, method, path, body, headers, status,
                                                              words):
    got, response_headers, answer = server.request(method, path, body, headers)
    assert got == status, (got, answer)
    assert response_headers["Content-Type"].startswith("application/json"), answer
    assert set(answer) == {"error"} and words in answer["error"], answer
    assert "Traceback" not in answer["error"]
    assert server.request("GET", "/healthz")[0] == 200


def test_a_large_body_is_refused_before_it_is_sent(server):
    """A client announcing 50 MB gets the 413 at once, in JSON, without sending a byte of it."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Content-Type", "image/png")
    conn.putheader("Content-Length", str(50 * 1024 * 1024))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read()) == {"error": "the request body is larger than 10 MB"}
    conn.close()


def _hostile(rng, good: list[bytes]) -> bytes:
    """A body a careless or hostile client might send: noise, cut or bit-flipped images, lying headers,
    degenerate sizes."""
    kind = rng.randrange(7)
    src = rng.choice(good)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(3000)))
    if kind == 1:
        return src[:rng.randrange(1, len(src))]
    if kind == 2:  # flipped bytes inside a real image
        data = bytearray(src)
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 3:  # a PNG header declaring an enormous size
        png = encoded(Image.new("L", (40, 40), 200), "PNG")
        return png[:16] + rng.choice([10**5, 2**31 - 1]).to_bytes(4, "big") + (70000).to_bytes(4, "big") + png[24:]
    size = rng.choice([(1, 1), (1, 5000), (5000, 1), (3, 3), (50, 50)])
    mode = rng.choice(["1", "L", "RGBA", "I;16", "F", "P", "CMYK"])
    img = Image.new(mode, size)
    if kind == 4:
        img = Image.new(mode, size, rng.randrange(1, 255) if mode in ("1", "L", "P", "I;16", "F") else None)
    fmt = rng.choice(["PNG", "TIFF", "GIF", "BMP"]) if mode in ("1", "L", "P") else "TIFF"
    return encoded(img, fmt)


def test_two_hundred_hostile_bodies_never_make_a_500(server, tmp_path):
    import random

    rng = random.Random(19)
    good = list(formats(tmp_path).values())
    statuses = {}
    for i in range(200):
        body = _hostile(rng, good)
        status, headers, answer = server.post_image(body, "application/octet-stream")
        assert status in (200, 400, 413), (i, status, answer)
        assert headers["Content-Type"].startswith("application/json"), (i, answer)
        assert ("class" in answer) if status == 200 else (set(answer) == {"error"}), (i, answer)
        statuses[status] = statuses.get(status, 0) + 1
    assert statuses.get(400, 0) >= 50 and server.request("GET", "/healthz")[0] == 200, statuses
    assert server.proc.poll() is None


def test_form_uploads_must_hold_one_file_and_file_names_are_never_opened(server, tmp_path):
    body, headers = multipart([])
    status, _, answer = server.request("POST", "/api/predict", body, headers)
    assert status == 400 and "0 files" in answer["error"]
    body, headers = multipart([("a", "1.png", PNG), ("b", "2.png", PNG)])
    assert server.request("POST", "/api/predict", body, headers)[0] == 400
    body, headers = multipart([("image", "/etc/passwd", b"root:x:0:0")])  # the name is a label, never a path
    status, _, answer = server.request("POST", "/api/predict", body, headers)
    assert status == 400 and answer["error"].startswith("/etc/passwd: not an image in a format mnist-kit reads")
    body, headers = multipart([("image", "../../../../etc/hostname", PNG)])
    assert server.request("POST", "/api/predict", body, headers)[0] == 200
    small = encoded(Image.new("L", (28, 28)), "PNG")
    body, headers = multipart([("image", f"{i}.png", small) for i in range(65)])
    status, _, answer = server.request("POST", "/api/predict/batch", body, headers)
    assert status == 413 and "at most 64" in answer["error"]


def test_sixteen_concurrent_clients_get_the_answers_of_single_requests(server, tmp_path):
    images = list(formats(tmp_path).values())
    alone = [server.post_image(data, "application/octet-stream")[2] for data in images]

    def client(k: int) -> list[tuple[int, dict]]:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)  # keep-alive, as clients do
        out = []
        for j in range(8):
            i = (k + j) % len(images)
            conn.request("POST", "/api/predict", images[i], {"Content-Type": "application/octet-stream"})
            r = conn.getresponse()
            out.append((i, r.status, json.loads(r.read())))
        conn.close()
        return out

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(client, range(16)) for a in batch]
    assert len(answers) == 128
    for i, status, answer in answers:
        assert status == 200 and answer == alone[i], (i, answer, alone[i])


def _big_png(pixels: int = 24_000_000) -> bytes:
    """A 16-bit grayscale PNG of ``pixels`` pixels (under the 25 Mpx of one image) in about 50 KB."""
    side = int(pixels ** 0.5)
    return encoded(Image.new("I;16", (side, side), 300), "PNG")


def test_an_eps_sent_to_the_server_never_reaches_ghostscript(digit_export, fake_ghostscript):
    env, gs_ran = fake_ghostscript
    s = Server("--model", digit_export, env=env)
    try:
        for body, headers in [(EPS, {"Content-Type": "image/png"}), multipart([("f", "evil.png", EPS),
                                                                               ("f", "ok.png", PNG)])]:
            path = "/api/predict/batch" if headers["Content-Type"].startswith("multipart") else "/api/predict"
            status, _, answer = s.request("POST", path, body, headers)
            assert status in (200, 400) and "not an image in a format mnist-kit reads" in json.dumps(answer), answer
        assert answer["results"][1]["class"] == 5  # the good file of the batch is answered
        assert s.request("GET", "/healthz")[0] == 200
    finally:
        assert s.stop() == 0
    assert not gs_ran.exists()


def test_a_request_over_its_pixels_in_all_is_refused_whole(server):
    """Every image under the per-image limit, three together over the request's (they took 4 s each)."""
    big = _big_png()
    body, headers = multipart([("f", f"big{i}.png", big) for i in range(3)] + [("f", "small.png", PNG)])
    status, _, answer = server.request("POST", "/api/predict/batch", body, headers)
    assert status == 413 and "big2.png: the images of this request hold more than 50,000,000 pixels" in answer["error"]
    assert server.request("GET", "/healthz")[0] == 200


def test_pixels_being_decoded_are_bounded_for_the_whole_server(digit_export):
    """In process, on the real app and predictor: while other requests hold the server's decoding budget, an
    image is answered 503 with Retry-After at once; the budget comes back after every request, failed or not."""
    from mnist_kit.deploy import app as serve_app
    from mnist_kit.deploy import inference

    app = serve_app.create_app(inference.Predictor(digit_export))
    service, client = app.extensions["mnist_kit"], app.test_client()
    raw = {"content_type": "image/png"}
    assert client.post("/api/predict", data=PNG, **raw).status_code == 200
    assert client.post("/api/predict", data=b"junk", **raw).status_code == 400
    batch = {"content_type": "multipart/form-data",
             "data": {"f": [(io.BytesIO(_big_png()), f"b{i}.png") for i in range(3)]}}
    assert client.post("/api/predict/batch", **batch).status_code == 413
    assert service.budget.used == 0  # given back after an answer, a decode error and a refusal
    service.budget.take(serve_app.MAX_DECODING_PIXELS - 1_000_000)  # other requests decoding right now
    try:
        answer = client.post("/api/predict", data=_big_png(5_000_000), **raw)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.json
        assert "the server is decoding" in answer.json["error"] and "try again" in answer.json["error"]
        assert client.post("/api/predict", data=PNG, **raw).status_code == 200  # a drawing is never refused
        assert client.post("/api/predict", data=_big_png(4_000_000), **raw).status_code in (200, 400)  # nor 4 Mpx
    finally:
        service.budget.give(serve_app.MAX_DECODING_PIXELS - 1_000_000)
    assert client.post("/api/predict", data=_big_png(5_000_000), **raw).status_code in (200, 400)
    assert service.budget.used == 0


def _giant_rgba_png(side: int = 5000) -> bytes:
    """A white RGBA PNG of side x side with a dark stroke (about 120 KB): 100 MB once decoded."""
    from PIL import ImageDraw

    img = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    ImageDraw.Draw(img).line([(side // 3, side // 4), (side // 2, 3 * side // 4)], fill=(0, 0, 0, 255),
                             width=side // 20)
    return encoded(img, "PNG")


def _memory_mib(pid: int, key: str) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields[key].split()[0]) / 1024


def test_drawings_are_answered_while_two_clients_post_giant_images(digit_export):
    """Issue 40: two clients posting 5000x5000 PNGs one after another held the decoding budget, and 37 of 40
    drawings were answered 503. A drawing is decoded outside that budget: all 40 are answered."""
    s = Server("--model", digit_export, "--threads", "4")
    giant, done, statuses = _giant_rgba_png(), threading.Event(), []

    def giant_client():
        while not done.is_set():
            statuses.append(s.request("POST", "/api/predict", giant, {"Content-Type": "image/png"})[0])

    clients = [threading.Thread(target=giant_client) for _ in range(2)]
    try:
        for c in clients:
            c.start()
        wait_for(lambda: len(statuses) >= 2, what="the giant clients' first answers")  # they are under way
        drawings = [s.request("POST", "/api/predict", PNG, {"Content-Type": "image/png"}) for _ in range(40)]
    finally:
        done.set()
        for c in clients:
            c.join(300)
        assert s.stop() == 0
    assert [d[0] for d in drawings] == [200] * 40 and {d[2]["class"] for d in drawings} == {5}, drawings[:3]
    assert set(statuses) <= {200, 503}, statuses


def test_giant_images_cost_their_decoded_size_and_the_memory_is_given_back(digit_export):
    """Issue 40: one 25-megapixel RGBA PNG raised the server by about 250 MB and two at once to 1 GB, which it
    kept (about 600 MB afterwards). Now each is reduced while it is read: two at once cost about their decoded
    size (2 x 100 MB), and the server returns to where it was (blocks of 1 MB or more are mapped on their own).
    Memory, not time: the same on a loaded machine."""
    s = Server("--model", digit_export, "--threads", "4")
    giant = _giant_rgba_png()
    try:
        assert s.request("POST", "/api/predict", PNG, {"Content-Type": "image/png"})[0] == 200
        idle = _memory_mib(s.proc.pid, "VmRSS")
        answers = []
        posts = [threading.Thread(target=lambda: answers.append(
            s.request("POST", "/api/predict", giant, {"Content-Type": "image/png"}))) for _ in range(2)]
        for p in posts:
            p.start()
        for p in posts:
            p.join(300)
        peak, after = _memory_mib(s.proc.pid, "VmHWM"), _memory_mib(s.proc.pid, "VmRSS")
    finally:
        assert s.stop() == 0
    assert [a[0] for a in answers] == [200, 200], answers
    assert peak - idle < 350, (idle, peak)  # measured: +215 MiB (before: +469)
    assert after - idle < 30, (idle, after)  # measured: +1 MiB (before: +110)


def test_model_facts_health_and_the_page(server, digit_export):
    status, _, facts = server.request("GET", "/api/model")
    meta = json.loads((digit_export / "mnist_kit_model.json").read_text())
    assert status == 200 and facts["classes"] == meta["classes"] and facts["runtime"] == "onnxruntime"
    assert facts["checks"] == meta["checks"] and facts["source"]["run"] == "digits"  # a name, not a server path
    assert facts["limits"] == {"max_body_bytes": 10 * 1024 * 1024, "max_pixels": 25_000_000, "max_batch": 64,
                               "max_request_pixels": 50_000_000, "max_decoding_pixels": 50_000_000,
                               "small_pixels": 4_000_000,
                               "max_connections": 200, "idle_timeout_seconds": 60}
    assert server.request("GET", "/healthz")[2] == {"status": "ok", "runtime": "onnxruntime"}
    status, headers, page = server.request("GET", "/")
    assert status == 200 and b"<canvas" in page and "Access-Control-Allow-Origin" not in headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]  # the page may load nothing from elsewhere
    for name in (b"static/pad.js", b"static/pad.css"):
        assert name in page and server.request("GET", "/" + name.decode())[0] == 200
    text = page + server.request("GET", "/static/pad.js")[2] + server.request("GET", "/static/pad.css")[2]
    assert b"https://" not in text and b"http://" not in text  # works offline: nothing remote
    status, headers, _ = server.request("GET", "/api/model", headers={"Origin": "http://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in headers  # CORS off by default


def test_cors_when_asked_and_a_warning_off_loopback(digit_export):
    s = Server("--model", digit_export, "--cors", "http://localhost:3000", "--host", "0.0.0.0")
    try:
        assert any(line.startswith("warning: binding 0.0.0.0") for line in s.lines), s.lines
        _, headers, _ = s.post_image(PNG)
        assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        status, headers, _ = s.request("OPTIONS", "/api/predict", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})
        assert status == 204 and "POST" in headers["Access-Control-Allow-Methods"]  # a preflight's answer
    finally:
        assert s.stop(signal.SIGINT) == 0  # Ctrl-C stops it normally
    assert s.lines[-1] == "stopped"


@pytest.mark.parametrize("origin", ["http://a\r\nX-Injected: 1", "http://a/path", "localhost:3000", "", "ftp://a",
                                    "http://a b"])
def test_a_cors_origin_that_is_not_one_is_refused_at_start(digit_export, origin):
    r = run_subprocess("serve", "--model", digit_export, "--port", "0", "--cors", origin, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("Error: --cors") and "is not an origin" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def _healthz_on_a_new_connection(s: Server, timeout: float) -> int:
    conn = http.client.HTTPConnection(s.host, s.port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def test_idle_and_slow_connections_beyond_twice_the_limit_never_hold_the_server(digit_export):
    """waitress alone stopped accepting at 100 connections until one had been idle 120 s: 98 silent sockets
    held the server. Twice the limit of sockets that send nothing, or half a request, and it still answers
    (within 30 s here, less than the idle timeout: it is the eviction that answers, not the timeout)."""
    s = Server("--model", digit_export)
    held = []
    try:
        limit = s.request("GET", "/api/model")[2]["limits"]["max_connections"]
        for i in range(2 * limit):
            sock = socket.create_connection((s.host, s.port), timeout=30)
            if i % 2:  # a slow client: half a request's headers
                sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n")
            held.append(sock)
        assert _healthz_on_a_new_connection(s, timeout=30) == 200
        status, _, answer = s.post_image(PNG)
        assert status == 200 and answer["class"] == 5, answer
    finally:
        for sock in held:
            sock.close()
        assert s.stop() == 0


def test_paddle_inference_behind_the_server_answers_as_onnxruntime(server, digit_export, tmp_path):
    images = list(formats(tmp_path).values())
    s = Server("--model", digit_export, "--runtime", "paddle", "--threads", "8")
    try:
        assert s.request("GET", "/healthz")[2]["runtime"] == "paddle"
        with concurrent.futures.ThreadPoolExecutor(16) as pool:  # its predictor is shared under a lock
            paddle = list(pool.map(lambda d: s.post_image(d, "image/png")[2], images * 4))
    finally:
        assert s.stop() == 0
    onnx = [server.post_image(d, "image/png")[2] for d in images]
    for p, o in zip(paddle, onnx * 4):
        assert p["class"] == o["class"] and abs(p["probability"] - o["probability"]) < 1e-4, (p, o)


def test_a_port_in_use_and_a_missing_export_are_one_clear_error(digit_export, tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        result = run_subprocess("serve", "--model", digit_export, "--port", holder.getsockname()[1], timeout=60)
    assert result.returncode == 1 and result.stderr.strip().startswith("Error: port") and "--port" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_subprocess("serve", "--model", tmp_path / "nothing", timeout=60)
    assert result.returncode == 1 and "is not a mnist-kit export" in result.stderr and "Traceback" not in result.stderr
    result = run_subprocess("serve", "--root", tmp_path, timeout=60)
    assert result.returncode == 1 and "no exported model under" in result.stderr
    import paddle

    if not paddle.device.is_compiled_with_cuda():  # Paddle itself would log an error and use the CPU
        for command in (["serve"], ["predict", "x.png"]):
            result = run_subprocess(*command, "--model", digit_export, "--device", "gpu", timeout=60)
            assert result.returncode == 1 and result.stderr.strip() == (
                "Error: --device gpu needs paddle's GPU build (paddlepaddle-gpu); this paddle is the CPU build: "
                "use --device cpu"), result.stderr


def test_sigterm_with_a_client_connected_stops_cleanly_and_frees_the_port(digit_export):
    s = Server("--model", digit_export)
    conn = http.client.HTTPConnection(s.host, s.port, timeout=30)
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Content-Type", "image/png")
    conn.putheader("Content-Length", str(len(PNG)))
    conn.endheaders()
    conn.send(PNG[:100])
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)  # while the request is still arriving
    assert s.stop() == 0 and s.lines[-1] == "stopped", s.lines
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", s.port))
    conn.close()


# ---------------------------------------------------------------- without paddle

def _rss_mib(pid: int) -> float:
    return _memory_mib(pid, "VmRSS")


def _unread_bytes(server_port: int, client_port: int) -> int | None:
    """What the server has not yet read of its connection from ``client_port`` (its socket's receive queue in
    /proc/net/tcp), or None while the kernel lists no such connection."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(queues.split(":")[1], 16)
    return None


def test_sigterm_lets_running_and_queued_requests_end_and_answers_them(digit_export):
    """One thread: a slow batch runs, a second request waits behind it; SIGTERM then. Both are answered (waitress
    alone dropped the queued one and, past 5 s, let the running one write into a closed socket: EBADF)."""
    s = Server("--model", digit_export, "--threads", "1")
    second = http.client.HTTPConnection(s.host, s.port, timeout=120)
    second.request("GET", "/healthz")  # a connection the server has accepted (kept alive)
    assert second.getresponse().read()
    idle, answers = _rss_mib(s.proc.pid), {}

    def slow_batch():
        answers["slow"] = s.request("POST", "/api/predict/batch",
                                    *multipart([("f", f"b{i}.png", _big_png()) for i in range(2)]))

    slow = threading.Thread(target=slow_batch)
    slow.start()
    deadline = time.time() + 60
    while _rss_mib(s.proc.pid) < idle + 40:  # the event: the server is decoding the first big image
        assert time.time() < deadline and slow.is_alive(), "the slow request did not start"
        time.sleep(0.01)
    second.request("POST", "/api/predict", PNG, {"Content-Type": "image/png"})  # sent: waits for the one thread
    # the event: the server has read it (queued for the thread). Sent is not enough: on a loaded machine the
    # SIGTERM could come first, and a keep-alive connection with nothing read yet is idle, closed at shutdown
    client_port = second.sock.getsockname()[1]
    wait_for(lambda: _unread_bytes(s.port, client_port) == 0, what="the server to read the queued request")
    s.proc.send_signal(signal.SIGTERM)
    queued = second.getresponse()
    answers["queued"] = queued.status, json.loads(queued.read())
    slow.join(120)
    assert s.proc.wait(60) == 0 and s.lines[-1] == "stopped", s.lines  # on its own: one signal is enough
    assert answers["slow"][0] == 200 and len(answers["slow"][2]["results"]) == 2, answers["slow"]
    assert answers["queued"][0] == 200 and answers["queued"][1]["class"] == 5, answers["queued"]
    log = "\n".join(s.lines)
    assert "Traceback" not in log and "Errno" not in log and "Exception" not in log, log


@pytest.fixture
def no_paddle(tmp_path):
    """An environment in which ``import paddle`` fails, as on a machine without it."""
    blocker = tmp_path / "blocker" / "paddle"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('paddle is not installed here (blocked by the test)')\n")
    return {"PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])}


def test_predict_and_serve_on_an_onnx_export_never_import_paddle(digit_export, no_paddle, tmp_path):
    photo_file = tmp_path / "seven.jpg"
    photo(render_digit(7)).save(photo_file, quality=90)
    with_paddle = run_subprocess("predict", "--model", digit_export, "--json", photo_file)
    without = run_subprocess("predict", "--model", digit_export, "--json", photo_file, env=no_paddle)
    assert without.returncode == 0, without.stderr
    assert without.stdout == with_paddle.stdout and json.loads(without.stdout)["label"] == "7"
    s = Server("--model", digit_export, env=no_paddle)
    try:
        status, _, answer = s.post_image(photo_file.read_bytes(), "image/jpeg")
        assert status == 200 and {k: answer[k] for k in ("class", "probability")} == {
            k: json.loads(with_paddle.stdout)[k] for k in ("class", "probability")}
    finally:
        assert s.stop() == 0
    # Paddle Inference asked for where paddle is missing: one clear error
    result = run_subprocess("predict", "--model", digit_export, "--runtime", "paddle", photo_file, env=no_paddle)
    assert result.returncode == 1 and "Error: Paddle Inference is needed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("damage", ["nested", "/dev/zero"])
def test_a_damaged_export_metadata_is_one_line_without_paddle_too(digit_export, no_paddle, tmp_path, damage):
    """Issue 40: mnist_kit_model.json nested 2,000 deep ended predict and serve in a RecursionError traceback."""
    import shutil

    export = tmp_path / "export"
    shutil.copytree(digit_export, export)
    meta = export / "mnist_kit_model.json"
    meta.unlink()
    meta.write_text("[" * 2000 + "]" * 2000) if damage == "nested" else meta.symlink_to("/dev/zero")
    for args in (["predict", "--model", export, "x.png"], ["serve", "--model", export, "--port", "0"]):
        for env in (None, no_paddle):
            done = run_subprocess(*args, env=env, timeout=120)
            assert done.returncode == 1 and "Traceback" not in done.stderr, (args, env, done.stderr[-2000:])
            errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1 and str(meta) in errors[0], (args, env, done.stderr)


def test_runtime_choice_follows_the_export_and_what_is_installed(digit_export, tmp_path, monkeypatch):
    from mnist_kit.deploy import inference

    meta = inference.read_meta(digit_export)
    assert inference.choose_runtime(digit_export, meta) == "onnxruntime"
    assert inference.choose_runtime(digit_export, meta, device="gpu:0") == "paddle"
    assert inference.choose_runtime(digit_export, {**meta, "onnx": None}) == "paddle"  # not checked at export
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    assert inference.choose_runtime(digit_export, meta) == "paddle"
    result = run_cli("predict", "--model", digit_export, "--runtime", "onnxruntime", "x.png")
    assert result.exit_code == 1 and "needs onnxruntime" in result.output


def test_export_without_the_onnx_tools_says_so_and_predict_uses_paddle(trained_for_serve, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)
    result = run_cli("export", "--out", "plain")
    assert result.exit_code == 0, result.output
    assert ("note: no model.onnx (paddle2onnx not installed); predict and serve will use Paddle Inference"
            in result.output)
    assert not Path("plain/model.onnx").exists()
    assert json.loads(Path("plain/mnist_kit_model.json").read_text())["onnx_skipped"] == "paddle2onnx not installed"
    result = run_cli("export", "--format", "onnx", "--out", "strict")
    assert result.exit_code == 1 and "--format onnx needs paddle2onnx" in result.output
    assert not Path("strict").exists()


@pytest.fixture
def trained_for_serve(prepared):

    result = run_cli("train", *FAST, "-o", "output.visualdl=false")
    assert result.exit_code == 0, result.output
