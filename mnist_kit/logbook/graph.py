"""The model's graph for VisualDL, written by a child process.

VisualDL 2.5.3 reads only the older ``.pdmodel`` program format, which Paddle 3 writes only when
``FLAGS_enable_pir_api=0`` is set before paddle is imported; so a child process with that flag builds
the model from the run's config and writes, in ``RunDir.graph_dir`` (a folder named after the run),
``model.pdmodel`` (the board's static graph page) and ``vdlgraph.*.log`` (its dynamic graph page, which
lists one model per folder, labelled by the folder's name; it takes the vdlgraph file, which keeps the
layers' nesting). Paddle 2.6 writes ``.pdmodel`` anyway. The engine decides when it runs
(``train.start._graph``: after the last epoch on the CPU).

    python -m mnist_kit.logbook.graph RUN_DIR
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from mnist_kit.experiments.rundir import RunDir
from mnist_kit.util.files import partial_dir, replace_dir
from mnist_kit.util.interrupts import between_steps, die_with_parent


def _child_setup() -> None:
    os.nice(19)  # it must not slow training down
    die_with_parent()()  # kill -9 of training included


def start(run: RunDir) -> subprocess.Popen:
    """Start the child process that writes the graph files; it dies with this process. A Ctrl-C or SIGTERM
    that arrives while it starts is held until the child exists, then stops it: no child is left behind."""
    env = {**os.environ, "FLAGS_enable_pir_api": "0", "GLOG_minloglevel": "2"}
    proc = None
    try:
        with between_steps() as check:
            proc = subprocess.Popen([sys.executable, "-m", "mnist_kit.logbook.graph", str(run)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=_child_setup)
            check()
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    """Kill the child and reap it (no zombie left)."""
    if proc is not None:
        proc.kill()
        proc.communicate()


def finish(proc: subprocess.Popen | None, timeout: float = 300) -> str | None:
    """Wait for the child; return an error message if it failed."""
    if proc is None:
        return None
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return "the graph export took too long and was stopped"
    if proc.returncode != 0:
        lines = [line for line in (err or "").strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {proc.returncode}"
    return None


def _write(run: RunDir) -> None:
    import warnings

    warnings.simplefilter("ignore")
    from mnist_kit.backend.runtime import paddle
    from mnist_kit.models.networks import build_model, save_program

    cfg, info = run.read_config(), run.read_info()
    shape = tuple(info.get("input_shape", (1, 28, 28)))
    model = build_model(cfg.model, shape, len(info["classes"]))
    from visualdl.component.graph import translate_graph

    tmp = partial_dir(run.graph_dir)  # built aside, put in place whole: a kill leaves no half-written program
    save_program(model, tmp / run.graph_prefix.name, shape)
    graph = translate_graph(model, [paddle.static.InputSpec([-1, *shape], "float32")], False)
    (tmp / f"vdlgraph.{int(time.time()):010d}.log").write_text(graph)
    old = replace_dir(tmp, run.graph_dir)
    if old is not None:  # an earlier graph of this run, swapped out
        shutil.rmtree(old)


if __name__ == "__main__":
    _write(RunDir(sys.argv[1]))
