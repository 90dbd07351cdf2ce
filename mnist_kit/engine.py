"""The training engine: build everything a config describes, train, validate, checkpoint, resume, evaluate.

Order of writes at the end of an epoch (what makes a crash at any moment lose nothing):
metrics row -> VisualDL flush -> best checkpoint (if improved) -> epoch checkpoint + manifest -> retention.
A resume from the checkpoint at global step S sets aside every metrics row, log record and checkpoint
after S, and redoes that work exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_kit import UserError, checkpoint, config, data, distributed, faults, graph, metrics, runs, wrapped_interrupt
from mnist_kit.console import Progress, info
from mnist_kit.files import write_text
from mnist_kit.logbook import Logbook
from mnist_kit.models import build_model, summary
from mnist_kit.optim import build_loss, build_optimizer, build_schedule
from mnist_kit.runtime import paddle, rng_state, seed_everything, select_device, set_rng_state, versions

TIMING_KEYS = ("images_per_sec", "epoch_seconds", "elapsed_seconds")  # the only metrics that vary between
# identical runs


@dataclass
class Splits:
    prepared: data.Prepared
    norm: data.Normalization
    train: data.Batches
    val: data.Batches


def load_splits(cfg: dict, norm: data.Normalization | None = None) -> Splits:
    """The prepared data of ``cfg`` split into train/validation batches (normalisation from the train split;
    with ``data.balance: oversample`` the training batches repeat the smaller classes' images)."""
    dcfg, tcfg = cfg["data"], cfg["train"]
    prepared = data.load_dataset(dcfg)
    x_tr, y_tr, x_val, y_val = data.split_train_val(prepared.x_train, prepared.y_train, dcfg)
    norm = norm or data.Normalization.from_config(dcfg, x_tr)
    if dcfg.get("balance") == "oversample":
        keep = data.oversample(y_tr, dcfg["split_seed"])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    prepared = dataclasses.replace(prepared, x_train=None, y_train=None)  # the splits hold them: not kept twice
    return Splits(prepared, norm,
                  data.Batches(x_tr, y_tr, tcfg["batch_size"], norm, shuffle=True, seed=tcfg["seed"],
                               rank=distributed.rank(), world=distributed.world_size()),
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


def predict_inference(model, batches: data.Batches, input_shape, loss_fn=None, device: str = "cpu"):
    """``predict`` through Paddle Inference (oneDNN on the CPU): the model is traced to a temporary program
    first (about a second), then runs several times faster than eagerly; same logits within float tolerance."""
    from mnist_kit.deploy import inference
    from mnist_kit.models import save_program

    with tempfile.TemporaryDirectory(prefix="mnist-kit-eval.") as tmp:
        save_program(model, Path(tmp) / "model", input_shape)
        program = inference.Program(*inference.model_files(Path(tmp)), device=device)
        outputs, loss_sum = [], 0.0
        for xb, yb in batches.epoch():
            logits = program.logits(xb)
            if loss_fn is not None:
                with paddle.no_grad():
                    loss_sum += float(loss_fn(paddle.to_tensor(logits), paddle.to_tensor(yb))) * len(yb)
            outputs.append(logits)
    logits = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    return logits, loss_sum / max(batches.num_samples, 1)


def validate(model, batches: data.Batches, loss_fn) -> dict:
    """Loss, accuracy and logits on every image of ``batches``; with several processes each evaluates its
    share (every image exactly once) and all get the whole result."""
    n, world = batches.num_samples, distributed.world_size()
    index = np.arange(n)[distributed.rank()::world]
    mine = data.Batches(batches.x[index], batches.y[index], batches.batch_size, batches.norm)
    logits, loss = predict(model, mine, loss_fn)
    loss = float(distributed.sum_([loss * len(index)])[0]) / n
    logits = distributed.gather_rows(logits, index, n)
    return {"loss": loss, "accuracy": float((logits.argmax(axis=1) == batches.y).mean()), "logits": logits}


def features(model, x: np.ndarray, norm: data.Normalization, batch_size: int = 1000) -> np.ndarray:
    """Penultimate-layer features (N, D) of uint8 images."""
    model.eval()
    out = []
    with paddle.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model.features(paddle.to_tensor(norm.apply(x[i:i + batch_size]))).numpy())
    return np.concatenate(out).reshape(len(x), -1)


HPARAM_METRICS = ["val/acc", "val/loss", "train/epoch_acc", "train/epoch_loss"]


def _log_start(t: "Trainer", logbook: Logbook) -> None:
    """What the log shows from the start of a run: config, hyper-parameters, a grid of input samples."""
    lcfg = t.cfg["log"]
    if lcfg["config_text"]:
        logbook.text("config", config.dump(t.cfg))
    if lcfg["hparams"]:
        flat = {f"{s}.{k}": (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, list) else v)
                for s, sec in t.cfg.items() if s not in ("output", "log") for k, v in sec.items()}
        logbook.hparams(flat, HPARAM_METRICS)
    if lcfg["images"]:
        first = t.splits.train.order(0)[:64]
        logbook.sample_grid("input/train_samples", t.splits.train.x[first], t.splits.train.y[first],
                            t.splits.prepared.classes)


