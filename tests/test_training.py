import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import FAST, REPO, assert_user_error, run_cli, run_subprocess, write_image_folder
from mnist_kit import config
from mnist_kit.evaluation import scoring
from mnist_kit.models.optim import build_schedule

pytestmark = pytest.mark.slow  # trains runs end to end


def _train(*args):
    result = run_cli("train", *FAST, *args)
    assert result.exit_code == 0, result.output
    return result


def _metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_a_complete_run_directory(prepared):
    result = _train("--name", "r1")
    run = Path("checkpoints/r1")
    assert "run directory: checkpoints/r1" in result.output
    assert "CNN: 20,350 parameters" in result.output  # parameter summary of the classic CNN
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved == config.load(None, FAST[1::2] + ["output.name=r1"]).to_dict()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 0
    assert {"paddle", "numpy", "python", "mnist_kit"} <= set(info["versions"])
    cache = json.loads((prepared / "mnist" / "prepared.json").read_text())
    assert info["dataset"] == {"name": "mnist", "source": info["dataset"]["source"], "train": 500, "val": 100,
                               "test": 200, "arrays_sha256": cache["arrays_sha256"]}
    assert set(info["normalization"]) == {"mean", "std"}
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[-1]["step"] == 20
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_sec"} <= set(rows[0])
    ckpts = sorted(p.name for p in (run / "ckpt").iterdir())
    assert ckpts == ["best.pdckpt", "epoch_000.pdckpt", "epoch_001.pdckpt", "manifest.json"]
    assert list((run / "vdl").glob("vdlrecords*"))


def test_training_learns_the_synthetic_task(prepared):
    _train("--name", "learn", "-o", "train.epochs=4")
    rows = _metrics("checkpoints/learn")
    assert rows[-1]["val_acc"] >= 0.9
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_same_seed_same_run_other_seed_other_run(prepared):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        _train("--name", name, "--seed", seed, "-o", "model.dropout=0.3")
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    a, b, c = ([[r[k] for k in keys] for r in _metrics(f"checkpoints/{n}")] for n in "abc")
    assert a == b
    assert a != c


def test_existing_run_is_never_overwritten(prepared):
    _train("--name", "keep")
    before = (Path("checkpoints/keep") / "metrics.jsonl").read_text()
    result = run_cli("train", *FAST, "--name", "keep")
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert (Path("checkpoints/keep") / "metrics.jsonl").read_text() == before


def test_default_run_names_come_from_the_config_and_do_not_collide(prepared):
    for _ in range(2):
        _train("--config", REPO / "configs" / "linear.yaml")
    names = sorted(p.name for p in Path("checkpoints").iterdir())
    assert len(names) == 2 and all(n.startswith("linear-") for n in names)


@pytest.mark.parametrize("overrides", [
    ["model.name=linear"],
    ["model.name=mlp", "model.activation=tanh", "model.dropout=0.2", "model.hidden=[32]"],
    ["model.name=mlp", "model.activation=sigmoid", "loss.name=mse"],
    ["model.channels=[4, 8, 8]", "model.kernel_size=3", "model.batch_norm=true", "model.dropout=0.1"],
    ["loss.label_smoothing=0.1", "optimizer.name=adamw", "optimizer.weight_decay=0.01", "schedule.name=cosine",
     "schedule.warmup_epochs=0.5"],
    ["optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.grad_clip=1.0", "schedule.name=step",
     "schedule.step_epochs=1", "schedule.gamma=0.5"],
    ["optimizer.name=momentum", "optimizer.lr=0.01", "optimizer.nesterov=true", "optimizer.weight_decay=0.0001",
     "schedule.name=polynomial", "schedule.end_lr=0.0001", "schedule.power=2"],
    ["optimizer.name=adagrad", "optimizer.lr=0.01"],
    ["optimizer.name=rmsprop", "optimizer.lr=0.001", "optimizer.momentum=0.5"],
])
def test_every_model_loss_optimizer_and_schedule_trains(prepared, overrides):
    args = [a for o in overrides for a in ("-o", o)]
    _train("--name", "x", "-o", "train.epochs=3", *args)
    rows = _metrics("checkpoints/x")
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["val_acc"] > 0.3  # chance is 0.1


