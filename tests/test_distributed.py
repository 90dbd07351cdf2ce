"""Data-parallel training through the real paddle.distributed.launch, on CPU (gloo)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import FAST, run_cli, run_subprocess
from mnist_kit.experiments import checkpoint

pytestmark = pytest.mark.slow  # launches real multi-process jobs

SMALL = [*FAST, "-o", "train.log_every=5"]  # 500 training images


def _launch(*args, nproc=2, env=None, timeout=240):
    """python -m paddle.distributed.launch --nproc_per_node N mnist-kit ARGS, bounded."""
    script = str(Path(sys.executable).parent / "mnist-kit")
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
           str(nproc), "--log_dir", "launch-logs", script, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})


def _params(run, epoch, ema=False):
    state = checkpoint.load(Path(run) / "ckpt" / checkpoint.epoch_file(epoch))
    if ema:  # train.ema's moving average: the weights the checkpoint is used with
        assert state["ema"] is not None
        return {k: np.asarray(v) for k, v in checkpoint.weights(state).items()}
    return {k: v.numpy() for k, v in state["model"].items()}


def test_nproc_2_trains_one_run_with_one_log_and_the_worker_logs(prepared):
    proc = run_subprocess("train", *SMALL, "--nproc", 2, "--name", "two", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Path("checkpoints/two")
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["workerlog.0", "workerlog.1"]  # no envlog
    assert len(list((run / "vdl").glob("vdlrecords*"))) == 1
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["world_size"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10]  # 500 images / (2 x 50) per step
    assert list(Path("checkpoints").iterdir()) == [run]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adam+augment", "adam+ema"])
def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(prepared, optimizer):
    lr = {"sgd": 0.01, "adam": 0.001}[optimizer.split("+")[0]]  # Adam at its default rate: at 0.01 the 10-step
    # trajectory is chaotic enough that float reordering alone (any formulation) reaches ~1e-6
    common = [*SMALL, "-o", f"optimizer.name={optimizer.split('+')[0]}", "-o", f"optimizer.lr={lr}"]
    one_threads = []
    if optimizer.endswith("+augment"):  # each image transformed the same whichever process holds it
        common += [*sum((["-o", f"augment.{k}"] for k in ("rotate=10", "scale=0.1", "translate=0.1", "shear=5",
                                                           "stroke=0.5", "elastic=20", "erase=0.3")), [])]
        # augmented data keep the loss up, and the conv blocks' thread count alone (1 process on 2 threads vs
        # 2 on 1 each) then moves the parameters by 1e-6 in 10 steps: compare at one thread each
        one_threads = ["-o", "train.threads=1"]
    if optimizer.endswith("+ema"):
        common += ["-o", "train.ema=0.9"]
    proc = _launch("train", *common, "-o", "train.batch_size=25", "--name", "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = run_cli("train", *common, "-o", "train.batch_size=50", *one_threads, "--name", "one")
    assert result.exit_code == 0, result.output
    engines = [json.loads(Path(f"checkpoints/{r}/run.json").read_text())["fast_conv"] for r in ("one", "two")]
    if engines[0]["path"] == "onednn" and not one_threads:  # one process on the machine's cores, two on one each
        assert engines[1]["path"] == "onednn" and engines[1]["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    for epoch in (0, 1):  # after 10 and 20 steps
        for ema in (False, True) if optimizer.endswith("+ema") else (False,):
            a, b = _params("checkpoints/one", epoch, ema), _params("checkpoints/two", epoch, ema)
            assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6
    one = [json.loads(line) for line in Path("checkpoints/one/metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in Path("checkpoints/two/metrics.jsonl").read_text().splitlines()]
    for r1, r2 in zip(one, two):  # global metrics: every image counted once
        assert r1["val_acc"] == r2["val_acc"] and r1["train_acc"] == r2["train_acc"]
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-5)


def test_a_crashing_rank_ends_the_job_promptly_with_its_error(prepared):
    start = time.time()
    proc = run_subprocess("train", *SMALL, "--nproc", 2, "--name", "crash",
                          env={"MNIST_KIT_FAULT": "crash@step:3#1"}, timeout=120)
    assert proc.returncode == 1
    assert time.time() - start < 60
    assert "rank 1: RuntimeError: injected crash at step 3" in proc.stderr
    assert "Traceback" not in proc.stderr.split("Error: the 2-process")[-1]
    left = subprocess.run(["pgrep", "-f", "name crash"], capture_output=True, text=True).stdout.split()
    assert left == []


def test_resume_under_the_launcher_is_exact_and_on_one_process_is_allowed(prepared):
    proc = _launch("train", *SMALL, "-o", "train.epochs=3", "--name", "full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _launch("train", *SMALL, "-o", "train.epochs=3", "--name", "part",
                   env={"MNIST_KIT_FAULT": "interrupt@epoch:0"})
    assert proc.returncode != 0
    proc = _launch("resume", "--run", "checkpoints/part")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _params("checkpoints/full", 2), _params("checkpoints/part", 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # the same interrupted run resumed by one process: allowed from an epoch end with a constant schedule
    proc = _launch("train", *SMALL, "-o", "train.epochs=3", "--name", "solo",
                   env={"MNIST_KIT_FAULT": "interrupt@epoch:0"})
    result = run_cli("resume", "--run", "checkpoints/solo")
    assert result.exit_code == 0, result.output
    assert "resuming a 2-process run with 1 process(es)" in result.output


def test_two_nodes_train_one_run_equal_to_one_process_with_batch_2b(prepared):
    """Two launchers on this machine as two nodes of one job (--nnodes 2 --master --rank, one process each,
    gloo): one run directory, and the parameters of one process with the whole batch."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = [*SMALL, "-o", "optimizer.name=adam", "-o", "train.threads=1"]
    script = str(Path(sys.executable).parent / "mnist-kit")
    nodes = [subprocess.Popen(["timeout", "-k", "10", "240", sys.executable, "-m", "paddle.distributed.launch",
                               "--nnodes", "2", "--master", f"127.0.0.1:{port}", "--rank", str(rank),
                               "--nproc_per_node", "1", "--log_dir", f"node{rank}-logs", script, "train", *common,
                               "-o", "train.batch_size=25", "--name", "nodes"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert [p.name for p in Path("checkpoints").iterdir()] == ["nodes"]  # one run, written by rank 0 alone
    info = json.loads(Path("checkpoints/nodes/run.json").read_text())
    assert info["status"] == "completed" and info["world_size"] == 2
    result = run_cli("train", *common, "-o", "train.batch_size=50", "--name", "one")
    assert result.exit_code == 0, result.output
    for epoch in (0, 1):
        a, b = _params("checkpoints/one", epoch), _params("checkpoints/nodes", epoch)
        assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6


def test_devices_go_to_the_launcher_and_need_a_gpu_build(prepared):
    from mnist_kit.training.launch import launch_command

    cmd = launch_command(2, ["-o", "train.epochs=1"], "r", Path("logs"), "0,1")
    assert cmd[cmd.index("--nproc_per_node"):cmd.index("--log_dir")] == ["--nproc_per_node", "2", "--devices", "0,1"]
    assert "--devices" not in launch_command(2, [], "r", Path("logs"))
    for args, message in [(["--nproc", "2", "--devices", "0,1"], "this Paddle is the CPU build"),
                          (["--nproc", "3", "--devices", "0,1"], "one process per GPU; use --nproc 2"),
                          (["--nproc", "2", "--devices", "0,x"], "GPU indices separated by commas"),
                          (["--nproc", "2", "--devices", "0,1", "--device", "cpu"], "train.device is cpu")]:
        r = run_cli("train", *FAST, *args)
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, (args, r.output)
    assert not Path("checkpoints").exists()
