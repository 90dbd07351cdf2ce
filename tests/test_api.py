"""mnist-kit as a library: the typed config, and one function per command (docs/python.md), checked against
what the commands themselves do. The slow tests train, resume, evaluate, export and predict from Python."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mnist_kit as mk
from helpers import FAST, REPO, run_cli, run_subprocess, synthetic_arrays, write_idx_folder
from mnist_kit import config
from mnist_kit.experiments.rundir import TIMING_KEYS

OVERRIDES = FAST[1::2]  # FAST's -o texts
RELEASE_RUN = REPO / "tests" / "fixtures" / "run-0.1.0"  # written by 8c666e6, the release before the typed config


# ---------------------------------------------------------------- the package and the typed config

def test_import_mnist_kit_offers_the_api_and_loads_no_paddle():
    code = ("import sys, mnist_kit as mk\n"
            "names = [getattr(mk, n) for n in mk.__all__]\n"
            "cfg = mk.load_config('cnn', ['train.epochs=3'])\n"
            "print(len(names), cfg.train.epochs, 'paddle' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1:] == ["3", "False"]
    for name in ("load_config", "prepare", "train", "resume", "evaluate", "export", "predict", "runs", "sweep",
                 "Run", "Evaluation", "Export", "Prediction", "Config", "UserError", "ConfigError"):
        assert name in mk.__all__ and getattr(mk, name) is not None
    with pytest.raises(AttributeError):
        mk.trian  # noqa: B018
    from mnist_kit import api

    assert set(mk._API) == set(api.__all__)  # the root offers every name of the API, and only those


def test_load_config_takes_a_name_a_file_a_config_or_the_defaults(tmp_path):
    cnn = mk.load_config("cnn")
    assert isinstance(cnn, mk.Config) and cnn.model.name == "cnn" and cnn.model.channels == (20, 20)
    assert mk.load_config(REPO / "configs" / "cnn.yaml") == cnn
    assert mk.load_config() == config.defaults()
    three = mk.load_config("cnn", ["train.epochs=3", "optimizer.lr=0.01"])
    assert (three.train.epochs, three.optimizer.lr) == (3, 0.01)
    assert mk.load_config(cnn, ["train.epochs=3", "optimizer.lr=0.01"]) == three  # a Config, changed
    mlp = mk.load_config(cnn, ["model.name=mlp"])  # keys of the CNN go with it, as from a file
    assert mlp.model.name == "mlp" and "channels" not in mlp.model.to_dict() and mlp.model.hidden == (256, 128)
    assert mk.load_config(three, ["optimizer.lr=null"]).optimizer.lr == config.SCHEMA["optimizer"]["lr"].default
    steps = mk.load_config("cnn_fast")
    assert steps.train.steps == 1200 and mk.load_config(steps, ["train.epochs=4"]).train.steps == 0  # as -o does
    mine = tmp_path / "mine.yaml"
    mine.write_text(config.dump(three))
    assert mk.load_config(mine) == three  # the YAML it writes reads back as the same config


def test_a_config_is_frozen_typed_and_its_dict_form_is_the_yaml():
    cfg = mk.load_config("cnn_best_fashion")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optimizer.lr = 0.1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train = cfg.train  # type: ignore[misc]
    assert config.validate(cfg.to_dict()) == cfg
    assert cfg.to_dict() == config.parse_yaml(config.dump(cfg))
    for section, fields in config.SCHEMA.items():  # every key of the schema is a field of its section
        assert [f.name for f in dataclasses.fields(getattr(cfg, section))] == list(fields)
    assert "hidden" not in cfg.model.to_dict() and "hidden" not in repr(cfg.model)  # keys that apply, only
    assert cfg.dataset.name == "fashion-mnist" and cfg.has_validation
    assert not mk.load_config(None, ["data.val_size=0"]).has_validation
    assert config.updated(cfg, {"train.epochs": 7}).train.epochs == 7 and cfg.train.epochs != 7


@pytest.mark.parametrize("overrides, words", [
    (["optimizer.lrr=1"], "did you mean 'optimizer.lr'"),
    (["train.epochs=0"], "train.epochs must be >= 1"),
    (["model.name=resnet"], "model.name is 'resnet'"),
])
def test_config_errors_from_python_are_the_lines_the_command_prints(overrides, words):
    with pytest.raises(mk.ConfigError) as raised:
        mk.load_config("cnn", overrides)
    assert words in str(raised.value)
    shown = run_cli("train", "--config", "cnn", *[a for o in overrides for a in ("-o", o)], "--print-config")
    assert shown.exit_code == 2 and shown.stderr.endswith(f"Error: {raised.value}\n")


def test_mypy_rejects_a_mistyped_config_field(tmp_path):
    """The point of the typed config: a misspelt key fails the type check (the suite runs mypy on the package),
    where a dict's cfg["optimizer"]["lrr"] waited for a test that trains."""
    program = tmp_path / "mine.py"
    right = ("import mnist_kit as mk\n\ncfg = mk.load_config('cnn')\nlr: float = cfg.optimizer.lr\n"
             "epochs: int = cfg.train.epochs\nrun = mk.train(cfg)\nacc = run.best_val_acc\n")
    mypy = [str(Path(sys.executable).parent / "mypy"), "--follow-imports=silent", "--cache-dir", os.devnull,
            "--ignore-missing-imports", str(program)]
    env = {**os.environ, "MYPYPATH": str(REPO)}
    program.write_text(right)
    ok = subprocess.run(mypy, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout
    program.write_text(right.replace("cfg.optimizer.lr\n", "cfg.optimizer.lrr\n").replace("epochs: int", "epochs: str"))
    wrong = subprocess.run(mypy, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert wrong.returncode == 1
    assert '"Optimizer" has no attribute "lrr"; maybe "lr"?' in wrong.stdout
    assert 'expression has type "int", variable has type "str"' in wrong.stdout


@pytest.mark.parametrize("call, words", [
    (lambda: mk.prepare(source="ftp"), "source is 'ftp'; choose auto, download, debian or dir"),
    (lambda: mk.prepare(timeout=float("nan")), "timeout at least 0.1 s"),
    (lambda: mk.prepare(dataset="emnist"), "unknown data set 'emnist'; data sets: mnist, fashion-mnist"),
    (lambda: mk.evaluate(photos=-1), "photos must be 0 to 10000"),
    (lambda: mk.evaluate(split="train"), "split is 'train'; choose test or val"),
    (lambda: mk.train(nproc=0), "nproc must be 1 or more"),
    (lambda: mk.load_config("cnn", "train.epochs=3"), 'overrides must be a list of "section.key=value" texts'),
    (lambda: mk.load_config(3), "config must be a Config, a shipped config's name or a YAML file"),
    (lambda: mk.evaluate(run=3.5), "run must be a Run, a run folder or None"),
    (lambda: mk.predict(None, ["x.png"], errors="ignore"), "errors is 'ignore'; choose raise or keep"),
    (lambda: mk.board("nowhere"), "no VisualDL logs under nowhere"),
    (lambda: mk.board(port=70000), "port must be 0 (a free one) to 65535"),
])
def test_arguments_the_command_would_refuse_are_refused_from_python_in_one_line(call, words):
    with pytest.raises(mk.UserError) as raised:
        call()
    assert words in str(raised.value) and "\n" not in str(raised.value)
    assert not Path("checkpoints").exists()


# ---------------------------------------------------------------- predict: files and images in memory

def _test_digits(tmp_path: Path, n: int = 4) -> tuple[list[Path], np.ndarray]:
    x = synthetic_arrays()["test_images"][:n]
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths, x


def test_predict_takes_files_pil_images_and_arrays_alike(small_export, tmp_path):
    paths, x = _test_digits(tmp_path)
    export = mk.Export.open(small_export)
    from_files = mk.predict(export, paths)
    assert [p.source for p in from_files] == [str(p) for p in paths]
    shown = run_cli("predict", "--model", small_export, "--json", *paths)
    assert [json.loads(line) for line in shown.stdout.splitlines()] == [p.to_dict() for p in from_files]
    in_memory = mk.predict(small_export, [Image.fromarray(x[0]), x[1], x[2].astype(np.float32) / 255,
                                          np.stack([x[3]] * 3, axis=-1)])
    assert [p.source for p in in_memory] == [f"<image {i}>" for i in range(4)]
    for a, b in zip(from_files, in_memory):  # the same preprocessing: the same answer
        assert (a.index, a.label, a.top) == (b.index, b.label, b.top)
        assert a.probability == pytest.approx(b.probability, abs=1e-6)
    first = from_files[0]
    assert first.label == export.classes[first.index] and first.top[0].index == first.index and len(first.top) == 3
    assert mk.predict(small_export, str(paths[0]))[0] == first  # one image needs no list
    assert [p.source for p in mk.predict(small_export, str(tmp_path))] == [str(p) for p in paths]  # a folder


def test_predict_refuses_what_is_not_an_image_in_one_line(small_export, tmp_path):
    paths, x = _test_digits(tmp_path, 1)
    missing = tmp_path / "nope.png"
    with pytest.raises(mk.UserError, match=r"nope.png: no such file or folder$"):
        mk.predict(small_export, [paths[0], missing])
    kept = mk.predict(small_export, [paths[0], missing], errors="keep")
    assert kept[0].error is None and kept[1].error == "no such file or folder" and kept[1].index == -1
    for bad, words in ((np.zeros((2, 3, 5)), "shape (2, 3, 5)"), (np.full((28, 28), np.nan), "NaN"),
                       ({"an": "image"}, "image 0 must be a file path, a PIL image or a numpy array")):
        with pytest.raises(mk.UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
            mk.predict(small_export, [bad])
    with pytest.raises(mk.UserError, match="no exported model under"):
        mk.predict(None, paths, root=tmp_path)


# ---------------------------------------------------------------- a model's life from Python (slow: trains)

@pytest.mark.slow
def test_the_life_of_a_model_from_python(prepared, tmp_path):
    run = mk.train("linear", [*OVERRIDES, "output.visualdl=false"], seed=3, name="py")
    assert run == mk.Run.open("checkpoints/py") and run.name == "py" and run.status == "completed"
    assert [r["epoch"] for r in run.metrics] == [0, 1] and run.epochs == 2
    assert run.best_val_acc == max(r["val_acc"] for r in run.metrics)
    assert run.config.train.seed == 3 and run.info["status"] == "completed"
    cli_run = run_cli("train", "--config", "linear", *FAST, "-o", "output.visualdl=false", "--seed", "3",
                      "--name", "cli")
    assert cli_run.exit_code == 0, cli_run.output
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in run.metrics]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in mk.Run("checkpoints/cli").metrics]

    again = mk.resume(run, epoch=0)  # epoch 1 again, exactly
    assert again == run and [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in again.metrics] == strip
    longer = mk.resume("checkpoints/py", overrides=["train.epochs=3"])
    assert len(longer.metrics) == 3 and longer.epochs == 3

    result = mk.evaluate(run)
    shown = json.loads(run_cli("eval", "--run", "checkpoints/py", "--json").stdout)
    assert {k: v for k, v in result.to_dict().items() if k != "seconds"} == \
           {k: v for k, v in shown.items() if k != "seconds"}
    assert result.confusion.shape == (10, 10) and result.confusion.sum() == shown["samples"]
    assert result.accuracy == pytest.approx(np.trace(result.confusion) / result.confusion.sum())
    assert [c["label"] for c in result.per_class] == result.classes and len(result.per_class) == 10
    assert mk.evaluate(run, epoch=0).to_dict()["checkpoint"] == "epoch_000.pdckpt"

    export = mk.export(run, out=tmp_path / "exported")
    assert export.path == tmp_path / "exported" and export.checks["val_accuracy"] == export.checks[
        "val_accuracy_checkpoint"]
    assert mk.Export.open(export.path).meta["source"]["checkpoint"] == "best.pdckpt"
    paths, _ = _test_digits(tmp_path, 2)
    assert [p.source for p in mk.predict(export, paths)] == [str(p) for p in paths]
    assert [r.name for r in mk.runs(sort="run")] == ["cli", "py"]


@pytest.mark.slow
def test_errors_from_python_are_the_commands_errors(prepared):
    for call, args in ((lambda: mk.evaluate("checkpoints/nope"), ["eval", "--run", "checkpoints/nope"]),
                       (lambda: mk.resume(None, root="nowhere"), ["resume", "--root", "nowhere"]),
                       (lambda: mk.runs("nowhere"), ["runs", "nowhere"]),
                       (lambda: mk.train("cnn", ["train.amp=fp16", *OVERRIDES]),
                        ["train", "--config", "cnn", "-o", "train.amp=fp16", *FAST])):
        with pytest.raises(mk.UserError) as raised:
            call()
        shown = run_cli(*args)
        assert shown.exit_code == raised.value.exit_code and shown.stderr.endswith(f"Error: {raised.value}\n")
    assert not Path("checkpoints").exists() or not any(Path("checkpoints").iterdir())  # nothing left behind


@pytest.mark.slow
def test_a_sweep_from_python_is_the_commands_sweep(prepared):
    done = mk.sweep("linear", {"optimizer.lr": [0.01, 0.001]}, [*OVERRIDES, "train.epochs=1",
                                                               "output.visualdl=false"], name="grid")
    assert done.path == Path("checkpoints/grid") and not done.failed and not done.busy
    assert sorted(r.name for r in done.runs) == ["lr=0.001", "lr=0.01"]
    assert done.best in done.runs and all(r.status == "completed" for r in done.runs)
    again = run_cli("sweep", "--config", "linear", "-o", "optimizer.lr=0.01,0.001", *FAST, "-o", "train.epochs=1",
                    "-o", "output.visualdl=false", "--name", "grid")
    assert again.exit_code == 0 and "2 already completed" in again.output  # found as done: skipped


@pytest.mark.slow
def test_a_run_written_before_the_typed_config_still_loads_resumes_and_exports(prepared, tmp_path):
    """tests/fixtures/run-0.1.0 was trained by 8c666e6 (linear, train.steps 26: 3 epochs of 10 steps, whose
    config.yaml and checkpoints then held train.epochs 3, derived) on the synthetic digits the tests prepare."""
    shutil.copytree(RELEASE_RUN, "checkpoints/old")
    rows = mk.Run("checkpoints/old").metrics
    listed = run_cli("runs")
    assert listed.exit_code == 0 and "3/3" in listed.output and "completed" in listed.output
    cfg = mk.Run("checkpoints/old").config
    assert (cfg.train.epochs, cfg.train.steps, cfg.model.name) == (3, 26, "linear")
    evaluated = run_cli("eval", "--run", "checkpoints/old", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["checkpoint"] == "best.pdckpt"
    again = run_cli("resume", "--run", "checkpoints/old", "--epoch", "1")  # epoch 2 again, from its checkpoint
    assert again.exit_code == 0, again.output
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
    assert [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in mk.Run("checkpoints/old").metrics] == strip
    assert mk.export("checkpoints/old", out=tmp_path / "old").checks["val_accuracy"] == rows[-1]["val_acc"]


@pytest.mark.slow
def test_the_examples_of_docs_python_md_run_as_written(tmp_path):
    """Every python block of docs/python.md, top to bottom, in one program: on 12,000 synthetic digits
    prepared as MNIST (enough for data.val_size's 10,000), with a digit.png of the reader's own."""
    arrays = synthetic_arrays(n_train=12000, n_test=500)
    write_idx_folder(tmp_path / "idx", arrays)
    env = {"MNIST_KIT_DATA": str(tmp_path / "data")}
    assert run_subprocess("prepare", "--from-dir", tmp_path / "idx", "--no-verify", env=env).returncode == 0
    Image.fromarray(arrays["test_images"][0]).save(tmp_path / "digit.png")
    text = (REPO / "docs" / "python.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 10
    (tmp_path / "examples.py").write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, "examples.py"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "128 32" in lines and "checkpoints/cnn-seed1 completed 2" in lines and "(10, 10)" in lines
    assert "run directory not found: checkpoints/no-such-run" in lines and "3" in lines  # the study's trials
    assert any(line.startswith("cannot change train.epochs on resume with the cosine schedule") for line in lines)
    assert "  - unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?); keys of optimizer: name, lr," in \
        done.stdout
