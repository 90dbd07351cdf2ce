"""The commands that look around: ``configs`` (the shipped configs), ``runs`` (every run, compared) and
``board`` (VisualDL on the runs)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mnist_kit import api, config
from mnist_kit.cli.group import cli
from mnist_kit.cli.options import config_file, print_config_option, root_of
from mnist_kit.errors import UsageError, UserError


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
@click.option("--config", "-c", "root_config", type=config_file,
              help="Take the default ROOT from this config's output.root.")
@print_config_option("root_config")
@click.option("--sort", "sort_key", default="started", show_default=True,
              help="started, run, acc (best first), time, status, epochs, or a config key such as optimizer.lr.")
@click.option("--reverse", is_flag=True, help="Reverse the order.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (all hyper-parameters included).")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the runs side by side (validation accuracy and training loss per epoch) into this "
                   "new PNG file.")
def list_runs(root, root_config, sort_key, reverse, as_json, plot_file):
    """List the runs under ROOT (default: output.root of --config, else checkpoints), sweeps' runs included:
    key hyper-parameters and those that differ, epochs, best validation accuracy, training time and status."""
    from mnist_kit.experiments import listing

    if plot_file is not None and (plot_file.exists() or plot_file.is_symlink()):
        raise UserError(f"--plot {plot_file} exists; name a new file (mnist-kit never writes over your files)")
    root = root_of(root, root_config)
    found = api.runs(root, sort_key, reverse)
    summaries = [r.listed or r.summary() for r in found]  # as listed and sorted: each run's files read once
    for s in summaries:
        if s["status"] == "unreadable":
            click.echo(f"warning: run {s['run']} cannot be read: {s.get('error')}", err=True)
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
    else:
        click.echo(listing.format_table(summaries) if summaries else f"no runs under {root}")
    if plot_file is not None:
        from mnist_kit.logbook import figures

        readable = [r for r, s in zip(found, summaries) if s["status"] != "unreadable"]
        path = figures.save(api.plot_runs(readable, f"{len(readable)} run(s) under {root}"), plot_file)
        click.echo(f"wrote {path}", err=True)


@cli.command()
@click.option("--logdir", type=click.Path(path_type=Path),
              help="Folder holding one folder per run (default: output.root of --config, else checkpoints).")
@click.option("--config", "-c", "root_config", type=config_file,
              help="Take the default --logdir from this config's output.root.")
@print_config_option("root_config")
@click.option("--port", type=click.IntRange(1, 65535), default=8040, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback exposes every log, without authentication.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="Model file for the static graph page (default: the newest run's graph/model.pdmodel).")
def board(logdir, root_config, port, host, model):
    """Start VisualDL on the runs, every run side by side, and print its address."""
    from mnist_kit.logbook import server

    server.serve(root_of(logdir, root_config), host=host, port=port, model=model, say=lambda m: click.echo(m, err=True))


