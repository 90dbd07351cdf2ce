"""The VisualDL log of a short real run, read back component by component, and served by the real server."""

import io
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from helpers import (
    FAST,
    free_port,
    metrics_rows,
    peak_rss_mib,
    run_cli,
    synthetic_arrays,
    visualdl_api,
    visualdl_get,
    write_idx_folder,
)
from mnist_kit import config, data
from mnist_kit.cli import cli
from mnist_kit.evaluation import metrics, scoring
from mnist_kit.experiments import checkpoint
from mnist_kit.logbook import visuals, writer
from mnist_kit.logbook.writer import read_records
from mnist_kit.training import trainlog

HIST_EVERY, N_EMB = 5, 50


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch CNN run on synthetic data with every component on, the graph included."""
    base = tmp_path_factory.mktemp("vdl")
    data.prepare("mnist", base / "data", from_dir=write_idx_folder(base / "idx", synthetic_arrays()), verify=False)
    args = ["train", *FAST, "-o", f"data.root={base / 'data'}", "-o", f"output.root={base / 'runs'}",
            "-o", "log.graph=true", "-o", f"log.histogram_every={HIST_EVERY}", "-o", f"log.embeddings={N_EMB}",
            "--name", "r"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return base / "runs" / "r"


@pytest.fixture(scope="module")
def values(run):
    """component -> tag -> [Record.Value] in file order."""
    files = list((run / "vdl").glob("vdlrecords*"))
    assert len(files) == 1, files  # one writer, one file per run
    out = defaultdict(lambda: defaultdict(list))
    for record in read_records(files[0]):
        for v in record.values:
            out[v.WhichOneof("one_value")][v.tag].append(v)
    return out


def test_scalars(run, values):
    s = values["value"]
    assert [v.id for v in s["train/loss"]] == [5, 10, 15, 20]
    assert {"train/acc", "train/lr", "train/epoch_loss", "train/epoch_acc", "val/loss", "val/acc",
            "speed/images_per_sec"} <= set(s)
    rows = metrics_rows(run)
    assert [v.id for v in s["val/acc"]] == [r["step"] for r in rows]
    assert np.allclose([v.value for v in s["val/acc"]], [r["val_acc"] for r in rows])
    assert all(0.0 <= v.value <= 1.0 for v in s["train/acc"])


def _png(v):
    return Image.open(io.BytesIO(v.image.encoded_image_string))


def test_images(run, values):
    imgs = values["image"]
    (samples,) = imgs["input/train_samples"]
    # sized for the board's thumbnail (at twice its size), so that the captions read there
    w, h = _png(samples).size
    assert samples.id == 0 and max(w / visuals.THUMB_W, h / visuals.THUMB_H) == pytest.approx(1, abs=0.02)
    assert [v.id for v in imgs["val/misclassified"]] == [10, 20]
    assert [v.id for v in imgs["val/confusion_matrix"]] == [10, 20]
    assert _png(imgs["val/confusion_matrix"][0]).mode == "RGB"


def test_histograms_count_every_parameter_value(run, values):
    state = checkpoint.load(run / "ckpt" / "epoch_001.pdckpt")["model"]
    hists = values["histogram"]
    for name, tensor in state.items():
        records = hists[f"params/{name}"]
        assert [v.id for v in records] == list(range(HIST_EVERY, 21, HIST_EVERY))
        assert sum(records[-1].histogram.hist) == tensor.size  # every value counted
        assert len(hists[f"grads/{name}"]) == len(records)
    # the last histogram is of the final parameters
    last = hists["params/fc.weight"][-1].histogram
    w = state["fc.weight"].numpy()
    assert last.bin_edges[0] == pytest.approx(w.min()) and last.bin_edges[-1] == pytest.approx(w.max())


def test_pr_and_roc_curves_use_true_labels_and_softmax_probabilities(run, values):
    cfg = config.load(run / "config.yaml")
    state = checkpoint.load(run / "ckpt" / "epoch_001.pdckpt")
    splits = data.load_splits(cfg, data.Normalization(**state["normalization"]))
    from mnist_kit.models.networks import build_model

    model = build_model(cfg.model, splits.prepared.input_shape, 10)
    model.set_state_dict(state["model"])
    logits, _ = scoring.batch_logits(scoring.eager(model), splits.val)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    y = splits.val.y
    pr_tags = sorted(t for t in values["pr_curve"])
    assert len(pr_tags) == 10 and len(values["roc_curve"]) == 10
    for k in range(10):
        pr = [v for v in values["pr_curve"][pr_tags[k]] if v.id == 20][0].pr_curve
        roc = [v for v in values["roc_curve"][pr_tags[k].replace("pr/", "roc/")] if v.id == 20][0].roc_curve
        positives = int((y == k).sum())
        # lowest threshold: everything predicted positive, precision = class frequency, recall = 1
        assert pr.TP[0] == positives and pr.FP[0] == len(y) - positives
        assert pr.precision[0] == pytest.approx(positives / len(y))
        assert pr.recall[0] == pytest.approx(1.0)
        # threshold 0.5 (index 63 of 127): counted directly from the true labels and the softmax
        assert pr.TP[63] == int(((y == k) & (probs[:, k] >= 0.5)).sum())
        assert pr.FP[63] == int(((y != k) & (probs[:, k] >= 0.5)).sum())
        # ROC: tpr = TP / (TP + FN), fpr = FP / (FP + TN)
        tp, fn, fp, tn = map(np.array, (roc.TP, roc.FN, roc.FP, roc.TN))
        assert np.allclose(roc.tpr, np.divide(tp, tp + fn, out=np.zeros(len(tp)), where=tp + fn > 0))
        assert np.allclose(roc.fpr, np.divide(fp, fp + tn, out=np.zeros(len(fp)), where=fp + tn > 0))


def test_binary_curve_against_a_hand_count():
    c = metrics.binary_curve(np.array([1, 0, 1, 0], bool), np.array([0.9, 0.8, 0.3, 0.1]), num_thresholds=3)
    assert c["tp"].tolist() == [2, 1, 0] and c["fp"].tolist() == [2, 1, 0]  # thresholds 0, 0.5, 1
    # nothing predicted positive at threshold 1: precision 1 by convention (a curve from (0, 1), no diagonal)
    assert c["precision"].tolist() == [0.5, 0.5, 1.0] and c["recall"].tolist() == [1.0, 0.5, 0.0]
    assert c["fpr"].tolist() == [1.0, 0.5, 0.0]


def test_a_run_shorter_than_histogram_every_has_histograms_at_every_epoch_end(prepared):
    result = run_cli("train", *FAST, "--name", "short")  # 2 epochs of 10 steps; log.histogram_every is 200
    assert result.exit_code == 0, result.output
    (f,) = Path("checkpoints/short/vdl").glob("vdlrecords*")
    steps = sorted({v.id for r in read_records(f) for v in r.values if v.tag == "params/fc.weight"})
    assert steps == [10, 20]


def test_pca_keeps_the_geometry_of_low_rank_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 980))  # 980 dimensions, rank 10
    y = metrics.pca(x, 64)
    assert y.shape == (300, 64)
    d = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)  # noqa: E731
    assert np.allclose(d(y[:50]), d(x[:50]), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_the_graph_of_a_network_with_test_time_augmentation_is_written(tmp_path):
    """The graph child builds a legacy static program, where Paddle 3.3's logsumexp (test-time augmentation's
    average) takes no legacy variables: before the fix the board had no graph of such a run, only a warning."""
    data.prepare("mnist", tmp_path / "data", from_dir=write_idx_folder(tmp_path / "idx", synthetic_arrays()),
                 verify=False)
    result = run_cli("train", *FAST, "-o", "train.epochs=1", "-o", "log.graph=true", "-o", "model.tta=shift",
                     "-o", "output.visualdl=true", "--name", "tta")
    assert result.exit_code == 0 and "could not be written" not in result.output, result.output
    assert (tmp_path / "checkpoints" / "tta" / "graph" / "tta" / "model.pdmodel").is_file()


def test_embeddings_hparams_text_and_graph(run, values):
    (emb,) = values["embeddings"]["val/features"]
    rows = emb.embeddings.embeddings
    # the CNN's 980 flattened features, reduced by PCA below VisualDL's 200-dimension limit
    assert emb.id == 20 and len(rows) == N_EMB and len(rows[0].vectors) == min(writer.EMBEDDING_DIMS, N_EMB)
    splits = data.load_splits(config.load(run / "config.yaml"))
    # each point's class (the board labels points by it), predicted class and whether that is right
    assert list(emb.embeddings.label_meta) == ["class", "predicted", "correct"]
    assert [r.label[0] for r in rows] == [str(k) for k in splits.val.y[:N_EMB]]
    assert {r.label[2] for r in rows} <= {"yes", "no"}
    assert all((r.label[0] == r.label[1]) == (r.label[2] == "yes") for r in rows)
    (hp,) = values["hparam"]["hparam"]
    names = [i.name for i in hp.hparam.hparamInfos]
    # what tells runs apart leads; keys at their defaults that no sweep varies are left out
    assert names[:4] == ["model/name", "optimizer/name", "optimizer/lr", "train/batch_size"]
    assert {"data/val_size", "train/epochs"} <= set(names) and "schedule/name" not in names
    assert not any("." in n for n in names)  # the board's table reads a dot as a nested path
    assert [m.name for m in hp.hparam.metricInfos] == trainlog.HPARAM_METRICS
    lines = [t.text.encoded_text_string for t in values["text"]["config"]]  # one per section, in order
    assert [line.split(":")[0] for line in lines] == list(config.load(run / "config.yaml").to_dict())
    assert yaml.safe_load("\n".join(lines)) == config.load(run / "config.yaml").to_dict()
    (training,) = values["text"]["training"]
    assert training.text.encoded_text_string.startswith("cpu: conv blocks and output layer on oneDNN 3.")
    graph = run / "graph" / "r"  # named after the run: the board's graph page labels models by folder
    assert (graph / "model.pdmodel").is_file() and len(list(graph.glob("vdlgraph*"))) == 1
    assert not list((run / "vdl").glob("vdlgraph*"))


def test_validation_lines_are_drawn_with_trainings(run, values):
    (val_file,) = (run / "vdl" / "val").glob("vdlrecords*")  # the second writer
    val = defaultdict(list)
    for record in read_records(val_file):
        for v in record.values:
            val[v.tag].append(v)
    rows = metrics_rows(run)
    for tag, train_key, val_key in trainlog.TRAIN_AND_VAL:
        assert [v.id for v in values["value"][tag]] == [v.id for v in val[tag]] == [r["step"] for r in rows]
        assert np.allclose([v.value for v in values["value"][tag]], [r[train_key] for r in rows])
        assert np.allclose([v.value for v in val[tag]], [r[val_key] for r in rows])
    assert set(val) - {"meta_data_tag"} == {"train_and_val/loss", "train_and_val/acc"}  # no other page lists it


def test_the_real_server_serves_every_component(run, tmp_path):
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path)}  # importing visualdl writes under ~/.visualdl
    proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", "board", "--logdir", run.parent, "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"at http://127.0.0.1:{port}/app/scalar" in line, line + proc.stderr.read()
        assert "graph/r/model.pdmodel" in line
        tabs = visualdl_api(port, "component_tabs")
        for tab in ("scalar", "image", "histogram", "pr_curve", "roc_curve", "text", "hyper_parameters",
                    "embeddings", "static_graph", "dynamic_graph"):
            assert tab in tabs, (tab, tabs)
        runs = visualdl_api(port, "runs")
        assert sorted(runs) == ["r", "r · val"], runs  # the run, and its validation lines' writer
        name = "r"
        points = visualdl_api(port, "scalar/list", run=name, tag="val/acc")
        assert [p[1] for p in points] == [10, 20]
        assert len(visualdl_api(port, "image/list", run=name, tag="val/confusion_matrix")) == 2
        assert visualdl_get(port, "image/image", run=name, tag="input/train_samples", index=0)[:4] == b"\x89PNG"
        assert visualdl_api(port, "histogram/list", run=name, tag="params/fc.weight")
        assert visualdl_api(port, "pr-curve/list", run=name, tag="pr/0_0")
        assert visualdl_api(port, "roc-curve/list", run=name, tag="roc/0_0")
        assert visualdl_api(port, "text/list", run=name, tag="config")
        assert visualdl_api(port, "hparams/list")
        assert visualdl_api(port, "embedding/list")
        model = visualdl_get(port, "graph/static_graph")  # the .pdmodel the board renders
        assert model == (run / "graph" / "r" / "model.pdmodel").read_bytes()
        graph_runs = visualdl_api(port, "graph_runs")  # the dynamic graph page: one model per run, named by folder
        assert [r.rsplit("/", 1)[-1] for r in graph_runs] == ["r"], graph_runs
        assert visualdl_api(port, "graph/graph", run=graph_runs[0], expand_all="false", refresh="true")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # stopping `mnist-kit board` stopped the VisualDL server it started: the port stops answering
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/alive", timeout=2).close()
        except OSError:
            break
        assert time.time() < deadline, "the VisualDL server still answers 30 s after the board was stopped"
        time.sleep(0.1)


def test_board_refuses_an_empty_logdir_and_warns_for_other_hosts(tmp_path):
    from mnist_kit.logbook.server import board_command

    result = CliRunner().invoke(cli, ["board", "--logdir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no VisualDL logs" in result.output
    argv, cwd = board_command(tmp_path / "runs", "127.0.0.1", 8040, None)
    assert argv[argv.index("--logdir") + 1] == "runs" and cwd == tmp_path  # relative log root
    assert "--disable-telemetry" in argv and argv[argv.index("--host") + 1] == "127.0.0.1"


def test_prepare_logs_samples_and_class_counts(prepared):
    logdir = prepared / "mnist" / "vdl"
    (f,) = logdir.glob("vdlrecords*")
    found = {v.tag: v for r in read_records(f) for v in r.values}
    grid = _png(found["data/train_samples_by_class"])
    w, h = grid.size  # one row of ten per class, its label first, within the board's thumbnail box
    assert h <= visuals.THUMB_H and w >= h
    assert "600 training and 200 test images" in found["data/class_counts"].text.encoded_text_string
    counts = [v.value for r in read_records(f) for v in r.values if v.tag == "data/train_count"]
    assert counts == [60.0] * 10


# ---------------------------------------------------------------- what is drawn is bounded

@pytest.mark.slow
def test_thousands_of_classes_are_drawn_within_bounds(tmp_path):
    import numpy as np
    from PIL import Image

    from mnist_kit.logbook import visuals

    picture = visuals.confusion_image(np.ones((10000, 10000), np.int32), [str(i) for i in range(10000)])
    assert picture.shape[0] * picture.shape[1] < 4000 * 4000
    assert visuals.grid(np.zeros((100000, 28, 28), np.uint8), ["x"] * 100000).shape[0] < 10000

    rng = np.random.default_rng(0)
    folder = tmp_path / "many"
    for k in range(1000):  # 1,000 classes of 5 images: 1 for validation, 1 for test
        (folder / f"c{k:04d}").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (8, 8)).astype(np.uint8)).save(folder / f"c{k:04d}" / f"{i}.png")
    args = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", "-o", "data.image_size=[8,8]",
            "-o", "data.val_ratio=0.2", "-o", "data.test_ratio=0.2", "-o", "model.channels=[4]"]
    done, peak = peak_rss_mib(["prepare", *args])
    assert done.returncode == 0 and peak < 1500, (peak, done.stderr[-2000:])
    done, peak = peak_rss_mib(["train", *args, "-o", "train.epochs=1", "-o", "log.embeddings=0", "--name", "many"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert peak < 2000, f"peak memory {peak:.0f} MiB"
