"""The training loop: ``fit`` -> ``run_epoch`` -> ``train_step``, with ``end_epoch`` validating and
checkpointing; how training ended goes into ``run.json`` (``_ended_by``).

Order of writes at the end of an epoch (what makes a crash at any moment lose nothing):
metrics row -> VisualDL flush -> best checkpoint (if improved) -> epoch checkpoint + manifest -> retention.
A resume from the checkpoint at global step S sets aside every metrics row, log record and checkpoint
after S, and redoes that work exactly (``training/start.py``).

What is logged when is ``trainlog.py``; the run directory's files ``experiments/rundir.py``; the checkpoint folder
``experiments/checkpoint.py``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time

from mnist_kit.backend import distributed
from mnist_kit.backend.runtime import paddle
from mnist_kit.errors import UserError
from mnist_kit.evaluation import scoring
from mnist_kit.experiments import checkpoint
from mnist_kit.experiments.rundir import RunDir, RunRecord
from mnist_kit.training.trainer import AMP_DTYPES, StepResult, Trainer
from mnist_kit.training.trainlog import TrainLog, due
from mnist_kit.util import faults, interrupts, provenance
from mnist_kit.util.console import Progress, info


class _Diverged(Exception):
    def __init__(self, value, step, epoch):
        super().__init__(f"training diverged: the loss is {value} at step {step} (epoch {epoch})")


def train_step(trainer: Trainer, x, y) -> StepResult:
    """One update on batch ``(x, y)``. A non-finite loss stops training (``train.on_nonfinite: stop``) or
    skips the update (``skip``); every process decides on the same mean loss."""
    trainer.optimizer.clear_grad()  # here, not after the update: the gradients stay readable for the histograms
    with (paddle.amp.auto_cast(dtype=AMP_DTYPES[trainer.amp]) if trainer.amp != "off" else contextlib.nullcontext()):
        logits = trainer.net(x)
        loss = trainer.loss_fn(logits, y)
    value = float(distributed.sum_([float(loss)])[0]) / distributed.world_size()
    correct = None
    if math.isfinite(value):
        if trainer.scaler is not None:  # fp16: backward through the scaled loss; minimize unscales the gradients,
            scaled = trainer.scaler.scale(loss)  # skips the update when one is not finite and adjusts the scale
            scaled.backward()
            trainer.scaler.minimize(trainer.optimizer, scaled)
        else:
            loss.backward()
            trainer.optimizer.step()
        if trainer.ema is not None:
            trainer.ema.update(trainer.model)
        # in numpy: 64x10 logits copied out cost less than four Paddle ops (measured 0.21 -> 0.03 ms a step)
        correct = int((logits.numpy().argmax(axis=-1) == y.numpy()).sum())
    elif trainer.cfg.train.on_nonfinite == "stop":
        raise _Diverged(value, trainer.step + 1, trainer.epoch)
    lr = trainer.optimizer.get_lr()
    trainer.schedule.step()
    trainer.step, trainer.step_in_epoch = trainer.step + 1, trainer.step_in_epoch + 1
    return StepResult(value, correct, len(y), lr)


def run_epoch(trainer: Trainer, run: RunDir, log: TrainLog, check_interrupt) -> float:
    """Train the rest of epoch ``trainer.epoch``; return its training time in seconds (with the part before a
    resume)."""
    log_every = trainer.cfg.train.log_every
    trainer.model.train()
    start = time.perf_counter() - trainer.progress["seconds"]
    bar = Progress(trainer.steps_per_epoch, f"epoch {trainer.epoch + 1}/{trainer.epochs}", unit="step",
                   every=log_every)
    bar.update(trainer.step_in_epoch)
    for x, y in trainer.batches():
        step = train_step(trainer, x, y)
        if step.correct is None:
            trainer.progress["skipped"] += 1
            info(f"warning: the loss is {step.loss} at step {trainer.step}; that batch's update is skipped")
        else:
            trainer.count(step)
            log.after_step(trainer, step.loss, step.correct, step.size, step.lr)
            if due(trainer.step, log_every):
                bar.set_postfix(f"loss {step.loss:.4f}")
        bar.update(1)
        faults.hit("step", trainer.step)
        check_interrupt()
        if _mid_epoch_checkpoint_due(trainer):
            trainer.progress["seconds"] = time.perf_counter() - start
            log.flush()
            checkpoint.save(run.ckpt_dir, checkpoint.step_file(trainer.step), trainer.state(epoch_complete=False))
            checkpoint.apply_retention(run.ckpt_dir, trainer.cfg.checkpoint.keep_last)
    bar.close()
    return time.perf_counter() - start


def _mid_epoch_checkpoint_due(trainer: Trainer) -> bool:
    """``checkpoint.every_steps``, except at an epoch's last step (its epoch checkpoint follows); rank 0 only."""
    return (due(trainer.step, trainer.cfg.checkpoint.every_steps)
            and trainer.step_in_epoch < trainer.steps_per_epoch and distributed.is_main())


