"""The CNN's conv blocks on oneDNN: equal to Paddle's stock layers, chosen, recorded, and falling back to
the stock layers when the library is missing, of another version, or a block cannot run."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import FAST, metrics_rows, run_cli
from mnist_kit.backend.runtime import paddle
from mnist_kit.models import onednn
from mnist_kit.models.networks import build_model
from mnist_kit.models.onednn import binding, choose

pytestmark = pytest.mark.slow  # trains on the oneDNN blocks

try:
    onednn.self_check(1)
    MISSING = None
except onednn.Unavailable as e:  # another platform or wheel: the stock layers train, and these tests say why
    MISSING = str(e)
needs_onednn = pytest.mark.skipif(MISSING is not None, reason=f"oneDNN unusable here: {MISSING}")


@pytest.fixture
def fresh_library(monkeypatch):
    """Forget the loaded library and the checks, so that a test can change what is found."""
    saved = dict(binding._state)
    binding._state.clear()
    yield
    binding._state.clear()
    binding._state.update(saved)


@needs_onednn
@pytest.mark.parametrize("kind", ["relu", "bn"])
@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("cin", [1, 3])
@pytest.mark.parametrize("n,h,w", [(1, 28, 28), (5, 13, 11), (16, 9, 30)])
def test_a_block_equals_the_stock_layers(kind, kernel, cin, n, h, w):
    # output, gradients of the input and of every parameter, batch norm's running statistics, eval output
    assert onednn.compare(cin, 6, kernel, kind, 1, n, h, w) <= 2e-5


@needs_onednn
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k,o,hwc", [(980, 10, (20, 7, 7)), (980, 10, None), (45, 3, (5, 3, 3)), (7, 4, None)])
@pytest.mark.parametrize("n", [1, 5, 64])
def test_the_output_layer_equals_the_stock_one(threads, k, o, hwc, n):
    # training and evaluation output, the gradients of the input, weight and bias; with hwc the input arrives
    # channels last and the stock weight is permuted
    assert onednn.compare_dense(k, o, threads, n, hwc) <= 2e-5


@needs_onednn
def test_the_output_layer_reads_the_last_block_channels_last_only_with_nothing_between():
    for dropout, head, hwc in ((0.0, None, (20, 7, 7)), (0.3, None, None), (0.0, [32], None)):
        model = build_model({"name": "cnn", "channels": [20, 20], "kernel_size": 5, "dropout": dropout, "head": head})
        assert onednn.enable(model, "on", "cpu", 1, (1, 28, 28)).output == "onednn"
        assert model._output.hwc == hwc and model._fast[-1].nhwc_out == (hwc is not None)
        x = paddle.to_tensor(np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype("float32"))
        model.eval()
        fast, fast_features = model(x).numpy(), model.conv_features(x).numpy()
        model.use_fast_blocks(None)
        assert np.allclose(fast, model(x).numpy(), rtol=1e-5, atol=1e-5)
        # the features (embeddings) in the stock (channels, rows, columns) order, whatever the layout
        assert np.allclose(fast_features, model.conv_features(x).numpy(), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("kind", ["relu", "bn"])
def test_a_batch_over_the_training_piece_equals_the_stock_layers(kind):
    # relu blocks train a batch of 150 in pieces of 64, 64 and 22, their parameter gradients added up
    assert binding.TRAIN_CHUNK < 150
    block = onednn.Block(3, 6, 5, kind, 1)
    assert block.pieces(150, True) == ([(0, 64), (64, 64), (128, 22)] if kind == "relu" else [(0, 150)])
    assert onednn.compare(3, 6, 5, kind, 2, 150, 12, 10) <= 2e-5


@needs_onednn
@pytest.mark.parametrize("kind", ["relu", "bn"])
def test_two_threads_equal_the_stock_layers_too_and_repeat_bit_for_bit(kind):
    assert onednn.compare(20, 20, 5, kind, 2, 64, 14, 14) <= 2e-5
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype("float32"))
    grads = []
    for _ in range(2):
        paddle.seed(1)
        model = build_model({"name": "cnn", "channels": [20, 20], "kernel_size": 5, "batch_norm": kind == "bn",
                             "dropout": 0.0})
        assert onednn.enable(model, "on", "cpu", 2, (1, 28, 28)).blocks == ("onednn", "onednn")
        model(x).sum().backward()
        grads.append([p.grad.numpy() for p in model.parameters() if p.grad is not None])
    assert all(np.array_equal(a, b) for a, b in zip(*grads))


@needs_onednn
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("input_shape,channels,kernel", [((1, 28, 28), [20, 20], 5), ((3, 30, 19), [8, 16, 4], 3),
                                                          ((1, 15, 15), [6, 6, 6], 7)])
def test_a_whole_cnn_equals_the_stock_layers(batch_norm, input_shape, channels, kernel):
    # chained blocks pass their tensors channels last; the last one hands NCHW to the linear layer
    x0 = np.random.default_rng(3).standard_normal((4, *input_shape)).astype("float32")
    results = []
    for fast in (True, False):
        paddle.seed(7)
        model = build_model({"name": "cnn", "channels": channels, "kernel_size": kernel, "batch_norm": batch_norm,
                             "dropout": 0.0}, input_shape, 5)
        if fast:
            choice = onednn.enable(model, "on", "cpu", 2, input_shape)
            assert choice.blocks == ("onednn",) * len(channels)
        x = paddle.to_tensor(x0, stop_gradient=False)
        logits = model(x)
        (logits * paddle.arange(5, dtype="float32")).sum().backward()
        model.eval()
        with paddle.no_grad():  # a large batch runs in pieces of onednn.EVAL_CHUNK
            evaluated = model(paddle.to_tensor(np.concatenate([x0] * 33))).numpy()
        results.append([logits.numpy(), evaluated, x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()
                                                                    if p.grad is not None])
    for fast, stock in zip(*results):
        assert float(np.abs(fast - stock).max()) <= 2e-5 * max(float(np.abs(stock).max()), 1e-6)


@needs_onednn
@pytest.mark.parametrize("batch_norm", [False, True])
def test_evaluation_pads_its_last_piece_and_batch_norm_runs_in_place(batch_norm):
    # evaluation in pieces of the training batch: the last one padded to that size, so no plan (and no
    # buffers kept for the rest of the run) of its own size; batch norm's gradient overwrites the one it reads
    paddle.seed(7)
    model = build_model({"name": "cnn", "channels": [6, 6], "kernel_size": 5, "batch_norm": batch_norm,
                         "dropout": 0.0})
    assert onednn.enable(model, "on", "cpu", 2, (1, 28, 28)).blocks == ("onednn", "onednn")
    rng = np.random.default_rng(5)
    model(paddle.to_tensor(rng.standard_normal((4, 1, 28, 28)).astype("float32"))).sum().backward()
    model.eval()
    x = paddle.to_tensor(rng.standard_normal((10, 1, 28, 28)).astype("float32"))  # pieces of 4, 4 and 2 (+2)
    with paddle.no_grad():
        fast = model(x).numpy()
    plans = {key: plan for block in model._fast for key, plan in block.plans.items()}
    assert {(n, training) for n, _, _, training, _ in plans} == {(4, True), (4, False)}
    assert [p.bn_in_place for (*_, training, _), p in plans.items() if training] == [batch_norm] * 2
    fast_layers = model._fast, model._output
    model.use_fast_blocks(None)
    with paddle.no_grad():
        stock = model(x).numpy()
        model.train()  # without gradients but on batch statistics (batch norm): the whole batch at once
        stock_training = model(x).numpy()
        model.use_fast_blocks(*fast_layers)
        fast_training = model(x).numpy()
    for a, b in ((fast, stock), (fast_training, stock_training)):
        assert float(np.abs(a - b).max()) <= 2e-5 * float(np.abs(b).max())


@needs_onednn
@pytest.mark.parametrize("batch_norm, dropout", [(False, 0.2), (True, 0.2), (False, 0.0)])
def test_hundreds_of_training_steps_match_the_stock_layers(prepared, batch_norm, dropout):
    # without dropout the output layer reads the last block's output channels last; with it, in the stock order
    args = [*FAST, "-o", "train.epochs=10", "-o", "train.batch_size=16", "-o", "output.visualdl=false",
            "-o", f"model.batch_norm={str(batch_norm).lower()}", "-o", f"model.dropout={dropout}"]
    for path in ("on", "off"):
        result = run_cli("train", *args, "-o", f"train.fast_conv={path}", "--name", path)
        assert result.exit_code == 0, result.output
    fast, stock = metrics_rows(Path("checkpoints/on")), metrics_rows(Path("checkpoints/off"))
    assert fast[-1]["step"] == 320  # 500 images / 16 = 32 steps x 10 epochs
    for a, b in zip(fast, stock):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.02, abs=0.01)
        assert abs(a["val_acc"] - b["val_acc"]) <= 0.03
    assert json.loads(Path("checkpoints/on/run.json").read_text())["fast_conv"]["path"] == "onednn"
    assert json.loads(Path("checkpoints/off/run.json").read_text())["fast_conv"] == {
        "path": "stock", "threads": 1, "library": "", "blocks": [], "output": "stock",
        "reason": "train.fast_conv is off"}


@needs_onednn
def test_the_path_is_said_first_and_recorded(prepared):
    result = run_cli("train", *FAST, "--name", "r")
    assert result.exit_code == 0, result.output
    cores = len(os.sched_getaffinity(0))
    lib = onednn.library().name
    assert result.output.splitlines()[0] == f"training on cpu: conv blocks and output layer on {lib}, {cores} " \
        f"thread{'s' if cores > 1 else ''}"
    info = json.loads(Path("checkpoints/r/run.json").read_text())
    assert info["fast_conv"] == {"path": "onednn", "threads": cores, "library": lib, "blocks": ["onednn", "onednn"],
                                 "output": "onednn", "reason": ""}


def _train_fails(*args):
    result = run_cli("train", *FAST, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output and lines[-1].startswith("Error: ")
    return lines[-1]


@pytest.mark.parametrize("problem", ["missing", "not oneDNN", "another major version"])
def test_without_a_usable_library_the_stock_layers_train_and_on_fails(prepared, fresh_library, monkeypatch, tmp_path,
                                                                     problem):
    if problem == "missing":
        monkeypatch.setattr(binding, "library_path", lambda: tmp_path / "nowhere" / "libdnnl.so.3")
        reason = "this PaddlePaddle wheel has no oneDNN library (libdnnl.so.3 not in "
    elif problem == "not oneDNN":  # a real shared library, already loaded, without oneDNN's functions
        iomp = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                    if line.endswith(("/libiomp5.so", "/libgomp.so.1")))
        monkeypatch.setattr(binding, "library_path", lambda: Path(iomp))
        reason = "is not a oneDNN library (no dnnl_version)"
    else:  # the real library, read by a fast path that speaks another major version
        monkeypatch.setattr(binding, "MAJOR", 4)
        reason = "this fast path speaks the oneDNN 4.x interface"
    result = run_cli("train", *FAST, "--name", "stock")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("training on cpu: Paddle's stock layers (oneDNN cannot be used: ") and reason in first
    assert json.loads(Path("checkpoints/stock/run.json").read_text())["fast_conv"]["path"] == "stock"
    error = _train_fails("-o", "train.fast_conv=on", "--name", "on")
    assert error.startswith("Error: train.fast_conv is on, but oneDNN cannot be used: ") and reason in error
    assert "set train.fast_conv=auto or off" in error
    assert not Path("checkpoints/on").exists()


@needs_onednn
def test_a_block_that_cannot_run_falls_back_alone_and_says_so_once(prepared, fresh_library, monkeypatch):
    real = choose.check_shape
    monkeypatch.setattr(choose, "check_shape", lambda cin, cout, kernel, kind, threads, h, w:
                        "simulated refusal" if h == 14 else real(cin, cout, kernel, kind, threads, h, w))
    result = run_cli("train", *FAST, "--name", "mixed")
    assert result.exit_code == 0, result.output
    assert result.output.count("simulated refusal") == 1
    assert "block(s) 2 on the stock layers (block 2: simulated refusal)" in result.output.splitlines()[0]
    info = json.loads(Path("checkpoints/mixed/run.json").read_text())["fast_conv"]
    assert info["blocks"] == ["onednn", "stock"] and info["path"] == "onednn"
    error = _train_fails("-o", "train.fast_conv=on", "--name", "on")
    assert "train.fast_conv is on, but block 2: simulated refusal" in error


def test_models_without_conv_blocks_train_on_the_stock_layers(prepared):
    result = run_cli("train", *FAST, "-o", "model.name=mlp", "--name", "mlp")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "training on cpu: Paddle's stock layers (the mlp model has no conv blocks)"
    assert "the mlp model has no conv blocks" in _train_fails("-o", "model.name=mlp", "-o", "train.fast_conv=on")


def test_threads_are_the_cores_shared_by_the_processes_and_never_more():
    cores = len(os.sched_getaffinity(0))
    assert onednn.threads_for(0, 1) == (cores, None)
    assert onednn.threads_for(0, 2) == (max(1, cores // 2), None)
    assert onednn.threads_for(1, 1) == (1, None)
    threads, note = onednn.threads_for(cores + 1, 1)
    assert threads == cores and f"train.threads={cores + 1} lowered to {cores}" in note


@needs_onednn
def test_train_threads_is_used_and_a_resume_on_another_count_warns(prepared):
    result = run_cli("train", *FAST, "-o", "train.threads=1", "--name", "r")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith(", 1 thread")
    assert json.loads(Path("checkpoints/r/run.json").read_text())["fast_conv"]["threads"] == 1
    same = run_cli("resume", "--run", "checkpoints/r", "--epoch", "0")
    assert same.exit_code == 0, same.output
    assert "float rounding" not in same.output
    for change in (["-o", "train.threads=0"], ["-o", "train.fast_conv=off"]):
        other = run_cli("resume", "--run", "checkpoints/r", "--epoch", "0", *change)
        assert other.exit_code == 0, other.output
        assert "warning: the checkpoint was trained with oneDNN 3." in other.output
        assert "the same training within float rounding, not bit for bit" in other.output
    resumes = json.loads(Path("checkpoints/r/run.json").read_text())["resumes"]
    assert [r["fast_conv"]["path"] for r in resumes] == ["onednn", "onednn", "stock"]


@needs_onednn
def test_a_resume_on_the_oneDNN_path_is_bit_identical(prepared):
    whole = run_cli("train", *FAST, "-o", "train.epochs=3", "--name", "whole")
    assert whole.exit_code == 0, whole.output
    part = run_cli("train", *FAST, "-o", "train.epochs=1", "--name", "part")
    assert part.exit_code == 0, part.output
    more = run_cli("resume", "--run", "checkpoints/part", "-o", "train.epochs=3")
    assert more.exit_code == 0, more.output
    assert "float rounding" not in more.output
    assert metrics_rows(Path("checkpoints/whole")) == metrics_rows(Path("checkpoints/part"))
    assert json.loads(Path("checkpoints/part/run.json").read_text())["resumes"][0]["fast_conv"]["path"] == "onednn"