def _log_validation(t: "Trainer", logbook: Logbook, val: dict, epoch: int) -> None:
    """Images, curves and embeddings after a validation."""
    if not logbook.enabled:
        return
    lcfg, classes, step = t.cfg["log"], t.splits.prepared.classes, t.step
    y, predicted = t.splits.val.y, val["logits"].argmax(axis=1)
    if lcfg["images"]:
        logbook.misclassified("val/misclassified", t.splits.val.x, y, predicted, step)
        logbook.confusion("val/confusion_matrix", metrics.confusion_matrix(y, predicted, len(classes)), classes, step)
    if lcfg["curves"]:
        logbook.curves(y, metrics.softmax(val["logits"]), classes, step)
    if lcfg["embeddings"] and epoch == t.cfg["train"]["epochs"] - 1:
        n = lcfg["embeddings"]
        logbook.embeddings("val/features", features(t.model, t.splits.val.x[:n], t.splits.norm),
                           [classes[k] for k in y[:n]], step)


def _log_histograms(t: "Trainer", logbook: Logbook, step: int) -> None:
    for name, p in t.model.named_parameters():
        logbook.histogram(f"params/{name}", p.numpy(), step)
        if p.grad is not None:
            logbook.histogram(f"grads/{name}", p.grad.numpy(), step)


def _fresh_progress() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "skipped": 0}


@dataclass
class Trainer:
    """Everything built from a config, and the position in training."""

    cfg: dict
    device: str
    splits: Splits
    model: object
    loss_fn: object
    schedule: object
    optimizer: object
    scaler: object = None
    net: object = None  # what the training step calls: the model, or its DataParallel wrapper
    epoch: int = 0  # the epoch in progress (or the next one to start)
    step: int = 0  # global steps done
    step_in_epoch: int = 0
    best_val_acc: float = -1.0
    progress: dict = field(default_factory=lambda: _fresh_progress())  # running sums of the epoch in progress

    @property
    def steps_per_epoch(self) -> int:
        return len(self.splits.train)

    def state(self, epoch_complete: bool) -> dict:
        return {"model": self.model.state_dict(),
                "optimizer": checkpoint.portable_optimizer_state(self.optimizer.state_dict(), self.model),
                "schedule": self.schedule.state_dict(), "rng": rng_state(),
                "epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
                "epoch_complete": epoch_complete, "epoch_progress": dict(self.progress),
                "data_order": {"seed": self.cfg["train"]["seed"], "epoch": self.epoch,
                               "step_in_epoch": self.step_in_epoch},
                "best_val_acc": self.best_val_acc, "config": self.cfg, "config_hash": config.config_hash(self.cfg),
                "world_size": distributed.world_size(),
                "normalization": self.splits.norm.to_dict(), "classes": list(self.splits.prepared.classes),
                "versions": versions()}

    def restore(self, state: dict) -> None:
        self.model.set_state_dict(state["model"])
        with warnings.catch_warnings():  # Paddle's LinearWarmup warns about its own nested state; it loads fine
            warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
            self.optimizer.set_state_dict(checkpoint.local_optimizer_state(state["optimizer"], self.model))
            self.schedule.set_state_dict(state["schedule"])
        set_rng_state(state["rng"])
        self.step, self.best_val_acc = state["step"], state["best_val_acc"]
        if state["epoch_complete"]:
            self.epoch, self.step_in_epoch = state["epoch"] + 1, 0
        else:
            self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
            self.progress = dict(state["epoch_progress"])


