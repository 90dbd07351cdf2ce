"""The ``mnist-kit`` command: a thin layer over plain functions.

User errors (``mnist_kit.UserError``) end in one line on stderr and a non-zero exit code, without a
traceback; config errors exit with 2. Heavy modules (paddle) are imported only by commands that need them.
"""

from __future__ import annotations

import errno
import functools
import json
import math
from pathlib import Path

import click

from mnist_kit import UsageError, UserError, __version__, config, datasets
from mnist_kit.util import interrupts


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click's is a class default, meant to be set


# errors of the file system that the user can act on: shown as one line, with what to do, never a traceback
FILE_SYSTEM_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG,
                      errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EEXIST, errno.ELOOP, errno.EXDEV}
FILE_SYSTEM_HINTS = {
    "prepare": "prepare into a writable folder with --root (or data.root)",
    "train": "set output.root (and data.root) to writable folders",
    "sweep": "set output.root to a writable folder",
    "resume": "a run is resumed in place: copy it to a writable folder and resume the copy",
    "export": "export into a writable folder with --out",
    "predict": "choose a writable folder for --save-preprocessed",
}


class _Group(click.Group):
    def invoke(self, ctx):
        interrupts.handle_termination()  # SIGTERM and SIGHUP stop a command as Ctrl-C does
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise _Failure(str(e), e.exit_code) from None
        except KeyboardInterrupt as e:
            click.echo("terminated" if isinstance(e, interrupts.Terminated) else "interrupted", err=True)
            ctx.exit(interrupts.exit_code(e))
        except OSError as e:  # Ctrl-C inside Paddle's autograd arrives wrapped in an OSError
            if interrupts.wrapped_interrupt(e):
                click.echo("interrupted", err=True)
                ctx.exit(130)
            if e.errno not in FILE_SYSTEM_ERRORS:
                raise
            where = f" {e.filename}" if e.filename else ""
            hint = FILE_SYSTEM_HINTS.get(ctx.invoked_subcommand, "")
            raise _Failure(f"cannot use{where}: {e.strerror}" + (f"; {hint}" if hint else ""), 1) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnist-kit")
def cli():
    """Train, evaluate and use MNIST models with PaddlePaddle, from a YAML config."""


class _Number(click.FloatRange):
    """A float in a range, and a number: click's FloatRange lets nan through (every comparison with it is false)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _ConfigFile(click.ParamType):
    """``--config``: a YAML file, or a shipped config by name (``cnn``, ``cnn.yaml``; a file of that name in the
    current folder wins). Says on stderr which file a name chose."""

    name = "FILE|NAME"

    def convert(self, value, param, ctx):
        if isinstance(value, Path):
            return value
        path, note = config.locate(value)
        if note:
            click.echo(note, err=True)
        return path


_config_file = _ConfigFile()
_config_option = click.option("--config", "-c", "config_path", type=_config_file,
                              help="YAML experiment config: a file, or a shipped config by name (mnist-kit configs "
                                   "lists them), e.g. cnn. Default: the built-in defaults (mnist-kit configs show "
                                   "defaults): cnn's network and data with the classic recipe (Adam 1e-3, batch 64, "
                                   "constant rate, no augmentation).")


def _print_config_option(config_param: str, overrides_param: str | None = None):
    """``--print-config``: print the config that ``config_param`` (with ``overrides_param``) resolves to, and
    exit: on every command that takes ``--config``."""

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, print_config, **kwargs):
            if print_config:
                overrides = list(kwargs.get(overrides_param) or ()) if overrides_param else []
                click.echo(config.dump(config.load(kwargs[config_param], overrides)), nl=False)
                return None
            return f(*args, **kwargs)

        return click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")(wrapper)

    return decorate


_override_option = click.option("--override", "-o", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                                help="Override one config value (repeatable), e.g. -o optimizer.lr=0.01")


def _root_options(what: str = "runs"):
    """``--root`` and the ``--config`` its default comes from: one definition for every command that looks
    for runs. The root is ``--root``, else ``output.root`` of ``--config``, else the built-in default."""

    def decorate(f):
        f = _print_config_option("root_config")(f)
        f = click.option("--config", "-c", "root_config", type=_config_file,
                         help="Take the default --root from this config's output.root.")(f)
        return click.option("--root", type=click.Path(path_type=Path),
                            help=f"Where to look for {what} (default: output.root of --config, else "
                                 f"{config.SCHEMA['output']['root'].default}).")(f)

    return decorate


def _root(root: Path | None, root_config: Path | None) -> Path:
    return root if root is not None else Path(config.load(root_config)["output"]["root"])


def _run_options(epoch_help: str | None = None, last_help: str | None = None):
    """``--run`` (default: the newest run under ``--root``), ``--root``/``--config``, and, when given help
    texts, ``--epoch`` and ``--last``: a command's choice of run and checkpoint, defined once."""

    def decorate(f):
        if last_help:
            f = click.option("--last", is_flag=True, help=last_help)(f)
        if epoch_help:
            f = click.option("--epoch", type=click.IntRange(0), help=epoch_help)(f)
        f = _root_options("the newest run")(f)
        return click.option("--run", "run_dir", type=click.Path(path_type=Path),
                            help="Run directory (default: the newest run under --root).")(f)

    return decorate


