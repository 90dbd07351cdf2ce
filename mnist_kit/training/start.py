"""Starting a run: ``train`` makes a new one, ``resume`` continues one from a checkpoint; then each hands
the Trainer to ``engine.fit``. Both hold the run's lock, write ``run.json`` and open the run's VisualDL log.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from mnist_kit import config, data
from mnist_kit.backend import distributed
from mnist_kit.backend.runtime import versions
from mnist_kit.data import augment
from mnist_kit.errors import UserError
from mnist_kit.experiments import checkpoint
from mnist_kit.experiments.checkpoint import CheckpointState
from mnist_kit.experiments.rundir import RunDir, RunRecord
from mnist_kit.logbook import graph
from mnist_kit.logbook.writer import Logbook
from mnist_kit.models.networks import load_weights, summary
from mnist_kit.training.engine import fit
from mnist_kit.training.trainer import Trainer, build_trainer
from mnist_kit.training.trainlog import TrainLog
from mnist_kit.util import provenance
from mnist_kit.util.console import info


def _training_lock(run: RunDir):
    """The run's lock, held by rank 0 (the one process that writes the run)."""
    return run.lock() if distributed.is_main() else contextlib.nullcontext()


def _init_from(trainer: Trainer) -> dict | None:
    """``train.init_from``: load those weights into the new model (strictly: every parameter, its shape);
    return where they came from, for ``run.json``."""
    path = trainer.cfg.train.init_from
    if path is None:
        return None
    weights, source = checkpoint.initial_weights(Path(path))
    load_weights(trainer.model, weights, f"train.init_from {path}")
    info(f"starting from the weights of {source['path']} ({source['kind']}"
         + (f", epoch {source['epoch']}" if source.get("epoch") is not None else "") + ")")
    return source


def _open_log(trainer: Trainer, run: RunDir, resume_step: int | None = None,
              superseded: Path | None = None) -> TrainLog:
    """The run's VisualDL log (on rank 0, when it is on): its writer, and the second writer that draws the
    validation lines beside training's."""
    if not (trainer.cfg.output.visualdl and distributed.is_main()):
        return TrainLog(Logbook(None), trainer.cfg)
    book = Logbook(run.vdl_dir, display_name=run.name, resume_step=resume_step, superseded=superseded)
    val_book = Logbook(run.vdl_val_dir, display_name=f"{run.name} · val", resume_step=resume_step,
                       superseded=superseded / "vdl-val" if superseded is not None else None)
    return TrainLog(book, trainer.cfg, val_book=val_book, sweep_keys=run.sweep_keys())


def train(cfg: config.Config, config_name: str = "config", after_epoch=None) -> Path:
    """Train a new run described by ``cfg``; return its run directory. ``after_epoch``: see ``engine.fit``."""
    trainer = build_trainer(cfg)
    init = _init_from(trainer)  # before the run folder exists: a bad train.init_from leaves nothing behind
    main = distributed.is_main()
    run = RunDir.create(cfg.output.root, cfg.output.name, config_name) if main else None
    run = RunDir(distributed.from_main(str(run)))  # rank 0 alone writes; the others need the name
    with _training_lock(run):
        try:
            record = _start_record(trainer, run, config_name, init, main)
        except BaseException:  # a full disk, say: a run that could not start leaves no folder behind
            if main:
                run.remove_if_unstarted()
            raise
        info(f"training on {trainer.device}: {trainer.conv_layers.describe()}")
        info(f"run directory: {run}")
        info(f"seed {cfg.train.seed}; {cfg.data.name}: {trainer.splits.train.num_samples} "
             f"train / {trainer.splits.val.num_samples} validation images"
             + ("" if trainer.splits.val.num_samples else " (none asked for: training on every training image)")
             + f"; normalisation mean {trainer.splits.norm.mean} "
             f"std {trainer.splits.norm.std}")
        if cfg.train.steps:
            info(f"train.steps {cfg.train.steps}: {trainer.epochs} epochs of "
                 f"{len(trainer.splits.train)} steps")
        if trainer.augment.active:
            info(f"augmentation of the training batches: {trainer.augment.describe()}")
        elif reason := augment.skipped(cfg.augment, cfg.data.name):
            info(f"no augmentation: {reason}")
        info(summary(trainer.model, trainer.splits.prepared.input_shape))
        log = _open_log(trainer, run)
        log.start(trainer)
        with _graph(trainer, run, log):
            fit(trainer, run, record, log, after_epoch)
    return run.path


def _start_record(trainer: Trainer, run: RunDir, config_name: str, init: dict | None, main: bool) -> RunRecord:
    """Write a new run's config.yaml and run.json (rank 0); return its record."""
    cfg = trainer.cfg
    if main:
        run.write_config(cfg)
    prepared = trainer.splits.prepared
    record = RunRecord(run, {
        "name": run.name, "config_name": config_name, "config_hash": config.config_hash(cfg),
        "status": "running", "started": time.time(), "started_at": provenance.now(),
        "command": provenance.command(), "seed": cfg.train.seed, "device": trainer.device,
        "versions": versions(),
        "normalization": trainer.splits.norm.to_dict(), "classes": list(prepared.classes),
        "dataset": {"name": cfg.data.name, "source": prepared.meta.get("source"),
                    "train": trainer.splits.train.num_samples, "val": trainer.splits.val.num_samples,
                    "test": int(prepared.y_test.size), "arrays_sha256": prepared.meta.get("arrays_sha256")},
        "input_shape": list(prepared.input_shape), "world_size": distributed.world_size(), "epochs": trainer.epochs,
        "fast_conv": trainer.conv_layers.record(), "init_from": init}, write=main)
    record.save()
    return record


