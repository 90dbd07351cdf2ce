"""Training: build what a config describes, then ``fit`` -> ``run_epoch`` -> ``train_step``, with
``end_epoch`` validating and checkpointing; ``train`` starts a run, ``resume`` continues one.

Order of writes at the end of an epoch (what makes a crash at any moment lose nothing):
metrics row -> VisualDL flush -> best checkpoint (if improved) -> epoch checkpoint + manifest -> retention.
A resume from the checkpoint at global step S sets aside every metrics row, log record and checkpoint
after S, and redoes that work exactly.

Where things go: the transform of the training batches (``augment.py``) is applied in ``Trainer.batches``;
other conv layers (the oneDNN blocks) where ``build_trainer`` builds the model; what is logged when in
``trainlog.py``; the run directory's files in ``rundir.py``; choosing a checkpoint in ``checkpoint.py``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mnist_kit import (UserError, augment, checkpoint, config, data, distributed, evaluate, faults, graph, interrupts,
                       onednn, provenance)
from mnist_kit.ema import WeightAverage
from mnist_kit.augment import Augment
from mnist_kit.console import Progress, info
from mnist_kit.logbook import Logbook
from mnist_kit.models import build_model, load_weights, summary
from mnist_kit.optim import build_loss, build_optimizer, build_schedule
from mnist_kit.rundir import RunDir, RunRecord
from mnist_kit.runtime import paddle, rng_state, seed_everything, select_device, set_rng_state, versions
from mnist_kit.trainlog import TrainLog, due

TIMING_KEYS = ("images_per_sec", "epoch_seconds", "elapsed_seconds")  # the only metrics that vary between
# identical runs
AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}  # train.amp -> paddle.amp.auto_cast's dtype


def _fresh_progress() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "skipped": 0}


@dataclass
class Trainer:
    """Everything built from a config, and the position in training."""

    cfg: dict
    device: str
    splits: data.Splits
    model: object
    loss_fn: object
    schedule: object
    optimizer: object
    amp: str = "off"  # train.amp: off, fp16 or bf16
    scaler: object = None  # fp16's loss scale (paddle.amp.GradScaler), or None
    net: object = None  # what the training step calls: the model, or its DataParallel wrapper
    fast: onednn.Choice = None  # which layers run the conv blocks
    augment: Augment = None  # what transforms the training batches (the augment section)
    ema: WeightAverage | None = None  # the moving average of the weights (train.ema), or None
    epoch: int = 0  # the epoch in progress (or the next one to start)
    step: int = 0  # global steps done
    step_in_epoch: int = 0
    best_val_acc: float = -1.0
    progress: dict = field(default_factory=_fresh_progress)  # running sums of the epoch in progress
    watch: dict = field(default_factory=lambda: {"best": None, "best_epoch": None, "stale": 0})  # train.monitor

    @property
    def stopped_early(self) -> str | None:
        """Why training ends before ``train.epochs`` (patience run out), or None."""
        patience, monitor = self.cfg["train"]["patience"], self.cfg["train"]["monitor"]
        if not patience or self.watch["stale"] < patience:
            return None
        best = self.watch["best"]
        return (f"{monitor} has not improved for {self.watch['stale']} epoch(s) (train.patience {patience}); "
                + (f"best {best:.4g} at epoch {self.watch['best_epoch']}" if best is not None
                   else "it was never a finite number"))

    def monitor(self, row: dict) -> bool:
        """Note epoch ``row``'s value of ``train.monitor``; whether it is the best so far."""
        name = self.cfg["train"]["monitor"]
        value, best = row[name.replace("/", "_")], self.watch["best"]
        if value is None:  # no validation split: the best is the last
            self.watch = {"best": None, "best_epoch": row["epoch"], "stale": 0}
            return True
        better = math.isfinite(value) and (best is None or (value > best if name.endswith("acc") else value < best))
        if better:
            self.watch = {"best": float(value), "best_epoch": row["epoch"], "stale": 0}
        else:
            self.watch["stale"] += 1
        return better

    @property
    def steps_per_epoch(self) -> int:
        return len(self.splits.train)

    def batches(self):
        """The rest of this epoch's training batches (this process's share), as tensors."""
        for xb, yb in self.splits.train.epoch(self.epoch, start_step=self.step_in_epoch, augment=self.augment):
            yield paddle.to_tensor(xb), paddle.to_tensor(yb)

    def count(self, step: StepResult) -> None:
        """Add a step to the epoch's running sums."""
        self.progress["loss_sum"] += step.loss * step.size
        self.progress["correct"] += step.correct
        self.progress["seen"] += step.size

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch, self.progress = self.epoch + 1, 0, _fresh_progress()

    def state(self, epoch_complete: bool) -> dict:
        return {"model": self.model.state_dict(),
                "optimizer": checkpoint.portable_optimizer_state(self.optimizer.state_dict(), self.model),
                "schedule": self.schedule.state_dict(), "rng": rng_state(),
                "epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
                "epoch_complete": epoch_complete, "epoch_progress": dict(self.progress),
                "data_order": {"seed": self.cfg["train"]["seed"], "epoch": self.epoch,
                               "step_in_epoch": self.step_in_epoch},
                "best_val_acc": self.best_val_acc, "watch": dict(self.watch),
                "config": self.cfg, "config_hash": config.config_hash(self.cfg),
                "world_size": distributed.world_size(),
                "normalization": self.splits.norm.to_dict(), "classes": list(self.splits.prepared.classes),
                "fast_conv": self.fast.record(), "versions": versions(),
                "ema": self.ema.state() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def restore(self, state: dict, source: str = "the checkpoint") -> None:
        load_weights(self.model, state["model"], source)
        with warnings.catch_warnings():  # Paddle's LinearWarmup warns about its own nested state; it loads fine
            warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
            self.optimizer.set_state_dict(checkpoint.local_optimizer_state(state["optimizer"], self.model))
            self.schedule.set_state_dict(state["schedule"])
        if self.ema is not None:
            self.ema.restore(state.get("ema"), self.model)
        if self.scaler is not None:  # the loss scale and its counters (Paddle's CPU build keeps none: {})
            self.scaler.load_state_dict(state.get("scaler") or {})
        set_rng_state(state["rng"])
        self.step, self.best_val_acc = state["step"], state["best_val_acc"]
        # checkpoints from before train.monitor: their best was by validation accuracy
        self.watch = dict(state.get("watch") or {"best": self.best_val_acc if self.best_val_acc >= 0 else None,
                                                  "best_epoch": None, "stale": 0})
        if state["epoch_complete"]:
            self.epoch, self.step_in_epoch = state["epoch"] + 1, 0
        else:
            self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
            self.progress = dict(state["epoch_progress"])


def build_trainer(cfg: dict, norm: data.Normalization | None = None) -> Trainer:
    tcfg = cfg["train"]
    distributed.init()
    device = select_device(tcfg["device"], distributed.local_rank())
    if tcfg["amp"] != "off" and not device.startswith("gpu"):
        raise UserError(f"train.amp {tcfg['amp']} (mixed precision) needs a GPU: Paddle's CPU build runs none "
                        "(its auto_cast has no effect on the CPU); set train.amp off or train on a GPU")
    seed_everything(tcfg["seed"])
    splits = data.load_splits(cfg, norm, distributed.rank(), distributed.world_size())
    model = build_model(cfg["model"], splits.prepared.input_shape, len(splits.prepared.classes))
    threads, lowered = onednn.threads_for(tcfg["threads"], distributed.local_size())
    if lowered:
        info(f"warning: {lowered}")
    fast = onednn.enable(model, tcfg["fast_conv"], device, threads, splits.prepared.input_shape)
    if tcfg["steps"]:  # the run's length in updates, as whole epochs of this data set (the written config says)
        tcfg["epochs"] = config.epochs_of_steps(tcfg["steps"], len(splits.train))
    schedule = build_schedule(cfg["schedule"], cfg["optimizer"]["lr"], len(splits.train), tcfg["epochs"])
    optimizer = build_optimizer(cfg["optimizer"], schedule, model.parameters())
    net = paddle.DataParallel(model) if distributed.world_size() > 1 else model
    return Trainer(cfg, device, splits, model, build_loss(cfg["loss"]), schedule, optimizer, tcfg["amp"],
                   paddle.amp.GradScaler() if tcfg["amp"] == "fp16" else None, net, fast,
                   Augment.from_config(cfg["augment"], cfg["data"]["name"]),
                   WeightAverage(model, tcfg["ema"]) if tcfg["ema"] else None)


# ---------------------------------------------------------------- the loop

@dataclass
class StepResult:
    loss: float  # the batch's mean loss (the mean over processes under the launcher)
    correct: int | None  # correct predictions; None when the loss was not finite and the update was skipped
    size: int  # images in this process's batch
    lr: float  # the learning rate the update used


class _Diverged(Exception):
    def __init__(self, value, step, epoch):
        super().__init__(f"training diverged: the loss is {value} at step {step} (epoch {epoch})")


def train_step(t: Trainer, x, y) -> StepResult:
    """One update on batch ``(x, y)``. A non-finite loss stops training (``train.on_nonfinite: stop``) or
    skips the update (``skip``); every process decides on the same mean loss."""
    t.optimizer.clear_grad()  # here, not after the update: the gradients stay readable for the histograms
    with (paddle.amp.auto_cast(dtype=AMP_DTYPES[t.amp]) if t.amp != "off" else contextlib.nullcontext()):
        logits = t.net(x)
        loss = t.loss_fn(logits, y)
    value = float(distributed.sum_([float(loss)])[0]) / distributed.world_size()
    correct = None
    if math.isfinite(value):
        if t.scaler is not None:  # fp16: backward through the scaled loss; minimize unscales the gradients,
            scaled = t.scaler.scale(loss)  # skips the update when one is not finite and adjusts the scale
            scaled.backward()
            t.scaler.minimize(t.optimizer, scaled)
        else:
            loss.backward()
            t.optimizer.step()
        if t.ema is not None:
            t.ema.update(t.model)
        # in numpy: 64x10 logits copied out cost less than four Paddle ops (measured 0.21 -> 0.03 ms a step)
        correct = int((logits.numpy().argmax(axis=-1) == y.numpy()).sum())
    elif t.cfg["train"]["on_nonfinite"] == "stop":
        raise _Diverged(value, t.step + 1, t.epoch)
    lr = t.optimizer.get_lr()
    t.schedule.step()
    t.step, t.step_in_epoch = t.step + 1, t.step_in_epoch + 1
    return StepResult(value, correct, len(y), lr)


def run_epoch(t: Trainer, run: RunDir, log: TrainLog, check_interrupt) -> float:
    """Train the rest of epoch ``t.epoch``; return its training time in seconds (with the part before a
    resume)."""
    log_every = t.cfg["train"]["log_every"]
    t.model.train()
    start = time.perf_counter() - t.progress["seconds"]
    bar = Progress(t.steps_per_epoch, f"epoch {t.epoch + 1}/{t.cfg['train']['epochs']}", unit="step",
                   every=log_every)
    bar.update(t.step_in_epoch)
    for x, y in t.batches():
        step = train_step(t, x, y)
        if step.correct is None:
            t.progress["skipped"] += 1
            info(f"warning: the loss is {step.loss} at step {t.step}; that batch's update is skipped")
        else:
            t.count(step)
            log.after_step(t, step.loss, step.correct, step.size, step.lr)
            if due(t.step, log_every):
                bar.set_postfix(f"loss {step.loss:.4f}")
        bar.update(1)
        faults.hit("step", t.step)
        check_interrupt()
        if _mid_epoch_checkpoint_due(t):
            t.progress["seconds"] = time.perf_counter() - start
            log.flush()
            checkpoint.save(run.ckpt_dir, checkpoint.step_file(t.step), t.state(epoch_complete=False))
            checkpoint.apply_retention(run.ckpt_dir, t.cfg["checkpoint"]["keep_last"])
    bar.close()
    return time.perf_counter() - start


def _mid_epoch_checkpoint_due(t: Trainer) -> bool:
    """``checkpoint.every_steps``, except at an epoch's last step (its epoch checkpoint follows); rank 0 only."""
    return (due(t.step, t.cfg["checkpoint"]["every_steps"]) and t.step_in_epoch < t.steps_per_epoch
            and distributed.is_main())


def _validate(t: Trainer) -> tuple[dict, dict | None]:
    """The validation pass of the weights in use (the moving average with ``train.ema``), and that of the
    trained weights when they differ (else None)."""
    val = evaluate.validation_pass(t.model, t.splits.val, t.loss_fn)
    if t.ema is None or not t.splits.val.num_samples:
        return val, None
    with t.ema.applied(t.model):
        return evaluate.validation_pass(t.model, t.splits.val, t.loss_fn), val


def end_epoch(t: Trainer, run: RunDir, record: RunRecord, log: TrainLog, seconds: float, job_start: float) -> None:
    """Validate, then record the epoch in the order that loses nothing (see the module's docstring)."""
    main = distributed.is_main()
    loss_sum, correct, seen = distributed.sum_([t.progress["loss_sum"], t.progress["correct"], t.progress["seen"]])
    seen = max(seen, 1)
    val, raw = _validate(t)
    row = {"epoch": t.epoch, "step": t.step, "train_loss": float(loss_sum) / seen, "train_acc": float(correct) / seen,
           "val_loss": val["loss"], "val_acc": val["accuracy"], "lr": float(t.optimizer.get_lr()),
           "skipped_batches": t.progress["skipped"], "images_per_sec": float(seen) / seconds,
           "epoch_seconds": seconds,
           "elapsed_seconds": time.perf_counter() - job_start}  # this job's, validation included
    if raw is not None:  # train.ema: the row's val_* are the average's; these, the trained weights'
        row.update(val_loss_raw=raw["loss"], val_acc_raw=raw["accuracy"])
    if main:
        run.append_metrics(row)
    log.after_epoch(t, row, val)
    is_best = t.monitor(row)  # by train.monitor (default: validation accuracy)
    if val["accuracy"] is not None:
        t.best_val_acc = max(t.best_val_acc, val["accuracy"])
    t.step_in_epoch = t.steps_per_epoch
    if main:
        state = t.state(epoch_complete=True)
        if is_best:
            checkpoint.save(run.ckpt_dir, checkpoint.BEST, state)
        checkpoint.save(run.ckpt_dir, checkpoint.epoch_file(t.epoch), state)
        checkpoint.apply_retention(run.ckpt_dir, t.cfg["checkpoint"]["keep_last"])
    skipped = t.progress["skipped"]
    validated = (f"val loss {val['loss']:.4f} acc {100 * val['accuracy']:.2f}%" if val["accuracy"] is not None
                 else "no validation")
    info(f"epoch {t.epoch}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}% | "
         f"{validated} | lr {row['lr']:.3g} | "
         f"{row['images_per_sec']:.0f} img/s, {seconds:.1f} s | saved {checkpoint.epoch_file(t.epoch)}"
         + (" (best)" if is_best else "") + (f" | {skipped} batch(es) skipped" if skipped else ""))
    record.save(epochs_done=t.epoch + 1, best_val_acc=t.best_val_acc)


def fit(t: Trainer, run: RunDir, record: RunRecord, log: TrainLog) -> None:
    """Train from ``t``'s position to ``train.epochs``; ``run.json``'s status says how it ended."""
    job_start = time.perf_counter()
    try:
        with interrupts.between_steps() as check_interrupt:
            while t.epoch < t.cfg["train"]["epochs"]:
                seconds = run_epoch(t, run, log, check_interrupt)
                end_epoch(t, run, record, log, seconds, job_start)
                faults.hit("epoch", t.epoch)
                check_interrupt()
                if t.stopped_early:  # every process decides alike: the epoch's values are all-reduced
                    break
                t.next_epoch()
    except BaseException as e:  # noqa: BLE001 - every ending is recorded; _ended_by says what to raise
        raise _ended_by(e, run, record) from None
    finally:
        log.close()
    early = {"epoch": t.epoch, "reason": t.stopped_early} if t.stopped_early else None
    if early:
        info(f"early stop after epoch {t.epoch} ({t.epoch + 1} of {t.cfg['train']['epochs']} epochs trained): "
             f"{t.stopped_early}")
    record.save(status="completed", finished_at=provenance.now(), early_stop=early)
    monitor, best = t.cfg["train"]["monitor"], t.watch["best"]
    if t.best_val_acc >= 0:
        result = f"best validation accuracy {100 * t.best_val_acc:.2f}%"
    elif monitor.startswith("val/") or best is None:
        result = "no validation split, so the best checkpoint is the last epoch's"
    else:
        result = f"best {monitor} {best:.4g} at epoch {t.watch['best_epoch']}"
    info(f"done: {result}; evaluate with: mnist-kit eval --run {run}")


def _ended_by(e: BaseException, run: RunDir, record: RunRecord) -> BaseException:
    """Record in ``run.json`` how ``e`` ended training; return what to raise (a UserError for what the user
    can act on: divergence, a full or unwritable disk)."""
    if isinstance(e, KeyboardInterrupt) or interrupts.wrapped_interrupt(e):  # wrapped: Ctrl-C in Paddle's autograd
        _record_end(record, status="interrupted")
        info(f"to continue: mnist-kit resume --run {run}" if _has_checkpoint(run) else
             "stopped before its first checkpoint: there is nothing to resume; train it again")
        if isinstance(e, KeyboardInterrupt):
            return e
        return interrupts.Terminated(signal.SIGTERM) if "Terminated" in str(e) else KeyboardInterrupt()
    if isinstance(e, _Diverged):
        _record_end(record, status="failed", error=str(e))
        return UserError(f"{e}; lower optimizer.lr, set optimizer.grad_clip, or set train.on_nonfinite=skip. "
                         f"The checkpoints written before it are kept in {run.ckpt_dir}")
    _record_end(record, status="failed", error=str(e) or type(e).__name__)
    if isinstance(e, OSError):  # disk full or unwritable: metrics, run.json
        return UserError(f"cannot write to {run}: {e.strerror or e}; the checkpoints written before are "
                         f"intact, resume with: mnist-kit resume --run {run}")
    return e


def _has_checkpoint(run: RunDir) -> bool:
    try:
        return bool(checkpoint.periodic(run.ckpt_dir))
    except UserError:
        return False


def _record_end(record: RunRecord, **fields) -> None:
    """Save how the run ended, or say why that was impossible (a full disk): it must not hide why it ended."""
    try:
        record.save(**fields)
    except OSError as e:
        info(f"warning: could not record status '{fields['status']}' in {record.run.info_file}: {e.strerror or e}")


# ---------------------------------------------------------------- starting and resuming a run

def _training_lock(run: RunDir):
    """The run's lock, held by rank 0 (the one process that writes the run)."""
    return run.lock() if distributed.is_main() else contextlib.nullcontext()


def _init_from(t: Trainer) -> dict | None:
    """``train.init_from``: load those weights into the new model (strictly: every parameter, its shape);
    return where they came from, for ``run.json``."""
    path = t.cfg["train"]["init_from"]
    if path is None:
        return None
    weights, source = checkpoint.initial_weights(Path(path))
    load_weights(t.model, weights, f"train.init_from {path}")
    info(f"starting from the weights of {source['path']} ({source['kind']}"
         + (f", epoch {source['epoch']}" if source.get("epoch") is not None else "") + ")")
    return source


def _open_log(t: Trainer, run: RunDir, resume_step: int | None = None, superseded: Path | None = None) -> TrainLog:
    """The run's VisualDL log (on rank 0, when it is on): its writer, and the second writer that draws the
    validation lines beside training's."""
    if not (t.cfg["output"]["visualdl"] and distributed.is_main()):
        return TrainLog(Logbook(None), t.cfg)
    book = Logbook(run.vdl_dir, display_name=run.name, resume_step=resume_step, superseded=superseded)
    val_book = Logbook(run.vdl_val_dir, display_name=f"{run.name} · val", resume_step=resume_step,
                       superseded=superseded / "vdl-val" if superseded is not None else None)
    return TrainLog(book, t.cfg, val_book=val_book, sweep_keys=run.sweep_keys())


def train(cfg: dict, config_name: str = "config") -> Path:
    """Train a new run described by ``cfg``; return its run directory."""
    t = build_trainer(cfg)
    init = _init_from(t)  # before the run folder exists: a bad train.init_from leaves nothing behind
    main = distributed.is_main()
    run = RunDir.create(cfg["output"]["root"], cfg["output"]["name"], config_name) if main else None
    run = RunDir(distributed.from_main(str(run)))  # rank 0 alone writes; the others need the name
    with _training_lock(run):
        if main:
            run.write_config(cfg)
        prepared = t.splits.prepared
        record = RunRecord(run, {
            "name": run.name, "config_name": config_name, "config_hash": config.config_hash(cfg),
            "status": "running", "started": time.time(), "started_at": provenance.now(),
            "command": provenance.command(), "seed": cfg["train"]["seed"], "device": t.device, "versions": versions(),
            "normalization": t.splits.norm.to_dict(), "classes": list(prepared.classes),
            "dataset": {"name": cfg["data"]["name"], "source": prepared.meta.get("source"),
                        "train": t.splits.train.num_samples, "val": t.splits.val.num_samples,
                        "test": int(prepared.y_test.size), "arrays_sha256": prepared.meta.get("arrays_sha256")},
            "input_shape": list(prepared.input_shape), "world_size": distributed.world_size(),
            "fast_conv": t.fast.record(), "init_from": init}, write=main)
        record.save()
        info(f"training on {t.device}: {t.fast.describe()}")
        info(f"run directory: {run}")
        info(f"seed {cfg['train']['seed']}; {cfg['data']['name']}: {t.splits.train.num_samples} "
             f"train / {t.splits.val.num_samples} validation images"
             + ("" if t.splits.val.num_samples else " (none asked for: training on every training image)")
             + f"; normalisation mean {t.splits.norm.mean} "
             f"std {t.splits.norm.std}")
        if cfg["train"]["steps"]:
            info(f"train.steps {cfg['train']['steps']}: {cfg['train']['epochs']} epochs of {len(t.splits.train)} steps")
        if t.augment.active:
            info(f"augmentation of the training batches: {t.augment.describe()}")
        elif reason := augment.skipped(cfg["augment"], cfg["data"]["name"]):
            info(f"no augmentation: {reason}")
        info(summary(t.model, t.splits.prepared.input_shape))
        log = _open_log(t, run)
        log.start(t)
        with _graph(t, run, log):
            fit(t, run, record, log)
    return run.path


@contextlib.contextmanager
def _graph(t: Trainer, run: RunDir, log: TrainLog):
    """The model's graph for VisualDL (``graph.py``'s child process, about 2 s of one core): beside training
    on a GPU, where the CPU is free; after the last epoch on the CPU, where it would take a core from the
    training steps (measured on cnn.yaml: epoch 1 at about 6,000 img/s beside it, 6,950 without). A run
    gets it once: a resume writes it when the run has none yet (a CPU run interrupted before its end)."""
    wanted = log.book.enabled and t.cfg["log"]["graph"] and not run.graph_model.exists()
    proc = graph.start(run) if wanted and t.device != "cpu" else None
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


def _engine(record: dict) -> str:
    """How a run's conv blocks ran, from ``Choice.record()``: 'oneDNN 3.6.2 on 2 threads' or 'Paddle's stock layers'."""
    if record["path"] == "stock":
        return "Paddle's stock conv layers"
    return f"{record['library']} conv blocks on {record['threads']} thread(s)"


def _resume_point(run: RunDir, epoch: int | None) -> tuple[Path, dict]:
    """Rank 0 tidies the checkpoint folder and chooses; every process loads what it chose."""
    if distributed.is_main():
        stale = checkpoint.remove_partials(run.ckpt_dir)
        if stale:
            info(f"removed {len(stale)} half-written checkpoint file(s) left by an interrupted save")
        path, state = checkpoint.for_resume(run.ckpt_dir, epoch)
        return Path(distributed.from_main(str(path))), state
    path = Path(distributed.from_main(None))
    return path, checkpoint.load(path)


def resume(run_dir: Path, epoch: int | None = None, overrides=()) -> Path:
    """Continue ``run_dir`` from the end of ``epoch`` or from its newest intact checkpoint, in place."""
    run = RunDir(run_dir)
    meta, saved, cfg = run.read_info(), run.read_config(), run.read_config(overrides)
    distributed.init()
    main = distributed.is_main()
    with _training_lock(run):
        path, state = _resume_point(run, epoch)
        changes = config.check_resume(config.stored(state["config"], path), cfg, state["epoch"] + int(state["epoch_complete"]))
        checkpoint.check_processes(state, path, cfg, distributed.world_size())
        t = build_trainer(cfg, data.Normalization(**state["normalization"]))
        t.restore(state, str(path))
        if t.epoch >= cfg["train"]["epochs"]:
            raise UserError(f"{run} has already finished its {cfg['train']['epochs']} epochs; to train longer: "
                            f"mnist-kit resume --run {run} -o train.epochs=N")
        if t.stopped_early:
            raise UserError(f"{run} stopped early after epoch {state['epoch']}: {t.stopped_early}. To train on "
                            f"anyway: mnist-kit resume --run {run} -o train.patience=N (more than "
                            f"{t.watch['stale']}, or 0 for no early stopping)")
        superseded, moved = run.set_aside_after(state["step"]) if main else (None, [])  # rank 0 alone writes
        where = (f"the end of epoch {state['epoch']}" if state["epoch_complete"]
                 else f"step {state['step_in_epoch']} of epoch {state['epoch']}")
        info(f"resuming {run} from {path.name}: {where} (global step {state['step']})")
        info(f"training on {t.device}: {t.fast.describe()}")
        before = state.get("fast_conv")
        if before and (before["path"], before["threads"]) != (t.fast.path, t.fast.threads):
            info(f"warning: the checkpoint was trained with {_engine(before)}, and training continues with "
                 f"{_engine(t.fast.record())}: the same training within float rounding, not bit for bit")
        for k, (a, b) in changes.items():
            info(f"  changed on resume: {k}: {a!r} -> {b!r}")
        if moved:
            info(f"  work after that point was set aside in {superseded}: {', '.join(moved)}")
        if cfg != saved and main:
            run.write_config(cfg)
        record = RunRecord(run, meta, write=main)
        record.save(status="running", config_hash=config.config_hash(cfg), resumes=meta.get("resumes", []) + [{
            "from": path.name, "step": state["step"], "at": provenance.now(),
            "changes": {k: list(v) for k, v in changes.items()}, "set_aside": moved, "command": provenance.command(),
            "fast_conv": t.fast.record()}])
        log = _open_log(t, run, resume_step=state["step"], superseded=superseded)
        log.engine(t)
        with _graph(t, run, log):
            fit(t, run, record, log)
    return run.path