def _resolve_run(run_dir: Path | None, root: Path | None, root_config: Path | None):
    from mnist_kit.runs import listing

    return listing.resolve(run_dir, _root(root, root_config))


@cli.command()
@_config_option
@_override_option
@click.option("--dataset", type=click.Choice(datasets.IDX),
              help="Data set (default: data.name of the config; image folders: data.name: image_folder).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Prepared-data directory (default: data.root, $MNIST_KIT_DATA or ~/.cache/mnist-kit).")
@click.option("--source", type=click.Choice(["auto", "download", "debian", "dir"]), default="auto", show_default=True,
              help="auto: an existing cache, else Debian's package where installed, else download.")
@click.option("--from-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding the four IDX files (.gz or uncompressed).")
@click.option("--mirror", "mirrors", multiple=True, metavar="URL", help="Download from this base URL (repeatable) "
              "instead of the built-in mirror list.")
@click.option("--retries", type=click.IntRange(1, 20), default=3, show_default=True, help="Attempts per mirror.")
@click.option("--timeout", type=_Number(0.1), default=30.0, show_default=True,
              help="Network timeout, seconds.")
@click.option("--no-verify", is_flag=True, help="Accept files that do not match the published checksums.")
@click.option("--force", is_flag=True, help="Prepare again even if a valid cache exists.")
@_print_config_option("config_path", "overrides")
def prepare(config_path, overrides, dataset, root, source, from_dir, mirrors, retries, timeout, no_verify, force):
    """Get, verify and cache a data set (MNIST or Fashion-MNIST), or decode an image folder into a cache."""
    from mnist_kit import data
    from mnist_kit.board import writer

    cfg = config.load(config_path, overrides)
    name = dataset or cfg["data"]["name"]
    root = root or data.data_root(cfg["data"]["root"])
    if datasets.get(name).kind == "folder":
        if source != "auto" or from_dir or mirrors or no_verify:
            raise UserError("--source, --from-dir, --mirror and --no-verify are for MNIST and Fashion-MNIST; an "
                            "image folder is read from data.folder")
        dcfg = dict(cfg["data"], root=str(root))
        meta = data.prepare_folder(dcfg, root, force=force)
        prepared = data.load_folder(dcfg, root, warn_if_changed=False)
        counts = data.split_counts(dcfg, prepared)
        summary = data.describe_folder(meta, counts)
        where = data.prepared_dir(dcfg)
    else:
        meta = data.prepare(name, root, source=source, from_dir=from_dir, mirrors=mirrors or None, retries=retries,
                            timeout=timeout, verify=not no_verify, force=force)
        prepared, counts, summary, where = data.load(name, root), None, data.describe(meta), Path(root) / name
    click.echo(summary)
    click.echo(f"prepared in {where}")
    writer.log_prepared(where / "vdl", prepared, summary, counts)
    click.echo(f"samples and class counts for VisualDL: mnist-kit board --logdir {where}")


@cli.command()
@_config_option
@_override_option
@click.option("--seed", type=int, help="Shortcut for -o train.seed=N.")
@click.option("--device", help="Shortcut for -o train.device=D (cpu, gpu, gpu:N, auto).")
@click.option("--name", help="Run name (default: <config name>-<timestamp>); an existing run is never reused.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("--summary", "show_summary", is_flag=True,
              help="Print the network layer by layer (output shape, parameters, FLOPs) and exit; with "
                   "--print-config, after the config. Needs the data set prepared (its image shape and classes).")
