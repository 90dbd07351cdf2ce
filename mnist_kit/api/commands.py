"""One function per command, with the command's name and options (``--from-dir`` -> ``from_dir=``, a
``--no-verify`` flag -> ``verify=False``); the CLI parses options, calls these and prints. Errors are
``UserError``/``ConfigError`` with the one-line message the CLI prints. Each function imports what it needs
when called: ``import mnist_kit`` loads no paddle, and ``predict`` on an ONNX export never does.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mnist_kit import config as _config
from mnist_kit.api.results import Evaluation, Export, Prediction, PreparedData, Run, Sweep, not_a
from mnist_kit.errors import UsageError, UserError

ConfigLike = _config.Config | str | Path | None  # a Config, a shipped config's name, a YAML file, or the defaults
RunLike = Run | str | Path | None  # a Run, a run folder, or None: the newest run under ``root``


def load_config(name_or_path: ConfigLike = None, overrides: Sequence[str] = ()) -> _config.Config:
    """A config, validated: a shipped config by name (``"cnn"``), a YAML file, a ``Config`` (to change it), or
    None for the built-in defaults; ``overrides`` as ``-o`` takes them: ``["train.epochs=3"]``."""
    if isinstance(overrides, str):
        raise not_a("overrides", overrides, 'a list of "section.key=value" texts, e.g. ["train.epochs=3"]')
    if isinstance(name_or_path, _config.Config):
        changes = {".".join(k): v for k, v in (_config.parse_override(t) for t in overrides)}
        return _config.updated(name_or_path, changes) if changes else name_or_path
    if name_or_path is not None and not isinstance(name_or_path, (str, Path)):
        raise not_a("config", name_or_path, "a Config, a shipped config's name or a YAML file")
    path = None if name_or_path is None else _config.locate(name_or_path)[0]
    return _config.load(path, list(overrides))


def _config_name(given: ConfigLike, cfg: _config.Config) -> str:
    """What a run is named after: the config file's name, else the model's."""
    if isinstance(given, (str, Path)):
        return _config.locate(given)[0].stem
    return cfg.model.name


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else Path(_config.SCHEMA["output"]["root"].default)


def _run_dir(run: RunLike, root: str | Path | None):
    from mnist_kit.experiments import listing

    if isinstance(run, Run):
        run = run.path
    elif run is not None and not isinstance(run, (str, Path)):
        raise not_a("run", run, "a Run, a run folder or None (the newest run)")
    return listing.resolve(run, _root(root))


def prepare(dataset: str | None = None, config: ConfigLike = None, overrides: Sequence[str] = (),
            root: str | Path | None = None, source: str = "auto", from_dir: str | Path | None = None,
            mirrors: Iterable[str] = (), retries: int = 3, timeout: float = 30.0, verify: bool = True,
            force: bool = False) -> PreparedData:
    """Get, verify and cache a data set (MNIST or Fashion-MNIST: ``dataset``, else the config's data.name), or
    decode the config's image folder into a cache; log samples and class counts for VisualDL."""
    import dataclasses

    from mnist_kit import data, datasets
    from mnist_kit.logbook import writer

    if source not in ("auto", "download", "debian", "dir"):
        raise UsageError(f"source is {source!r}; choose auto, download, debian or dir")
    if not 1 <= retries <= 20 or not timeout >= 0.1:  # (nan is not)
        raise UsageError(f"retries must be 1 to 20 and timeout at least 0.1 s, got {retries} and {timeout}")
    cfg = load_config(config, overrides)
    name = dataset or cfg.data.name
    if name not in datasets.CATALOG:
        raise UsageError(f"unknown data set {name!r}; data sets: {', '.join(datasets.CATALOG)}")
    where_root = Path(root) if root is not None else data.data_root(cfg.data.root)
    if datasets.get(name).kind == "folder":
        if source != "auto" or from_dir or tuple(mirrors) or not verify:
            raise UserError(f"--source, --from-dir, --mirror and --no-verify are for {datasets.idx_titles()}; an "
                            "image folder is read from data.folder")
        dcfg = dataclasses.replace(cfg.data, root=str(where_root))
        meta = data.prepare_folder(dcfg, where_root, force=force)
        prepared = data.load_folder(dcfg, where_root, warn_if_changed=False)
        counts = data.split_counts(dcfg, prepared)
        summary, where = data.describe_folder(meta, counts), data.prepared_dir(dcfg)
    else:
        meta = data.prepare(name, where_root, source=source, from_dir=Path(from_dir) if from_dir else None,
                            mirrors=list(mirrors) or None, retries=retries, timeout=timeout, verify=verify,
                            force=force)
        prepared, counts, summary, where = data.load(name, where_root), None, data.describe(meta), where_root / name
    writer.log_prepared(where / "vdl", prepared, summary, counts)
    return PreparedData(name, where, tuple(prepared.classes), summary, prepared)


def sample_photo() -> Path:
    """A photo of a handwritten 7 shipped with mnist-kit (blue ink on paper, 360x300 JPEG): what a person's own
    picture looks like, to try ``predict`` on."""
    return Path(__file__).resolve().parents[1] / "samples" / "photo-7.jpg"


def model_summary(config: ConfigLike = None, overrides: Sequence[str] = ()) -> str:
    """The network layer by layer (output shape, parameters, FLOPs), as ``train --summary`` prints it; needs
    the data set prepared (its image shape and classes)."""
    from mnist_kit import data
    from mnist_kit.models.networks import build_model, summary

    cfg = load_config(config, overrides)
    prepared = data.load_dataset(cfg.data)
    return summary(build_model(cfg.model, prepared.input_shape, len(prepared.classes)), prepared.input_shape)


def train_config(config: ConfigLike = None, overrides: Sequence[str] = (), *, seed: int | None = None,
                 device: str | None = None, name: str | None = None) -> _config.Config:
    """The config ``train`` trains with: ``seed``, ``device`` and ``name`` as ``-o train.seed=...``,
    ``-o train.device=...``, ``-o output.name=...`` after ``overrides``."""
    import json

    if isinstance(overrides, str):
        raise not_a("overrides", overrides, 'a list of "section.key=value" texts, e.g. ["train.epochs=3"]')
    extra = [f"train.seed={seed}"] if seed is not None else []
    extra += [f"train.device={device}"] if device else []
    extra += [f"output.name={json.dumps(name)}"] if name else []
    return load_config(config, [*overrides, *extra])


def train(config: ConfigLike = None, overrides: Sequence[str] = (), *, seed: int | None = None,
          device: str | None = None, name: str | None = None, nproc: int = 1, devices: str | None = None) -> Run:
    """Train a new run as the config describes (``seed``, ``device`` and ``name`` as ``-o train.seed=...``,
    ``-o train.device=...``, ``-o output.name=...``); ``nproc`` processes data-parallel through
    ``paddle.distributed.launch`` (``devices``: the GPUs, one per process). Returns the run when it has ended."""
    cfg = train_config(config, overrides, seed=seed, device=device, name=name)
    config_name = _config_name(config, cfg)
    if nproc < 1:
        raise UsageError(f"nproc must be 1 or more, got {nproc}")
    if devices is not None or nproc > 1:
        from mnist_kit.training.launch import train_parallel

        return Run(train_parallel(cfg, config_name, nproc, devices))
    from mnist_kit.training import start

    return Run(start.train(cfg, config_name=config_name))


def resume(run: RunLike = None, epoch: int | None = None, overrides: Sequence[str] = (), *,
           device: str | None = None, root: str | Path | None = None) -> Run:
    """Continue a run exactly where a checkpoint left it: the end of ``epoch`` (counted from 0), or its newest
    intact checkpoint. Only changes that keep the training the same are accepted (``train.epochs=N`` to train
    longer, logging, checkpointing, the device)."""
    from mnist_kit.training import start

    if isinstance(overrides, str):
        raise not_a("overrides", overrides, 'a list of "section.key=value" texts')
    extra = [f"train.device={device}"] if device else []
    return Run(start.resume(_run_dir(run, root).path, epoch=epoch, overrides=[*overrides, *extra]))


def evaluate(run: RunLike = None, epoch: int | None = None, last: bool = False, split: str = "test",
             device: str = "auto", photos: int = 0, photo_seed: int = 0, save_photos: str | Path | None = None,
             root: str | Path | None = None) -> Evaluation:
    """Measure a run's best checkpoint (or ``epoch``'s, or the ``last``) on the test or validation split; with
    ``photos=N``, also on N photos made from test images, read as ``predict`` reads files."""
    from mnist_kit.evaluation import scoring

    if epoch is not None and last:
        raise UserError("--epoch and --last exclude each other")
    if not 0 <= photos <= 10000 or photo_seed < 0:
        raise UsageError(f"photos must be 0 to 10000 and photo_seed 0 or more, got {photos} and {photo_seed}")
    if split not in ("test", "val"):
        raise UsageError(f"split is {split!r}; choose test or val")
    if not _config.valid_device(device):
        raise UserError(f"--device is {device!r}; allowed: cpu, gpu, gpu:N, auto")
    make = None
    if save_photos is not None:
        _check_new_folder(Path(save_photos), photos)
    if photos:
        from mnist_kit.deploy.photos import photo_set

        make = functools.partial(photo_set, count=photos, seed=photo_seed,
                                 folder=Path(save_photos) if save_photos is not None else None)
    result = scoring.evaluate_run(_run_dir(run, root), epoch=epoch, last=last, split=split, device=device,
                                  photos=make, images=True)
    return Evaluation(result, result.pop("mistake_images"))


def _check_new_folder(folder: Path, photos: int) -> None:
    from mnist_kit.util.files import check_new_folder

    if not photos:
        raise UserError("--save-photos needs --photos N (how many photos to make)")
    check_new_folder(folder, "--save-photos")


def export(run: RunLike = None, epoch: int | None = None, last: bool = False, out: str | Path | None = None,
           format: str = "auto", root: str | Path | None = None) -> Export:
    """Freeze a run's best checkpoint (or ``epoch``'s, or the ``last``) into an inference model, checked against
    the trained network: ``format`` auto (the Paddle program, and model.onnx where the ONNX tools are
    installed), paddle, onnx or pdparams. ``out``: default RUN/export/CHECKPOINT."""
    from mnist_kit.deploy.export import export_run

    if epoch is not None and last:
        raise UserError("--epoch, --last and --best exclude each other")
    found = _run_dir(run, root)
    meta = export_run(found, epoch=epoch, last=last, out=Path(out) if out else None, fmt=format)
    return Export(Path(meta["path"]), dict(meta), run=found.path)


def _export_dir(model: Export | Run | str | Path | None, root: str | Path | None) -> Path:
    from mnist_kit.deploy import predict as p

    if isinstance(model, Export):
        return model.path
    if isinstance(model, Run):
        return p.newest_export(model.path)
    if model is None:
        return p.newest_export(_root(root))
    if not isinstance(model, (str, Path)):
        raise not_a("model", model, "an Export, an export folder, a Run or None (the newest export)")
    return Path(model)


def predict(model: Export | Run | str | Path | None, images: Any, topk: int = 3, min_confidence: float = 0.6,
            save_preprocessed: str | Path | None = None, device: str = "cpu", runtime: str = "auto",
            root: str | Path | None = None, errors: str = "raise") -> list[Prediction]:
    """The class of each image with an exported model (an ``Export``, its folder, a run's newest export, or the
    newest under ``root``). ``images``: one or a list of files, folders (their images), globs, PIL images or
    numpy arrays (uint8 0-255 or float 0-1; 28x28 or any size: framed as files are). An image that cannot be
    read raises UserError naming it, or with ``errors="keep"`` comes back with its ``error``."""
    from mnist_kit.deploy import predict as p

    if errors not in ("raise", "keep"):
        raise UsageError(f"errors is {errors!r}; choose raise or keep")
    if topk < 1 or not 0 <= min_confidence <= 1:
        raise UsageError("topk must be 1 or more and min_confidence between 0 and 1")
    items = [images] if isinstance(images, (str, Path)) or not isinstance(images, (list, tuple)) else list(images)
    sources = [_image_source(item, i) for i, item in enumerate(items)]
    results = p.predict_sources(sources, _export_dir(model, root), topk=topk, min_confidence=min_confidence,
                                save_preprocessed=Path(save_preprocessed) if save_preprocessed else None,
                                device=device, runtime=runtime)
    out = [Prediction.from_answer(r["file"], r) for r in results]
    failed = [x for x in out if x.error is not None]
    if failed and errors == "raise":
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise UserError(f"{failed[0].source}: {failed[0].error}{more}")
    return out


def _image_source(item: Any, i: int) -> str | tuple[str, bytes]:
    """A path (file, folder or glob) as text, or an image in memory as (name, PNG bytes): read by the same
    preprocessing as a file."""
    if isinstance(item, (str, Path)):
        return str(item)
    image = _as_pil(item, i)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"<image {i}>", buffer.getvalue()


def _as_pil(item: Any, i: int):
    import numpy as np
    from PIL import Image

    if isinstance(item, Image.Image):
        return item
    if not isinstance(item, np.ndarray):
        raise not_a(f"image {i}", item, "a file path, a PIL image or a numpy array")
    a = item
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise UserError(f"image {i} is an array of shape {a.shape}; give (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if a.dtype != np.uint8:
        a = np.asarray(a, dtype=np.float64)
        if not np.isfinite(a).all():
            raise UserError(f"image {i} holds NaN or infinite values")
        a = np.clip(np.round(a * 255 if a.max(initial=0) <= 1 else a), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def serve(model: Export | Run | str | Path | None = None, host: str = "127.0.0.1", port: int = 8080,
          threads: int = 4, device: str = "cpu", runtime: str = "auto", cors: str | None = None,
          root: str | Path | None = None, say=None) -> None:
    """Serve an exported model until Ctrl-C: a drawing pad at / and an HTTP API (POST /api/predict,
    /api/predict/batch, GET /api/model, /healthz). ``say``: where its lines go (default: stderr)."""
    from mnist_kit.deploy import serve as s
    from mnist_kit.util.console import info

    s.check_origin(cors)  # a usage error, before looking for a model
    s.serve(_export_dir(model, root), host=host, port=port, threads=threads, device=device, runtime=runtime,
            cors=cors, say=say or info)


def plot_runs(runs: Sequence[Run | str | Path], title: str = "") -> Any:
    """A matplotlib figure of several runs side by side: validation accuracy and training loss per epoch
    (``plot_runs(runs(sort="acc")[:5])``: the five best). One run alone: ``Run.plot()``."""
    from mnist_kit.logbook import figures

    found = [r if isinstance(r, Run) else Run.open(r) for r in runs]
    return figures.runs_figure([(r.summary()["run"], r.metrics) for r in found], title)


def board(run_or_root: Run | str | Path | None = None, port: int = 0, host: str = "127.0.0.1",
          height: int = 800) -> Any:
    """VisualDL on a run (a ``Run`` or its folder: its curves alone) or on every run under a folder (default:
    checkpoints), on a free port of 127.0.0.1; returns a ``Board`` that Jupyter shows as the board in an iframe.
    ``board.stop()`` ends the server; it also ends with this process (the kernel), however that ends."""
    from mnist_kit.logbook import server

    where = run_or_root.path if isinstance(run_or_root, Run) else _root(run_or_root)
    if not 0 <= port <= 65535:
        raise UsageError(f"port must be 0 (a free one) to 65535, got {port}")
    return server.start(where, host=host, port=port, height=height)


def runs(root: str | Path | None = None, sort: str = "started", reverse: bool = False) -> list[Run]:
    """Every run under ``root`` (default: checkpoints), sweeps' runs included, in the order of ``sort``
    (started, run, acc (best first), time, status, epochs, or a config key such as optimizer.lr)."""
    from mnist_kit.experiments import listing

    where = _root(root)
    if not where.exists():
        raise UserError(f"{where} does not exist; runs are written under output.root (default: checkpoints)")
    summaries = listing.sort_runs([listing.summarize(r, where) for r in listing.find(where)], sort, reverse)
    return [Run(s["path"], root=where, listed=s) for s in summaries]


def sweep(config: str | Path | None = None, grid: dict[str, Sequence[Any]] | Sequence[str] = (),
          overrides: Sequence[str] = (), jobs: int = 1, name: str | None = None,
          root: str | Path | None = None, say=None) -> Sweep:
    """One run per combination of ``grid`` (``{"optimizer.lr": [0.01, 0.001], "model.name": ["cnn", "mlp"]}``,
    or ``-o`` texts with comma-separated values), each with ``overrides``; ``jobs`` runs at a time. Running
    the same sweep again skips completed runs and resumes interrupted ones. ``config``: a shipped config's
    name or a YAML file (its runs start ``mnist-kit train --config`` with it)."""
    import json

    from mnist_kit.backend import runtime  # noqa: F401  (every run needs paddle: without it, one error now)
    from mnist_kit.experiments.sweep import run_sweep
    from mnist_kit.util.console import info

    if isinstance(config, _config.Config):
        raise UserError("sweep takes a shipped config's name or a YAML file, which its runs are started with: "
                        "write the Config with mnist_kit.config.dump(cfg) to a file and pass its path")
    texts = list(grid) if not isinstance(grid, dict) else [
        f"{key}=" + ",".join(json.dumps(v) for v in values) for key, values in grid.items()]
    path = _config.locate(config)[0] if config is not None else None
    where, summaries = run_sweep(path, [*overrides, *texts], root=Path(root) if root else None, name=name,
                                 jobs=jobs, say=say or info)
    return Sweep(where, summaries)
