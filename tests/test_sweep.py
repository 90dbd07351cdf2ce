"""Sweeps over a grid of config values, and the runs listing that compares them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import FAST, free_port, run_cli, run_subprocess, visualdl_api, wait_for
from mnist_kit import ConfigError, UserError
from mnist_kit.experiments import listing
from mnist_kit.experiments.sweep import parse_grid, plan
from mnist_kit.logbook.writer import read_records

pytestmark = pytest.mark.slow  # runs sweeps as processes

SMALL = [*FAST, "-o", "train.epochs=1", "-o", "log.histogram_every=0", "-o", "log.curves=false",
         "-o", "log.embeddings=0"]


def test_the_grid_is_every_combination_named_by_its_values():
    fixed, axes, planned = plan(None, ["optimizer.lr=0.01,0.001", "model.name=linear,mlp", "train.epochs=1",
                                       "train.seed=7"])
    assert fixed == ["train.epochs=1", "train.seed=7"]
    assert axes == [("optimizer.lr", [0.01, 0.001]), ("model.name", ["linear", "mlp"])]
    assert [p.name for p in planned] == ["lr=0.01,model=linear", "lr=0.01,model=mlp", "lr=0.001,model=linear",
                                         "lr=0.001,model=mlp"]
    assert planned[3].cfg.optimizer.lr == 0.001 and planned[3].cfg.model.name == "mlp"
    assert all(p.cfg.train.epochs == 1 for p in planned)


def test_list_values_and_one_value_lists():
    fixed, axes = parse_grid(["model.channels=[8,16],[16,32]", "model.hidden=[64]"])
    assert axes == [("model.channels", [[8, 16], [16, 32]])] and fixed == ["model.hidden=[64]"]
    _, _, planned = plan(None, ["model.channels=[8,16],[16,32]"])
    assert [p.name for p in planned] == ["channels=8-16", "channels=16-32"]


def test_every_bad_combination_is_reported_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError) as e:
        plan(None, ["model.name=cnn,mlp", "model.channels=[4]", "optimizer.lr=0.1,-1"])
    text = str(e.value)
    assert "nothing was run" in text and "model=mlp" in text and "lr=-1" in text
    assert "  model=mlp,lr=0.1: model.channels does not apply to model 'mlp'" in text  # one line per combination
    r = run_subprocess("sweep", "-o", "optimizer.lr=0.1,-1", "-o", f"output.root={tmp_path / 'out'}")
    assert r.returncode == 2 and "lr=-1" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="several values"):
        plan(None, ["optimizer.lr=0.1"])


def test_a_sweep_on_data_that_is_not_prepared_stops_before_any_run(tmp_path):
    r = run_subprocess("sweep", "-o", "optimizer.lr=0.1,0.01", "-o", "data.name=fashion-mnist")
    assert r.returncode == 1 and "Fashion-MNIST is not prepared" in r.stderr and "started" not in r.stderr, r.stderr


def test_a_sweep_runs_the_grid_reports_failures_and_skips_finished_runs_when_run_again(prepared, tmp_path):
    # lr 1e30 with plain SGD makes the MLP's loss NaN: that run fails, the others go on
    args = ["sweep", "-o", "optimizer.name=sgd", "-o", "optimizer.lr=0.1,1e30", "-o", "model.name=linear,mlp",
            *SMALL, "--name", "grid", "--jobs", "2"]
    r = run_subprocess(*args)
    assert r.returncode == 1, r.stderr
    out = Path("checkpoints/grid")
    assert "lr=1e30,model=mlp: FAILED (exit 1): Error: training diverged" in r.stderr
    assert "run(s) failed: " in r.stderr and "lr=1e30,model=mlp" in r.stderr.splitlines()[-1]
    assert "training diverged" in (out / "logs" / "lr=1e30,model=mlp.log").read_text()
    completed = []
    for name in ("lr=0.1,model=linear", "lr=0.1,model=mlp", "lr=1e30,model=linear", "lr=1e30,model=mlp"):
        info = json.loads((out / name / "run.json").read_text())
        if info["status"] == "completed":
            completed.append(name)
        (log,) = (out / name / "vdl").glob("vdlrecords*")  # each run logs its hyper-parameters for the board
        (hp,) = [v for rec in read_records(log) for v in rec.values if v.WhichOneof("one_value") == "hparam"]
        assert "optimizer/lr" in {i.name for i in hp.hparam.hparamInfos}
    assert {"lr=0.1,model=linear", "lr=0.1,model=mlp"} <= set(completed) and "lr=1e30,model=mlp" not in completed
    assert "mnist-kit board --logdir checkpoints/grid" in r.stdout
    table = r.stdout.splitlines()
    assert table[0].split()[:2] == ["run", "status"] and table[2].startswith("lr=0.1")  # best first
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["grid"] == {"optimizer.lr": [0.1, "1e30"], "model.name": ["linear", "mlp"]}
    assert sweep["runs"] == ["lr=0.1,model=linear", "lr=0.1,model=mlp", "lr=1e30,model=linear", "lr=1e30,model=mlp"]

    again = run_subprocess(*args)
    assert again.returncode == 1
    assert f"{len(completed)} already completed, {4 - len(completed)} to run" in again.stderr
    assert "started lr=0.1" not in again.stderr


def test_an_interrupted_sweep_continues_where_it_stopped(prepared):
    args = ["sweep", "-o", "optimizer.lr=0.01,0.001", "-o", "model.name=linear", *FAST, "--name", "s"]
    first = run_subprocess(*args, env={"MNIST_KIT_FAULT": "kill@epoch:0"})
    assert first.returncode == 1 and first.stderr.count("FAILED (exit -9)") == 2, first.stderr
    listing = run_cli("runs", "checkpoints")
    assert listing.output.count("stopped") == 2, listing.output  # killed runs are not shown as running
    second = run_subprocess(*args)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("(resuming)") == 2
    for name in ("lr=0.01", "lr=0.001"):
        rows = Path(f"checkpoints/s/{name}/metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in rows] == [0, 1]


def test_runs_lists_compares_and_sorts(prepared):
    for lr, name in (("0.05", "a"), ("0.001", "b")):
        r = run_cli("train", *SMALL, "-o", "model.name=linear", "-o", f"optimizer.lr={lr}", "--name", name)
        assert r.exit_code == 0, r.output
    r = run_cli("runs")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].split() == ["run", "status", "model.name", "optimizer.name", "optimizer.lr", "train.batch_size",
                                "epochs", "best", "val", "acc", "train", "time"]
    assert lines[2].startswith("a ") and lines[3].startswith("b ")  # by start time
    assert "completed" in lines[2] and "1/1" in lines[2] and "%" in lines[2]
    by_lr = run_cli("runs", "--sort", "optimizer.lr").output.splitlines()
    assert by_lr[2].startswith("b ")
    data = json.loads(run_cli("runs", "--json", "--sort", "acc").output)
    assert [d["run"] for d in data] == sorted([d["run"] for d in data], key=lambda n: -next(
        x["best_val_acc"] for x in data if x["run"] == n))
    assert data[0]["hparams"]["optimizer.lr"] in (0.05, 0.001) and data[0]["status"] == "completed"
    bad = run_subprocess("runs", "--sort", "nonsense")
    assert bad.returncode == 1 and "cannot sort by 'nonsense'" in bad.stderr
    assert run_subprocess("runs", "nowhere").returncode == 1


def test_differing_hyper_parameters_get_their_own_column():
    base = {"run": "x", "status": "completed", "epochs_done": 1, "epochs": 1, "best_val_acc": 0.5,
            "train_seconds": 3.0, "hparams": {"model.name": "cnn", "optimizer.lr": 0.1, "train.seed": 1,
                                              "log.images": True}}
    other = {**base, "run": "y", "hparams": {**base["hparams"], "train.seed": 2, "log.images": False}}
    assert listing.differing_keys([base, other]) == ["train.seed"]
    assert "train.seed" in listing.format_table([base, other]).splitlines()[0]


def test_the_board_overlays_a_sweeps_runs_and_ranks_their_hyper_parameters(prepared, tmp_path):
    import os
    import subprocess
    import sys


    r = run_subprocess("sweep", "-o", "optimizer.lr=0.05,0.001", "-o", "model.name=linear", *SMALL, "--name", "s")
    assert r.returncode == 0, r.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", "board", "--logdir", "checkpoints/s", "--port",
                             str(port)], env={**os.environ, "HOME": str(tmp_path)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stderr.read()
        names = visualdl_api(port, "runs")  # each run, and the writer of its validation lines
        assert sorted(names) == ["lr=0.001", "lr=0.001 · val", "lr=0.05", "lr=0.05 · val"], names
        for name in ("lr=0.001", "lr=0.05"):  # one val/acc chart per run, overlaid on the scalar page
            assert len(visualdl_api(port, "scalar/list", run=name, tag="val/acc")) == 1
            # training's loss and validation's in one chart
            assert len(visualdl_api(port, "scalar/list", run=name, tag="train_and_val/loss")) == 1
            assert len(visualdl_api(port, "scalar/list", run=f"{name} · val", tag="train_and_val/loss")) == 1
        hparams = visualdl_api(port, "hparams/list")
        assert sorted(h["hparams"]["optimizer/lr"] for h in hparams) == [0.001, 0.05]  # each run's values ...
        assert all(0 <= h["metrics"]["val/acc"] <= 1 for h in hparams)  # ... and the metric that ranks them
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_run_that_failed_before_its_first_checkpoint_is_set_aside_and_trained_again(prepared):
    args = ["sweep", "-o", "optimizer.lr=0.01,0.001", "-o", "model.name=linear", *SMALL, "--name", "s"]
    first = run_subprocess(*args, env={"MNIST_KIT_FAULT": "crash@step:2"})
    assert first.returncode == 1 and first.stderr.count("injected crash at step 2") == 2, first.stderr
    second = run_subprocess(*args)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("set aside an unfinished run without a checkpoint") == 2
    assert len(list(Path("checkpoints/s/superseded").iterdir())) == 2  # kept, not deleted
    for name in ("lr=0.01", "lr=0.001"):
        assert json.loads(Path(f"checkpoints/s/{name}/run.json").read_text())["status"] == "completed"


def test_ctrl_c_stops_a_sweep_and_its_runs_which_resume_on_the_next_run(prepared):
    import signal
    import subprocess
    import sys
    import time

    args = ["sweep", "-o", "optimizer.lr=0.01,0.001", "-o", "model.name=linear", *FAST, "-o", "train.epochs=150",
            "-o", "log.images=false", "-o", "log.histogram_every=0", "--name", "s", "-j", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", *args], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    metrics = [Path(f"checkpoints/s/{n}/metrics.jsonl") for n in ("lr=0.01", "lr=0.001")]
    deadline = time.time() + 120
    while not all(m.is_file() and m.read_text() for m in metrics) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "sweep interrupted" in err and "Traceback" not in err, err
    for n in ("lr=0.01", "lr=0.001"):
        assert json.loads(Path(f"checkpoints/s/{n}/run.json").read_text())["status"] == "interrupted"
    again = run_subprocess(*args)
    assert again.returncode == 0 and again.stderr.count("(resuming)") == 2, again.stderr


def test_a_sweep_run_again_with_more_epochs_trains_its_runs_on(prepared):
    args = ["sweep", "-o", "optimizer.lr=0.01,0.001", "-o", "model.name=linear", *FAST, "--name", "s"]
    assert run_subprocess(*args, "-o", "train.epochs=1").returncode == 0
    again = run_subprocess(*args, "-o", "train.epochs=2")
    assert again.returncode == 0 and again.stderr.count("(resuming)") == 2, again.stderr
    for name in ("lr=0.01", "lr=0.001"):
        rows = Path(f"checkpoints/s/{name}/metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in rows] == [0, 1]
    other = run_subprocess(*args, "-o", "train.epochs=2", "-o", "train.seed=5")
    assert other.returncode == 1 and "trained with another config" in other.stderr


def test_a_sweep_of_runs_measured_in_steps_finds_them_completed_when_run_again(prepared):
    # FAST's train.epochs=2 comes first, so train.steps holds: 12 steps of 10 an epoch are 1 epoch
    args = ["sweep", "-o", "optimizer.lr=0.01,0.001", "-o", "model.name=linear", *FAST, "-o", "train.steps=12",
            "--name", "st"]
    assert run_subprocess(*args).returncode == 0
    for name in ("lr=0.01", "lr=0.001"):
        assert len(Path(f"checkpoints/st/{name}/metrics.jsonl").read_text().splitlines()) == 1
    again = run_subprocess(*args)
    assert again.returncode == 0 and "2 already completed, 0 to run" in again.stderr, again.stderr


def test_the_new_keys_sweep_too_and_blocks_are_named_by_their_place():
    _, axes, planned = plan(None, ["model.blocks=[{channels: 8, pool: avg}],[{channels: 16, stride: 2}]",
                                   "train.patience=1,2", "model.init=kaiming,xavier"])
    assert [p.name for p in planned][:3] == ["blocks=v1,patience=1,init=kaiming", "blocks=v1,patience=1,init=xavier",
                                             "blocks=v1,patience=2,init=kaiming"]
    assert planned[-1].cfg.model.blocks[0].stride == 2 and planned[-1].cfg.model.channels == (16,)
    with pytest.raises(ConfigError, match="model.blocks\\[0\\] has an unknown key 'channel'"):
        plan(None, ["model.blocks=[{channel: 8}],[{channels: 8}]"])


def test_values_that_round_alike_get_names_of_their_own_and_ambiguous_grids_are_refused():
    _, _, planned = plan(None, ["optimizer.lr=0.1234567,0.1234568", "train.seed=1,2"])
    assert [p.name for p in planned][::2] == ["lr=0.1234567,seed=1", "lr=0.1234568,seed=1"]  # %g made both 0.123457
    _, _, planned = plan(None, ["optimizer.lr=0.01,1e-05,0.0003"])
    assert [p.name for p in planned] == ["lr=0.01", "lr=1e-05", "lr=0.0003"]  # short where short is exact
    for overrides, words in [
        (["optimizer.lr=0.1,0.2", "optimizer.lr=0.3"], "optimizer.lr is given one value and several values"),
        (["optimizer.lr=0.3", "optimizer.lr=0.1,0.2"], "optimizer.lr is given one value and several values"),
        (["train.seed=1,2,1"], "train.seed lists 1 more than once"),
        (["optimizer.lr=1,1.0"], "lr=1: 2 combinations make this run name"),
    ]:
        with pytest.raises(ConfigError, match=words):
            plan(None, overrides)


def test_a_newline_in_an_override_is_refused_not_folded_into_a_path(tmp_path):
    for command in (["train"], ["sweep", "-o", "optimizer.lr=0.1,0.2"]):
        r = run_subprocess(*command, "-o", "output.root=runs/new\nline", *SMALL)
        assert r.returncode == 2 and "holds a control character" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1, r.stderr  # said once, also by a sweep
    assert not Path("runs").exists()


LONG = ["-o", "optimizer.lr=0.01,0.001", "-o", "model.name=linear", *FAST, "-o", "train.epochs=500",
        "-o", "log.images=false", "-o", "log.histogram_every=0", "--name", "s", "-j", "2"]
RUNS = [Path("checkpoints/s/lr=0.01"), Path("checkpoints/s/lr=0.001")]


def _start_sweep(*args, sigint=None):
    import signal
    import subprocess
    import sys

    disposition = signal.SIG_DFL if sigint is None else sigint
    return subprocess.Popen([sys.executable, "-m", "mnist_kit", "sweep", *args], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))


def _training(run: Path) -> bool:
    from mnist_kit.experiments.rundir import RunDir

    return RunDir(run).alive() and (run / "metrics.jsonl").is_file() and bool((run / "metrics.jsonl").read_text())


def test_a_sweep_killed_with_sigkill_takes_its_runs_with_it_whole(prepared):
    """kill -9 of a sweep left its runs training on as orphans, and the next sweep set one aside mid-run."""
    import signal

    proc = _start_sweep(*LONG)
    wait_for(lambda: all(_training(r) for r in RUNS), timeout=180, what="both runs to train")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    from mnist_kit.experiments.rundir import RunDir

    wait_for(lambda: not any(RunDir(r).alive() for r in RUNS), timeout=60, what="the runs to stop with their sweep")
    for run in RUNS:  # stopped between steps, as by Ctrl-C: recorded, whole, resumable
        assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
        assert (run / "config.yaml").is_file()
    assert not Path("checkpoints/s/superseded").exists()


def test_a_run_being_trained_is_left_alone_and_two_sweeps_never_share_a_folder(prepared):
    import signal
    import subprocess
    import sys

    # someone trains lr=0.01 of the grid by hand, in the sweep's folder, right now
    by_hand = subprocess.Popen([sys.executable, "-m", "mnist_kit", "train", "-o", "optimizer.lr=0.01", "-o",
                                "model.name=linear", *FAST, "-o", "train.epochs=500", "-o", "log.images=false",
                                "-o", "output.root=checkpoints/s", "--name", "lr=0.01"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _training(RUNS[0]), timeout=180, what="the run trained by hand")
        sweep = _start_sweep(*LONG)
        wait_for(lambda: _training(RUNS[1]), timeout=180, what="the sweep's other run")
        second = run_subprocess("sweep", *LONG)  # the same command again, while the first runs
        assert second.returncode == 1 and "another sweep is running in checkpoints/s" in second.stderr, second.stderr
        assert len(second.stderr.splitlines()) == 1 and "Traceback" not in second.stderr
        sweep.send_signal(signal.SIGINT)
        err = sweep.communicate(timeout=120)[1]
        assert sweep.returncode == 130, err
        assert "lr=0.01: another process is training it right now; left alone" in err
        assert by_hand.poll() is None and _training(RUNS[0])  # untouched, still training
        assert not Path("checkpoints/s/superseded").exists()
    finally:
        by_hand.send_signal(signal.SIGTERM)
        by_hand.wait(120)


def test_sigterm_stops_a_sweep_started_in_the_background_and_its_runs(prepared):
    """From a shell's `&` or nohup the runs inherited SIGINT ignored, and only SIGINT was passed on: they trained
    on after 'sweep interrupted'. Now the signal that came is passed on, and the exit code is 143."""
    import signal

    proc = _start_sweep(*LONG, sigint=signal.SIG_IGN)
    wait_for(lambda: all(_training(r) for r in RUNS), timeout=180, what="both runs to train")
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143 and "sweep interrupted" in err and "Traceback" not in err, err
    from mnist_kit.experiments.rundir import RunDir

    for run in RUNS:
        assert not RunDir(run).alive() and json.loads((run / "run.json").read_text())["status"] == "interrupted"
