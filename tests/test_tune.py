"""mnist-kit tune: the search space and objective, a study end to end (ordinary runs, the best config, --show),
and what it refuses before the first trial. The faults (signals, kill -9, two tuners, PostgreSQL) are in
test_tune_faults.py."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import FAST, assert_user_error, free_port, run_cli, snapshot
from mnist_kit import ConfigError, UserError
from mnist_kit import config as cfgs
from mnist_kit.search import space
from mnist_kit.search.trial import Objective

LINEAR = ["--config", "linear", *FAST]


# ---------------------------------------------------------------- the space, the objective

def test_specs_become_optuna_distributions():
    p = space.parse("optimizer.lr=1e-4..1e-1:log")
    assert (p.key, p.low, p.high, p.log, p.integer, p.choices) == ("optimizer.lr", 1e-4, 0.1, True, False, ())
    p = space.parse("train.batch_size = 32..256:int:log")
    assert (p.low, p.high, p.log, p.integer) == (32, 256, True, True)
    assert space.parse("train.batch_size=64,128,256").choices == (64, 128, 256)
    assert space.parse("augment.apply=auto,never").choices == ("auto", "never")
    assert space.parse("model.channels=[8,16],[16,32]").choices == ([8, 16], [16, 32])
    assert space.parse("model.dropout=0..0.5").choices == ()
    base = cfgs.load("cnn")
    checked = space.check([space.parse("optimizer.lr=1e-4..1e-1:log"), space.parse("model.channels=[8,16],[16,32]")],
                          base)
    assert len(checked) == 2


@pytest.mark.parametrize("text, phrase", [
    ("optimizer.lrr=1e-3..1e-1", "did you mean"),
    ("optimiser.lr=1e-3..1e-1", "optimizer"),
    ("optimizer.lr", "write KEY=SPEC"),
    ("train.batch_size=16..256", "16..256:int"),
    ("optimizer.lr=0.1..0.01", "low end must be below"),
    ("optimizer.lr=0..0.1:log", "above 0"),
    ("optimizer.lr=0.01", "two or more values"),
    ("train.batch_size=64,64", "listed twice"),
    ("optimizer.lr=a..b", "not a number"),
    ("optimizer.name=adam..sgd", "not a number"),
    ("output.root=a,b", "names each trial's run folder"),
    ("optimizer.lr=1e-3..inf", "finite"),
])
def test_bad_specs_are_one_line(text, phrase):
    with pytest.raises(ConfigError) as e:
        space.parse(text)
    assert phrase in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, phrase", [
    ("optimizer.beta1=0.5..1.5", "not a valid value"),  # above the schema's range for beta1
    ("optimizer.name=adam,rmsprop,nesterov", "nesterov"),
    ("model.dropout=0..1.5", "1.5"),
])
def test_values_are_checked_against_the_schema_before_the_first_trial(text, phrase):
    with pytest.raises(ConfigError) as e:
        space.check([space.parse(text)], cfgs.load("cnn"))
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_objectives():
    rows = [{"epoch": 0, "val_acc": 0.8, "epoch_seconds": 2.0}, {"epoch": 1, "val_acc": 0.93, "epoch_seconds": 3.0},
            {"epoch": 2, "val_acc": 0.91, "epoch_seconds": 3.0}]
    acc = Objective.parse("val_acc")
    assert (acc.direction, acc.value(rows), acc.reported(rows[0])) == ("maximize", 0.93, 0.8)
    fast = Objective.parse("time-to:0.9")
    assert (fast.direction, fast.value(rows), fast.reported(rows[0])) == ("minimize", 5.0, pytest.approx(0.2))
    assert Objective.parse("time-to:90%").target == 0.9
    assert Objective.parse("time-to:0.95").value(rows) == math.inf and fast.reached(rows)
    for bad in ("time-to:", "time-to:1.5", "time-to:x", "loss", "time-to:0"):
        with pytest.raises(ConfigError, match="choose val_acc"):
            Objective.parse(bad)


# ---------------------------------------------------------------- a study end to end

def _study(root: Path) -> list[tuple]:
    with sqlite3.connect(root / "tune.db") as db:
        return db.execute("select number, state from trials order by number").fetchall()


def test_a_study_of_ordinary_runs_its_best_config_and_show(prepared, tmp_path):
    r = run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1:log", "--space", "train.batch_size=25,50",
                "-n", "3", "--sampler-seed", "0")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "checkpoints" / "tune-linear"
    runs = sorted(p.name for p in folder.iterdir() if p.name.startswith("trial-"))
    assert runs == ["trial-0000", "trial-0001", "trial-0002"]
    assert "[3/3] best: trial" in r.output and "its config:" in r.output
    # every trial is an ordinary run: mnist-kit runs lists it, with the searched values
    listed = json.loads(run_cli("runs", "--json").stdout)
    assert sorted(x["run"] for x in listed) == [f"tune-linear/{n}" for n in runs]
    assert all(x["status"] == "completed" and x["hparams"]["train.batch_size"] in (25, 50) for x in listed)
    # the best trial's config: a YAML file train --config takes as it is
    best = sorted(folder.glob("best-trial-*.yaml"))
    assert len(best) == 1
    shown = json.loads(run_cli("tune", "--show", "--json").stdout)
    trial = shown["best"]
    assert best[0].name == f"best-trial-{trial['trial']:04d}.yaml" and trial["state"] == "complete"
    saved = yaml.safe_load(best[0].read_text())
    assert saved["optimizer"]["lr"] == trial["params"]["optimizer.lr"]
    assert saved["output"]["root"] == "checkpoints" and "name" not in saved["output"] or not saved["output"]["name"]
    again = run_cli("train", "--config", best[0], "--print-config")
    assert again.exit_code == 0 and f"lr: {trial['params']['optimizer.lr']}" in again.stdout
    assert trial["value"] == max(x["best_val_acc"] for x in listed)
    # --show as a table; study.json names what the study searches (the board's hyper-parameter keys)
    table = run_cli("tune", "--show").stdout
    assert "trial  state" in table and table.count("complete") == 3 and f"*{trial['trial']}" in table
    assert json.loads((folder / "study.json").read_text())["space"] == {"optimizer.lr": "1e-3..1e-1:log",
                                                                        "train.batch_size": "25,50"}
    # the same command again: the budget is the study's, so nothing more runs
    before = snapshot(folder)
    r = run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1:log", "--space", "train.batch_size=25,50",
                "-n", "3")
    assert r.exit_code == 0 and "3 of 3 trials done" in r.output, r.output
    assert snapshot(folder) == before and len(_study(tmp_path / "checkpoints")) == 3
    # a bigger budget continues the study
    r = run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1:log", "--space", "train.batch_size=25,50",
                "-n", "4")
    assert r.exit_code == 0 and (folder / "trial-0003").is_dir(), r.output
    assert [s for _, s in _study(tmp_path / "checkpoints")] == ["COMPLETE"] * 4


def test_the_config_tune_section_and_the_time_to_objective(prepared, tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("model: {name: linear}\noptimizer: {name: sgd}\ntrain: {epochs: 4}\n"
                   "tune:\n  space:\n    optimizer.lr: 1e-2..3e-1:log\n    train.batch_size: [25, 50]\n"
                   "  trials: 2\n  objective: time-to:0.5\n")
    assert run_cli("train", "--config", own, "--print-config").exit_code == 0  # train ignores the tune section
    r = run_cli("tune", "--config", own, *FAST[:2], *FAST[4:], "--no-prune")
    assert r.exit_code == 0, r.output
    shown = json.loads(run_cli("tune", "--show", "--json").stdout)
    assert shown["objective"] == "time-to:0.5" and len(shown["trials"]) == 2
    for trial in shown["trials"]:
        rows = [json.loads(line) for line in (Path(trial["run"]) / "metrics.jsonl").read_text().splitlines()]
        reached = [r for r in rows if r["val_acc"] >= 0.5]
        if reached:  # it stopped at the first epoch that reached the target, and is worth the seconds to it
            assert rows[-1] is reached[0] or rows[-1] == reached[0]
            assert trial["value"] == pytest.approx(sum(r["epoch_seconds"] for r in rows))
            info = json.loads((Path(trial["run"]) / "run.json").read_text())
            assert len(rows) == 4 or "tune's objective" in info["early_stop"]["reason"]
        else:
            assert trial["value"] in ("inf", None) and len(rows) == 4


def test_a_diverging_trial_fails_and_the_search_goes_on(prepared, tmp_path):
    r = run_cli("tune", "--config", "mlp", *FAST, "-o", "optimizer.name=sgd", "--space", "optimizer.lr=1e20,1e30",
                "-n", "3", "--no-prune")
    assert r.exit_code == 0, r.output
    trials = json.loads(run_cli("tune", "--show", "--json").stdout)["trials"]
    assert [t["state"] for t in trials] == ["failed"] * 3 and all("diverged" in t["note"] for t in trials)
    assert r.output.count("-> diverged") == 3 and "no trial has completed yet" in r.output
    assert all(json.loads((Path(t["run"]) / "run.json").read_text())["status"] == "failed" for t in trials)


# ---------------------------------------------------------------- refused before the first trial, nothing written

def test_a_bad_space_is_one_line_and_writes_nothing(prepared, tmp_path):
    for args, phrase in [(["--space", "optimizer.lrr=1e-3..1e-1"], "did you mean"),
                         (["--space", "train.batch_size=8..64"], "8..64:int"),
                         ([], "nothing to search"),
                         (["--space", "optimizer.lr=1e-3..1e-1", "--objective", "speed"], "choose val_acc"),
                         (["--space", "optimizer.lr=1e-3..1e-1", "-o", "data.val_size=0"], "validation split"),
                         (["--space", "optimizer.lr=1e-3..1e-1", "--study", "../x"], "plain folder name"),
                         (["--space", "optimizer.lr=1e-3..1e-1", "--storage", "mysql://u@127.0.0.1/db"],
                          "driver"),
                         (["--space", "optimizer.lr=1e-3..1e-1", "--storage", "redis://127.0.0.1"], "postgresql://")]:
        assert_user_error(run_cli("tune", *LINEAR, *args), phrase)
    assert not (tmp_path / "checkpoints").exists()


def test_another_space_for_the_same_study_is_refused(prepared, tmp_path):
    assert run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1:log", "-n", "1").exit_code == 0
    before = snapshot(tmp_path / "checkpoints")
    r = run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-4..1e-1:log", "-n", "2")
    assert_user_error(r, "another search space", "--study NAME")
    r = run_cli("tune", *LINEAR, "-o", "model.name=mlp", "--space", "optimizer.lr=1e-3..1e-1:log", "-n", "2")
    assert_user_error(r, "another config")
    assert snapshot(tmp_path / "checkpoints") == before


def test_a_folder_or_database_that_is_not_the_studys_is_left_alone(prepared, tmp_path):
    mine = tmp_path / "checkpoints" / "tune-linear"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    assert_user_error(run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1"), "not a study's folder")
    assert (mine / "notes.txt").read_text() == "mine" and len(list(mine.iterdir())) == 1
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 100)
    r = run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "--storage", junk, "--study", "s")
    assert_user_error(r, "cannot open the study storage", str(junk))
    assert junk.read_bytes() == b"not a database " * 100
    assert_user_error(run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "--storage", tmp_path,
                              "--study", "s"), "not a file")
    other = tmp_path / "app.db"  # another program's SQLite database: Optuna would add its tables to it
    with sqlite3.connect(other) as db:
        db.execute("create table notes (text)")
    before = other.read_bytes()
    assert_user_error(run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "--storage", other,
                              "--study", "s"), "database of something else")
    assert other.read_bytes() == before
    (tmp_path / "checkpoints" / "tune.db").symlink_to(other)  # the default storage, a link planted there
    assert_user_error(run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "--study", "s"),
                      "symbolic link")
    assert other.read_bytes() == before


def test_a_trial_log_that_is_a_link_is_not_written_through(prepared, tmp_path):
    args = ["tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "--no-prune"]
    assert run_cli(*args, "-n", "1").exit_code == 0
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    logs = tmp_path / "checkpoints" / "tune-linear" / "logs"
    (logs / "trial-0001.log").symlink_to(mine)
    assert_user_error(run_cli(*args, "-n", "2"), "trial-0001.log is a symbolic link")
    assert mine.read_text() == "mine"
    (logs / "trial-0001.log").unlink()
    r = run_cli(*args, "-n", "2")
    assert r.exit_code == 0, r.output
    assert [s for _, s in _study(tmp_path / "checkpoints")] == ["COMPLETE", "FAIL", "COMPLETE"]  # 2: 1's retry


def test_an_unreachable_server_is_one_line(prepared):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    r = run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "--storage", url)
    assert_user_error(r, "cannot open the study storage", "127.0.0.1")


def test_show_without_a_study(tmp_path):
    assert_user_error(run_cli("tune", "--show"), "no studies")


def test_without_optuna_one_line_says_what_to_install(prepared):
    code = ("import sys; sys.modules['optuna'] = None; from mnist_kit.cli import main; "
            f"main(['tune', *{LINEAR!r}, '--space', 'optimizer.lr=1e-3..1e-1'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    r.exit_code = r.returncode  # type: ignore[attr-defined]
    assert_user_error(r, 'pip install "mnist-kit[tune]"')


def test_the_python_api(prepared, tmp_path):
    import mnist_kit as mk

    study = mk.tune("linear", {"optimizer.lr": "1e-3..1e-1:log"}, FAST[1::2], trials=2, say=lambda line: None)
    assert isinstance(study, mk.Study) and len(study.trials) == 2
    assert study.best is not None and study.best.status == "completed"
    assert study.best_value == study.best.best_val_acc and study.best_config.is_file()
    assert mk.train(study.best_config).config.optimizer.lr == study.best_params["optimizer.lr"]
    assert mk.study().to_dict()["trials"] == study.trials
    for bad, phrase in [({"trials": 0}, "at least 1"), ({"pruner": "hyperband"}, "median or halving"),
                        ({"prune": "yes"}, "true or false"), ({"jobs": 1.5}, "whole number")]:
        with pytest.raises(UserError, match=phrase):
            mk.tune("linear", ["optimizer.lr=1e-3..1e-1"], FAST[1::2], **bad)
    with pytest.raises(UserError, match="a list"):
        mk.tune("linear", "optimizer.lr=1e-3..1e-1")


@pytest.mark.slow  # a VisualDL server
def test_the_board_compares_the_trials_by_their_searched_values(prepared, tmp_path):
    import os

    from helpers import visualdl_api

    r = run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1:log", "--space", "model.init=default,torch",
                "-n", "3", "--no-prune")
    assert r.exit_code == 0, r.output
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", "board", "--logdir", "checkpoints/tune-linear",
                             "--port", str(port)], env={**os.environ, "HOME": str(tmp_path)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stderr.read()
        assert sorted(n for n in visualdl_api(port, "runs") if "·" not in n) == ["trial-0000", "trial-0001",
                                                                                 "trial-0002"]
        trials = {t["run"].rsplit("/", 1)[1]: t for t in json.loads(run_cli("tune", "--show", "--json").stdout)[
            "trials"]}
        hparams = visualdl_api(port, "hparams/list")
        assert len(hparams) == 3
        # each trial's searched values (model.init at its default too) and its accuracy
        assert sorted(h["hparams"]["optimizer/lr"] for h in hparams) == pytest.approx(
            sorted(t["params"]["optimizer.lr"] for t in trials.values()))
        assert {h["hparams"]["model/init"] for h in hparams} <= {"default", "torch"}
        assert all(0 <= h["metrics"]["val/acc"] <= 1 for h in hparams)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_only_a_tuner_s_own_lock_file_says_that_a_running_trial_was_abandoned(prepared, tmp_path):
    """What a trial's record names comes from the storage, which anyone with its URL can write."""
    import optuna

    from mnist_kit.search import storage

    args = ["tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "--no-prune"]
    assert run_cli(*args, "-n", "1").exit_code == 0
    study = optuna.load_study(study_name="tune-linear", storage=f"sqlite:///{tmp_path / 'checkpoints' / 'tune.db'}")
    planted = study.ask()
    mine = tmp_path / "mine.lock"  # a free file of the user's, named as the record of a trial's tuner
    mine.write_text("mine")
    planted.set_user_attr("host", storage.HOST)
    planted.set_user_attr("tuner_lock", str(mine))
    r = run_cli(*args, "-n", "3")
    assert r.exit_code == 0 and "was left running" not in r.output, r.output
    assert [s for _, s in _study(tmp_path / "checkpoints")] == ["COMPLETE", "RUNNING", "COMPLETE"]
    assert mine.read_text() == "mine"


def test_a_retry_resumes_its_run_only_on_the_machine_that_holds_it(prepared, tmp_path):
    import optuna

    from mnist_kit.search import storage

    args = ["tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "--no-prune"]
    assert run_cli(*args, "-n", "1").exit_code == 0
    study = optuna.load_study(study_name="tune-linear", storage=f"sqlite:///{tmp_path / 'checkpoints' / 'tune.db'}")
    first = study.trials[0]
    for host in ("another-machine", storage.HOST):  # a retry queued by another machine, then by this one
        study.enqueue_trial(first.params, user_attrs={"retry_of": 0, "run": first.user_attrs["run"],
                                                       "run_host": host})
    r = run_cli(*args, "-n", "3")
    assert r.exit_code == 0, r.output
    trials = json.loads(run_cli("tune", "--show", "--json").stdout)["trials"]
    folder = tmp_path / "checkpoints" / "tune-linear"
    # the other machine's run is not this machine's folder of that name: a new run; this machine's is taken up
    assert [t["run"] for t in trials] == [str(folder / "trial-0000"), str(folder / "trial-0001"),
                                          str(folder / "trial-0000")]
    assert [t["state"] for t in trials] == ["complete"] * 3 and trials[2]["value"] == trials[0]["value"]


def test_show_reads_a_tampered_storage_without_a_traceback(prepared, tmp_path):
    import optuna

    assert run_cli("tune", *LINEAR, "--space", "optimizer.lr=1e-3..1e-1", "-n", "1").exit_code == 0
    study = optuna.load_study(study_name="tune-linear", storage=f"sqlite:///{tmp_path / 'checkpoints' / 'tune.db'}")
    planted = study.ask()
    for key, value in {"run": 123, "retry_of": "x" * 10000, "error": "e" * 10000}.items():
        planted.set_user_attr(key, value)
    study.set_user_attr("mnist_kit", {"objective": ["not", "a", "text"]})
    r = run_cli("tune", "--show")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert max(len(line) for line in r.stdout.splitlines()) < 400 and "objective val_acc" in r.stdout
    shown = json.loads(run_cli("tune", "--show", "--json").stdout)
    assert shown["trials"][1]["run"] is None and "retry of" not in shown["trials"][1]["note"]
