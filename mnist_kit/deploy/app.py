"""The HTTP API and the drawing pad of ``mnist-kit serve`` as a Flask application: its routes, the limits on
what a request may hold (bytes, images, pixels: ``PixelBudget``), errors as JSON, and the security and CORS
headers. ``serve.py`` runs it under waitress. Imports no training code.

    GET  /                    the drawing pad (static files of this package only: it works offline)
    POST /api/predict         one image, as a multipart file or as the raw body -> JSON
    POST /api/predict/batch   several images as multipart files -> {"results": [...]}
    GET  /api/model           the export's metadata, the runtime and the limits
    GET  /healthz             {"status": "ok"}

Images are read and preprocessed exactly as ``mnist-kit predict`` reads files (``predict.reader``) and answered
as it answers (``predict.answer``). Nothing a client sends is ever taken as a path.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from mnist_kit.deploy import inference
from mnist_kit.deploy.predict import answer, reader
from mnist_kit.errors import UsageError
from mnist_kit.util.images import ImageError, TooLarge

STATIC = Path(__file__).with_name("static")
MAX_BODY = 10 * 1024 * 1024  # bytes in one request; more is answered 413
TOO_LARGE = f"the request body is larger than {MAX_BODY // (1024 * 1024)} MB"  # by Flask or by waitress
MAX_PIXELS = 25_000_000  # pixels in one image (a 6,000 x 4,000 photo); more is answered 413 before decoding
MAX_BATCH = 64  # images in one batch request
# Decoding is what costs: a 5000x5000 PNG of 200 KB takes about 250 MB to read; four batch requests of twelve
# such images held every thread for 11 s (/healthz waited 10.5 s) and the server grew to 1.3 GB
# (scripts/bench_serve.py). So the pixels are bounded per request (413 beyond) and being decoded at once by
# the whole server (503 beyond, at once: a thread that waited would be one that /healthz and small images need).
# Since images are reduced while they are read (util/images.MAX_SIDE), a 5000x5000 RGBA PNG costs about its
# decoded size, 100 MB (250 MB before). An image of at most SMALL_PIXELS (a drawing, a scan, a 4-megapixel
# photo) is decoded outside the budget: drawing-sized requests neither wait behind giant ones nor are refused
# for them (two clients posting 5000x5000 PNGs got 37 of 40 drawings answered 503). Each thread decodes one
# image at a time, so these cost at most --threads x SMALL_PIXELS.
MAX_REQUEST_PIXELS = 2 * MAX_PIXELS  # pixels decoded for one request, all its images together
MAX_DECODING_PIXELS = 2 * MAX_PIXELS  # pixels of images over SMALL_PIXELS being decoded at once, all requests
SMALL_PIXELS = 4_000_000
MAX_FORM_PARTS = 1000  # parts of a multipart form (Werkzeug's default, said in the error)
MAX_FORM_MEMORY = 500_000  # bytes of a form's text field or a part's headers (Werkzeug's default)
# Connections: at its limit waitress stops accepting until one closes (idle ones after 120 s by default), so
# 98 sockets that sent nothing held the server; here the connection idle longest is closed instead
MAX_CONNECTIONS = 200
IDLE_TIMEOUT = 60  # seconds a connection may stay idle
RAW_TYPES = ("image/", "application/octet-stream")  # content types of a raw image body
# the page may load only this server's own files: no CDN, no remote fonts, scripts or images
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
log = logging.getLogger("mnist_kit.serve")


class BadRequest(Exception):
    """A request the client can fix: answered with ``status`` and ``{"error": message}``. ``whole``: it ends
    the whole request, even a batch (where one bad file otherwise only gets its own error)."""

    def __init__(self, message: str, status: int = 400, reason: str | None = None, whole: bool = False):
        super().__init__(message)
        self.status, self.reason, self.whole = status, reason or message, whole  # reason: without the file's name


class _OverBudget(ImageError):
    """Raised while an image's header is read, before it is decoded: the request is over its pixels (413) or
    the server over the pixels it decodes at once (503)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class PixelBudget:
    """The pixels the server's threads are decoding right now (``MAX_DECODING_PIXELS``)."""

    def __init__(self, limit: int):
        self.limit, self.used, self._lock = limit, 0, threading.Lock()

    def take(self, pixels: int) -> None:
        with self._lock:
            if self.used and self.used + pixels > self.limit:  # one image alone is bounded by MAX_PIXELS
                raise _OverBudget(f"the server is decoding {self.used:,} pixels of other requests right now (at "
                                  f"most {self.limit:,} at once); try again in a moment", 503)
            self.used += pixels

    def give(self, pixels: int) -> None:
        with self._lock:
            self.used -= pixels