def build_trainer(cfg: dict, norm: data.Normalization | None = None) -> Trainer:
    tcfg = cfg["train"]
    distributed.init()
    device = select_device(tcfg["device"], distributed.local_rank())
    if tcfg["amp"] and not device.startswith("gpu"):
        raise UserError("train.amp (mixed precision) needs a GPU; set train.amp=false or use a GPU device")
    seed_everything(tcfg["seed"])
    splits = load_splits(cfg, norm)
    model = build_model(cfg["model"], splits.prepared.input_shape, len(splits.prepared.classes))
    schedule = build_schedule(cfg["schedule"], cfg["optimizer"]["lr"], len(splits.train), tcfg["epochs"])
    optimizer = build_optimizer(cfg["optimizer"], schedule, model.parameters())
    net = paddle.DataParallel(model) if distributed.world_size() > 1 else model
    return Trainer(cfg, device, splits, model, build_loss(cfg["loss"]), schedule, optimizer,
                   paddle.amp.GradScaler() if tcfg["amp"] else None, net)


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """Only one job trains a run at a time; the lock goes with the process, even on kill -9."""
    if not distributed.is_main():
        yield
        return
    f = open(Path(run_dir) / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise UserError(f"{run_dir} is being trained by another process right now") from None
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


class _RunInfo:
    def __init__(self, run_dir: Path, data_: dict):
        self.path, self.data = Path(run_dir) / runs.RUN_FILE, data_

    def save(self, **updates) -> None:
        self.data.update(updates)
        if distributed.is_main():
            write_text(self.path, json.dumps(self.data, indent=2) + "\n")


def train(cfg: dict, config_name: str = "config") -> Path:
    """Train a new run described by ``cfg``; return its run directory."""
    t = build_trainer(cfg)
    ocfg = cfg["output"]
    main = distributed.is_main()
    run_dir = runs.create_run_dir(Path(ocfg["root"]), ocfg["name"], config_name) if main else None
    run_dir = Path(distributed.from_main(str(run_dir)))  # rank 0 alone writes; the others need the name
    with _run_lock(run_dir):
        if main:
            write_text(run_dir / "config.yaml", config.dump(cfg))
        run_info = _RunInfo(run_dir, {
            "name": run_dir.name, "config_name": config_name, "config_hash": config.config_hash(cfg),
            "status": "running", "started": time.time(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "seed": cfg["train"]["seed"], "device": t.device,
            "versions": versions(), "normalization": t.splits.norm.to_dict(),
            "classes": list(t.splits.prepared.classes),
            "dataset": {"name": cfg["data"]["name"], "source": t.splits.prepared.meta.get("source"),
                        "train": t.splits.train.num_samples, "val": t.splits.val.num_samples,
                        "test": int(t.splits.prepared.y_test.size),
                        "arrays_sha256": t.splits.prepared.meta.get("arrays_sha256")},
            "input_shape": list(t.splits.prepared.input_shape), "world_size": distributed.world_size(),
        })
        run_info.save()
        info(f"run directory: {run_dir}")
        info(f"device {t.device}, seed {cfg['train']['seed']}; {cfg['data']['name']}: {t.splits.train.num_samples} "
             f"train / {t.splits.val.num_samples} validation images; normalisation mean {t.splits.norm.mean} "
             f"std {t.splits.norm.std}")
        info(summary(t.model))
        logbook = Logbook(run_dir / "vdl" if ocfg["visualdl"] and main else None, display_name=run_dir.name)
        _log_start(t, logbook)
        graph_proc = graph.start(run_dir) if logbook.enabled and cfg["log"]["graph"] else None
        try:
            _fit(t, run_dir, run_info, logbook)
        except BaseException:
            if graph_proc is not None:
                graph_proc.kill()
            raise
        problem = graph.finish(graph_proc)
        if problem:
            info(f"warning: the model graph for VisualDL could not be written: {problem}")
    return run_dir


def _resume_changes(saved: dict, cfg: dict, done_epochs: int) -> dict:
    changes = config.differences(saved, cfg)
    unsafe = {k: v for k, v in changes.items() if k not in config.SAFE_ON_RESUME}
    if unsafe:
        listing = "\n".join(f"  - {k}: {a!r} -> {b!r}" for k, (a, b) in unsafe.items())
        raise UserError(f"resuming with these changes would not continue the same training:\n{listing}\n"
                        f"Start a new run with `mnist-kit train` instead. Safe to change on resume: "
                        f"{', '.join(config.SAFE_ON_RESUME)}")
    if "train.epochs" in changes:
        new = cfg["train"]["epochs"]
        if new < done_epochs:
            raise UserError(f"train.epochs={new}, but the run has already finished {done_epochs} epochs")
        if cfg["schedule"]["name"] in ("polynomial", "cosine"):
            raise UserError(f"cannot change train.epochs on resume with the {cfg['schedule']['name']} schedule: "
                            "its decay is spread over the original number of epochs. Start a new run instead")
    return changes


def _pick_checkpoint(run_dir: Path, epoch: int | None) -> tuple[Path, dict]:
    folder = Path(run_dir) / checkpoint.CKPT_DIR
    entries = checkpoint.periodic(run_dir)
    if not entries:
        raise UserError(f"{run_dir} has no complete checkpoint to resume from; train a new run instead")
    if epoch is not None:
        name = checkpoint.epoch_file(epoch)
        if name not in dict(entries):
            epochs = [e["epoch"] for n, e in entries if e["complete_epoch"]]
            raise UserError(f"{run_dir} has no checkpoint of epoch {epoch}; it has epochs "
                            f"{', '.join(map(str, epochs)) or 'none'} (epochs count from 0)")
        return folder / name, checkpoint.load(folder / name)
    damaged = []
    for name, _ in reversed(entries):
        try:
            state = checkpoint.load(folder / name)
        except checkpoint.CheckpointError as e:
            damaged.append(str(e))
            continue
        for d in damaged:
            info(f"warning: skipping a damaged checkpoint: {d}")
        if damaged:
            info(f"falling back to the newest intact checkpoint, {name}")
        return folder / name, state
    raise UserError(f"every checkpoint of {run_dir} is damaged:\n" + "\n".join(f"  - {d}" for d in damaged))


def resume(run_dir: Path, epoch: int | None = None, overrides=()) -> Path:
    """Continue ``run_dir`` from the end of ``epoch`` or from its newest intact checkpoint, in place."""
    run_dir = Path(run_dir)
    meta = runs.read_run(run_dir)
    saved = config.load(run_dir / "config.yaml")
    cfg = config.load(run_dir / "config.yaml", overrides)
    distributed.init()
    main = distributed.is_main()
    with _run_lock(run_dir):
        if main:
            stale = checkpoint.remove_partials(run_dir)
            if stale:
                info(f"removed {len(stale)} half-written checkpoint file(s) left by an interrupted save")
            path, state = _pick_checkpoint(run_dir, epoch)
        path = Path(distributed.from_main(str(path) if main else None))  # every rank resumes from rank 0's choice
        if not main:
            state = checkpoint.load(path)
        done = state["epoch"] + 1 if state["epoch_complete"] else state["epoch"]
        try:
            written_with = config.validate(state["config"], f"config stored in {path.name}")
        except config.ConfigError as e:
            raise UserError(f"{path} holds a config this version cannot use: {e}") from None
        changes = _resume_changes(written_with, cfg, done)
        was = state.get("world_size", 1)
        if was != distributed.world_size():
            if not state["epoch_complete"] or cfg["schedule"]["name"] != "constant" or (
                    cfg["schedule"]["warmup_epochs"] > state["epoch"] + 1):
                raise UserError(f"{path.name} was written by {was} process(es) and this job has "
                                f"{distributed.world_size()}: that is only possible from the end of an epoch with "
                                "a constant schedule (past its warm-up); resume with the same number of processes")
            info(f"warning: resuming a {was}-process run with {distributed.world_size()} process(es): the global "
                 "batch changes, so the rest of the run is not what it would have been")
        t = build_trainer(cfg, data.Normalization(**state["normalization"]))
        t.restore(state)
        if t.epoch >= cfg["train"]["epochs"]:
            raise UserError(f"{run_dir} has already finished its {cfg['train']['epochs']} epochs; to train longer: "
                            f"mnist-kit resume --run {run_dir} -o train.epochs=N")
        superseded = run_dir / "superseded" / time.strftime("%Y%m%d-%H%M%S")
        moved = _set_aside_after(run_dir, state["step"], superseded) if main else []
        where = (f"the end of epoch {state['epoch']}" if state["epoch_complete"]
                 else f"step {state['step_in_epoch']} of epoch {state['epoch']}")
        info(f"resuming {run_dir} from {path.name}: {where} (global step {state['step']})")
        for k, (a, b) in changes.items():
            info(f"  changed on resume: {k}: {a!r} -> {b!r}")
        if moved:
            info(f"  work after that point was set aside in {superseded}: {', '.join(moved)}")
        if cfg != saved and main:
            write_text(run_dir / "config.yaml", config.dump(cfg))
        run_info = _RunInfo(run_dir, meta)
        run_info.save(status="running", config_hash=config.config_hash(cfg), resumes=meta.get("resumes", []) + [{
            "from": path.name, "step": state["step"], "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changes": {k: list(v) for k, v in changes.items()}, "set_aside": moved,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]]}])
        logbook = Logbook(run_dir / "vdl" if cfg["output"]["visualdl"] and main else None,
                          display_name=run_dir.name, resume_step=state["step"], superseded=superseded)
        _fit(t, run_dir, run_info, logbook)
    return run_dir