@click.option("--nproc", type=click.IntRange(1), default=1,
              help="Train data-parallel in N processes through paddle.distributed.launch (CPU: gloo; GPU: one "
                   "process per device). train.batch_size is per process.")
@click.option("--devices", metavar="0,1,...",
              help="With --nproc: the GPUs to train on, one process each (passed to the launcher's --devices); "
                   "needs Paddle's GPU build.")
def train(config_path, overrides, seed, device, name, print_config, show_summary, nproc, devices):
    """Train a model as the config describes; one run directory per run."""
    extra = [f"train.seed={seed}"] if seed is not None else []
    extra += [f"train.device={device}"] if device else []
    extra += [f"output.name={json.dumps(name)}"] if name else []
    cfg = config.load(config_path, list(overrides) + extra)
    if print_config:
        click.echo(config.dump(cfg), nl=False)
    if show_summary:
        from mnist_kit import data
        from mnist_kit.models.networks import build_model, summary

        prepared = data.load_dataset(cfg["data"])
        shape = prepared.input_shape
        click.echo(summary(build_model(cfg["model"], shape, len(prepared.classes)), shape))
    if print_config or show_summary:
        return
    config_name = config_path.stem if config_path else cfg["model"]["name"]
    if devices is not None:
        from mnist_kit.backend.runtime import paddle
        from mnist_kit.train.launch import check_devices

        check_devices(devices, nproc, cfg["train"]["device"], paddle.device.is_compiled_with_cuda())
    if nproc > 1:
        from mnist_kit import data
        from mnist_kit.backend.runtime import paddle
        from mnist_kit.runs.rundir import RunDir
        from mnist_kit.train.launch import launch_train

        data.load_splits(cfg, world=nproc)  # data prepared, a step for each process: checked before launching

        argv = (["--config", str(config_path)] if config_path else []) + [a for o in list(overrides) + extra
                                                                          for a in ("-o", o)]
        cpu = cfg["train"]["device"] == "cpu" or not paddle.device.is_compiled_with_cuda()
        launch_train(nproc, argv, RunDir.create(cfg["output"]["root"], cfg["output"]["name"], config_name), cpu,
                     devices)
        return
    from mnist_kit.train import start

    start.train(cfg, config_name=config_name)


@cli.command()
@_run_options(epoch_help="Continue from the end of this epoch (epochs count from 0); default: the newest intact "
                         "checkpoint.")
@_override_option
@click.option("--device", help="Shortcut for -o train.device=D.")
def resume(run_dir, root, root_config, epoch, overrides, device):
    """Continue a run exactly where a checkpoint left it (after a crash, Ctrl-C, or to train longer).

    Only changes that keep the training the same are accepted (-o train.epochs=N to train longer,
    logging cadence, checkpointing, device); anything else is refused with the differing keys.
    """
    from mnist_kit.train import start

    extra = [f"train.device={device}"] if device else []
    start.resume(_resolve_run(run_dir, root, root_config), epoch=epoch, overrides=list(overrides) + extra)


@cli.command("eval")
@_run_options(epoch_help="Evaluate this epoch's checkpoint (epochs count from 0).",
              last_help="Evaluate the last epoch's checkpoint instead of the best one.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, gpu, gpu:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--photos", type=click.IntRange(0, 10000), default=0, metavar="N",
              help="Also make N photos of test images (ink on tinted paper, off-centre, 40-260 px, blur, noise, "
                   "JPEG/PNG) and report how many the model reads right through predict's preprocessing.")
