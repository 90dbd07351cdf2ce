"""The training engine: build everything a config describes, train, validate, checkpoint, evaluate."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_kit import UserError, checkpoint, config, data, metrics, runs
from mnist_kit.console import Progress, info
from mnist_kit.files import write_text
from mnist_kit.logbook import Logbook
from mnist_kit.models import build_model, summary
from mnist_kit.optim import build_loss, build_optimizer, build_schedule
from mnist_kit.runtime import paddle, rng_state, seed_everything, select_device, versions

INPUT_SHAPE = (1, 28, 28)


@dataclass
class Splits:
    prepared: data.Prepared
    norm: data.Normalization
    train: data.Batches
    val: data.Batches


def load_splits(cfg: dict, norm: data.Normalization | None = None) -> Splits:
    """The prepared data of ``cfg`` split into train/validation batches (normalisation from the train split)."""
    dcfg, tcfg = cfg["data"], cfg["train"]
    prepared = data.load(dcfg["name"], data.data_root(dcfg["root"]))
    x_tr, y_tr, x_val, y_val = data.split_train_val(prepared.x_train, prepared.y_train, dcfg["val_size"],
                                                    dcfg["split_seed"])
    norm = norm or data.Normalization.from_config(dcfg, x_tr)
    return Splits(prepared, norm,
                  data.Batches(x_tr, y_tr, tcfg["batch_size"], norm, shuffle=True, seed=tcfg["seed"]),
                  data.Batches(x_val, y_val, tcfg["eval_batch_size"], norm))


def predict(model, batches: data.Batches, loss_fn=None):
    """Logits for every image of ``batches`` in order, and the mean loss (when ``loss_fn`` is given)."""
    model.eval()
    outputs, loss_sum = [], 0.0
    with paddle.no_grad():
        for xb, yb in batches.epoch():
            logits = model(paddle.to_tensor(xb))
            if loss_fn is not None:
                loss_sum += float(loss_fn(logits, paddle.to_tensor(yb))) * len(yb)
            outputs.append(logits.numpy())
    logits = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    return logits, loss_sum / max(batches.num_samples, 1)


def validate(model, batches: data.Batches, loss_fn) -> dict:
    logits, loss = predict(model, batches, loss_fn)
    return {"loss": loss, "accuracy": float((logits.argmax(axis=1) == batches.y).mean())}


def _amp_context(enabled: bool):
    return paddle.amp.auto_cast(enable=True) if enabled else contextlib.nullcontext()


def train(cfg: dict, config_name: str = "config") -> Path:
    """Train a run described by ``cfg``; return its run directory."""
    tcfg, ocfg = cfg["train"], cfg["output"]
    device = select_device(tcfg["device"])
    if tcfg["amp"] and not device.startswith("gpu"):
        raise UserError("train.amp (mixed precision) needs a GPU; set train.amp=false or use a GPU device")
    seed_everything(tcfg["seed"])
    splits = load_splits(cfg)
    classes = splits.prepared.classes
    model = build_model(cfg["model"], INPUT_SHAPE, len(classes))
    loss_fn = build_loss(cfg["loss"])
    steps_per_epoch = len(splits.train)
    schedule = build_schedule(cfg["schedule"], cfg["optimizer"]["lr"], steps_per_epoch, tcfg["epochs"])
    optimizer = build_optimizer(cfg["optimizer"], schedule, model.parameters())
    scaler = paddle.amp.GradScaler() if tcfg["amp"] else None

    run_dir = runs.create_run_dir(Path(ocfg["root"]), ocfg["name"], config_name)
    write_text(run_dir / "config.yaml", config.dump(cfg))
    run_info = {
        "name": run_dir.name, "config_name": config_name, "config_hash": config.config_hash(cfg),
        "status": "running", "started": time.time(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "seed": tcfg["seed"], "device": device,
        "versions": versions(), "normalization": splits.norm.to_dict(), "classes": list(classes),
        "dataset": {"name": cfg["data"]["name"], "source": splits.prepared.meta.get("source"),
                    "train": splits.train.num_samples, "val": splits.val.num_samples,
                    "test": int(splits.prepared.y_test.size)},
        "input_shape": list(INPUT_SHAPE),
    }

    def save_run_info(**updates):
        run_info.update(updates)
        write_text(run_dir / runs.RUN_FILE, json.dumps(run_info, indent=2) + "\n")

    save_run_info()
    info(f"run directory: {run_dir}")
    info(f"device {device}, seed {tcfg['seed']}; {cfg['data']['name']}: {splits.train.num_samples} train / "
         f"{splits.val.num_samples} validation images; normalisation mean {splits.norm.mean} std {splits.norm.std}")
    info(summary(model))
    logbook = Logbook(run_dir / "vdl" if ocfg["visualdl"] else None)
    best_acc, step = -1.0, 0
    log_every = tcfg["log_every"]
    try:
        for epoch in range(tcfg["epochs"]):
            model.train()
            t0 = time.perf_counter()
            loss_sum = paddle.zeros([], dtype="float32")
            correct = paddle.zeros([], dtype="int64")
            progress = Progress(steps_per_epoch, f"epoch {epoch}/{tcfg['epochs'] - 1}", unit="step",
                                every=log_every)
            for xb, yb in splits.train.epoch(epoch):
                x, y = paddle.to_tensor(xb), paddle.to_tensor(yb)
                with _amp_context(scaler is not None):
                    logits = model(x)
                    loss = loss_fn(logits, y)
                if scaler is not None:
                    scaler.minimize(optimizer, scaler.scale(loss))
                else:
                    loss.backward()
                    optimizer.step()
                optimizer.clear_grad()
                schedule.step()
                step += 1
                loss_sum += loss.detach().astype("float32") * len(yb)
                correct += (logits.argmax(axis=-1) == y).astype("int64").sum()
                if step % log_every == 0:
                    value = float(loss)
                    if not math.isfinite(value):
                        raise _Diverged(value, step, epoch)
                    logbook.scalar("train/loss", value, step)
                    logbook.scalar("train/lr", optimizer.get_lr(), step)
                    progress.set_postfix(f"loss {value:.4f}")
                progress.update(1)
            progress.close()
            seconds = time.perf_counter() - t0
            n = splits.train.num_samples
            train_loss, train_acc = float(loss_sum) / n, int(correct) / n
            if not math.isfinite(train_loss):
                raise _Diverged(train_loss, step, epoch)
            val = validate(model, splits.val, loss_fn)
            record = {"epoch": epoch, "step": step, "train_loss": train_loss, "train_acc": train_acc,
                      "val_loss": val["loss"], "val_acc": val["accuracy"], "lr": float(optimizer.get_lr()),
                      "images_per_sec": n / seconds, "epoch_seconds": seconds}
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            is_best = val["accuracy"] > best_acc
            best_acc = max(best_acc, val["accuracy"])
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "rng": rng_state(), "epoch": epoch, "step": step,
                     "best_val_acc": best_acc, "metrics": record, "config": cfg,
                     "normalization": splits.norm.to_dict(), "classes": list(classes), "versions": versions()}
            checkpoint.save(run_dir, checkpoint.epoch_file(epoch), state)
            if is_best:
                checkpoint.save(run_dir, "best.pdckpt", state)
            for tag, key in (("train/epoch_loss", "train_loss"), ("train/epoch_acc", "train_acc"),
                             ("val/loss", "val_loss"), ("val/acc", "val_acc"),
                             ("speed/images_per_sec", "images_per_sec")):
                logbook.scalar(tag, record[key], step)
            logbook.flush()
            info(f"epoch {epoch}: train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
                 f"val loss {val['loss']:.4f} acc {100 * val['accuracy']:.2f}% | lr {record['lr']:.3g} | "
                 f"{record['images_per_sec']:.0f} img/s, {seconds:.1f} s | saved {checkpoint.epoch_file(epoch)}"
                 + (" (best)" if is_best else ""))
            save_run_info(epochs_done=epoch + 1, best_val_acc=best_acc)
    except _Diverged as e:
        save_run_info(status="failed", error=str(e))
        raise UserError(f"{e}; lower optimizer.lr or set optimizer.grad_clip. "
                        f"Checkpoints of the completed epochs are kept in {run_dir / checkpoint.CKPT_DIR}") from None
    except KeyboardInterrupt:
        save_run_info(status="interrupted")
        raise
    except BaseException as e:
        save_run_info(status="failed", error=str(e) or type(e).__name__)
        raise
    finally:
        logbook.close()
    save_run_info(status="completed", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    info(f"done: best validation accuracy {100 * best_acc:.2f}%; evaluate with: mnist-kit eval --run {run_dir}")
    return run_dir


class _Diverged(Exception):
    def __init__(self, value, step, epoch):
        super().__init__(f"training diverged: the loss is {value} at step {step} (epoch {epoch})")


def choose_checkpoint(run_dir: Path, epoch: int | None = None, last: bool = False) -> Path:
    entries = checkpoint.manifest(run_dir)
    epochs = sorted(e["epoch"] for name, e in entries.items() if name.startswith("epoch_"))
    folder = Path(run_dir) / checkpoint.CKPT_DIR
    if not epochs:
        raise UserError(f"{run_dir} has no complete checkpoint yet")
    if epoch is not None:
        if epoch not in epochs:
            raise UserError(f"{run_dir} has no checkpoint of epoch {epoch}; it has epochs "
                            f"{', '.join(map(str, epochs))} (epochs count from 0)")
        return folder / checkpoint.epoch_file(epoch)
    if last:
        return folder / checkpoint.epoch_file(epochs[-1])
    return folder / "best.pdckpt"


def evaluate_run(run_dir: Path, epoch: int | None = None, last: bool = False, split: str = "test",
                 device: str = "auto") -> dict:
    """Evaluate a run's checkpoint (best by default) on the test or validation split."""
    runs.read_run(run_dir)
    cfg = config.load(Path(run_dir) / "config.yaml")
    path = choose_checkpoint(run_dir, epoch, last)
    state = checkpoint.load(path)
    select_device(device)
    splits = load_splits(cfg, data.Normalization(**state["normalization"]))
    classes = splits.prepared.classes
    model = build_model(cfg["model"], INPUT_SHAPE, len(classes))
    model.set_state_dict(state["model"])
    if split == "test":
        x, y = splits.prepared.x_test, splits.prepared.y_test
    else:
        x, y = splits.val.x, splits.val.y
    batches = data.Batches(x, y, cfg["train"]["eval_batch_size"], splits.norm)
    logits, loss = predict(model, batches, build_loss(cfg["loss"]))
    result = metrics.report(y, logits.argmax(axis=1), len(classes))
    result.update({"run": str(run_dir), "checkpoint": path.name, "epoch": state["epoch"], "split": split,
                   "dataset": cfg["data"]["name"], "samples": int(len(y)), "loss": loss, "classes": list(classes)})
    return result