@contextlib.contextmanager
def _graph(trainer: Trainer, run: RunDir, log: TrainLog):
    """The model's graph for VisualDL (``graph.py``'s child process, about 2 s of one core): beside training
    on a GPU, where the CPU is free; after the last epoch on the CPU, where it would take a core from the
    training steps (measured on cnn.yaml: epoch 1 at about 6,000 img/s beside it, 6,950 without). A run
    gets it once: a resume writes it when the run has none yet (a CPU run interrupted before its end)."""
    wanted = log.book.enabled and trainer.cfg.log.graph and not run.graph_model.exists()
    proc = graph.start(run) if wanted and trainer.device != "cpu" else None
    try:
        yield
    except BaseException:
        graph.stop(proc)
        raise
    try:
        if wanted and proc is None:
            proc = graph.start(run)
        problem = graph.finish(proc)
    except BaseException:  # Ctrl-C (SIGTERM) while the graph is started or written after the last epoch
        graph.stop(proc)
        info("the run is complete; only its graph for VisualDL was not written")
        raise
    if problem:
        info(f"warning: the model graph for VisualDL could not be written: {problem}")


def _conv_layers_text(record: dict) -> str:
    """How a run's conv blocks ran, from ``Choice.record()``: 'oneDNN 3.6.2 on 2 threads' or 'Paddle's stock layers'."""
    if record["path"] == "stock":
        return "Paddle's stock conv layers"
    return f"{record['library']} conv blocks on {record['threads']} thread(s)"


def _resume_point(run: RunDir, epoch: int | None) -> tuple[Path, CheckpointState]:
    """Rank 0 tidies the checkpoint folder and chooses; every process loads what it chose."""
    if distributed.is_main():
        stale = checkpoint.remove_partials(run.ckpt_dir)
        if stale:
            info(f"removed {len(stale)} half-written checkpoint file(s) left by an interrupted save")
        path, state = checkpoint.for_resume(run.ckpt_dir, epoch)
        return Path(distributed.from_main(str(path))), state
    path = Path(distributed.from_main(None))
    return path, checkpoint.load(path)


def resume(run_dir: Path, epoch: int | None = None, overrides=(), after_epoch=None) -> Path:
    """Continue ``run_dir`` from the end of ``epoch`` or from its newest intact checkpoint, in place
    (``after_epoch``: see ``engine.fit``)."""
    run = RunDir(run_dir)
    meta, saved, cfg = run.read_info(), run.read_config(), run.read_config(overrides)
    distributed.init()
    main = distributed.is_main()
    with _training_lock(run):
        path, state = _resume_point(run, epoch)
        done_epochs = state["epoch"] + int(state["epoch_complete"])
        changes = config.check_resume(config.stored(state["config"], path), cfg, done_epochs)
        checkpoint.check_processes(state, path, cfg, distributed.world_size())
        trainer = build_trainer(cfg, data.Normalization(**state["normalization"]))
        trainer.restore(state, str(path))
        if trainer.epoch >= trainer.epochs:
            raise UserError(f"{run} has already finished its {trainer.epochs} epochs; to train longer: "
                            f"mnist-kit resume --run {run} -o train.epochs=N")
        if trainer.stopped_early:
            raise UserError(f"{run} stopped early after epoch {state['epoch']}: {trainer.stopped_early}. To train on "
                            f"anyway: mnist-kit resume --run {run} -o train.patience=N (more than "
                            f"{trainer.watch['stale']}, or 0 for no early stopping)")
        superseded, moved = run.set_aside_after(state["step"]) if main else (None, [])  # rank 0 alone writes
        where = (f"the end of epoch {state['epoch']}" if state["epoch_complete"]
                 else f"step {state['step_in_epoch']} of epoch {state['epoch']}")
        info(f"resuming {run} from {path.name}: {where} (global step {state['step']})")
        info(f"training on {trainer.device}: {trainer.conv_layers.describe()}")
        before = state.get("fast_conv")
        if before and (before["path"], before["threads"]) != (trainer.conv_layers.path, trainer.conv_layers.threads):
            info(f"warning: the checkpoint was trained with {_conv_layers_text(before)}, and training continues "
                 f"with {_conv_layers_text(trainer.conv_layers.record())}: the same training within float rounding, "
                 "not bit for bit")
        for k, (a, b) in changes.items():
            info(f"  changed on resume: {k}: {a!r} -> {b!r}")
        if moved:
            info(f"  work after that point was set aside in {superseded}: {', '.join(moved)}")
        if cfg != saved and main:
            run.write_config(cfg)
        record = RunRecord(run, meta, write=main)
        record.save(status="running", config_hash=config.config_hash(cfg), epochs=trainer.epochs,
                    resumes=meta.get("resumes", []) + [{
            "from": path.name, "step": state["step"], "at": provenance.now(),
            "changes": {k: list(v) for k, v in changes.items()}, "set_aside": moved, "command": provenance.command(),
            "fast_conv": trainer.conv_layers.record()}])
        log = _open_log(trainer, run, resume_step=state["step"], superseded=superseded)
        log.training_setup(trainer)
        with _graph(trainer, run, log):
            fit(trainer, run, record, log, after_epoch)
    return run.path
