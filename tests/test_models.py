"""The networks compute what their plain formulation computes, whatever makes them fast."""

from pathlib import Path

import numpy as np
import pytest

from mnist_kit.models import CNN, Conv2D, build_model
from mnist_kit.runtime import paddle

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


@pytest.mark.parametrize("how", ["kaiming", "xavier", "normal", "uniform"])
def test_model_init_draws_the_named_initial_weights(prepared, how):
    import json
    from pathlib import Path

    from mnist_kit import checkpoint
    from conftest import FAST, run_cli

    # a rate of 0 keeps the initial weights in the first checkpoint
    r = run_cli("train", *FAST, "-o", "train.epochs=1", "-o", "optimizer.name=sgd", "-o", "optimizer.lr=0",
                "-o", f"model.init={how}", "--name", how)
    assert r.exit_code == 0, r.output
    state = checkpoint.load(Path(f"checkpoints/{how}/ckpt/epoch_000.pdckpt"))["model"]
    w, b = np.asarray(state["body.0.weight"]), np.asarray(state["body.0.bias"])  # the first conv: 20 x 1 x 5 x 5
    fan_in, fan_out = 1 * 5 * 5, 20 * 5 * 5
    expected = {"kaiming": np.sqrt(2 / fan_in), "xavier": np.sqrt(2 / (fan_in + fan_out)), "normal": 0.01,
                "uniform": 0.1 / np.sqrt(12)}[how]
    assert w.std() == pytest.approx(expected, rel=0.15) and not b.any()
    assert json.loads(Path(f"checkpoints/{how}/run.json").read_text())["status"] == "completed"


def test_the_layer_summary_gives_shapes_parameters_and_flops(prepared):
    from conftest import run_cli
    from mnist_kit.models import layer_table

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