def _set_aside_after(run_dir: Path, step: int, superseded: Path) -> list[str]:
    """Move metrics rows and checkpoints after global ``step`` to ``superseded``; return what moved."""
    moved = []
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.is_file():
        rows = [line for line in metrics_path.read_text().splitlines() if line.strip()]
        keep = [r for r in rows if json.loads(r)["step"] <= step]
        if len(keep) != len(rows):
            superseded.mkdir(parents=True, exist_ok=True)
            write_text(superseded / "metrics.jsonl", "\n".join(rows) + "\n")
            write_text(metrics_path, "".join(r + "\n" for r in keep))
            moved.append(f"{len(rows) - len(keep)} metrics row(s)")
    later = checkpoint.set_aside_after(run_dir, step, superseded)
    if later:
        moved.append(", ".join(later))
    return moved


@contextlib.contextmanager
def _ctrl_c_between_steps():
    """Ctrl-C takes effect between training steps, not inside one: Paddle runs Python code (the conv bias's
    gradient) inside its C++ autograd, and a KeyboardInterrupt raised there comes out as an unrelated
    error. Yields ``check()``, which raises KeyboardInterrupt once Ctrl-C has been pressed; a second
    Ctrl-C interrupts at once. Where SIGINT is ignored or handled by someone else, nothing changes."""
    import signal
    import threading

    pressed = []

    def on_sigint(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)
        os.write(2, b"\ninterrupted: stopping after this step (Ctrl-C again to stop at once)\n")

    def check():
        if pressed:
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield check
        return
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _amp_context(enabled: bool):
    return paddle.amp.auto_cast(enable=True) if enabled else contextlib.nullcontext()


