"""The ``mnist-kit`` group: how a command ends. A ``UserError`` becomes one ``Error:`` line and its exit code
(2 for usage and config errors), a file-system error the user can act on one line with what to do, Ctrl-C
and SIGTERM a word and 130/143; never a traceback for any of them."""

from __future__ import annotations

import errno

import click

from mnist_kit.errors import UserError
from mnist_kit.util import interrupts
from mnist_kit.version import __version__


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


def main(args=None, prog_name: str = "mnist-kit"):
    cli.main(args=args, prog_name=prog_name)
