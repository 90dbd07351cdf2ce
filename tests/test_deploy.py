"""export and predict: realistic photos of digits made here, a model trained here, bad input per file."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import EPS, VARIANTS, render_digit, run_cli, run_subprocess
from mnist_kit.data.idx import write_idx
from mnist_kit.deploy import preprocess as pp

pytestmark = pytest.mark.slow  # trains, exports and predicts


def test_predict_of_an_eps_among_good_files_answers_the_others_and_runs_no_ghostscript(digit_export, tmp_path,
                                                                                      fake_ghostscript):
    env, gs_ran = fake_ghostscript
    good = VARIANTS["jpeg dark ink on tinted paper"](7, tmp_path)
    (tmp_path / "h.eps").write_bytes(EPS)
    (tmp_path / "evil.png").write_bytes(EPS)
    r = run_subprocess("predict", good, tmp_path / "h.eps", tmp_path / "evil.png", "--json", "--model",
                       digit_export, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0]["class"] == 7 and all("not an image in a format" in row["error"] for row in rows[1:]), rows
    assert not gs_ran.exists()


# ---------------------------------------------------------------- a model trained here, exported, used

@pytest.fixture(scope="module")
def font_digits(tmp_path_factory):
    """An MNIST-like IDX data set of font digits (random size, shift, rotation), made the way MNIST was."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("fontdigits")

    def make(n):
        y = np.arange(n) % 10
        x = np.stack([pp.preprocess_array(render_digit(int(d), int(rng.choice((60, 90, 140))), rng.uniform(-12, 12),
                                                       int(rng.integers(-10, 10)), int(rng.integers(-10, 10))))
                      for d in y])
        return x, y.astype(np.uint8)

    (xtr, ytr), (xte, yte) = make(1000), make(200)
    for name, arr in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        write_idx(folder / name, arr)
    return folder


@pytest.fixture
def exported(font_digits, tmp_path):
    assert run_cli("prepare", "--from-dir", font_digits, "--no-verify").exit_code == 0
    result = run_cli("train", "-o", "data.val_size=200", "-o", "train.epochs=6", "-o", "train.log_every=10",
                     "-o", "output.visualdl=false", "--name", "digits")
    assert result.exit_code == 0, result.output
    result = run_cli("export")
    assert result.exit_code == 0, result.output
    return Path("checkpoints/digits/export/best")


def test_export_writes_a_checked_self_contained_model(exported):
    names = sorted(p.name for p in exported.iterdir())
    # by default also model.onnx, checked (paddle2onnx and onnxruntime are dependencies)
    assert names in (["mnist_kit_model.json", "model.json", "model.onnx", "model.pdiparams"],
                     ["mnist_kit_model.json", "model.onnx", "model.pdiparams", "model.pdmodel"])
    meta = json.loads((exported / "mnist_kit_model.json").read_text())
    assert meta["onnx"]["max_abs_logit_difference"] <= 1e-4
    assert meta["onnx"]["val_accuracy"] == meta["checks"]["val_accuracy"]
    run = json.loads(Path("checkpoints/digits/run.json").read_text())
    assert meta["normalization"] == run["normalization"] and meta["classes"] == [str(d) for d in range(10)]
    assert meta["input_shape"] == [None, 1, 28, 28] and meta["preprocess"] == "digit"
    assert meta["source"]["checkpoint"] == "best.pdckpt" and len(meta["source"]["checkpoint_sha256"]) == 64
    checks = meta["checks"]
    assert checks["max_abs_logit_difference"] <= 1e-4
    assert checks["val_accuracy"] == checks["val_accuracy_checkpoint"]
    assert {"paddle", "mnist_kit"} <= set(meta["versions"])


def test_predict_reads_photos_of_digits(exported, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    truth = {}
    for i, d in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 2):
        variant = list(VARIANTS)[i % len(VARIANTS)]
        sub = photos / f"{i:02d}"
        sub.mkdir()
        path = VARIANTS[variant](d, sub)
        target = photos / f"{i:02d}_{d}{path.suffix}"
        path.rename(target)
        truth[str(target)] = d
    result = run_cli("predict", photos, "--json", "--save-preprocessed", tmp_path / "seen")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 20
    correct = sum(r["class"] == truth[r["file"]] for r in rows)
    assert correct >= 18, [(r["file"], r["class"], r["probability"]) for r in rows]
    assert all(len(r["top"]) == 3 and r["top"][0]["class"] == r["class"] for r in rows)
    seen = sorted((tmp_path / "seen").iterdir())
    assert len(seen) == 20 and Image.open(seen[0]).size == (28, 28)


