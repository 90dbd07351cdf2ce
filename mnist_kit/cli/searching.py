"""``mnist-kit tune``: search a recipe with Optuna (``api.tune``), or list a study's trials (``--show``:
``api.study``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from mnist_kit import api
from mnist_kit.cli.group import cli
from mnist_kit.cli.options import Number, config_option, override_option


def _value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):  # inf, as JSON keeps it
        return v
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"


def _param(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def table(found: api.Study) -> str:
    """The trials, one line each, the best marked with *."""
    keys = []
    for t in found.trials:
        keys += [k for k in t["params"] if k not in keys]
    head = ["trial", "state", "value", "epochs", *[k.split(".", 1)[1] for k in keys], "run", "note"]
    best = found.best_trial["trial"] if found.best_trial else None
    lines = [[("*" if t["trial"] == best else "") + str(t["trial"]), t["state"], _value(t["value"]), str(t["epochs"]),
              *[_param(t["params"][k]) if k in t["params"] else "-" for k in keys],
              Path(t["run"]).name if t["run"] else "-", t["note"] or ""] for t in found.trials]
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *lines])


@cli.command()
@config_option
@override_option
@click.option("--space", "-s", "space", multiple=True, metavar="KEY=SPEC",
              help="A config key to search (repeatable): a,b,c (a choice), LOW..HIGH (uniform), LOW..HIGH:log, "
                   "LOW..HIGH:int; e.g. --space optimizer.lr=1e-4..1e-1:log. Adds to the config's tune: space:.")
@click.option("--trials", "-n", type=click.IntRange(1), help="Trials in the study in all, from every process and "
              "machine (default: the config's tune: trials, else 20).")
@click.option("--timeout", type=Number(1), help="Start no trial after this many seconds.")
@click.option("--jobs", "-j", type=click.IntRange(1), default=1, show_default=True,
              help="Tuner processes on this machine, each on its share of the cores.")
@click.option("--storage", metavar="URL|FILE", help="Where the study is kept: an SQLite file, or a database URL "
              "shared by several machines (postgresql://USER:PASSWORD@HOST/DB). Default: ROOT/tune.db.")
@click.option("--study", "study_name", metavar="NAME", help="The study (default: tune-<config name>); the same name "
              "continues it.")
@click.option("--objective", help="val_acc (the best validation accuracy; default) or time-to:ACC (the training "
              "seconds to reach validation accuracy ACC, e.g. time-to:0.9).")
@click.option("--prune/--no-prune", default=None, help="Stop trials whose validation accuracy after an epoch is "
              "among the worse (default: on).")
@click.option("--pruner", type=click.Choice(["median", "halving"]), help="Optuna's median pruner (default) or "
              "successive halving.")
@click.option("--seed", type=click.IntRange(0), help="train.seed of every trial.")
@click.option("--sampler-seed", type=click.IntRange(0), help="Seed of the TPE sampler (one tuner process: the same "
              "trials again).")
@click.option("--show", is_flag=True, help="List the study's trials from the storage (with --study, --storage, "
              "--root) and exit.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="With --show: the runs root whose tune.db to read (default: output.root of --config).")
@click.option("--json", "as_json", is_flag=True, help="Print the study as JSON.")
def tune(config_path, overrides, space, trials, timeout, jobs, storage, study_name, objective, prune, pruner, seed,
         sampler_seed, show, root, as_json):
    """Search a recipe with Optuna: each trial is an ordinary run (ROOT/STUDY/trial-NNNN), pruned when its
    validation accuracy falls behind; ends with the best trial and its config as a YAML file for train --config.

    The same command again continues the study: finished trials are kept, and an interrupted trial (Ctrl-C,
    SIGTERM, kill -9) is run again as a new trial that resumes its run from the newest checkpoint. Several
    tuners, on this machine or others (--storage postgresql://...), share one study. See docs/tune.md.
    """
    if show:
        if root is None and config_path is not None:
            root = Path(api.load_config(config_path, overrides).output.root)
        found = api.study(study_name, storage=storage, root=root)
    else:
        found = api.tune(config_path, list(space), overrides, trials=trials, timeout=timeout, jobs=jobs,
                         storage=storage, study=study_name, objective=objective, prune=prune, pruner=pruner,
                         seed=seed, sampler_seed=sampler_seed, say=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2, default=lambda v: None if isinstance(v, float)
                              and not math.isfinite(v) else str(v)))
        return
    click.echo(f"study {found.name} in {found.storage}: {len(found.trials)} trial(s), objective {found.objective}")
    if found.trials:
        click.echo(table(found))
    if found.best_trial:
        click.echo(f"best: trial {found.best_trial['trial']} ({found.best_trial['run']})")
    if found.best_config:
        click.echo(f"its config: mnist-kit train --config {found.best_config}")
