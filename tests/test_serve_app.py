"""The serve application in this process (deploy/app.py, through Flask's test client): its routes, answers,
limits and errors as JSON, and its headers. The real server, its connections and its signals are in
test_serve.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers import multipart, synthetic_arrays
from mnist_kit.deploy import app as serve_app
from mnist_kit.deploy import inference


@pytest.fixture(scope="module")
def client(small_export):
    return serve_app.create_app(inference.Predictor(small_export)).test_client()


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


DIGITS = synthetic_arrays(n_train=10, n_test=10, seed=3)["test_images"]  # black background, a bright block


def test_the_pad_and_its_files_are_served_with_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and b"<canvas" in page.data
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff" and "Access-Control-Allow-Origin" not in page.headers
    assert client.get("/static/..%2f..%2fapp.py").status_code == 404


def test_health_and_the_model_facts(client):
    assert client.get("/healthz").get_json()["status"] == "ok"
    facts = client.get("/api/model").get_json()
    assert facts["classes"] == [str(d) for d in range(10)] and facts["input_shape"] == [None, 1, 28, 28]
    assert facts["limits"]["max_batch"] == serve_app.MAX_BATCH
    assert "/" not in facts["source"]["run"]  # the run by name only: the server's folders are its own


def test_one_image_as_the_body_or_as_a_file_gets_the_same_answer(client):
    raw = client.post("/api/predict?topk=3", data=_png(DIGITS[0]), content_type="image/png")
    assert raw.status_code == 200, raw.get_json()
    answer = raw.get_json()
    assert len(answer["top"]) == 3 and answer["top"][0]["class"] == answer["class"]
    assert 0 < answer["probability"] <= 1 and [t["probability"] for t in answer["top"]] == sorted(
        [t["probability"] for t in answer["top"]], reverse=True)
    body, headers = multipart([("image", "digit.png", _png(DIGITS[0]))])
    assert client.post("/api/predict?topk=3", data=body, headers=headers).get_json() == answer


def test_a_batch_answers_each_image_and_names_a_bad_one(client):
    body, headers = multipart([("a", "one.png", _png(DIGITS[1])), ("b", "bad.png", b"not an image"),
                               ("c", "two.png", _png(DIGITS[2]))])
    results = client.post("/api/predict/batch", data=body, headers=headers).get_json()["results"]
    assert [r["file"] for r in results] == ["one.png", "bad.png", "two.png"]
    assert "error" in results[1] and "class" in results[0] and "class" in results[2]


@pytest.mark.parametrize("method,path,kwargs,status,phrase", [
    ("post", "/api/predict", {"data": b"not an image", "content_type": "image/png"}, 400, "not an image"),
    ("post", "/api/predict", {"data": b"{}", "content_type": "application/json"}, 415, "send an image"),
    ("post", "/api/predict?topk=0", {"data": b"x", "content_type": "image/png"}, 400, "topk"),
    ("get", "/api/nothing", {}, 404, "nothing at /api/nothing"),
    ("delete", "/api/predict", {}, 405, "DELETE is not allowed"),
    ("post", "/api/predict/batch", {"data": b"x", "content_type": "image/png"}, 415, "multipart/form-data"),
])
def test_errors_are_json_with_their_status(client, method, path, kwargs, status, phrase):
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == status and phrase in answer.get_json()["error"], answer.get_json()


def test_too_many_images_in_a_batch_is_413(client):
    body, headers = multipart([(f"f{i}", f"{i}.png", b"x") for i in range(serve_app.MAX_BATCH + 1)])
    answer = client.post("/api/predict/batch", data=body, headers=headers)
    assert answer.status_code == 413 and f"at most {serve_app.MAX_BATCH}" in answer.get_json()["error"]


def test_cors_is_sent_only_for_the_origin_given(small_export):
    client = serve_app.create_app(inference.Predictor(small_export), cors="http://example.org").test_client()
    preflight = client.options("/api/predict")
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://example.org"
    assert "Access-Control-Allow-Origin" not in client.get("/").headers