@pytest.mark.parametrize("sched,expected", [
    ({"name": "constant", "warmup_epochs": 0.0}, [1.0, 1.0, 1.0, 1.0, 1.0]),
    ({"name": "constant", "warmup_epochs": 2.0}, [0.0, 0.5, 1.0, 1.0, 1.0]),
    ({"name": "step", "warmup_epochs": 0.0, "step_epochs": 2.0, "gamma": 0.1}, [1.0, 1.0, 0.1, 0.1, 0.01]),
    ({"name": "polynomial", "warmup_epochs": 0.0, "end_lr": 0.0, "power": 1.0}, [1.0, 0.8, 0.6, 0.4, 0.2]),
    ({"name": "cosine", "warmup_epochs": 0.0, "end_lr": 0.0},
     [1.0, 0.9045085, 0.6545085, 0.3454915, 0.0954915]),
])
def test_schedules_give_the_documented_learning_rates(sched, expected):
    s = build_schedule(config.validate({"schedule": sched}).schedule, 1.0, steps_per_epoch=1, epochs=5)
    got = []
    for _ in range(5):
        got.append(s.last_lr)
        s.step()
    assert np.allclose(got, expected, atol=1e-6)


def test_eval_reports_table_and_json(prepared):
    _train("--name", "ev")
    table = run_cli("eval")
    assert table.exit_code == 0, table.output
    assert "test split of mnist: 200 images, checkpoint best.pdckpt" in table.stdout
    assert "confusion matrix" in table.stdout and "precision" in table.stdout
    result = run_cli("eval", "--run", "checkpoints/ev", "--json", "--last", "--split", "val")
    out = json.loads(result.stdout)
    assert out["split"] == "val" and out["samples"] == 100 and out["checkpoint"] == "epoch_001.pdckpt"
    cm = np.array(out["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 100
    assert out["accuracy"] == pytest.approx(np.trace(cm) / 100)
    # the last epoch's validation accuracy in metrics.jsonl is what eval measures on the same split
    # (eval runs the model through Paddle Inference with oneDNN; training validated it eagerly)
    assert out["engine"] == "Paddle Inference (oneDNN)"
    assert out["accuracy"] == pytest.approx(_metrics("checkpoints/ev")[-1]["val_acc"])
    assert out["loss"] == pytest.approx(_metrics("checkpoints/ev")[-1]["val_loss"], rel=1e-5)
    support = out["per_class"]["support"]
    assert support == cm.sum(axis=1).tolist()
    for k in range(10):
        if cm[:, k].sum():
            assert out["per_class"]["precision"][k] == pytest.approx(cm[k, k] / cm[:, k].sum())


def test_eval_epoch_that_does_not_exist_lists_the_ones_that_do(prepared):
    _train("--name", "ep")
    result = run_cli("eval", "--run", "checkpoints/ep", "--epoch", 7)
    assert result.exit_code == 1
    assert "no checkpoint of epoch 7; it has epochs 0, 1" in result.output
    assert run_cli("eval", "--run", "checkpoints/ep", "--epoch", 0).exit_code == 0


def test_eval_detects_a_damaged_checkpoint_without_traceback(prepared):
    _train("--name", "dmg")
    best = Path("checkpoints/dmg/ckpt/best.pdckpt")
    blob = bytearray(best.read_bytes())
    blob[100] ^= 0xFF
    best.write_bytes(bytes(blob))
    proc = run_subprocess("eval", "--run", "checkpoints/dmg")
    assert proc.returncode == 1
    assert "best.pdckpt is damaged" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_without_runs_or_with_a_wrong_run_dir(tmp_path):
    assert "no runs found under checkpoints" in run_cli("eval").output
    assert "run directory not found: nowhere" in run_cli("eval", "--run", "nowhere").output
    Path("plain").mkdir()
    assert "is not a mnist-kit run" in run_cli("eval", "--run", "plain").output


def test_train_without_prepared_data_says_how_to_prepare(tmp_path):
    proc = run_subprocess("train", "-o", "data.name=fashion-mnist", "-o", "train.epochs=1")
    assert proc.returncode == 1
    assert "Fashion-MNIST is not prepared" in proc.stderr
    assert "mnist-kit prepare --dataset fashion-mnist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path("checkpoints").exists() or not any(Path("checkpoints").iterdir())


def test_gpu_on_a_cpu_build_is_one_clear_message(prepared):
    import paddle

    if paddle.device.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA")
    proc = run_subprocess("train", *FAST, "--device", "gpu")
    assert proc.returncode == 1
    assert "the installed PaddlePaddle is the CPU build" in proc.stderr and "Traceback" not in proc.stderr
    result = run_cli("train", *FAST, "-o", "train.amp=fp16", "--device", "cpu")
    assert result.exit_code == 1 and "needs a GPU: Paddle's CPU build runs none" in result.output


def test_amp_is_off_fp16_or_bf16():
    assert config.load(None, ["train.amp=false"]).train.amp == "off"  # YAML 1.1 reads `off` as false
    assert config.load(None, ["train.amp=bf16"]).train.amp == "bf16"
    with pytest.raises(config.ConfigError, match="train.amp is 'on'; allowed: off, fp16, bf16"):
        config.load(None, ["train.amp=true"])


def test_fp16_step_backpropagates_through_the_grad_scaler_whose_state_is_checkpointed(prepared):
    """train.amp fp16's update: backward through the scaled loss, then Paddle's GradScaler.minimize. On the
    CPU, Paddle keeps the scaler and auto_cast off, but the code path is the GPU's (which cannot run here)."""
    from mnist_kit.backend.runtime import paddle
    from mnist_kit.training import engine, trainer

    class Scaler(paddle.amp.GradScaler):  # remembers the state it is given back
        def state_dict(self):
            return {"scale": np.array([512.0], np.float32), "incr_count": 7}

        def load_state_dict(self, state):
            self.loaded = state
            super().load_state_dict(state)

    def fp16_trainer():
        t = trainer.build_trainer(config.load(None, FAST[1::2]))
        t.amp, t.scaler = "fp16", Scaler()
        return t

    t = fp16_trainer()
    before = {k: v.numpy().copy() for k, v in t.model.state_dict().items()}
    x, y = next(t.batches())
    step = engine.train_step(t, x, y)
    assert step.correct is not None
    # minimize without backward (as before this test) applies no gradient: every weight stayed as it was
    assert any(not np.array_equal(before[k], v.numpy()) for k, v in t.model.state_dict().items())
    state = t.state(epoch_complete=False)
    assert state["scaler"]["incr_count"] == 7
    resumed = fp16_trainer()
    resumed.restore(state)
    assert resumed.scaler.loaded is state["scaler"]


def test_divergence_stops_with_the_step_and_keeps_earlier_checkpoints(prepared):
    result = run_cli("train", *FAST, "--name", "nan", "-o", "optimizer.name=sgd", "-o", "optimizer.lr=1e30",
                     "-o", "model.name=mlp", "-o", "loss.name=cross_entropy")
    assert result.exit_code == 1
    assert "training diverged: the loss is nan at step" in result.output
    info = json.loads(Path("checkpoints/nan/run.json").read_text())
    assert info["status"] == "failed"


def test_progress_is_one_line_every_log_every_steps_when_redirected(prepared):
    proc = run_subprocess("train", *FAST, "--name", "p", "-o", "train.epochs=2")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("epoch 2/2 ")]  # the second of two
    assert [line.split()[3] for line in lines] == ["5/10", "10/10"]
    assert "\r" not in proc.stderr


def test_python_dash_m_and_help():
    proc = run_subprocess("--help")
    assert proc.returncode == 0
    for command in ("prepare", "train", "eval"):
        assert command in proc.stdout


def test_evaluate_run_uses_the_recorded_normalization(prepared):
    _train("--name", "norm", "-o", "data.mean=0.5", "-o", "data.std=0.5")
    result = scoring.evaluate_run(Path("checkpoints/norm"), split="val")
    assert result["accuracy"] == pytest.approx(_metrics("checkpoints/norm")[-1]["val_acc"])


def test_visualdl_scalars_are_written_for_loss_accuracy_and_learning_rate(prepared):
    from visualdl import LogReader

    _train("--name", "vdl")
    records = list(Path("checkpoints/vdl/vdl").glob("vdlrecords*"))
    assert len(records) == 1
    scalars = LogReader(file_path=str(records[0])).get_data("scalar", "train/loss")
    assert [r.id for r in scalars] == [5, 10, 15, 20]  # every log_every=5 steps of 2 epochs x 10 steps
    rows = _metrics("checkpoints/vdl")
    reader = LogReader(file_path=str(records[0]))
    val_acc = reader.get_data("scalar", "val/acc")
    assert [r.id for r in val_acc] == [10, 20]
    assert [round(r.value, 5) for r in val_acc] == [round(r["val_acc"], 5) for r in rows]
    assert [r.value for r in reader.get_data("scalar", "train/lr")] == pytest.approx([0.001] * 4)


def test_visualdl_can_be_switched_off(prepared):
    _train("--name", "novdl", "-o", "output.visualdl=false")
    assert not Path("checkpoints/novdl/vdl").exists()


# ---------------------------------------------------------------- early stopping

def test_patience_stops_a_run_that_no_longer_improves_and_resume_says_so(prepared):
    # a rate of 0: nothing changes, so validation accuracy never beats its first value
    stuck = ["-o", "optimizer.name=sgd", "-o", "optimizer.lr=0", "-o", "train.epochs=5", "-o", "train.patience=2"]
    r = run_cli("train", *FAST, *stuck, "--name", "es")
    assert r.exit_code == 0, r.output
    assert ("early stop after epoch 2 (3 of 5 epochs trained): val/acc has not improved for 2 epoch(s) "
            "(train.patience 2)") in r.output
    run = Path("checkpoints/es")
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["early_stop"]["epoch"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # epochs 0, 1, 2 and no more
    assert "3/5 early" in run_cli("runs").output
    again = run_cli("resume", "--run", run)  # says so instead of training on
    assert again.exit_code == 1 and "stopped early after epoch 2" in again.output and "train.patience=N" in again.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    more = run_cli("resume", "--run", run, "-o", "train.patience=0")  # patience may change on resume
    assert more.exit_code == 0, more.output
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["early_stop"] is None
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 5


def test_the_monitor_chooses_the_best_checkpoint(prepared):
    r = run_cli("train", *FAST, "-o", "train.epochs=3", "-o", "train.monitor=train/loss", "--name", "m")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in Path("checkpoints/m/metrics.jsonl").read_text().splitlines()]
    lowest = min(range(3), key=lambda i: rows[i]["train_loss"])
    from mnist_kit.experiments import checkpoint
    best = checkpoint.load(Path("checkpoints/m/ckpt/best.pdckpt"))
    assert best["epoch"] == lowest and best["watch"]["best"] == pytest.approx(rows[lowest]["train_loss"])
    bad = run_cli("train", *FAST, "-o", "train.monitor=val/accuracy")
    assert bad.exit_code == 2 and "val/acc" in bad.output and "Traceback" not in bad.output


# ---------------------------------------------------------------- starting from weights

def _weights(path):
    from mnist_kit.experiments import checkpoint

    return {k: np.asarray(v) for k, v in checkpoint.load(Path(path))["model"].items()}


def test_init_from_a_run_a_checkpoint_or_an_export_starts_from_those_weights(prepared):
    assert run_cli("train", *FAST, "--name", "base").exit_code == 0
    assert run_cli("export", "--run", "checkpoints/base", "--format", "pdparams", "--out", "sd").exit_code == 0
    assert run_cli("export", "--run", "checkpoints/base", "--out", "plain").exit_code == 0
    best = _weights("checkpoints/base/ckpt/best.pdckpt")
    frozen = ["-o", "optimizer.name=sgd", "-o", "optimizer.lr=0", "-o", "train.epochs=1"]  # the weights stay
    for name, source, kind in [("from-run", "checkpoints/base", "run"),
                               ("from-ckpt", "checkpoints/base/ckpt/epoch_000.pdckpt", "checkpoint"),
                               ("from-pdparams", "sd", "export"), ("from-export", "plain", "export")]:
        r = run_cli("train", *FAST, *frozen, "-o", f"train.init_from={source}", "--name", name)
        assert r.exit_code == 0, r.output
        assert f"starting from the weights of {Path(source).resolve()} ({kind}" in r.output
        recorded = json.loads(Path(f"checkpoints/{name}/run.json").read_text())["init_from"]
        assert recorded["kind"] == kind and recorded["path"] == str(Path(source).resolve())
        expected = _weights(source) if source.endswith(".pdckpt") else best
        got = _weights(f"checkpoints/{name}/ckpt/epoch_000.pdckpt")
        assert all(np.array_equal(got[k], expected[k]) for k in expected), name


def test_init_from_other_shapes_or_a_missing_path_is_one_error_and_no_run(prepared):
    assert run_cli("train", *FAST, "-o", "model.name=mlp", "--name", "mlp").exit_code == 0
    r = run_cli("train", *FAST, "-o", "train.init_from=checkpoints/mlp", "--name", "cnn")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "train.init_from checkpoints/mlp has no body.0.weight" in r.output, r.output
    r = run_cli("train", *FAST, "-o", "model.hidden=[64]", "-o", "model.name=mlp",
                "-o", "train.init_from=checkpoints/mlp", "--name", "narrow")
    assert r.exit_code == 1 and "body.1.weight has shape [784, 256], the model's is [784, 64]" in r.output, r.output
    r = run_cli("train", *FAST, "-o", "train.init_from=nowhere", "--name", "none")
    assert r.exit_code == 1 and "train.init_from: nowhere does not exist" in r.output
    assert sorted(p.name for p in Path("checkpoints").iterdir()) == ["mlp"]  # no run folder left behind


def _rewrite_pdparams(path: Path, kind: str) -> None:
    """Replace an export's model.pdparams with weights of another dtype, or a pickle that is not weights."""
    import pickle

    from mnist_kit.backend.runtime import paddle

    weights = paddle.load(str(path))
    if kind in ("float64", "int64", "bool", "complex128"):
        paddle.save({k: np.asarray(v.numpy()).astype(kind) for k, v in weights.items()}, str(path))
        return
    hostile = {"strings": {k: "x" for k in weights}, "numbers": {k: 3 for k in weights},
               "nested": {k: {"a": 1} for k in weights}, "a list": [1, 2]}[kind]
    path.write_bytes(pickle.dumps(hostile))


@pytest.mark.parametrize("kind,words", [
    ("float64", "body.0.weight holds float64 values, the model's are float32"),
    ("int64", "holds int64 values"), ("bool", "holds bool values"), ("complex128", "holds complex128 values"),
    ("strings", "body.0.weight is not an array of weights (str)"), ("numbers", "is not an array of weights (int)"),
    ("nested", "is not an array of weights (dict)"), ("a list", "model.pdparams is not a state dict"),
])
def test_init_from_weights_of_another_dtype_or_a_foreign_pickle_is_one_error(prepared, kind, words):
    assert run_cli("train", *FAST, "-o", "train.epochs=1", "--name", "base").exit_code == 0
    assert run_cli("export", "--run", "checkpoints/base", "--format", "pdparams", "--out", "sd").exit_code == 0
    _rewrite_pdparams(Path("sd/model.pdparams"), kind)
    r = run_subprocess("train", *FAST, "-o", "train.init_from=sd", "--name", "from")
    assert r.returncode == 1 and "Traceback" not in r.stderr and words in r.stderr, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("Error:")] == [r.stderr.strip().splitlines()[-1]]
    assert not Path("checkpoints/from").exists()