def test_photos_made_from_a_test_set_are_real_files_predict_reads(tmp_path, font_digits):
    from mnist_kit.data.idx import read_idx
    from mnist_kit.deploy import photos

    x, y = read_idx(font_digits / "t10k-images-idx3-ubyte"), read_idx(font_digits / "t10k-labels-idx1-ubyte")
    files = photos.write_photos(x, y, tmp_path, count=40, seed=3)
    assert len(files) == 40 and len({p.name for p, _ in files}) == 40
    assert {"".join(p.suffixes) for p, _ in files} == {".jpg", ".png", ".alpha.png"}
    (tmp_path / "again").mkdir()
    again = photos.write_photos(x, y, tmp_path / "again", count=40, seed=3)
    assert [p.read_bytes() for p, _ in files] == [p.read_bytes() for p, _ in again]  # the same seed, the same photos
    chosen, corrs = photos.choose(y, 40, 3), []
    for (path, label), i in zip(files, chosen):
        img = Image.open(path)
        assert label == y[i] and 40 <= min(img.size) and max(img.size) <= 3 * 260
        seen = pp.preprocess(path)
        corrs.append(np.corrcoef(seen.ravel().astype(float), pp.preprocess_array(x[i]).ravel().astype(float))[0, 1])
    # predict's preprocessing undoes the photo: the digit it reads is the test image (a thin 0 shifted by a
    # pixel correlates least)
    assert min(corrs) > 0.6 and np.mean(corrs) > 0.85, corrs


def test_eval_photos_reports_photo_accuracy_beside_test_accuracy(exported, tmp_path):
    result = run_cli("eval", "--photos", 50, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["photos"]["count"] == 50 and set(report["photos"]["by_format"]) <= {".jpg", ".png", ".alpha.png"}
    assert report["photos"]["accuracy"] >= 0.8 and report["accuracy"] >= 0.9
    text = run_cli("eval", "--photos", 50, "--save-photos", tmp_path / "kept")
    assert text.exit_code == 0, text.output
    line = next(x for x in text.stdout.splitlines() if x.startswith("photos: accuracy"))
    assert f"{100 * report['photos']['accuracy']:.2f}% on 50 photos made from test images" in line  # same seed
    assert f"those test images as they are: {100 * report['photos']['same_test_images_accuracy']:.2f}%" in line
    assert len(list((tmp_path / "kept").iterdir())) == 50
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "holiday.jpg").write_bytes(b"mine")
    refused = run_cli("eval", "--photos", 5, "--save-photos", tmp_path / "mine")
    assert refused.exit_code == 1 and "is not an empty folder" in refused.output
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["holiday.jpg"]
    assert (tmp_path / "mine" / "holiday.jpg").read_bytes() == b"mine"
    assert run_cli("eval", "--save-photos", tmp_path / "new").exit_code == 1


