"""The networks compute what their plain formulation computes, whatever makes them fast."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import FAST, REPO, run_cli, write_image_folder
from mnist_kit.backend.runtime import paddle
from mnist_kit.models import blocks as block_geometry
from mnist_kit.models.networks import CNN, Conv2D, build_model

F = paddle.nn.functional


def _plain_cnn_forward(model, x):
    """The CNN written out with stock operations, in the textbook order:
    conv + bias (broadcast add) [-> batch norm] -> ReLU -> max-pool."""
    for layer in model.body:
        if isinstance(layer, Conv2D):
            x = F.conv2d(x, layer.weight, layer.bias, padding=layer._padding)
        elif isinstance(layer, paddle.nn.MaxPool2D):
            x = F.max_pool2d(F.relu(x), 2, 2)
        elif not isinstance(layer, paddle.nn.ReLU):  # the model's ReLU comes after its pool; done above
            x = layer(x)
    return model.fc(model.dropout(x))


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_cnn_outputs_and_gradients_equal_the_plain_formulation(training, batch_norm):
    paddle.seed(1)
    model = build_model({"name": "cnn", "channels": [20, 20], "kernel_size": 5, "batch_norm": batch_norm,
                         "dropout": 0.0})
    model.train() if training else model.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(37, 1, 28, 28)).astype("float32"))
    y = paddle.to_tensor(np.random.default_rng(1).integers(0, 10, 37))
    fast, plain = model(x), _plain_cnn_forward(model, x)
    np.testing.assert_allclose(fast.numpy(), plain.numpy(), rtol=1e-5, atol=1e-5)
    grads = []
    for out in (fast, plain):
        model.clear_gradients()
        F.cross_entropy(out, y).backward()
        grads.append({n: p.grad.numpy().copy() for n, p in model.named_parameters() if not p.stop_gradient})
    for name in grads[0]:
        scale = np.abs(grads[1][name]).max()
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=0, atol=1e-5 * scale, err_msg=name)


def test_conv_bias_is_left_out_only_where_batch_norm_cancels_it():
    plain = CNN((1, 28, 28), 10, channels=(4, 8))
    with_bn = CNN((1, 28, 28), 10, channels=(4, 8), batch_norm=True)
    assert all(layer.bias is not None for layer in plain.body if isinstance(layer, Conv2D))
    assert all(layer.bias is None for layer in with_bn.body if isinstance(layer, Conv2D))


def test_the_traced_model_for_export_computes_what_the_eager_one_does():
    model = build_model({"name": "cnn", "channels": [4, 4], "kernel_size": 3, "batch_norm": False, "dropout": 0.0})
    model.eval()
    x = paddle.rand([2, 1, 28, 28])
    static = paddle.jit.to_static(model, input_spec=[paddle.static.InputSpec([None, 1, 28, 28], "float32")],
                                  full_graph=True)
    np.testing.assert_allclose(static(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", ["kaiming", "xavier", "normal", "uniform", "torch"])
def test_model_init_draws_the_named_initial_weights(prepared, how):
    import json
    from pathlib import Path

    from mnist_kit.experiments import checkpoint

    # a rate of 0 keeps the initial weights in the first checkpoint
    r = run_cli("train", *FAST, "-o", "train.epochs=1", "-o", "optimizer.name=sgd", "-o", "optimizer.lr=0",
                "-o", f"model.init={how}", "--name", how)
    assert r.exit_code == 0, r.output
    state = checkpoint.load(Path(f"checkpoints/{how}/ckpt/epoch_000.pdckpt"))["model"]
    w, b = np.asarray(state["body.0.weight"]), np.asarray(state["body.0.bias"])  # the first conv: 20 x 1 x 5 x 5
    fan_in, fan_out = 1 * 5 * 5, 20 * 5 * 5
    expected = {"kaiming": np.sqrt(2 / fan_in), "xavier": np.sqrt(2 / (fan_in + fan_out)), "normal": 0.01,
                "uniform": 0.1 / np.sqrt(12), "torch": 1 / np.sqrt(3 * fan_in)}[how]
    assert w.std() == pytest.approx(expected, rel=0.15)
    if how == "torch":  # PyTorch's: the biases too, uniform in +-1/sqrt(fan_in); the last layer's fan in is 980
        assert np.abs(w).max() <= 1 / np.sqrt(fan_in) and b.any() and np.abs(b).max() <= 1 / np.sqrt(fan_in)
        fc = np.asarray(state["fc.weight"])
        assert np.abs(fc).max() <= 1 / np.sqrt(980) and fc.std() == pytest.approx(1 / np.sqrt(3 * 980), rel=0.15)
    else:
        assert not b.any()
    assert json.loads(Path(f"checkpoints/{how}/run.json").read_text())["status"] == "completed"


def test_the_layer_summary_gives_shapes_parameters_and_flops(prepared):
    from mnist_kit.models.networks import layer_table

    r = run_cli("train", "--summary")  # the default CNN: two 5x5 blocks of 20, then one linear layer
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "params", "FLOPs"]
    conv1 = next(line for line in lines if line.startswith("body.0 "))
    assert "Conv2D" in conv1 and "[1, 20, 28, 28]" in conv1 and "520" in conv1 and "407,680" in conv1
    # by hand: 28*28*20 outputs x (1*5*5 + 1), 14*14*20 x (20*5*5 + 1), 10 x 980
    assert lines[-1] == "CNN: 20,350 parameters, 2,381,400 FLOPs per image (multiply-adds, as paddle.flops counts them)"
    assert not Path("checkpoints").exists()  # it trains nothing
    both = run_cli("train", "--print-config", "--summary", "-o", "model.name=mlp")
    assert both.stdout.startswith("data:") and "MLP: 235,146 parameters" in both.stdout
    model = build_model({"name": "cnn", "channels": [20, 20], "kernel_size": 5, "batch_norm": True, "dropout": 0.0})
    rows = layer_table(model, (1, 28, 28))
    assert sum(r["params"] for r in rows) == paddle.summary(model, (1, 1, 28, 28))["total_params"]
    assert [r["output"] for r in rows][:2] == [[1, 20, 28, 28], [1, 20, 28, 28]]  # conv, batch norm


# ---------------------------------------------------------------- conv blocks described one by one

def _textbook(model, blocks, input_shape):
    """The same network written with plain Paddle layers in the textbook order (conv, norm, act, pool)."""
    nn, layers = paddle.nn, []
    in_ch = input_shape[0]
    for b in blocks:
        layers.append(nn.Conv2D(in_ch, b["channels"], b["kernel"], stride=b["stride"], padding=b["padding"],
                                bias_attr=False if b["batch_norm"] else None))
        if b["batch_norm"]:
            layers.append(nn.BatchNorm2D(b["channels"]))
        if b["activation"] != "none":
            layers.append({"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU,
                           "gelu": nn.GELU}[b["activation"]]())
        if b["pool"] != "none":
            layers.append({"max": nn.MaxPool2D, "avg": nn.AvgPool2D}[b["pool"]](b["pool_size"], b["pool_stride"],
                                                                               b["pool_padding"]))
        in_ch = b["channels"]
    plain = nn.Sequential(*layers, nn.Flatten())
    # the same weights, block by block, in parameter order
    for (name, p), (_, q) in zip([(n, p) for n, p in plain.named_parameters()],
                                 [(n, p) for n, p in model.body.named_parameters()]):
        p.set_value(q.numpy())
    for buf_a, buf_b in zip(plain.buffers(), model.body.buffers()):
        buf_a.set_value(buf_b.numpy())
    return plain


@pytest.mark.parametrize("blocks", [
    [{"channels": 6, "kernel": 5, "activation": "sigmoid", "pool": "avg"},
     {"channels": 8, "kernel": 5, "padding": 0, "activation": "tanh", "pool": "avg"}],
    [{"channels": 8, "kernel": 3, "stride": 2, "pool": "none", "batch_norm": True},
     {"channels": 8, "kernel": 3, "stride": 2, "activation": "leaky_relu", "pool": "none"}],
    [{"channels": 8, "kernel": 3, "pool_size": 3, "pool_stride": 2, "pool_padding": 1},
     {"channels": 8, "kernel": 3, "pool": "none", "activation": "gelu"},
     {"channels": 8, "kernel": 3, "pool_size": 3, "pool_stride": 2, "pool_padding": 1, "batch_norm": True}],
])
def test_blocks_compute_what_the_textbook_layers_compute(blocks):
    from mnist_kit import config

    cfg = config.load(None, [f"model.blocks={json.dumps(blocks)}"])
    model = build_model(cfg.model)
    model.eval()
    plain = _textbook(model, block_geometry.cnn_blocks(cfg.model), (1, 28, 28))
    plain.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype("float32"))
    assert np.allclose(model.features(x).numpy(), plain(x).numpy(), atol=1e-5)


def test_short_keys_are_the_blocks_they_stand_for():
    from mnist_kit import config

    short = config.load(None, ["model.channels=[8, 16]", "model.kernel_size=3", "model.batch_norm=true"])
    blocks = config.load(None, ["model.kernel_size=3", "model.blocks=[{channels: 8, batch_norm: true}, "
                                                        "{channels: 16, batch_norm: true}]"])
    a, b = build_model(short.model), build_model(blocks.model)
    assert [(n, p.shape) for n, p in a.state_dict().items()] == [(n, p.shape) for n, p in b.state_dict().items()]
    assert config.dump(blocks).count("- {channels:") == 2  # written one block a line
    assert config.load(None, ["model.blocks=[{channels: 8, stride: 2}]"]).model.channels == (8,)


@pytest.mark.parametrize("name", ["folder_sigmoid_avg", "folder_strided", "folder_padded_pool"])
def test_the_image_folder_tutorials_networks_train_export_and_predict(tmp_path, name):

    folder = write_image_folder(tmp_path / "cards", corrupt=False)
    common = ["--config", REPO / "configs" / f"{name}.yaml", "-o", f"data.folder={folder}"]
    assert run_cli("prepare", *common).exit_code == 0
    r = run_cli("train", *common, "-o", "train.epochs=1", "-o", "output.visualdl=false", "--name", name)
    assert r.exit_code == 0, r.output
    info = json.loads(Path(f"checkpoints/{name}/run.json").read_text())
    if name == "folder_padded_pool":  # a standard 3x3 block is not: its pools are 3/2/1; all on the stock layers
        assert info["fast_conv"]["path"] == "stock" and "max pool 3/2/1" in info["fast_conv"]["reason"]
    assert run_cli("export", "--run", f"checkpoints/{name}").exit_code == 0  # traced, checked against the model
    image = next((folder / "box").glob("*.png"))
    p = run_cli("predict", "--model", f"checkpoints/{name}/export/best", image)
    assert p.exit_code == 0 and "box" in p.stdout or "(p=" in p.stdout, p.output


def test_a_standard_block_runs_on_onednn_beside_a_stock_one(prepared):

    blocks = "[{channels: 8}, {channels: 8, pool: avg}]"  # the first is the standard block, the second not
    r = run_cli("train", *FAST, "-o", f"model.blocks={blocks}", "--name", "mixed")
    assert r.exit_code == 0, r.output
    fast = json.loads(Path("checkpoints/mixed/run.json").read_text())["fast_conv"]
    if fast["path"] == "onednn":  # where oneDNN passes its self-check
        assert fast["blocks"] == ["onednn", "stock"] and "block 2: avg pool 2/2/0" in fast["reason"]


def test_a_hidden_head_sits_between_the_conv_blocks_and_the_output(prepared):
    from mnist_kit import config
    from mnist_kit.experiments import checkpoint

    cfg = config.load(None, ["model.head=[32, 16]", "model.dropout=0.5"])
    model = build_model(cfg.model)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype("float32"))
    h = F.relu(F.linear(model.conv_features(x), model.head[0].weight, model.head[0].bias))
    h = F.relu(F.linear(h, model.head[2].weight, model.head[2].bias))
    assert np.allclose(model.features(x).numpy(), h.numpy(), atol=1e-5)
    assert np.allclose(model(x).numpy(), model.fc(h).numpy(), atol=1e-5)

    r = run_cli("train", *FAST, "-o", "model.head=[32, 16]", "-o", "train.epochs=1", "--name", "head")
    assert r.exit_code == 0, r.output
    weights = checkpoint.weights(checkpoint.load(Path("checkpoints/head/ckpt") / checkpoint.BEST))
    assert [list(weights[k].shape) for k in ("head.0.weight", "head.2.weight", "fc.weight")] == \
        [[980, 32], [32, 16], [16, 10]]
    assert run_cli("export", "--run", "checkpoints/head").exit_code == 0  # traced, checked against the model
    assert run_cli("eval", "--run", "checkpoints/head").exit_code == 0
    bad = run_cli("train", *FAST, "-o", "model.head=[0]")
    assert bad.exit_code == 2 and "model.head" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("tta", ["flip", "shift", "flip+shift"])
def test_test_time_augmentation_averages_the_probabilities_of_the_copies(tta):
    from mnist_kit import config

    model = build_model(config.load(None, [f"model.tta={tta}", "data.name=fashion-mnist"]).model)
    model.eval()
    x = np.random.default_rng(0).normal(size=(5, 1, 28, 28)).astype("float32")
    wide = np.pad(x, [(0, 0), (0, 0), (0, 0), (1, 1)], mode="edge")  # moved by one pixel, the edge repeated
    views = ([x] + ([x[..., ::-1]] if "flip" in tta else [])
             + ([wide[..., :28], wide[..., 2:]] if "shift" in tta else []))
    averaged = model(paddle.to_tensor(x)).numpy()
    model.tta = "none"
    probs = [F.softmax(model(paddle.to_tensor(np.ascontiguousarray(v)))).numpy() for v in views]
    assert np.allclose(np.exp(averaged), np.mean(probs, axis=0), atol=1e-6)
    model.train()
    model.tta = tta
    assert model(paddle.to_tensor(x)).shape == [5, 10]  # training sees each image once


def test_test_time_augmentation_is_exported_and_predicts(prepared, tmp_path):

    r = run_cli("train", *FAST, "-o", "model.tta=shift", "-o", "train.epochs=1", "--name", "tta")
    assert r.exit_code == 0, r.output
    assert run_cli("export", "--run", "checkpoints/tta").exit_code == 0  # traced, checked against the model
    image = tmp_path / "digit.png"
    from PIL import Image
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:23, 13:16] = 255  # a 1
    Image.fromarray(pixels).save(image)
    p = run_cli("predict", "--model", "checkpoints/tta/export/best", image)
    assert p.exit_code == 0, p.output
    bad = run_cli("train", *FAST, "-o", "model.tta=flip")
    assert bad.exit_code == 2 and "model.tta is flip on digits (data.name mnist)" in bad.output


def test_mirrored_test_time_augmentation_is_exported_to_paddle_and_onnx(tmp_path):
    """An image folder (RGB, 32x48) with model.tta flip+shift: the export's own checks compare the traced
    program, and the ONNX model where paddle2onnx and onnxruntime are installed, with the eager network."""
    from mnist_kit.deploy import export

    folder = write_image_folder(tmp_path / "cards", corrupt=False)
    common = ["--config", REPO / "configs" / "folder.yaml", "-o", f"data.folder={folder}", "-o", "data.color=rgb",
              "-o", "data.image_size=[32, 48]"]
    assert run_cli("prepare", *common).exit_code == 0
    r = run_cli("train", *common, "-o", "train.epochs=1", "-o", "model.tta=flip+shift", "-o", "output.visualdl=false",
                "--name", "mirror")
    assert r.exit_code == 0, r.output
    assert run_cli("export", "--run", "checkpoints/mirror").exit_code == 0
    assert (Path("checkpoints/mirror/export/best/model.onnx").is_file()) == (export.onnx_tools_missing() is None)


def test_the_legacy_programs_average_of_views_is_the_same_log_mean_exp():
    """The board's graph child builds a legacy static program, where test-time augmentation's average takes
    another form (networks.log_mean_exp): the same numbers."""
    from mnist_kit.models.networks import log_mean_exp

    logp = paddle.nn.functional.log_softmax(paddle.to_tensor(
        np.random.default_rng(0).normal(scale=5, size=(4, 6, 10)).astype("float32")), axis=-1)
    expected = np.log(np.exp(logp.numpy()).mean(axis=0))
    assert np.allclose(log_mean_exp(logp, legacy=False).numpy(), expected, atol=1e-5)
    assert np.allclose(log_mean_exp(logp, legacy=True).numpy(), expected, atol=1e-5)


def test_the_cnn_offers_its_blocks_to_onednn_by_the_declared_protocol():
    """models/onednn takes a network's blocks through FastConvNet (docs/extending.md), not by its attributes."""
    from mnist_kit.models import onednn

    cnn = build_model({"name": "cnn", "channels": [4, 6], "kernel_size": 3})
    assert isinstance(cnn, onednn.FastConvNet)
    assert not isinstance(build_model({"name": "mlp"}), onednn.FastConvNet)
    assert not isinstance(build_model({"name": "linear"}), onednn.FastConvNet)
    blocks = cnn.conv_blocks((1, 28, 28))
    assert [(b.size, b.unlike, b.norm) for b in blocks] == [((28, 28), None, None), ((14, 14), None, None)]
    assert blocks[1].conv.weight.shape == [6, 4, 3, 3]
    assert cnn.output_layer().linear is cnn.fc and cnn.output_layer().direct
    odd = build_model({"name": "cnn", "blocks": [{"channels": 4, "stride": 2}, {"channels": 4, "pool": "avg"}],
                       "dropout": 0.5})
    assert [b.unlike for b in odd.conv_blocks((1, 28, 28))] == ["stride 2", "avg pool 2/2/0"]
    assert not odd.output_layer().direct  # dropout between: its mask is drawn in the stock layout
    assert not build_model({"name": "cnn", "head": [16]}).output_layer().direct