@click.option("--photo-seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the photos.")
@click.option("--save-photos", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the photos in this new (or empty) folder, named NNNN-label-K.ext.")
def evaluate(run_dir, root, root_config, epoch, last, split, device, as_json, photos, photo_seed, save_photos):
    """Measure a trained run: loss, accuracy, per-class precision/recall/F1, confusion matrix; with
    --photos N, also its accuracy on photos made from the test set."""
    from mnist_kit.evaluate import metrics
    from mnist_kit.evaluate import scoring as ev

    if epoch is not None and last:
        raise UserError("--epoch and --last exclude each other")
    if not config.valid_device(device):
        raise UserError(f"--device is {device!r}; allowed: cpu, gpu, gpu:N, auto")
    if save_photos is not None and not photos:
        raise UserError("--save-photos needs --photos N (how many photos to make)")
    if save_photos is not None and save_photos.is_symlink() and not save_photos.exists():
        raise UserError(f"--save-photos {save_photos} is a symbolic link to nothing (a loop, or its target is "
                        "gone); name a new folder")
    if save_photos is not None and save_photos.exists() and (not save_photos.is_dir() or any(save_photos.iterdir())):
        raise UserError(f"--save-photos {save_photos} exists and is not an empty folder; name a new folder "
                        "(mnist-kit never writes over your files)")
    run = _resolve_run(run_dir, root, root_config)
    make = None
    if photos:
        from mnist_kit.deploy.photos import photo_set

        make = functools.partial(photo_set, count=photos, seed=photo_seed, folder=save_photos)
    result = ev.evaluate_run(run, epoch=epoch, last=last, split=split, device=device, photos=make)
    if photos and result["photos"]["count"] < photos:
        click.echo(f"note: --photos {photos}, but the test split holds {result['photos']['count']} images: one "
                   "photo was made of each", err=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"run {run}")
        click.echo(metrics.format_report(result, result["classes"]))


@cli.command()
@_run_options(epoch_help="Export this epoch's checkpoint (default: the best one).",
              last_help="Export the last epoch's checkpoint.")
@click.option("--best", is_flag=True, help="Export the best checkpoint (the default).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: RUN/export/CHECKPOINT); replaced only by a complete, checked export.")
@click.option("--format", "fmt", type=click.Choice(["auto", "paddle", "onnx", "pdparams"]), default="auto",
              show_default=True,
              help="auto: the Paddle inference program, and model.onnx where paddle2onnx and onnxruntime are "
                   "installed (predict and serve then run without paddle); paddle: the program only; onnx: model.onnx "
                   "or an error; pdparams: as auto, and the model's and the optimizer's state dicts (paddle.save "
                   "pickles), for paddle.load and set_state_dict.")
def export(run_dir, root, root_config, epoch, last, best, out, fmt):
    """Freeze a trained run into an inference model, checked against the trained network."""
    from mnist_kit.deploy.export import export_run

    if sum([epoch is not None, last, best]) > 1:
        raise UserError("--epoch, --last and --best exclude each other")
    run = _resolve_run(run_dir, root, root_config)
    meta = export_run(run, epoch=epoch, last=last, out=out, fmt=fmt)
    c = meta["checks"]
    click.echo(f"exported {run} ({meta['source']['checkpoint']}) to {meta['path']}")
    click.echo(f"checked: max logit difference {c['max_abs_logit_difference']:.2g} on {c['parity_images']} images "
               f"(tolerance {c['tolerance']:g}); {c['split']} accuracy {c['val_accuracy']:.2%} = checkpoint's "
               f"{c['val_accuracy_checkpoint']:.2%} on {c['val_images']} images")
    if "onnx" in meta:
        o = meta["onnx"]
        click.echo(f"ONNX: {meta['path']}/model.onnx, checked with {o['runtime']}: max logit difference "
                   f"{o['max_abs_logit_difference']:.2g}, {o['split']} accuracy {o['val_accuracy']:.2%}")
    elif "onnx_skipped" in meta:
        click.echo(f"note: no model.onnx ({meta['onnx_skipped']}); predict and serve will use Paddle Inference",
                   err=True)
    if "pdparams" in meta:
        click.echo(f"state dicts: {meta['path']}/model.pdparams and model.pdopt (pickles: load only files you "
                   f"trust), loaded back: max logit difference {meta['pdparams']['max_abs_logit_difference']:.2g}")
    if meta.get("replaced_files"):
        dropped = meta["replaced_files"]
        click.echo(f"note: the earlier export in {meta['path']} held {' and '.join(dropped)}, which this export "
                   "does not write: they went with the earlier export"
                   + ("; --format pdparams writes model.pdparams and model.pdopt" if "model.pdopt" in dropped else ""),
                   err=True)
    click.echo(f"predict with: mnist-kit predict --model {meta['path']} IMAGE...")


_runtime_option = click.option(
    "--runtime", type=click.Choice(["auto", "onnxruntime", "paddle"]), default="auto", show_default=True,
    help="What runs the model: auto takes onnxruntime where the export holds a checked model.onnx and onnxruntime "
         "is installed (paddle is then never imported), else Paddle Inference.")


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Exported model folder (default: the newest export under --root).")
@_root_options("the newest export")
@click.option("--topk", type=click.IntRange(1), default=3, show_default=True)
@click.option("--min-confidence", type=_Number(0, 1), default=0.6, show_default=True,
              help="Flag predictions below this probability as low confidence.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image (errors included).")
@click.option("--save-preprocessed", type=click.Path(file_okay=False, path_type=Path),
              help="Write the inputs the model saw (the images after preprocessing) into this folder.")
@click.option("--device", default="cpu", show_default=True, help="cpu, gpu or gpu:N.")
@_runtime_option
def predict(paths, model_dir, root, root_config, topk, min_confidence, as_json, save_preprocessed, device, runtime):
    """Predict the class of each image (files, folders or globs); any failed file makes the exit code 1."""
    from mnist_kit.deploy import predict as p

    model_dir = model_dir or p.newest_export(_root(root, root_config))
    results = p.predict_paths(list(paths), model_dir, topk=topk, min_confidence=min_confidence,
                              save_preprocessed=save_preprocessed, device=device, runtime=runtime)
    click.echo(p.to_json(results) if as_json else "\n".join(p.format_result(r) for r in results))
    failed = sum("error" in r for r in results)
    if failed:
        click.echo(f"{failed} of {len(results)} file(s) failed", err=True)
        raise SystemExit(1)


@cli.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Exported model folder (default: the newest export under --root).")
@_root_options("the newest export")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback lets anyone who reaches it use the model, without "
                   "authentication.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free port.")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Requests handled at the same time (they share one model).")