class _Tally:
    """One request's pixels: decoded in all (``MAX_REQUEST_PIXELS``), and held from the budget right now (an
    image over ``SMALL_PIXELS``)."""

    def __init__(self, budget: PixelBudget):
        self.budget, self.total, self.held = budget, 0, 0

    def admit(self, pixels: int) -> None:
        """``images.open_image``'s ``admit``: called with an image's pixels before they are decoded."""
        self.total += pixels
        if self.total > MAX_REQUEST_PIXELS:
            raise _OverBudget(f"the images of this request hold more than {MAX_REQUEST_PIXELS:,} pixels in all; "
                              "send them in several requests, or smaller", 413)
        if pixels > SMALL_PIXELS:
            self.budget.take(pixels)
            self.held += pixels

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0


def model_facts(predictor: inference.Predictor) -> dict:
    """What ``GET /api/model`` answers: the export's metadata (the source run by name only: the server's
    folders are not a client's business), the runtime and the server's limits."""
    meta: dict = dict(predictor.meta)
    source = dict(meta.get("source") or {})
    if "run" in source:
        source["run"] = Path(str(source["run"])).name
    meta["source"] = source
    meta["export"] = predictor.folder.name
    meta["runtime"] = predictor.runtime
    meta["limits"] = {"max_body_bytes": MAX_BODY, "max_pixels": MAX_PIXELS, "max_batch": MAX_BATCH,
                      "max_request_pixels": MAX_REQUEST_PIXELS, "max_decoding_pixels": MAX_DECODING_PIXELS,
                      "small_pixels": SMALL_PIXELS,
                      "max_connections": MAX_CONNECTIONS, "idle_timeout_seconds": IDLE_TIMEOUT}
    return meta


class Service:
    """What the API does, on one predictor shared by the server's threads."""

    def __init__(self, predictor: inference.Predictor, min_confidence: float = 0.6):
        self.predictor = predictor
        self.classes = predictor.meta["classes"]
        self.read = reader(predictor.meta, MAX_PIXELS)  # exactly as mnist-kit predict reads a file
        self.facts = model_facts(predictor)
        self.min_confidence = min_confidence
        self.budget = PixelBudget(MAX_DECODING_PIXELS)

    def options(self, args) -> tuple[int, float, bool]:
        """topk, min_confidence and input (also answer the image the model saw) from the query string."""
        try:
            topk = int(args.get("topk", 3))
            low = float(args.get("min_confidence", self.min_confidence))
        except ValueError:
            raise BadRequest("topk must be an integer and min_confidence a number") from None
        if not (1 <= topk and 0 <= low <= 1 and math.isfinite(low)):
            raise BadRequest("topk must be at least 1 and min_confidence between 0 and 1")
        return min(topk, len(self.classes)), low, args.get("input", "0") not in ("0", "false", "")

    def decode(self, data: bytes, name: str | None, tally: _Tally) -> np.ndarray:
        """The image as the model's input; BadRequest (naming the file ``name``, if any) if it cannot be."""
        try:
            return self.read(data, admit=tally.admit)
        except _OverBudget as e:
            raise BadRequest(f"{name}: {e}" if name else str(e), e.status, whole=True) from None
        except ImageError as e:
            status, reason = 413 if isinstance(e, TooLarge) else 400, str(e)
        except Exception as e:  # noqa: BLE001 - preprocessing a hostile image may fail in other ways
            log.exception("reading %s failed", name)
            status, reason = 400, f"cannot read this image ({type(e).__name__})"
        finally:
            tally.release()  # the decoded image is gone: only its 28x28 (or folder-sized) input is kept
        raise BadRequest(f"{name}: {reason}" if name else reason, status, reason)

    def answers(self, images: list[np.ndarray], options: tuple[int, float, bool]) -> list[dict]:
        topk, low, with_input = options
        probs = self.predictor.probabilities(np.stack(images)) if images else np.zeros((0, 0))
        out = []
        for image, p in zip(images, probs):
            out.append(answer(p, self.classes, topk, low))
            if with_input:
                out[-1]["input"] = png_data_url(image)
        return out

    def predict_one(self, req) -> dict:
        options = self.options(req.args)  # a bad query is answered before the image is read
        if req.mimetype == "multipart/form-data":
            files = [f for _, f in req.files.items(multi=True)]
            if len(files) != 1:
                raise BadRequest(f"send one image as a file field (this form holds {len(files)} files); "
                                 "for several, POST them to /api/predict/batch")
            data, name = files[0].read(), files[0].filename or files[0].name
        elif req.mimetype.startswith(RAW_TYPES):
            data, name = req.get_data(cache=False), None
        else:
            raise BadRequest("send an image as the body (Content-Type image/png, image/jpeg, ... or "
                             "application/octet-stream) or as a multipart/form-data file, not "
                             f"{req.mimetype or 'a body without Content-Type'}", 415)
        return self.answers([self.decode(data, name, _Tally(self.budget))], options)[0]

    def predict_batch(self, req) -> dict:
        options = self.options(req.args)
        if req.mimetype != "multipart/form-data":
            raise BadRequest("send the images as files of a multipart/form-data body", 415)
        files = [f for _, f in req.files.items(multi=True)]
        if not files:
            raise BadRequest("the form holds no files; send each image as a file field")
        if len(files) > MAX_BATCH:
            raise BadRequest(f"{len(files)} images in one request; at most {MAX_BATCH}", 413)
        results, images, tally = [], [], _Tally(self.budget)
        for f in files:
            name = f.filename or f.name
            try:
                images.append(self.decode(f.read(), name, tally))
                results.append({"file": name})
            except BadRequest as e:  # one bad file does not fail the others, as in mnist-kit predict
                if e.whole:
                    raise
                results.append({"file": name, "error": e.reason})
        for r, a in zip([r for r in results if "error" not in r], self.answers(images, options)):
            r.update(a)
        return {"results": results}