def test_predict_reports_bad_files_and_still_predicts_the_others(exported, tmp_path):
    good = VARIANTS["jpeg dark ink on tinted paper"](7, tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    result = run_cli("predict", good, tmp_path / "empty.png", tmp_path / "text.png", tmp_path / "missing.jpg",
                     str(tmp_path / "*.gif"), "--json")
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["class"] == 7 and "error" not in rows[0]
    assert [r.get("error") for r in rows[1:]] == ["the file is empty", "not an image in a format mnist-kit reads "
                                                  "(PNG, JPEG, BMP, GIF, TIFF, WebP, PGM/PPM/PBM)",
                                                  "no such file or folder", "no file matches this pattern"]
    assert "4 of 5 file(s) failed" in result.stderr
    table = run_cli("predict", good, "--topk", 2)
    assert table.exit_code == 0 and ": 7 (p=" in table.stdout


def test_predict_with_a_folder_that_is_not_an_export(tmp_path):
    (tmp_path / "m").mkdir()
    result = run_cli("predict", "x.png", "--model", tmp_path / "m")
    assert result.exit_code == 1 and "is not a mnist-kit export" in result.output
    result = run_cli("predict", "x.png")
    assert result.exit_code == 1 and "no exported model under checkpoints" in result.output


def test_predict_unpickles_nothing_and_imports_no_training_code(exported, tmp_path):
    img = VARIANTS["png light ink on dark"](4, tmp_path)
    code = f"""
import pickle, sys
def refuse(*a, **k):
    raise AssertionError("something was unpickled")
pickle.load = pickle.loads = refuse
class Refused(pickle.Unpickler):
    def __init__(self, *a, **k):
        refuse()
pickle.Unpickler = Refused
from mnist_kit.cli import main
try:
    main(["predict", "--model", {str(exported)!r}, {str(img)!r}, "--json"])
except SystemExit as e:
    assert e.code in (0, None), e.code
loaded = [m for m in ("mnist_kit.training.engine", "mnist_kit.models.networks", "mnist_kit.models.optim",
                      "mnist_kit.experiments.checkpoint")
          if m in sys.modules]
assert not loaded, loaded
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["class"] == 4


def test_export_refuses_an_unknown_epoch_and_keeps_earlier_exports(exported):
    before = (exported / "model.pdiparams").read_bytes()
    result = run_cli("export", "--epoch", 42)
    assert result.exit_code == 1 and "no checkpoint of epoch 42" in result.output
    assert (exported / "model.pdiparams").read_bytes() == before


def test_pdparams_export_is_what_paddle_tutorials_load(exported):
    result = run_cli("export", "--format", "pdparams", "--out", "sd")
    assert result.exit_code == 0, result.output
    assert "state dicts: sd/model.pdparams and model.pdopt (pickles" in result.stdout
    meta = json.loads(Path("sd/mnist_kit_model.json").read_text())
    assert meta["pdparams"]["pickle"] and meta["pdparams"]["max_abs_logit_difference"] <= 1e-4
    # a new process, as a tutorial's notebook: build the network, paddle.load, set_state_dict, go on training
    script = """
import json, sys
import numpy as np, paddle
from mnist_kit.models.networks import build_model
meta = json.load(open("sd/mnist_kit_model.json"))
model = build_model(meta["model"], meta["input_shape"][1:], len(meta["classes"]))
missing, unexpected = model.set_state_dict(paddle.load("sd/model.pdparams"))
assert not missing and not unexpected, (missing, unexpected)
opt = paddle.optimizer.Adam(learning_rate=0.001, parameters=model.parameters())
opt.set_state_dict(paddle.load("sd/model.pdopt"))
moments = {k: v for k, v in opt.state_dict().items() if "moment1" in k}
assert moments and all(float(np.abs(np.asarray(v)).sum()) > 0 for v in moments.values()), list(moments)
model.eval()
x = paddle.to_tensor(np.load("x.npy"))
np.save("logits.npy", model(x).numpy())
"""
    from mnist_kit.deploy.inference import Predictor

    x = np.random.default_rng(0).normal(size=(8, 1, 28, 28)).astype(np.float32)
    np.save("x.npy", x)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.abs(np.load("logits.npy") - Predictor(Path("sd")).logits(x)).max() <= 1e-4


def test_onnx_export_is_checked_with_onnxruntime(exported):
    pytest.importorskip("paddle2onnx")
    ort = pytest.importorskip("onnxruntime")
    result = run_cli("export", "--format", "onnx", "--out", "onnx_export")
    assert result.exit_code == 0, result.output
    assert "ONNX: onnx_export/model.onnx, checked with onnxruntime" in result.stdout
    meta = json.loads(Path("onnx_export/mnist_kit_model.json").read_text())
    assert meta["onnx"]["max_abs_logit_difference"] <= 1e-4
    assert meta["onnx"]["val_accuracy"] == meta["checks"]["val_accuracy"]
    session = ort.InferenceSession("onnx_export/model.onnx", providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.zeros((3, 1, 28, 28), np.float32)})[0].shape == (3, 10)
    # the Paddle files are there too, so predict works on the same folder
    assert run_cli("predict", "--model", "onnx_export", VARIANTS["palette"](2, Path("."))).exit_code == 0