@click.option("--device", default="cpu", show_default=True, help="cpu, gpu or gpu:N (a GPU takes Paddle Inference).")
@_runtime_option
@click.option("--cors", metavar="ORIGIN",
              help="Let pages of ORIGIN (e.g. http://localhost:3000, or * for any) call the API from a browser; "
                   "off by default.")
def serve(model_dir, root, root_config, host, port, threads, device, runtime, cors):
    """Serve an exported model: a drawing pad at / and an HTTP API (POST /api/predict, /api/predict/batch,
    GET /api/model, /healthz) until Ctrl-C."""
    from mnist_kit.deploy import predict as p
    from mnist_kit.deploy import serve as s

    s.check_origin(cors)  # a usage error, before looking for a model
    model_dir = model_dir or p.newest_export(_root(root, root_config))
    s.serve(model_dir, host=host, port=port, threads=threads, device=device, runtime=runtime, cors=cors,
            say=lambda m: click.echo(m, err=True))


@cli.command()
@_config_option
@click.option("--override", "-o", "overrides", multiple=True, metavar="SECTION.KEY=V1,V2,...",
              help="A config value for every run, or several values separated by commas: one run per combination "
                   "(repeatable), e.g. -o optimizer.lr=0.01,0.001 -o model.name=cnn,mlp")
@click.option("--name", help="Sweep folder under output.root (default: sweep-<config name>); the same name finds "
                             "the same runs again.")
@click.option("--jobs", "-j", type=click.IntRange(1), default=1, show_default=True,
              help="Runs trained at the same time.")
@click.option("--print-config", is_flag=True, help="Print the config of every run of the grid and exit.")
def sweep(config_path, overrides, name, jobs, print_config):
    """Train one run per combination of values; compare them with `mnist-kit runs` and `mnist-kit board`.

    Re-running the same command skips completed runs and resumes interrupted ones; a run another process is
    training is left alone. A failed run is reported and does not stop the others; the exit code is then 1
    (also when a run was left alone). One sweep at a time runs in a folder; its runs stop with it.
    """
    from mnist_kit.runs import listing
    from mnist_kit.runs.sweep import plan, run_sweep

    if print_config:
        for run in plan(config_path, list(overrides))[2]:
            click.echo(f"--- # run {run.name}\n{config.dump(run.cfg)}", nl=False)
        return
    from mnist_kit.backend import runtime  # noqa: F401  (every run needs paddle: without it, one error now, not one per run)

    sweep_dir, summaries = run_sweep(config_path, list(overrides), name=name, jobs=jobs,
                                     say=lambda m: click.echo(m, err=True))
    click.echo(listing.format_table(listing.sort_runs(summaries, "acc")))
    click.echo(f"compare them in VisualDL (scalars overlaid, hyper-parameters ranked): "
               f"mnist-kit board --logdir {sweep_dir}")
    failed = [s["run"] for s in summaries if s["sweep_outcome"] == "failed"]
    busy = [s["run"] for s in summaries if s["sweep_outcome"] == "busy"]
    if failed:
        click.echo(f"{len(failed)} run(s) failed: {', '.join(failed)}; their output is in {sweep_dir / 'logs'}",
                   err=True)
    if busy:
        click.echo(f"{len(busy)} run(s) left alone, being trained by another process: {', '.join(busy)}; run the "
                   "sweep again once they have ended", err=True)
    if failed or busy:
        raise SystemExit(1)