def create_app(predictor: inference.Predictor, cors: str | None = None) -> Flask:
    """The Flask application on ``predictor`` (which may be called from several threads at once). ``cors``: an
    origin allowed to call the API from its pages ("*" for any); None sends no CORS headers."""
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, MAX_FORM_PARTS=MAX_FORM_PARTS, MAX_FORM_MEMORY_SIZE=MAX_FORM_MEMORY)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # the default provider's setting
    app.url_map.merge_slashes = False  # /api//model is a JSON 404, not a redirect with an HTML body
    service = Service(predictor)
    app.extensions["mnist_kit"] = service
    routes: dict[str, tuple[str, str, Callable[..., Any]]] = {  # rule: (endpoint, method, view)
        "/": ("page", "GET", lambda: _no_cache(send_from_directory(STATIC, "index.html"))),
        # send_from_directory refuses any name outside STATIC
        "/static/<path:name>": ("static", "GET", lambda name: _no_cache(send_from_directory(STATIC, name))),
        "/healthz": ("healthz", "GET", lambda: {"status": "ok", "runtime": predictor.runtime}),
        "/api/model": ("model", "GET", lambda: service.facts),
        "/api/predict": ("predict", "POST", lambda: service.predict_one(request)),
        "/api/predict/batch": ("batch", "POST", lambda: service.predict_batch(request)),
    }
    for rule, (endpoint, method, view) in routes.items():
        # no automatic OPTIONS (an empty 200): a 405 in JSON, or with --cors a preflight's 204 (below)
        app.add_url_rule(rule, endpoint, view, methods=[method], provide_automatic_options=False)
    if cors:
        app.add_url_rule("/api/<path:rest>", "preflight", lambda rest: ("", 204), methods=["OPTIONS"])

    _errors_as_json(app)
    _headers(app, cors)
    return app


def _errors_as_json(app: Flask) -> None:
    """Every error a JSON ``{"error": ...}`` with its status: ours (BadRequest), Flask's and werkzeug's (404,
    405, 413), and a bug's (500, logged here, never a traceback to the client)."""
    @app.errorhandler(BadRequest)
    def bad_request(e: BadRequest):
        response = jsonify(error=str(e))
        if e.status == 503:
            response.headers["Retry-After"] = "1"
        return response, e.status

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        messages = {404: f"nothing at {request.path}; the API is POST /api/predict, POST /api/predict/batch, "
                         "GET /api/model and GET /healthz",
                    405: f"{request.method} is not allowed on {request.path}; use "
                         + " or ".join(sorted(getattr(e, "valid_methods", None) or ["GET"])),
                    413: _too_large(request)}
        code = e.code or 500
        return jsonify(error=messages.get(code, e.description)), code

    @app.errorhandler(Exception)
    def internal_error(e: Exception):  # a bug of ours: logged here, never a traceback to the client
        log.exception("request %s %s failed", request.method, request.path)
        return jsonify(error="internal error; the server's log has the details"), 500


def _headers(app: Flask, cors: str | None) -> None:
    """The security headers of every answer, and CORS on the API when ``--cors`` names an origin."""
    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        if cors and request.path.startswith("/api/"):
            response.headers.update({"Access-Control-Allow-Origin": cors, "Vary": "Origin",
                                     "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                                     "Access-Control-Allow-Headers": "Content-Type"})
        return response


def _too_large(req) -> str:
    """What a 413 from Flask or Werkzeug was for: the body's size, or the form parser's own limits."""
    if req.content_length is not None and req.content_length > MAX_BODY:
        return TOO_LARGE
    return (f"the form is over the server's form limits: more than {MAX_FORM_PARTS:,} parts, or a part's headers "
            f"or a text field over {MAX_FORM_MEMORY:,} bytes; send each image as a file field, at most "
            f"{MAX_BATCH} in one request")


ORIGIN = re.compile(r"https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def check_origin(cors: str | None) -> None:
    """``--cors`` must be ``*`` or one origin (``scheme://host[:port]``): it is sent as a header on every API
    answer, where a line break would break every one of them (checked at start, not per request)."""
    if cors is not None and cors != "*" and not ORIGIN.fullmatch(cors):
        raise UsageError(f"--cors {cors!r} is not an origin; give * (any page) or one origin such as "
                        "http://localhost:3000 (scheme, host and port only)")


def _no_cache(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-cache"  # a new version of the package is seen at once
    return response


def png_data_url(image: np.ndarray) -> str:
    """A uint8 image as a ``data:image/png;base64,...`` URL (the input the model saw, for the page)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, "L" if image.ndim == 2 else "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
