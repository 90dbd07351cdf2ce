"""The training loop: ``fit`` -> ``run_epoch`` -> ``train_step``, with ``end_epoch`` validating and
checkpointing; how training ended goes into ``run.json`` (``_ended_by``).

Order of writes at the end of an epoch (what makes a crash at any moment lose nothing):
metrics row -> VisualDL flush -> best checkpoint (if improved) -> epoch checkpoint + manifest -> retention.
A resume from the checkpoint at global step S sets aside every metrics row, log record and checkpoint
after S, and redoes that work exactly (``train/start.py``).

What is logged when is ``trainlog.py``; the run directory's files ``runs/rundir.py``; the checkpoint folder
``runs/checkpoint.py``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time

from mnist_kit import UserError
from mnist_kit.backend import distributed
from mnist_kit.backend.runtime import paddle
from mnist_kit.evaluate import scoring
from mnist_kit.runs import checkpoint
from mnist_kit.runs.rundir import RunDir, RunRecord
from mnist_kit.train.trainer import AMP_DTYPES, StepResult, Trainer
from mnist_kit.train.trainlog import TrainLog, due
from mnist_kit.util import faults, interrupts, provenance
from mnist_kit.util.console import Progress, info


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
    val = scoring.validation_pass(t.model, t.splits.val, t.loss_fn)
    if t.ema is None or not t.splits.val.num_samples:
        return val, None
    with t.ema.applied(t.model):
        return scoring.validation_pass(t.model, t.splits.val, t.loss_fn), val


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
