"""Options that several commands share, each defined once: ``--config`` (a file or a shipped name, saying
which it chose), ``-o``, ``--print-config``, ``--root`` with the ``--config`` its default comes from, ``--run``
with ``--epoch``/``--last``, ``--runtime``, and numbers that must be finite."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import click

from mnist_kit import config


class Number(click.FloatRange):
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


config_file = _ConfigFile()
config_option = click.option("--config", "-c", "config_path", type=config_file,
                             help="YAML experiment config: a file, or a shipped config by name (mnist-kit configs "
                                  "lists them), e.g. cnn. Default: the built-in defaults (mnist-kit configs show "
                                  "defaults): cnn's network and data with the classic recipe (Adam 1e-3, batch 64, "
                                  "constant rate, no augmentation).")


def print_config_option(config_param: str, overrides_param: str | None = None):
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


override_option = click.option("--override", "-o", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                               help="Override one config value (repeatable), e.g. -o optimizer.lr=0.01")


def root_options(what: str = "runs"):
    """``--root`` and the ``--config`` its default comes from: one definition for every command that looks
    for runs. The root is ``--root``, else ``output.root`` of ``--config``, else the built-in default."""

    def decorate(f):
        f = print_config_option("root_config")(f)
        f = click.option("--config", "-c", "root_config", type=config_file,
                         help="Take the default --root from this config's output.root.")(f)
        return click.option("--root", type=click.Path(path_type=Path),
                            help=f"Where to look for {what} (default: output.root of --config, else "
                                 f"{config.SCHEMA['output']['root'].default}).")(f)

    return decorate


def root_of(given: Path | None, root_config: Path | None) -> Path:
    """``--root``, else output.root of ``--config`` (else the built-in default)."""
    return given if given is not None else Path(config.load(root_config).output.root)


def run_options(epoch_help: str | None = None, last_help: str | None = None):
    """``--run`` (default: the newest run under ``--root``), ``--root``/``--config``, and, when given help
    texts, ``--epoch`` and ``--last``: a command's choice of run and checkpoint, defined once."""

    def decorate(f):
        if last_help:
            f = click.option("--last", is_flag=True, help=last_help)(f)
        if epoch_help:
            f = click.option("--epoch", type=click.IntRange(0), help=epoch_help)(f)
        f = root_options("the newest run")(f)
        return click.option("--run", "run_dir", type=click.Path(path_type=Path),
                            help="Run directory (default: the newest run under --root).")(f)

    return decorate


runtime_option = click.option(
    "--runtime", type=click.Choice(["auto", "onnxruntime", "paddle"]), default="auto", show_default=True,
    help="What runs the model: auto takes onnxruntime where the export holds a checked model.onnx and onnxruntime "
         "is installed (paddle is then never imported), else Paddle Inference.")