class _Diverged(Exception):
    def __init__(self, value, step, epoch):
        super().__init__(f"training diverged: the loss is {value} at step {step} (epoch {epoch})")


def _fit(t: Trainer, run_dir: Path, run_info: _RunInfo, logbook: Logbook) -> None:
    """Train from ``t``'s position to ``train.epochs``, checkpointing as configured."""
    with _ctrl_c_between_steps() as check_interrupt:
        _fit_epochs(t, run_dir, run_info, logbook, check_interrupt)


def _fit_epochs(t: Trainer, run_dir: Path, run_info: _RunInfo, logbook: Logbook, check_interrupt) -> None:
    job_start = time.perf_counter()
    tcfg, ccfg = t.cfg["train"], t.cfg["checkpoint"]
    log_every, every_steps = tcfg["log_every"], ccfg["every_steps"]
    main, world = distributed.is_main(), distributed.world_size()
    hist_every = t.cfg["log"]["histogram_every"] if logbook.enabled else 0
    try:
        while t.epoch < tcfg["epochs"]:
            epoch = t.epoch
            t.model.train()
            t0 = time.perf_counter() - t.progress["seconds"]
            progress = Progress(t.steps_per_epoch, f"epoch {epoch}/{tcfg['epochs'] - 1}", unit="step",
                                every=log_every)
            progress.update(t.step_in_epoch)
            for xb, yb in t.splits.train.epoch(epoch, start_step=t.step_in_epoch):
                x, y = paddle.to_tensor(xb), paddle.to_tensor(yb)
                with _amp_context(t.scaler is not None):
                    logits = t.net(x)
                    loss = t.loss_fn(logits, y)
                value, step = float(loss), t.step + 1
                if world > 1:  # the mean over processes: every process takes the same decision on NaN
                    value = float(distributed.sum_([value])[0]) / world
                if math.isfinite(value):
                    if t.scaler is not None:
                        t.scaler.minimize(t.optimizer, t.scaler.scale(loss))
                    else:
                        loss.backward()
                        t.optimizer.step()
                    correct = int((logits.argmax(axis=-1) == y).astype("int64").sum())
                    t.progress["loss_sum"] += value * len(yb)
                    t.progress["correct"] += correct
                    t.progress["seen"] += len(yb)
                    if step % log_every == 0:
                        logbook.scalar("train/loss", value, step)
                        logbook.scalar("train/acc", correct / len(yb), step)
                        logbook.scalar("train/lr", t.optimizer.get_lr(), step)
                        progress.set_postfix(f"loss {value:.4f}")
                    if hist_every and step % hist_every == 0:
                        _log_histograms(t, logbook, step)
                elif tcfg["on_nonfinite"] == "stop":
                    raise _Diverged(value, step, epoch)
                else:
                    t.progress["skipped"] += 1
                    info(f"warning: the loss is {value} at step {step}; that batch's update is skipped")
                t.optimizer.clear_grad()
                t.schedule.step()
                t.step = step
                t.step_in_epoch += 1
                progress.update(1)
                faults.hit("step", t.step)
                check_interrupt()
                if every_steps and t.step % every_steps == 0 and t.step_in_epoch < t.steps_per_epoch and main:
                    t.progress["seconds"] = time.perf_counter() - t0
                    logbook.flush()
                    checkpoint.save(run_dir, checkpoint.step_file(t.step), t.state(epoch_complete=False))
                    checkpoint.apply_retention(run_dir, ccfg["keep_last"])
            progress.close()
            seconds = time.perf_counter() - t0
            loss_sum, correct, seen = distributed.sum_([t.progress["loss_sum"], t.progress["correct"],
                                                        t.progress["seen"]])
            seen = max(seen, 1)
            val = validate(t.model, t.splits.val, t.loss_fn)
            record = {"epoch": epoch, "step": t.step, "train_loss": float(loss_sum) / seen,
                      "train_acc": float(correct) / seen, "val_loss": val["loss"], "val_acc": val["accuracy"],
                      "lr": float(t.optimizer.get_lr()), "skipped_batches": t.progress["skipped"],
                      "images_per_sec": float(seen) / seconds, "epoch_seconds": seconds,
                      "elapsed_seconds": time.perf_counter() - job_start}  # this job's, validation included
            if main:
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            for tag, key in (("train/epoch_loss", "train_loss"), ("train/epoch_acc", "train_acc"),
                             ("val/loss", "val_loss"), ("val/acc", "val_acc"),
                             ("speed/images_per_sec", "images_per_sec")):
                logbook.scalar(tag, record[key], t.step)
            _log_validation(t, logbook, val, epoch)
            logbook.flush()
            is_best = val["accuracy"] > t.best_val_acc
            t.best_val_acc = max(t.best_val_acc, val["accuracy"])
            t.step_in_epoch = t.steps_per_epoch
            if main:
                state = t.state(epoch_complete=True)
                if is_best:
                    checkpoint.save(run_dir, checkpoint.BEST, state)
                checkpoint.save(run_dir, checkpoint.epoch_file(epoch), state)
                checkpoint.apply_retention(run_dir, ccfg["keep_last"])
            info(f"epoch {epoch}: train loss {record['train_loss']:.4f} acc {100 * record['train_acc']:.2f}% | "
                 f"val loss {val['loss']:.4f} acc {100 * val['accuracy']:.2f}% | lr {record['lr']:.3g} | "
                 f"{record['images_per_sec']:.0f} img/s, {seconds:.1f} s | saved {checkpoint.epoch_file(epoch)}"
                 + (" (best)" if is_best else "") + (f" | {t.progress['skipped']} batch(es) skipped"
                                                      if t.progress["skipped"] else ""))
            run_info.save(epochs_done=epoch + 1, best_val_acc=t.best_val_acc)
            faults.hit("epoch", epoch)
            check_interrupt()
            t.epoch, t.step_in_epoch = epoch + 1, 0
            t.progress = _fresh_progress()
    except _Diverged as e:
        run_info.save(status="failed", error=str(e))
        raise UserError(f"{e}; lower optimizer.lr, set optimizer.grad_clip, or set train.on_nonfinite=skip. "
                        f"The checkpoints written before it are kept in {run_dir / checkpoint.CKPT_DIR}") from None
    except OSError as e:  # disk full or unwritable while writing metrics or run.json
        if wrapped_interrupt(e):  # a second Ctrl-C, inside Paddle's autograd
            run_info.save(status="interrupted")
            info(f"to continue: mnist-kit resume --run {run_dir}")
            raise KeyboardInterrupt from None
        with contextlib.suppress(OSError):
            run_info.save(status="failed", error=str(e))
        raise UserError(f"cannot write to {run_dir}: {e.strerror or e}; the checkpoints written before are "
                        f"intact, resume with: mnist-kit resume --run {run_dir}") from None
    except KeyboardInterrupt:
        run_info.save(status="interrupted")
        info(f"to continue: mnist-kit resume --run {run_dir}")
        raise
    except BaseException as e:
        run_info.save(status="failed", error=str(e) or type(e).__name__)
        raise
    finally:
        logbook.close()
    run_info.save(status="completed", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    info(f"done: best validation accuracy {100 * t.best_val_acc:.2f}%; evaluate with: mnist-kit eval --run {run_dir}")


def choose_checkpoint(run_dir: Path, epoch: int | None = None, last: bool = False) -> Path:
    entries = [e for _, e in checkpoint.periodic(run_dir) if e["complete_epoch"]]
    epochs = sorted(e["epoch"] for e in entries)
    folder = Path(run_dir) / checkpoint.CKPT_DIR
    if not epochs:
        raise UserError(f"{run_dir} has no complete checkpoint yet")
    if epoch is not None:
        if epoch not in epochs:
            raise UserError(f"{run_dir} has no checkpoint of epoch {epoch}; it has epochs "
                            f"{', '.join(map(str, epochs))} (epochs count from 0)")
        return folder / checkpoint.epoch_file(epoch)
    if last or checkpoint.BEST not in checkpoint.manifest(run_dir):
        return folder / checkpoint.epoch_file(epochs[-1])
    return folder / checkpoint.BEST


@dataclass
class Trained:
    """A run's checkpoint loaded into its network, with the run's config and data."""

    cfg: dict
    path: Path
    state: dict
    splits: Splits
    model: object
    device: str = "cpu"


def load_trained(run_dir: Path, epoch: int | None = None, last: bool = False, device: str = "auto") -> Trained:
    """The run's checkpoint (best by default) in its model, on ``device``, in eval mode; data with the
    normalisation recorded in the checkpoint."""
    trained_on = runs.read_run(run_dir).get("dataset", {}).get("arrays_sha256")
    cfg = config.load(Path(run_dir) / "config.yaml")
    path = choose_checkpoint(run_dir, epoch, last)
    state = checkpoint.load(path)
    device = select_device(device)
    splits = load_splits(cfg, data.Normalization(**state["normalization"]))
    if trained_on and trained_on != splits.prepared.meta.get("arrays_sha256"):
        info(f"warning: the data were prepared again since {run_dir} was trained; its splits now hold other "
             "images than the ones it was trained and validated on")
    model = build_model(cfg["model"], splits.prepared.input_shape, len(splits.prepared.classes))
    model.set_state_dict(state["model"])
    model.eval()
    return Trained(cfg, path, state, splits, model, device)


def evaluate_run(run_dir: Path, epoch: int | None = None, last: bool = False, split: str = "test",
                 device: str = "auto") -> dict:
    """Evaluate a run's checkpoint (best by default) on the test or validation split."""
    t = load_trained(run_dir, epoch, last, device)
    cfg, path, state, splits, model = t.cfg, t.path, t.state, t.splits, t.model
    classes = splits.prepared.classes
    if split == "test":
        x, y = splits.prepared.x_test, splits.prepared.y_test
        if len(y) == 0:
            raise UserError(f"{run_dir} has no test split (data.test_ratio is 0); evaluate with --split val")
    else:
        x, y = splits.val.x, splits.val.y
    batches = data.Batches(x, y, cfg["train"]["eval_batch_size"], splits.norm)
    t0 = time.perf_counter()
    if t.device == "cpu":  # the GPU runs the eager model fast enough
        logits, loss = predict_inference(model, batches, splits.prepared.input_shape, build_loss(cfg["loss"]))
        how = "Paddle Inference (oneDNN)"
    else:
        logits, loss = predict(model, batches, build_loss(cfg["loss"]))
        how = f"eager ({t.device})"
    seconds = time.perf_counter() - t0
    result = metrics.report(y, logits.argmax(axis=1), len(classes))
    result.update({"run": str(run_dir), "checkpoint": path.name, "epoch": state["epoch"], "split": split,
                   "dataset": cfg["data"]["name"], "samples": int(len(y)), "loss": loss, "classes": list(classes),
                   "engine": how, "seconds": seconds})
    return result