def test_init_from_a_symlink_loop_says_so(prepared):
    Path("loop").symlink_to("loop")
    r = run_cli("train", *FAST, "-o", "train.init_from=loop", "--name", "x")
    assert r.exit_code == 1 and "train.init_from: loop is a symbolic link to nothing (a loop" in r.output, r.output


# ---------------------------------------------------------------- no validation split

def test_val_size_0_trains_on_every_image_and_the_best_checkpoint_is_the_last(prepared):
    r = run_cli("train", *FAST, "-o", "data.val_size=0", "--name", "all")
    assert r.exit_code == 0, r.output
    assert "600 train / 0 validation images (none asked for: training on every training image)" in r.output
    assert "| no validation |" in r.output
    assert "done: no validation split, so the best checkpoint is the last epoch's" in r.output
    rows = [json.loads(line) for line in Path("checkpoints/all/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["val_acc"] is None and row["val_loss"] is None for row in rows)
    from mnist_kit.experiments import checkpoint
    assert checkpoint.load(Path("checkpoints/all/ckpt/best.pdckpt"))["epoch"] == 1  # the last
    assert "2/2" in run_cli("runs").output
    exported = run_cli("export", "--run", "checkpoints/all")  # checked on the test split instead
    assert exported.exit_code == 0 and "test accuracy" in exported.output, exported.output
    assert run_cli("eval", "--run", "checkpoints/all").exit_code == 0
    r = run_cli("eval", "--run", "checkpoints/all", "--split", "val")
    assert r.exit_code == 1 and "has no validation split" in r.output


def test_without_validation_patience_watches_the_training_loss(prepared):
    r = run_cli("train", *FAST, "-o", "data.val_size=0", "-o", "train.patience=2")
    assert r.exit_code == 2 and "data.val_size 0 leaves no validation split for train.monitor val/acc" in r.output
    assert "Traceback" not in r.output
    r = run_cli("train", *FAST, "-o", "data.val_size=0", "-o", "train.patience=2", "-o", "train.monitor=train/loss",
                "--name", "tl")
    assert r.exit_code == 0, r.output
    assert "done: best train/loss" in r.output


def test_train_steps_sets_the_run_length_in_whole_epochs(prepared):
    # 500 training images at batch 50: 10 steps an epoch, so 26 steps are 3 epochs
    r = run_cli("train", *FAST, "-o", "train.steps=26", "-o", "output.visualdl=false", "--name", "steps")
    assert r.exit_code == 0, r.output
    assert "train.steps 26: 3 epochs of 10 steps" in r.output
    saved = config.load(Path("checkpoints/steps/config.yaml"))  # the config as given: nothing derived written in
    assert (saved.train.epochs, saved.train.steps) == (2, 26)
    assert json.loads(Path("checkpoints/steps/run.json").read_text())["epochs"] == 3  # the run's length
    assert "3/3" in run_cli("runs").output  # epochs done of the run's length
    assert len(Path("checkpoints/steps/metrics.jsonl").read_text().splitlines()) == 3
    half = run_cli("train", *FAST, "-o", "train.steps=25", "-o", "output.visualdl=false", "--name", "half")
    assert half.exit_code == 0 and "train.steps 25: 3 epochs of 10 steps" in half.output  # 2.5 epochs: up
    # -o train.epochs=N counts epochs instead: a new run that long, but not this run on resume
    assert config.load(Path("checkpoints/steps/config.yaml"), ["train.epochs=5"]).train.steps == 0
    bad = run_cli("resume", "--run", "checkpoints/steps", "--epoch", "0", "-o", "train.epochs=5")
    assert bad.exit_code == 1 and "train.steps: 26 -> 0" in bad.output and "Traceback" not in bad.output
    again = run_cli("resume", "--run", "checkpoints/steps", "--epoch", "1")  # the same length, from its config
    assert again.exit_code == 0, again.output
    assert len(Path("checkpoints/steps/metrics.jsonl").read_text().splitlines()) == 3


# ---------------------------------------------------------------- configs that cannot train

def test_a_config_that_yields_no_training_step_is_an_error(trained):
    assert_user_error(run_cli("train", "--nproc", 2, *FAST, "-o", "train.batch_size=1000", "--name", "big"),
                      "no training step: the training split has 500 images and a step takes 2 processes x 1000",
                      "train.batch_size")
    assert not Path("checkpoints/big").exists()


def test_a_sweep_run_that_fails_before_its_folder_exists_is_reported(trained):
    proc = run_subprocess("sweep", *FAST, "-o", "train.device=cpu,gpu", "--name", "devices")
    assert proc.returncode == 1, proc.stderr
    table = proc.stdout.splitlines()
    assert any(line.startswith("device=gpu") and "failed" in line for line in table), proc.stdout
    assert any(line.startswith("device=cpu") and "completed" in line for line in table), proc.stdout
    assert "1 run(s) failed: device=gpu" in proc.stderr


def test_an_image_folder_too_small_to_validate_says_so(tmp_path):

    folder = write_image_folder(tmp_path / "cards", counts={"box": 2, "hbar": 2}, corrupt=False)
    args = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", "-o", "data.image_size=[16,32]"]
    prepared = run_cli("prepare", *args)
    assert prepared.exit_code == 0 and "warning: the validation split is empty" in prepared.output
    assert_user_error(run_cli("train", *args, "-o", "train.epochs=1"), "the validation split is empty",
                      "data.val_ratio")