@cli.group(invoke_without_command=True)
@click.pass_context
def configs(ctx):
    """List the shipped configs, each with its purpose; `mnist-kit configs show NAME` prints one. Any command's
    --config takes these names (a file of the same name in the current folder wins)."""
    if ctx.invoked_subcommand is None:
        found = config.shipped()
        width = max(map(len, found))
        for name, path in found.items():
            click.echo(f"{name:<{width}}  {config.purpose(path)}")
        click.echo(f"(in {config.SHIPPED}; print one with: mnist-kit configs show NAME, copy it with: "
                   "mnist-kit configs show NAME > my.yaml)")


@configs.command("show")
@click.argument("name")
def configs_show(name):
    """Print shipped config NAME as it is written, comments included (`defaults`: the built-in defaults, which
    apply without --config)."""
    if name == "defaults":
        click.echo("# The built-in defaults: what a command uses without --config, and what every key left out of "
                   "a config takes.\n" + config.dump(config.load(None)), nl=False)
        return
    path = config.shipped_named(name)
    if path is None:
        found = config.shipped()
        raise UsageError(f"no shipped config is called {name!r}; they are: {', '.join(found)}, and defaults"
                        f"{config.suggest(name, [*found, 'defaults'])}")
    click.echo(path.read_text(encoding="utf-8"), nl=False)


@cli.command("runs")
@click.argument("root", type=click.Path(path_type=Path), required=False)
@click.option("--config", "-c", "root_config", type=_config_file,
              help="Take the default ROOT from this config's output.root.")
@_print_config_option("root_config")
@click.option("--sort", "sort_key", default="started", show_default=True,
              help="started, run, acc (best first), time, status, epochs, or a config key such as optimizer.lr.")
@click.option("--reverse", is_flag=True, help="Reverse the order.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (all hyper-parameters included).")
def list_runs(root, root_config, sort_key, reverse, as_json):
    """List the runs under ROOT (default: output.root of --config, else checkpoints), sweeps' runs included:
    key hyper-parameters and those that differ, epochs, best validation accuracy, training time and status."""
    from mnist_kit.runs import listing

    root = _root(root, root_config)
    if not root.exists():
        raise UserError(f"{root} does not exist; runs are written under output.root (default: checkpoints)")
    summaries = listing.sort_runs([listing.summarize(r, root) for r in listing.find(root)], sort_key, reverse)
    for s in summaries:
        if s["status"] == "unreadable":
            click.echo(f"warning: run {s['run']} cannot be read: {s.get('error')}", err=True)
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
    else:
        click.echo(listing.format_table(summaries) if summaries else f"no runs under {root}")


@cli.command()
@click.option("--logdir", type=click.Path(path_type=Path),
              help="Folder holding one folder per run (default: output.root of --config, else checkpoints).")
@click.option("--config", "-c", "root_config", type=_config_file,
              help="Take the default --logdir from this config's output.root.")
@_print_config_option("root_config")
@click.option("--port", type=click.IntRange(1, 65535), default=8040, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback exposes every log, without authentication.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="Model file for the static graph page (default: the newest run's graph/model.pdmodel).")
def board(logdir, root_config, port, host, model):
    """Start VisualDL on the runs, every run side by side, and print its address."""
    from mnist_kit.board import server

    server.serve(_root(logdir, root_config), host=host, port=port, model=model, say=lambda m: click.echo(m, err=True))


def main(args=None, prog_name: str = "mnist-kit"):
    cli.main(args=args, prog_name=prog_name)


if __name__ == "__main__":  # pragma: no cover
    main()