def _validate(trainer: Trainer) -> tuple[dict, dict | None]:
    """The validation pass of the weights in use (the moving average with ``train.ema``), and that of the
    trained weights when they differ (else None)."""
    val = scoring.validation_pass(trainer.model, trainer.splits.val, trainer.loss_fn)
    if trainer.ema is None or not trainer.splits.val.num_samples:
        return val, None
    with trainer.ema.applied(trainer.model):
        return scoring.validation_pass(trainer.model, trainer.splits.val, trainer.loss_fn), val


def end_epoch(trainer: Trainer, run: RunDir, record: RunRecord, log: TrainLog, seconds: float,
              job_start: float) -> dict:
    """Validate, then record the epoch in the order that loses nothing (see the module's docstring); return
    its metrics row."""
    main = distributed.is_main()
    progress = trainer.progress
    loss_sum, correct, seen = distributed.sum_([progress["loss_sum"], progress["correct"], progress["seen"]])
    seen = max(seen, 1)
    val, raw = _validate(trainer)
    row = {"epoch": trainer.epoch, "step": trainer.step, "train_loss": float(loss_sum) / seen,
           "train_acc": float(correct) / seen,
           "val_loss": val["loss"], "val_acc": val["accuracy"], "lr": float(trainer.optimizer.get_lr()),
           "skipped_batches": trainer.progress["skipped"], "images_per_sec": float(seen) / seconds,
           "epoch_seconds": seconds,
           "elapsed_seconds": time.perf_counter() - job_start}  # this job's, validation included
    if raw is not None:  # train.ema: the row's val_* are the average's; these, the trained weights'
        row.update(val_loss_raw=raw["loss"], val_acc_raw=raw["accuracy"])
    if main:
        run.append_metrics(row)
    log.after_epoch(trainer, row, val)
    is_best = trainer.monitor(row)  # by train.monitor (default: validation accuracy)
    if val["accuracy"] is not None:
        trainer.best_val_acc = max(trainer.best_val_acc, val["accuracy"])
    trainer.step_in_epoch = trainer.steps_per_epoch
    if main:
        state = trainer.state(epoch_complete=True)
        if is_best:
            checkpoint.save(run.ckpt_dir, checkpoint.BEST, state)
        checkpoint.save(run.ckpt_dir, checkpoint.epoch_file(trainer.epoch), state)
        checkpoint.apply_retention(run.ckpt_dir, trainer.cfg.checkpoint.keep_last)
    skipped = trainer.progress["skipped"]
    validated = (f"val loss {val['loss']:.4f} acc {100 * val['accuracy']:.2f}%" if val["accuracy"] is not None
                 else "no validation")
    info(f"epoch {trainer.epoch}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}% | "
         f"{validated} | lr {row['lr']:.3g} | "
         f"{row['images_per_sec']:.0f} img/s, {seconds:.1f} s | saved {checkpoint.epoch_file(trainer.epoch)}"
         + (" (best)" if is_best else "") + (f" | {skipped} batch(es) skipped" if skipped else ""))
    record.save(epochs_done=trainer.epoch + 1, best_val_acc=trainer.best_val_acc)
    return row


def fit(trainer: Trainer, run: RunDir, record: RunRecord, log: TrainLog, after_epoch=None) -> None:
    """Train from ``trainer``'s position to ``train.epochs``; ``run.json``'s status says how it ended.
    ``after_epoch(row)``, called with each epoch's metrics row once it is saved, may return a reason to stop
    there (recorded as an early stop: tune's pruning)."""
    job_start = time.perf_counter()
    try:
        with interrupts.between_steps() as check_interrupt:
            while trainer.epoch < trainer.epochs:
                seconds = run_epoch(trainer, run, log, check_interrupt)
                row = end_epoch(trainer, run, record, log, seconds, job_start)
                if after_epoch is not None:
                    trainer.stop_reason = after_epoch(row)
                faults.hit("epoch", trainer.epoch)
                check_interrupt()
                if trainer.stopped_early:  # every process decides alike: the epoch's values are all-reduced
                    break
                trainer.next_epoch()
    except BaseException as e:  # noqa: BLE001 - every ending is recorded; _ended_by says what to raise
        raise _ended_by(e, run, record) from None
    finally:
        log.close()
    early = {"epoch": trainer.epoch, "reason": trainer.stopped_early} if trainer.stopped_early else None
    if early:
        info(f"early stop after epoch {trainer.epoch} ({trainer.epoch + 1} of {trainer.epochs} epochs "
             "trained): "
             f"{trainer.stopped_early}")
    record.save(status="completed", finished_at=provenance.now(), early_stop=early)
    monitor, best = trainer.cfg.train.monitor, trainer.watch["best"]
    if trainer.best_val_acc >= 0:
        result = f"best validation accuracy {100 * trainer.best_val_acc:.2f}%"
    elif monitor.startswith("val/") or best is None:
        result = "no validation split, so the best checkpoint is the last epoch's"
    else:
        result = f"best {monitor} {best:.4g} at epoch {trainer.watch['best_epoch']}"
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
