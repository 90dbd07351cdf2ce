"""The commands of a model's training: ``prepare``, ``train``, ``resume``, ``sweep``. Each parses its options,
calls the function of the same name in ``mnist_kit.api`` and prints what it returns."""

from __future__ import annotations

from pathlib import Path

import click

from mnist_kit import api, config, datasets
from mnist_kit.cli.group import cli
from mnist_kit.cli.options import Number, config_option, override_option, print_config_option, root_of, run_options


@cli.command(help=f"Get, verify and cache a data set ({datasets.idx_titles()}), or decode an image folder into a "
             "cache.")
@config_option
@override_option
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
@click.option("--timeout", type=Number(0.1), default=30.0, show_default=True,
              help="Network timeout, seconds.")
@click.option("--no-verify", is_flag=True, help="Accept files that do not match the published checksums.")
@click.option("--force", is_flag=True, help="Prepare again even if a valid cache exists.")
@print_config_option("config_path", "overrides")
def prepare(config_path, overrides, dataset, root, source, from_dir, mirrors, retries, timeout, no_verify, force):
    done = api.prepare(dataset, config_path, overrides, root=root, source=source, from_dir=from_dir, mirrors=mirrors,
                       retries=retries, timeout=timeout, verify=not no_verify, force=force)
    click.echo(done.summary)
    click.echo(f"prepared in {done.path}")
    click.echo(f"samples and class counts for VisualDL: mnist-kit board --logdir {done.path}")


@cli.command()
@config_option
@override_option
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
    cfg = api.train_config(config_path, overrides, seed=seed, device=device, name=name)
    if print_config:
        click.echo(config.dump(cfg), nl=False)
    if show_summary:
        click.echo(api.model_summary(cfg))
    if print_config or show_summary:
        return
    api.train(config_path, overrides, seed=seed, device=device, name=name, nproc=nproc, devices=devices)


@cli.command()
@run_options(epoch_help="Continue from the end of this epoch (epochs count from 0); default: the newest intact "
                        "checkpoint.")
@override_option
@click.option("--device", help="Shortcut for -o train.device=D.")
def resume(run_dir, root, root_config, epoch, overrides, device):
    """Continue a run exactly where a checkpoint left it (after a crash, Ctrl-C, or to train longer).

    Only changes that keep the training the same are accepted (-o train.epochs=N to train longer,
    logging cadence, checkpointing, device); anything else is refused with the differing keys.
    """
    api.resume(run_dir, epoch, overrides, device=device, root=root_of(root, root_config))


@cli.command()
@config_option
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
    from mnist_kit.experiments import listing
    from mnist_kit.experiments.sweep import plan

    if print_config:
        for run in plan(config_path, list(overrides))[2]:
            click.echo(f"--- # run {run.name}\n{config.dump(run.cfg)}", nl=False)
        return
    done = api.sweep(config_path, overrides, name=name, jobs=jobs, say=lambda m: click.echo(m, err=True))
    click.echo(listing.format_table(listing.sort_runs(done.summaries, "acc")))
    click.echo(f"compare them in VisualDL (scalars overlaid, hyper-parameters ranked): "
               f"mnist-kit board --logdir {done.path}")
    if done.failed:
        click.echo(f"{len(done.failed)} run(s) failed: {', '.join(done.failed)}; their output is in "
                   f"{done.path / 'logs'}", err=True)
    if done.busy:
        click.echo(f"{len(done.busy)} run(s) left alone, being trained by another process: {', '.join(done.busy)}; "
                   "run the sweep again once they have ended", err=True)
    if done.failed or done.busy:
        raise SystemExit(1)
