"""train.ema: the moving average of the weights, and what uses it (validation, the best checkpoint, eval,
export, train.init_from, the board). Exact resume and 2 x B = 1 x 2B with it: test_resume, test_distributed."""

import json
from pathlib import Path

import numpy as np

from helpers import FAST, run_cli
from mnist_kit.backend.runtime import paddle
from mnist_kit.experiments import checkpoint
from mnist_kit.logbook.writer import read_records
from mnist_kit.training.ema import WeightAverage

EMA = [*FAST, "-o", "train.ema=0.9", "-o", "model.batch_norm=true", "-o", "model.channels=[4, 4]"]


def test_the_average_follows_its_formula_and_leaves_the_weights_exactly_as_they_were():
    paddle.seed(0)
    layer = paddle.nn.Sequential(paddle.nn.Linear(3, 2), paddle.nn.BatchNorm1D(2))
    avg = WeightAverage(layer, 0.9)
    expected = {k: v.numpy().copy() for k, v in layer.state_dict().items()}
    for n in range(100):
        for p in layer.parameters():
            p.set_value(p.numpy() + np.float32(0.01 * (n + 1)))
        d = np.float32(min(0.9, (1 + n) / (10 + n)))  # the warm-up, then the decay
        for k, v in layer.state_dict().items():
            expected[k] = d * expected[k] + (np.float32(1) - d) * v.numpy()
        avg.update(layer)
    assert avg.updates == 100 and avg.factor() == 0.9  # the warm-up ends after 80 updates
    for k in expected:
        np.testing.assert_allclose(avg.weights[k], expected[k], rtol=1e-6)
    own = {k: v.numpy().copy() for k, v in layer.state_dict().items()}
    with avg.applied(layer):
        assert all(np.array_equal(v.numpy(), avg.weights[k]) for k, v in layer.state_dict().items())
    assert all(np.array_equal(v.numpy(), own[k]) for k, v in layer.state_dict().items())


def test_validation_eval_export_and_init_from_use_the_average_and_the_board_shows_both(prepared):
    result = run_cli("train", *EMA, "--name", "ema")
    assert result.exit_code == 0, result.output
    run = Path("checkpoints/ema")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["val_acc_raw"] <= 1 and r["val_loss_raw"] > 0 for r in rows)
    assert rows[-1]["val_loss"] != rows[-1]["val_loss_raw"]  # two different sets of weights validated
    state = checkpoint.load(run / "ckpt" / checkpoint.BEST)
    average, trained = state["ema"]["weights"], {k: v.numpy() for k, v in state["model"].items()}
    assert state["ema"]["updates"] == state["step"]  # one update a step
    assert any(not np.array_equal(average[k], trained[k]) for k in trained)
    assert checkpoint.weights(state) is average

    from mnist_kit.evaluation import scoring
    model = scoring.load_trained(run).model
    assert all(np.array_equal(v.numpy(), average[k]) for k, v in model.state_dict().items())
    # eval on the validation split reproduces the best epoch's (averaged) validation accuracy
    best = max(rows, key=lambda r: r["val_acc"])
    result = run_cli("eval", "--run", run, "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == best["val_acc"]

    result = run_cli("export", "--run", run, "--format", "pdparams")
    assert result.exit_code == 0, result.output
    export = next((run / "export").iterdir())
    exported = paddle.load(str(export / "model.pdparams"))
    assert all(np.array_equal(np.asarray(exported[k]), average[k]) for k in average)

    result = run_cli("train", *FAST, "-o", "model.batch_norm=true", "-o", "model.channels=[4, 4]",
                     "-o", f"train.init_from={run}", "-o", "train.epochs=1", "--name", "tuned")
    assert result.exit_code == 0 and "starting from the weights of" in result.output, result.output

    tags = {v.tag for f in (run / "vdl").glob("vdlrecords*") for r in read_records(f) for v in r.values}
    assert {"val/acc", "val/acc_raw", "val/loss", "val/loss_raw"} <= tags


def test_an_average_out_of_range_is_one_error_line():
    result = run_cli("train", "-o", "train.ema=1.0")
    assert result.exit_code == 2
    assert "train.ema" in result.output and "0.9999" in result.output
